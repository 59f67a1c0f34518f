"""DCGAN training of Section 4.5 (``mixnorm-exp run dcgan-c10-BN|dcgan-c10-MN``) and its summary.

A run is a ``chainer.training.Trainer`` around :class:`GANUpdater` (one discriminator and one
generator update per iteration, Adam(alpha=2e-4, beta1=0, beta2=0.9) for both, as the paper),
with LogReport (``log.json``, one entry every ``log_interval`` updates: ``gen/loss``,
``dis/loss``, ``time/update`` and, at evaluations, ``fid``, ``fid/best``, ``fid/time``),
PrintReport, ProgressBar, a snapshot every ``snapshot_interval`` updates and at the last one
(``snapshot_iter_N``, written atomically, the two newest kept; ``--resume`` continues from the
newest readable one exactly, as :mod:`mixnorm_chainer.reproduce.training` describes) and
:class:`FIDEvaluation`: every ``fid_interval`` updates (paper: 10K) the FID of
``fid_samples`` generated images against the training images, and a sample grid of a fixed z
(``samples/iter_N.png`` and ``.npz``; Figure 7). ``setting.json`` names the FID feature
extractor and whether its numbers are comparable to published FIDs (only ``inception`` is).

Update (chainer-gan-lib's ``dcgan/updater.py``, whose DCGAN and optimizer settings the paper
uses): one forward of G on z ~ U[-1, 1]^128 and of D on the real and the fake batch; the
generator steps on the non-saturating loss mean softplus(-D(G(z))), then the discriminator on
mean softplus(-D(x)) + mean softplus(D(G(z))) (the fake batch detached). FID is computed with
the generator in test mode (BN running statistics, MN's Eq. 38 mixture queue), as
chainer-gan-lib's ``calc_FID`` does.
"""
import json
import math
import os
import sys
import time

import chainer
import numpy
from chainer import training
from chainer.training import extension, extensions

from mixnorm_chainer.models.dcgan import (
    Discriminator,
    Generator,
    discriminator_loss,
    generator_loss,
)
from mixnorm_chainer.reproduce import plotting, runfolder
from mixnorm_chainer.reproduce.datasets import get_cifar, get_digits
from mixnorm_chainer.reproduce.runfolder import ResumableShuffle, RunError, format_value

FID_KEY = 'fid'
#: Section 4.5: "FID ... evaluated every 10K updates"
PAPER_FID_INTERVAL = 10000
LOSS_KEYS = ('gen/loss', 'dis/loss')


# -- data ----------------------------------------------------------------------------------

def gan_images(dataset, data_dir=None, size=None, limit=None):
    """Training images for the GAN as float32 (N, C, S, S) in [-1, 1], and a description.

    ``'cifar10'``/``'cifar100'``: the 50000 training images (3 channels, 32x32; ``size`` must be
    None or 32). ``'digits'``: all 1797 scikit-learn digits, bilinearly upsampled to ``size``
    (default 16), one channel, background -1 and full ink +1. ``limit``: the first N images.
    """
    key = str(dataset).lower().replace('-', '').replace('_', '')
    if key == 'digits':
        size = 16 if size is None else size
        train, _ = get_digits(size=size, channels=1, test_fraction=0.0)
        x = numpy.asarray(train._datasets[0], dtype=numpy.float64)
        # get_digits standardizes; the raw scale is [0, 1] with both ends present
        x = (x - x.min()) / (x.max() - x.min())
    elif key in ('cifar10', 'cifar100'):
        if size not in (None, 32):
            raise ValueError(f'CIFAR images are 32x32; size={size!r} is not supported')
        if data_dir is not None and not os.path.isdir(data_dir):
            raise RunError('--data-dir {} is not a folder; give the folder that holds the {} '
                           'archive or its extracted folder'.format(data_dir, key))
        # with a data_dir only that folder is read: a mistyped one must not download elsewhere
        train, _ = get_cifar(key, data_dir, normalize=False, download=data_dir is None)
        x = train._datasets[0]
    else:
        raise ValueError(f"dataset must be 'cifar10', 'cifar100' or 'digits'; got {dataset!r}")
    if limit:
        x = x[:int(limit)]
    x = (2.0 * numpy.asarray(x) - 1.0).astype(numpy.float32)
    return x, '{} ({} images, {}x{}x{})'.format(key, *x.shape)


