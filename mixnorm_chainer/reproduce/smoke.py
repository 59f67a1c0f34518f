"""``mixnorm-exp smoke [NAME ...]``: does a setting train? A minute on a CPU, not hours on a GPU.

For each setting (all registry rows by default; the paired BN row of every MN/GBN row named is
added): the setting's network (:func:`~mixnorm_chainer.reproduce.builders.build_model`; DCGAN:
:mod:`~mixnorm_chainer.reproduce.gan`'s networks at ``--width``) on offline digits at a reduced
input size and batch, ``--steps`` updates with the setting's optimizer, learning-rate schedule
(the values of its first steps in the paper's run: :func:`~mixnorm_chainer.reproduce.training.
schedule_extension` with the paper's iterations per epoch) and MN options (``--mn-option``
adds to them as for ``run``), then one test-mode pass (BN running statistics, MN's queue) on
held-out digits, computed in float64 (:func:`_float64_copy`). The data order and the
initialization come from ``--seed``; a setting and its BN row see the same batches.

"last" is the mean training loss of the last half of the steps (one batch's loss is too
noisy at these batch sizes). A setting diverged (:func:`verdict`; the factors are measured in
docs/experiments.md) when

* ``non-finite``: a training loss or the test-mode loss is not finite, or training stopped
  with an error (e.g. MN refusing to fit non-finite activations); or
* ``above BN``: an MN/GBN row's last loss is above ``PAIR_FACTOR`` x its BN row's last loss
  (the same steps on the same batches) + ``PAIR_MARGIN``.

A loss that grew from the first step is reported (``ok, grew xR``) but is no verdict: at these
sizes some BN rows the paper trained grow in their first steps at the paper's learning rate.
For DCGAN the training loss is the generator's. Exit status 1 when any setting diverged (the
names are listed at the end), 2 for a usage error.
"""
import argparse
import copy
import dataclasses
import math
import sys
import tempfile
import time
import warnings

import chainer
import numpy
from chainer import training

from mixnorm_chainer.reproduce import builders, registry, runfolder
from mixnorm_chainer.reproduce.training import schedule_extension

#: training steps, batch and image side (per model) of the default check
DEFAULT_STEPS = 10
DEFAULT_BATCH = 32
INPUT_SIZE = {'cifar_cnn': 16, 'inception_v3': 16, 'densenet40': 8, 'densenet100': 8,
              'dcgan': 8}
#: DCGAN channels (the paper's generator has 512; the check needs the shape, not the width)
DEFAULT_WIDTH = 64
#: the paper's training set (CIFAR: 50000 images) sets the iterations of its schedule's epochs
PAPER_TRAIN_IMAGES = 50000
#: verdict factors (module docstring; chosen from the table in docs/experiments.md)
PAIR_FACTOR = 3.0
PAIR_MARGIN = 1.0


