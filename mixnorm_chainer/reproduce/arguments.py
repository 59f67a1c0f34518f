"""Command-line pieces shared by the tooling's commands (``mixnorm-exp``, its ``recompute`` and
``evaluate`` also as ``python -m mixnorm_chainer.reproduce.inference``, ``mixnorm-crosscheck``,
``python -m mixnorm_chainer.reproduce.fid``): an argparse parser whose usage errors are one
line, the argument types, and the one-line error of a command.
"""
import argparse
import math
import os
import sys

from mixnorm_chainer.reproduce import builders


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line: ``prog: error: message (see prog --help)``."""

    def error(self, message):
        self.exit(2, '{}: error: {} (see {} --help)\n'.format(self.prog, message, self.prog))


# -- argument types ------------------------------------------------------------------------

def _number_type(kind, low, what):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError('{!r} is not a{} {}'.format(
                text, 'n' if kind is int else '', 'integer' if kind is int else 'number')
            ) from None
        if not value >= low or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError('must be {}; got {}'.format(what, text))
        return value
    parse.__name__ = what
    return parse


positive_int = _number_type(int, 1, 'a positive integer (>= 1)')
nonnegative_int = _number_type(int, 0, 'an integer >= 0')


def int_at_least(low):
    """The type of an integer >= ``low``."""
    return _number_type(int, low, 'an integer >= {}'.format(low))


def positive_float(text):
    value = _number_type(float, 0, 'a number > 0')(text)
    if value <= 0:
        raise argparse.ArgumentTypeError('must be a number > 0; got {}'.format(text))
    return value


def fraction_list(text):
    """'0.2,0.4' -> (0.2, 0.4), each in (0, 1]."""
    try:
        values = tuple(float(f) for f in str(text).split(','))
    except ValueError:
        raise argparse.ArgumentTypeError('{!r} is not a comma-separated list of numbers in '
                                         '(0, 1], e.g. 0.2,0.4,0.6'.format(text)) from None
    if not all(0 < f <= 1 for f in values):
        raise argparse.ArgumentTypeError('fractions must lie in (0, 1]; got {}'.format(text))
    return values


def seed_list(text):
    """'0,1,2' or '0-4' (inclusive) or a mix ('0-2,7') -> (0, 1, 2, 7): distinct seeds >= 0."""
    seeds = []
    for part in str(text).split(','):
        low, dash, high = part.strip().partition('-')
        try:
            values = range(int(low), int(high) + 1) if dash else [int(low)]
        except ValueError:
            raise argparse.ArgumentTypeError('{!r} is not a list of seeds; give e.g. 0,1,2 or '
                                             '0-4'.format(text)) from None
        if not values or min(values) < 0:
            raise argparse.ArgumentTypeError('{!r}: seeds are integers >= 0 and a range is '
                                             'LOW-HIGH with LOW <= HIGH'.format(text))
        seeds += [v for v in values if v not in seeds]
    return tuple(seeds)


def mn_option(text):
    """``KEY=VALUE`` of an MN option (:data:`~mixnorm_chainer.reproduce.builders.MN_OPTIONS`)."""
    try:
        return builders.parse_mn_option(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def densenet_depth(text):
    depth = positive_int(text)
    if depth < 7 or (depth - 4) % 3:
        raise argparse.ArgumentTypeError('a DenseNet depth is 3n + 4 with n >= 1 (7, 10, ..., '
                                         '40, 100); got {}'.format(text))
    return depth


# -- running a command ---------------------------------------------------------------------

def error_text(e):
    """One line for an exception the user can fix."""
    if isinstance(e, OSError) and e.strerror:
        text = '{}{}'.format(e.strerror, ': {}'.format(e.filename) if e.filename else '')
    elif isinstance(e, KeyError) and e.args:
        text = str(e.args[0])
    else:
        text = str(e) or type(e).__name__
    return ' '.join(text.split())


def run_command(prog, command, interrupted=''):
    """``command()`` as a command line runs it; returns the exit status: 0, 2 for an error the
    user can fix (one line ``prog: error: ...``), 130 when interrupted (``interrupted`` is
    added to the line). Output into a closed pipe (e.g. ``| head``) ends it quietly."""
    try:
        command()
        sys.stdout.flush()                # a closed pipe surfaces here, not at exit
    except BrokenPipeError:               # e.g. `mixnorm-exp list | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (KeyError, ValueError, OSError, RuntimeError) as e:
        print('{}: error: {}'.format(prog, error_text(e)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('{}: interrupted{}'.format(prog, interrupted), file=sys.stderr)
        return 130
    return 0