# -- training ------------------------------------------------------------------------------

def make_adam(link, alpha=2e-4, beta1=0.0, beta2=0.9):
    """Section 4.5: Adam with alpha 0.0002, beta1 0 and beta2 0.9 for both networks."""
    opt = chainer.optimizers.Adam(alpha=alpha, beta1=beta1, beta2=beta2)
    opt.setup(link)
    return opt


class GANUpdater(training.StandardUpdater):
    """One generator and one discriminator Adam step per iteration (module docstring).

    z of iteration i is drawn from ``numpy.random.default_rng([seed, i])``, so a resumed run
    draws the same z as an uninterrupted one. Reports ``gen/loss``, ``dis/loss`` and
    ``time/update`` (seconds of this update, synchronized on a GPU).
    """

    def __init__(self, iterator, generator, discriminator, opt_gen, opt_dis, device, seed=0):
        super().__init__(iterator, {'gen': opt_gen, 'dis': opt_dis}, device=device)
        self.gen, self.dis = generator, discriminator
        self._dev = chainer.get_device(device)
        self.seed = int(seed)

    def update_core(self):
        start = time.perf_counter()
        batch = self.get_iterator('main').next()
        x_real = self._dev.send(numpy.stack([numpy.asarray(b) for b in batch]))
        n = len(batch)
        rng = numpy.random.default_rng([self.seed, self.iteration])
        z = self._dev.send(self.gen.make_hidden(n, rng=rng))
        x_fake = self.gen(z)
        y_fake = self.dis(x_fake)
        y_real = self.dis(x_real)
        loss_gen = generator_loss(y_fake)
        loss_dis = discriminator_loss(y_real, y_fake)

        self.gen.cleargrads()
        loss_gen.backward()
        self.get_optimizer('gen').update()
        x_fake.unchain_backward()
        self.dis.cleargrads()
        loss_dis.backward()
        self.get_optimizer('dis').update()
        for name, v in (('gen/loss', loss_gen), ('dis/loss', loss_dis)):
            if not bool(self._dev.xp.isfinite(v.array)):
                raise RuntimeError('{} is {} at iteration {}'.format(
                    name, float(v.array), self.iteration))
        runfolder.synchronize(self._dev)
        chainer.reporter.report({'gen/loss': loss_gen, 'dis/loss': loss_dis,
                                 'time/update': time.perf_counter() - start})


def generate(generator, n, rng, batch_size=100, device=None):
    """``n`` images of ``generator`` in test mode, float32 numpy (n, C, S, S) in [-1, 1]."""
    device = device or generator.device
    cpu = chainer.backend.CpuDevice()
    out = []
    with chainer.using_config('train', False), chainer.using_config('enable_backprop', False):
        for i in range(0, n, batch_size):
            z = device.send(generator.make_hidden(min(batch_size, n - i), rng=rng))
            out.append(numpy.asarray(cpu.send(generator(z).array)))
    return numpy.concatenate(out, axis=0)


def to_uint8(images):
    """[-1, 1] float images -> uint8 (as chainer-gan-lib: clip(x * 127.5 + 127.5))."""
    return numpy.clip(numpy.asarray(images) * 127.5 + 127.5, 0, 255).round().astype(numpy.uint8)


def image_grid(images, cols=None, pad=0, fill=0):
    """(n, C, H, W) uint8 -> (rows * (H + pad) - pad, cols * (W + pad) - pad, 3) uint8 grid
    (1-channel images as grey; ``pad`` pixels of value ``fill`` between images)."""
    images = numpy.asarray(images)
    n, c, h, w = images.shape
    if c == 1:
        images = numpy.repeat(images, 3, axis=1)
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = numpy.full((rows * (h + pad) - pad, cols * (w + pad) - pad, 3), fill,
                      dtype=images.dtype)
    for i in range(n):
        r, k = divmod(i, cols)
        y, x = r * (h + pad), k * (w + pad)
        grid[y:y + h, x:x + w] = images[i].transpose(1, 2, 0)
    return grid


def save_png(array, path):
    from PIL import Image
    Image.fromarray(array).save(path)


def sample_path(out, iteration, ext):
    return os.path.join(out, 'samples', 'iter_{:08d}.{}'.format(iteration, ext))