@dataclasses.dataclass
class Result:
    """One setting's check: training losses per step, the test-mode loss, an error text."""
    name: str
    optimizer: str
    lr: float                    # the learning rate of the last step
    size: int
    losses: list
    test_loss: float = math.nan
    error: str = ''
    seconds: float = 0.0

    @property
    def first(self):
        return self.losses[0] if self.losses else math.nan

    @property
    def last(self):
        """The mean training loss of the last half of the steps."""
        late = self.losses[len(self.losses) // 2:]
        return sum(late) / len(late) if late else math.nan

    @property
    def finite(self):
        return (not self.error and bool(self.losses)
                and all(math.isfinite(v) for v in self.losses + [self.test_loss]))


def verdict(result, baseline=None):
    """``''`` when the setting trains, else why it diverged (module docstring): 'non-finite'
    or 'above BN'. ``baseline``: the :class:`Result` of its BN row or None."""
    if not result.finite:
        return 'non-finite'
    if (baseline is not None and baseline.finite
            and result.last > PAIR_FACTOR * baseline.last + PAIR_MARGIN):
        return 'above BN'
    return ''


# -- one setting ------------------------------------------------------------------------------

def _classifier_parts(setting, size, batch, seed, mn_options):
    """The model, optimizer, training iterator and test batch of a classification setting."""
    train, test, _ = builders.load_data('digits', None, size, seed)
    n_classes = 10 if setting.dataset == 'cifar10' else 100   # the setting's head; digits'
    # labels 0-9 are among its classes
    with runfolder.seeded_numpy_random(seed):
        model = builders.build_model(setting, n_classes, seed=seed, mn_options=mn_options)
    optimizer = builders.build_optimizer(setting, model)
    it = chainer.iterators.SerialIterator(train, batch,
                                          order_sampler=runfolder.ResumableShuffle(seed))
    x, t = chainer.dataset.concat_examples(test[:batch])
    return model, optimizer, it, (x, t)


def _schedule(trainer, setting):
    """The setting's learning-rate policy at the iterations of the paper's run."""
    iters_per_epoch = int(math.ceil(PAPER_TRAIN_IMAGES / setting.batch_size))
    shift, trigger = schedule_extension(setting, setting.epochs, iters_per_epoch)
    if trigger[1] == 'epoch':            # the paper's epochs, not passes over the digits
        trigger = (trigger[0] * iters_per_epoch, 'iteration')
    trainer.extend(shift, trigger=trigger)


def _train(trainer, key, losses):
    """Run ``trainer``, appending ``key``'s value of every step to ``losses``; returns the
    error text of a failed step ('' otherwise)."""
    trainer.extend(lambda tr: losses.append(float(tr.observation[key].array)),
                   trigger=(1, 'iteration'), name='smoke_loss')
    try:
        trainer.run(show_loop_exception_msg=False)
    except (ValueError, RuntimeError, ArithmeticError) as e:
        losses.append(math.nan)
        return ' '.join(str(e).split())[:120] or type(e).__name__
    return ''


def _float64_copy(model):
    """A copy of ``model`` with its parameters and persistent arrays (BN running statistics)
    in float64: the test-mode pass of a network whose weights grew in its first steps at the
    paper's learning rate overflows float32 (Table 6's rows at batch 8: a loss of 6e37), so
    'non-finite' would report a large number instead of a NaN from the arithmetic."""
    model = copy.deepcopy(model)
    for param in model.params():
        param.array = param.array.astype(numpy.float64)
    for link in model.links():
        for name in link._persistent:
            value = getattr(link, name)
            if isinstance(value, numpy.ndarray) and value.dtype.kind == 'f':
                setattr(link, name, value.astype(numpy.float64))
    return model


def check_classifier(setting, steps, size, batch, seed, mn_options=None):
    """:class:`Result` of a classification setting (CIFAR CNN, Inception-V3, DenseNet, GBN)."""
    model, optimizer, it, (x, t) = _classifier_parts(setting, size, batch, seed, mn_options)
    losses = []
    with tempfile.TemporaryDirectory() as out, runfolder.seeded_numpy_random(seed):
        trainer = training.Trainer(training.StandardUpdater(it, optimizer),
                                   (steps, 'iteration'), out=out)
        _schedule(trainer, setting)
        error = _train(trainer, 'main/loss', losses)
    test_loss = math.nan
    if not error:
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            try:
                test_loss = float(_float64_copy(model)(x.astype(numpy.float64), t).array)
            except (ValueError, RuntimeError, ArithmeticError) as e:
                error = 'test mode: ' + ' '.join(str(e).split())[:100]
    return Result(setting.name, setting.optimizer, float(optimizer.lr), size, losses,
                  test_loss, error)


def check_gan(setting, steps, size, batch, seed, width=DEFAULT_WIDTH):
    """:class:`Result` of a DCGAN setting: generator losses; the test-mode pass is the
    generator loss of a fixed z with both networks in test mode."""
    from mixnorm_chainer.models.dcgan import generator_loss
    from mixnorm_chainer.reproduce import gan
    images, _ = gan.gan_images('digits', size=size)
    args = argparse.Namespace(width=width, batch_size=batch, seed=seed)
    device = chainer.get_device('@numpy')
    losses = []
    with tempfile.TemporaryDirectory() as out, runfolder.seeded_numpy_random(seed):
        trainer, gen = gan._trainer(args, setting, steps, images, device, out)
        error = _train(trainer, 'gen/loss', losses)
    test_loss = math.nan
    if not error:
        dis = trainer.updater.dis
        z = gen.make_hidden(batch, rng=numpy.random.default_rng([seed, 1]))
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            test_loss = float(generator_loss(dis(gen(z))).array)
    return Result(setting.name, setting.optimizer, float(setting.lr), size, losses, test_loss,
                  error)


def check(setting, steps=DEFAULT_STEPS, size=None, batch=DEFAULT_BATCH, seed=0,
          mn_options=None, width=DEFAULT_WIDTH):
    """:class:`Result` of one setting (``size``: default :data:`INPUT_SIZE` of its model)."""
    size = INPUT_SIZE[setting.model] if size is None else size
    start = time.perf_counter()
    with warnings.catch_warnings(), numpy.errstate(all='ignore'):
        warnings.simplefilter('ignore', RuntimeWarning)    # overflow while diverging
        if setting.model == 'dcgan':
            result = check_gan(setting, steps, size, batch, seed, width)
        else:
            result = check_classifier(setting, steps, size, batch, seed,
                                      mn_options if setting.is_mn else None)
    result.seconds = time.perf_counter() - start
    return result


# -- the table --------------------------------------------------------------------------------

def check_input_size(settings, size):
    """A ValueError when ``--input-size`` ``size`` does not fit a setting's model."""
    models = {s.model for s in settings}
    if size is not None and size < 15 and 'inception_v3' in models:
        raise ValueError('--input-size {}: Inception-V3 needs 15 or more (three stride-2 '
                         'reductions); leave it out for each model\'s default'.format(size))
    if size is not None and size % 8 and 'dcgan' in models:
        raise ValueError('--input-size {}: DCGAN needs a multiple of 8; leave it out for each '
                         'model\'s default'.format(size))


def plan(names=None):
    """The settings to check, each paired BN row before the rows it pairs with (all registry
    rows when ``names`` is empty); unknown names raise registry's KeyError."""
    chosen = [registry.get(n) for n in names] if names else list(registry.SETTINGS.values())
    ordered = []
    for s in chosen:
        base = registry.get(s.baseline) if s.baseline else None
        for row in (base, s):
            if row is not None and row not in ordered:
                ordered.append(row)
    return ordered


ROW = '{:<21}  {:<14} {:>4} {:>7} {:>7} {:>7}  {:<6} {:>7}  {}'
HEADER = ROW.format('setting', 'optimizer lr', 'size', 'first', 'last', 'test', 'finite',
                    'BN last', 'verdict')


def _number(value):
    return '{:.3g}'.format(value) if math.isfinite(value) else str(value)


def line(result, baseline, why):
    """One row of the table (``why``: the verdict's reason, '' = trains)."""
    return ROW.format(
        result.name, '{} {:g}'.format(result.optimizer, result.lr), result.size,
        _number(result.first), _number(result.last), _number(result.test_loss),
        'yes' if result.finite else 'no', '-' if baseline is None else _number(baseline.last),
        _verdict_text(result, why))


def _verdict_text(result, why):
    if why:
        return 'DIVERGED: ' + why
    if not result.last > result.first:
        return 'ok'
    ratio = result.last / result.first
    return 'ok, grew x{}'.format('{:.1f}'.format(ratio) if ratio < 1e3 else '{:.0e}'.format(ratio))


def smoke(names=None, steps=DEFAULT_STEPS, size=None, batch=DEFAULT_BATCH, seed=0,
          mn_options=None, width=DEFAULT_WIDTH, out=None, err=None):
    """Check the settings (:func:`plan`), print the table on ``out`` (progress on ``err``);
    returns ``{name: (Result, reason)}`` (reason '' = trains)."""
    out, err = out or sys.stdout, err or sys.stderr
    settings = plan(names)
    check_input_size(settings, size)
    if mn_options and not any(s.is_mn and s.model != 'dcgan' for s in settings):
        raise ValueError('--mn-option: none of the settings has MN layers that take it '
                         '(DCGAN settings do not); name an MN setting')
    if mn_options:
        builders.mn_options_of(settings[0], mn_options)     # unknown keys: one-line error
    print('smoke: {} setting{}, {} steps, batch {}, seed {}{}'.format(
        len(settings), '' if len(settings) == 1 else 's', steps, batch, seed,
        ', MN options {}'.format(mn_options) if mn_options else ''), file=err, flush=True)
    print(HEADER, file=out, flush=True)
    results, verdicts, start = {}, {}, time.perf_counter()
    for i, s in enumerate(settings):
        print('[{}/{}] {} ...'.format(i + 1, len(settings), s.name), end='', file=err,
              flush=True)
        r = results[s.name] = check(s, steps, size, batch, seed, mn_options, width)
        print(' {:.1f} s; losses {}'.format(r.seconds, ' '.join(_number(v) for v in r.losses)),
              file=err, flush=True)
        base = results.get(s.baseline)
        why = verdict(r, base)
        verdicts[s.name] = (r, why)
        print(line(r, base, why), file=out, flush=True)
    failed = [n for n, (_, why) in verdicts.items() if why]
    for name, (r, _) in verdicts.items():
        if r.error:
            print('{}: {}'.format(name, r.error), file=out)
    print('{} setting{} in {:.0f} s: {}'.format(
        len(settings), '' if len(settings) == 1 else 's', time.perf_counter() - start,
        'all train' if not failed else '{} diverged: {}'.format(len(failed), ', '.join(failed))),
        file=out, flush=True)
    return verdicts


def smoke_command(args):
    """``mixnorm-exp smoke``: exit status 1 when a setting diverged."""
    verdicts = smoke(args.names, args.steps, args.input_size, args.batch_size, args.seed,
                     dict(args.mn_option or ()), args.width)
    if any(why for _, why in verdicts.values()):
        raise SystemExit(1)
