"""The figure scripts' command line (``figures/figure*.py``): the common options, the check of
``--out`` before any work, and the one-line exit on a user mistake. The drawing itself is in
:mod:`mixnorm_chainer.reproduce.plotting`."""
import argparse
import os
import sys

from mixnorm_chainer.reproduce import plotting, runfolder


def prepare_out(out):
    """Check a figure's ``--out`` before any work (every figure script calls this first):
    create its parent folder when missing (the folders are kept if the figure then fails), or
    a one-line :class:`~mixnorm_chainer.reproduce.plotting.FigureError` when ``out`` is a
    folder, its parent cannot be created (a file on the way, no permission) or written to, or
    its extension is not an image format matplotlib writes. Returns ``out``."""
    if os.path.isdir(out):
        raise plotting.FigureError('--out {}: is a folder; give the image file to write, e.g. '
                          '{}'.format(out, os.path.join(out, 'figure.png')))
    directory = os.path.dirname(out) or '.'
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        blocker = directory
        while blocker and not os.path.exists(blocker):
            blocker = os.path.dirname(blocker)
        why = ('{} is a file, not a folder'.format(blocker) if blocker
               and not os.path.isdir(blocker) else e.strerror or str(e))
        raise plotting.FigureError('--out {}: cannot create its folder {} ({})'.format(
            out, directory, why)) from None
    if not os.access(directory, os.W_OK):
        raise plotting.FigureError('--out {}: the folder {} is not writable'.format(out, directory))
    ext = os.path.splitext(out)[1][1:].lower()
    if ext:
        from matplotlib.backend_bases import FigureCanvasBase
        formats = FigureCanvasBase.get_supported_filetypes()
        if ext not in formats:
            raise plotting.FigureError(
                '--out {}: matplotlib writes no .{} files; use one of .{}'.format(
                    out, ext, ', .'.join(sorted(formats))))
    return out


def save_figure(fig, out):
    directory = os.path.dirname(out)
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(out, metadata={'Software': None})   # no version stamp: same runs, same bytes
    return out


def figure_parser(prog, description, out, window, window_help=None, seed_help=None):
    """The common CLI: ``--run DIR [DIR ...] --out PNG --window W --align --seed``.
    ``seed_help``: ``--seed S`` (default None) selects a seed, as the script's help says;
    without it ``--seed`` is accepted and unused."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument('--run', nargs='+', required=True, metavar='DIR',
                   help='run directories written by `mixnorm-exp run`')
    p.add_argument('--out', default=out, help='output PNG (default %(default)s)')
    p.add_argument('--window', type=int, default=window,
                   help=window_help or 'running mean/std window in epochs (default '
                   '%(default)s)')
    p.add_argument('--align', choices=('center', 'trailing'), default='center',
                   help='window centred on each point or ending at it (default %(default)s)')
    if seed_help:
        p.add_argument('--seed', type=int, metavar='S', help=seed_help)
    else:
        p.add_argument('--seed', type=int, default=0,
                       help='accepted for a uniform interface; the figures use no randomness')
    p.add_argument('--band', choices=('seeds', 'window'), default='seeds',
                   help='runs of several seeds (a folder of `mixnorm-exp run --seeds`): mean '
                   'curve with +-1 std over the seeds (seeds, default), or the running mean/std '
                   'within --window epochs of the mean curve (window)')
    return p


def add_ylim(parser, what='error'):
    parser.add_argument('--ylim', type=float, nargs=2, metavar=('LO', 'HI'),
                        help='{} axis limits (default: automatic)'.format(what))


def run_main(prog, body, argv, parser):
    """Parse ``argv``, call ``body(args)`` -> (summary, lines), print the lines and return the
    summary; a :class:`~mixnorm_chainer.reproduce.plotting.FigureError` or a missing file exits
    with status 2 and a one-line reason. ``--out`` is checked (:func:`prepare_out`) before
    ``body`` does any work."""
    args = parser.parse_args(argv)
    try:
        prepare_out(args.out)
        summary, lines = body(args)
    except (plotting.FigureError, FileNotFoundError, runfolder.RunError) as e:
        print('{}: error: {}'.format(prog, e), file=sys.stderr)
        raise SystemExit(2) from None
    for line in lines:
        print(line)
    return summary