class FIDEvaluation(extension.Extension):
    """Every trigger: FID of ``n_samples`` generated images (``scorer``: a
    :class:`mixnorm_chainer.reproduce.fid.FIDScorer` built on the real images) and a sample grid
    of the fixed z drawn from ``seed`` (``samples/iter_N.png``/``.npz``). Reports ``fid``,
    ``fid/best`` (lowest so far) and ``fid/time``; the best FID and its iteration are part of
    the snapshot. The generated images of evaluation i come from
    ``default_rng([seed, 1, i])``."""

    priority = extension.PRIORITY_WRITER
    name = 'fid'

    def __init__(self, generator, scorer, n_samples, out, batch_size=100, seed=0, n_grid=100):
        self.gen, self.scorer, self.n_samples = generator, scorer, int(n_samples)
        self.out, self.batch_size, self.seed, self.n_grid = out, batch_size, seed, n_grid
        self.best, self.best_iteration = math.inf, -1

    def __call__(self, trainer):
        start = time.perf_counter()
        it = trainer.updater.iteration
        fake = generate(self.gen, self.n_samples, numpy.random.default_rng([self.seed, 1, it]),
                        self.batch_size)
        fid = float(self.scorer(fake))
        if not math.isfinite(fid):
            raise RuntimeError('FID is {} at iteration {}'.format(fid, it))
        grid = to_uint8(generate(self.gen, self.n_grid, numpy.random.default_rng([self.seed, 2]),
                                 self.batch_size))
        os.makedirs(os.path.join(self.out, 'samples'), exist_ok=True)
        numpy.savez_compressed(sample_path(self.out, it, 'npz'), images=grid, fid=fid,
                               iteration=it)
        save_png(image_grid(grid), sample_path(self.out, it, 'png'))
        if fid < self.best:
            self.best, self.best_iteration = fid, it
        chainer.reporter.report({FID_KEY: fid, 'fid/best': self.best,
                                 'fid/time': time.perf_counter() - start})

    def serialize(self, serializer):
        self.best = serializer('best', self.best)
        self.best_iteration = serializer('best_iteration', self.best_iteration)


#: options of a GAN run that shape its results (stored in setting.json; a resumed run must have
#: the same ones, only --iterations may change)
RUN_OPTIONS = ('name', 'dataset', 'batch_size', 'input_size', 'train_limit', 'seed', 'width',
               'fid_interval', 'log_interval', 'snapshot_interval', 'fid_samples',
               'fid_real_samples', 'fid_extractor', 'fid_batch_size')


#: what --resume lets change, as its refusal says
MAY_CHANGE = '--iterations, --device, --data-dir, --inception-weights and --no-progress'


def resolve_options(args, setting, folder):
    """Fill the GAN options not given (None) from the resumed run (the
    :class:`~mixnorm_chainer.reproduce.runfolder.RunFolder` ``folder``) or the defaults;
    returns them as a dict (:data:`RUN_OPTIONS`)."""
    folder.fill_options(args, RUN_OPTIONS[1:], {
        'dataset': setting.dataset, 'batch_size': setting.batch_size, 'seed': 0, 'width': 512,
        'fid_interval': PAPER_FID_INTERVAL, 'fid_samples': 10000, 'fid_extractor': 'inception',
        'fid_batch_size': 100})
    if args.log_interval is None:
        args.log_interval = math.gcd(args.fid_interval, 100)
    if args.snapshot_interval is None:
        args.snapshot_interval = args.fid_interval
    return {key: getattr(args, key, None) for key in RUN_OPTIONS}


def _final_or_every(interval, total):
    """Trigger: every ``interval`` updates and at the last one (so a finished run has a
    snapshot of its end)."""
    def trigger(trainer):
        it = trainer.updater.iteration
        return it % interval == 0 or it == total
    return trigger


def run(args, setting, extra_extensions=()):
    """Train a DCGAN setting (``setting.model == 'dcgan'``) as ``mixnorm-exp run`` asks.

    The run folder and ``--resume`` behave as for the classification runs
    (:func:`mixnorm_chainer.reproduce.training.run`); only ``--iterations`` may change on
    resume."""
    if getattr(args, 'epochs', None) is not None or getattr(args, 'scale', None) is not None:
        raise ValueError('GAN settings run for --iterations (generator updates), not '
                         '--epochs/--scale')
    out = args.out or runfolder.default_out(setting, args.dataset or setting.dataset,
                                            args.seed or 0,
                                            batch_size=getattr(args, 'batch_size', None))
    folder = runfolder.RunFolder(out, args.resume, getattr(args, 'force', False)).open()
    options = resolve_options(args, setting, folder)
    iterations = args.iterations or (int(folder.stored['iterations']) if folder.resume else
                                     setting.iterations)
    if args.fid_interval % args.log_interval:
        raise ValueError('--fid-interval ({}) must be a multiple of --log-interval ({}) so each '
                         'FID lands in a log entry'.format(args.fid_interval, args.log_interval))
    if folder.resume:
        folder.refuse_changed(options, MAY_CHANGE)
        done = folder.find_snapshot('updater/iteration')
        if folder.complete(done, iterations, 'updates', '--iterations'):
            return out
    _check_inception_weights(args)
    device = runfolder.get_device(args.device)
    device.use()
    images, data_text = gan_images(args.dataset, args.data_dir, args.input_size,
                                   args.train_limit)
    if args.batch_size > len(images):
        raise RunError('--batch-size {} is larger than the training set ({} images); give a '
                       'smaller --batch-size or a larger --train-limit'.format(
                           args.batch_size, len(images)))
    # chainer's initializers draw from numpy's global generator: seeded for the networks, and
    # for the whole training, so that any draw during it is seeded and resumable as well
    with runfolder.seeded_numpy_random(args.seed):
        trainer, gen = _trainer(args, setting, iterations, images, device, out)
        extractor, real, real_time = _add_fid(trainer, args, gen, images, device, out)
        _add_reports(trainer, args, iterations)
        trainer.extend(runfolder.RandomStates({'numpy': runfolder.GLOBAL_NUMPY_RANDOM}))
        for ext, trigger in extra_extensions:
            trainer.extend(ext, trigger=trigger)
        record = _setting_record(args, setting, options, iterations, images, data_text,
                                 extractor, len(real), real_time, device)
        if folder.resume:
            folder.load(trainer)
            if folder.stored.get('fid', {}).get('extractor') not in (None, extractor.name):
                raise RunError('--resume: the FID extractor {} differs from the run\'s {}; '
                               'resume with the same weights'.format(
                                   extractor.name, folder.stored['fid']['extractor']))
        record = folder.record(record, trainer.updater.iteration, device,
                               {'iterations': iterations})
        folder.write(record, dict(options, iterations=iterations, out=out))
        print('{}: DCGAN ({}) on {}, {} updates, batch {}, width {}, FID ({}{}) every {} '
              'updates on {} fake / {} real images, out {}{}'.format(
                  setting.name, ','.join(setting.mn_layers) or 'BN', data_text, iterations,
                  args.batch_size, args.width, extractor.name,
                  '' if extractor.comparable else ', NOT comparable to published FIDs',
                  args.fid_interval, args.fid_samples, len(real), out,
                  ', resumed at update {}'.format(trainer.updater.iteration)
                  if folder.resume else ''), flush=True)
        trainer.run()
    return out


def _setting_record(args, setting, options, iterations, images, data_text, extractor, n_real,
                    real_time, device):
    """The ``setting.json`` record of a new GAN run."""
    return {'setting': setting.to_dict(), 'dataset': args.dataset, 'data': data_text,
            'iterations': iterations, 'batch_size': args.batch_size,
            'image_size': images.shape[2], 'channels': images.shape[1], 'width': args.width,
            'n_train': len(images),
            'fid': {'extractor': extractor.name, 'kind': args.fid_extractor,
                    'comparable_to_published': bool(extractor.comparable),
                    'interval': args.fid_interval, 'n_fake': args.fid_samples,
                    'n_real': n_real, 'real_statistics_seconds': real_time},
            'log_interval': args.log_interval, 'snapshot_interval': args.snapshot_interval,
            'seed': args.seed, 'device': str(device), 'argv': sys.argv,
            'versions': runfolder.software_versions(), 'options': options}


def _check_inception_weights(args):
    """The 'inception' extractor needs its converted weights (a one-line error otherwise)."""
    from mixnorm_chainer.reproduce import fid_inception
    if args.fid_extractor != 'inception':
        return
    if args.inception_weights is None:
        raise ValueError(fid_inception.MISSING_WEIGHTS_HELP)
    if not os.path.isfile(args.inception_weights):
        raise RunError('--inception-weights {}: no such file; convert pytorch-fid\'s weights '
                       'with `python -m mixnorm_chainer.reproduce.fid convert {} {}` (or use '
                       '--fid-extractor small for offline tests)'.format(
                           args.inception_weights, fid_inception.PYTORCH_FID_WEIGHTS_FILE,
                           args.inception_weights))


def _trainer(args, setting, iterations, images, device, out):
    """The networks, their optimizers and the trainer (in ``out``); returns it and the
    generator."""
    size, channels = images.shape[2], images.shape[1]
    gen = Generator(mn_layers=setting.mn_layers, n_components=setting.n_components,
                    em_iters=setting.em_iters, image_size=size, out_channels=channels,
                    ch=args.width, seed=args.seed)
    dis = Discriminator(image_size=size, in_channels=channels, ch=args.width)
    gen.to_device(device)
    dis.to_device(device)
    opt_gen = make_adam(gen, alpha=setting.lr)
    opt_dis = make_adam(dis, alpha=setting.lr)
    train_iter = chainer.iterators.SerialIterator(images, args.batch_size,
                                                  order_sampler=ResumableShuffle(args.seed))
    updater = GANUpdater(train_iter, gen, dis, opt_gen, opt_dis, device, seed=args.seed)
    return training.Trainer(updater, (iterations, 'iteration'), out=out), gen


def _add_fid(trainer, args, gen, images, device, out):
    """The FID evaluation (its extractor and the real images' statistics); returns the
    extractor, the real images and the seconds their statistics took."""
    from mixnorm_chainer.reproduce import fid
    extractor = fid.get_extractor(args.fid_extractor, weights=args.inception_weights,
                                  device=None if device.xp is numpy else device)
    real = images if not args.fid_real_samples else images[:args.fid_real_samples]
    start = time.perf_counter()
    scorer = fid.FIDScorer(extractor, real, batch_size=args.fid_batch_size)
    real_time = time.perf_counter() - start
    trainer.extend(FIDEvaluation(gen, scorer, args.fid_samples, out,
                                 batch_size=args.fid_batch_size, seed=args.seed),
                   trigger=(args.fid_interval, 'iteration'))
    return extractor, real, real_time


def _add_reports(trainer, args, iterations):
    """The log, printed and plotted reports, the progress bar and the snapshots."""
    trainer.extend(extensions.LogReport(trigger=(args.log_interval, 'iteration'),
                                        filename='log.json'))
    interactive = runfolder.interactive()
    trainer.extend(extensions.PrintReport(
        ['iteration', 'gen/loss', 'dis/loss', FID_KEY, 'time/update', 'elapsed_time'],
        out=sys.stdout if interactive else runfolder.PlainStdout()))
    if extensions.PlotReport.available():
        trainer.extend(runfolder.plot_report(list(LOSS_KEYS), 'iteration', filename='loss.png',
                                             trigger=(args.fid_interval, 'iteration')))
    if not args.no_progress and interactive:
        trainer.extend(extensions.ProgressBar(update_interval=10))
    trainer.extend(runfolder.Snapshot('snapshot_iter_{.updater.iteration}'),
                   trigger=_final_or_every(args.snapshot_interval, iterations))


# -- reading runs --------------------------------------------------------------------------

def load_run(directory):
    """A GAN run folder as :class:`mixnorm_chainer.reproduce.plotting.Run` whose ``log`` holds every
    LogReport entry (losses every ``log_interval`` updates; ``fid`` where evaluated)."""
    run = plotting.load_run(directory)
    with open(os.path.join(directory, 'log.json')) as f:
        run.log = json.load(f)
    return run


def fid_series(run):
    """(updates, FID) arrays of a GAN run's evaluations."""
    return run.series(FID_KEY, by='iteration')


def best_fid(run):
    """(lowest FID, its update) or (None, None)."""
    it, v = fid_series(run)
    if not v.size:
        return None, None
    i = int(numpy.argmin(v))
    return float(v[i]), int(it[i])


def steps_to_fid(run, target):
    """First evaluated update whose FID <= target (the paper's "steps to reach 37.56")."""
    for it, v in zip(*fid_series(run)):
        if v <= target + 1e-9:
            return int(it)
    return None


def extractor_text(run):
    f = run.record.get('fid') or {}
    name = f.get('extractor', '?')
    return name if f.get('comparable_to_published') else name + ' (not comparable to the paper)'


def summarize(directories, out=None):
    """Section 4.5 from GAN run folders: best FID and its update, and the updates each MN run
    needs to reach its BN baseline's best FID, next to the paper's numbers."""
    out = out or sys.stdout
    runs = [load_run(d) for d in directories]
    groups = {}
    for r in runs:
        groups.setdefault((r.setting['table'], r.dataset), []).append(r)
    for (table, dataset), members in sorted(groups.items()):
        print('\n{} on {}: FID (lower is better; ours | paper)'.format(table, dataset), file=out)
        print('{:<16} {:>7} {:>6} {:>9} {:>8} | {:>9} {:>8}   {}'.format(
            'run', 'updates', 'evals', 'best FID', '@update', 'best FID', '@update',
            'extractor'), file=out)
        for r in members:
            best, at = best_fid(r)
            updates = max([e['iteration'] for e in r.log], default=0)
            p = r.setting['paper']
            print('{:<16} {:>7} {:>6} {:>9} {:>8} | {:>9} {:>8}   {}'.format(
                r.name, updates, fid_series(r)[0].size, format_value(best),
                format_value(at, '{:d}'), format_value(p.get('best_fid')),
                format_value(p.get('best_fid_step'), '{:.3g}'),
                extractor_text(r)), file=out)
        by_name = {r.name: r for r in members}
        rows = []
        for r in members:
            base = r.baseline
            if not base or base not in by_name or best_fid(by_name[base])[0] is None:
                continue
            target, base_at = best_fid(by_name[base])
            steps = steps_to_fid(r, target)
            reduction = None if steps is None else 100.0 * (1.0 - steps / base_at)
            rows.append((r, base, target, base_at, steps, reduction))
        if rows:
            print("\nupdates to reach the baseline's best FID (ours | paper)", file=out)
            print('{:<16} {:<16} {:>9} {:>8} {:>8} {:>10} | {:>8} {:>8} {:>10}'.format(
                'run', 'baseline', 'target', 'BN at', 'steps', 'reduction', 'BN at', 'steps',
                'reduction'), file=out)
            for r, base, target, base_at, steps, reduction in rows:
                p, bp = r.setting['paper'], by_name[base].setting['paper']
                p_red = (100.0 * (1.0 - p['steps_to_baseline'] / bp['best_fid_step'])
                         if p.get('steps_to_baseline') and bp.get('best_fid_step') else None)
                print('{:<16} {:<16} {:>9} {:>8} {:>8} {:>10} | {:>8} {:>8} {:>10}'.format(
                    r.name, base, format_value(target), base_at, format_value(steps, '{:d}'),
                    format_value(reduction, '{:.0f}%'),
                    format_value(bp.get('best_fid_step'), '{:.3g}'),
                    format_value(p.get('steps_to_baseline'), '{:.3g}'),
                    format_value(p_red, '{:.0f}%')), file=out)
    return runs


def csv_rows(runs):
    """One row per GAN run for ``mixnorm-exp summarize --csv`` (reports.CSV_FIELDS)."""
    by_name = {(r.name, r.dataset): r for r in runs}
    rows = []
    for r in runs:
        best, at = best_fid(r)
        p = r.setting.get('paper', {})
        row = {'dir': r.dir, 'name': r.name, 'table': r.setting.get('table'),
               'dataset': r.dataset, 'seed': r.record.get('seed'),
               'iterations': max([e['iteration'] for e in r.log], default=None),
               'best_fid': best, 'best_fid_update': at, 'paper_best_fid': p.get('best_fid'),
               'paper_best_fid_update': p.get('best_fid_step'),
               'paper_steps_to_baseline': p.get('steps_to_baseline')}
        base = by_name.get((r.baseline, r.dataset)) if r.baseline else None
        if base is not None and best_fid(base)[0] is not None:
            row.update(baseline=r.baseline, target=best_fid(base)[0],
                       steps_to_baseline=steps_to_fid(r, best_fid(base)[0]))
        rows.append(row)
    return rows

