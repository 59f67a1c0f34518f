"""``mixnorm-exp``: run the paper's experiments by name, and read the paper's tables from logs.

    mixnorm-exp list [--table T]
    mixnorm-exp run NAME [--dataset D] [--data-dir DIR] [--epochs N | --scale F]
                         [--device @numpy|@cupy:0] [--seed S] [--out DIR] [--resume] ...
    mixnorm-exp summarize DIR [DIR ...]
    mixnorm-exp cost [--device ...] [--iters N]

A run is a ``chainer.training.Trainer`` with an Evaluator, LogReport (``log.json``),
PrintReport, ProgressBar, PlotReport (``loss.png``, ``accuracy.png``), a snapshot every
epoch (``snapshot_epoch_*``, the newest kept) and, for MN runs or with ``--record``, an
:class:`~mixnorm_chainer.recorder.ActivationRecorder` (``recording.npz``). ``--resume``
restores the newest snapshot: model, optimizer, iterator position and the LogReport's entries,
so the log has no lost or duplicated epochs. ``setting.json`` records the setting and every
override. DCGAN settings (``dcgan-c10-BN``/``-MN``, Section 4.5) are trained by
:func:`mixnorm_chainer.gan.run` for ``--iterations`` updates with FID every ``--fid-interval``.
"""
import argparse
import json
import math
import os
import sys
import time

import chainer
import chainer.links as L
import numpy
from chainer import training
from chainer.training import extensions

from mixnorm_chainer import multi_node, plotting, registry
from mixnorm_chainer.datasets import augment, get_dataset
from mixnorm_chainer.models import CifarCNN, DenseNet, InceptionV3
from mixnorm_chainer.recorder import ActivationRecorder

ACC_KEY = plotting.ACC_KEY


# -- building blocks ---------------------------------------------------------------------

def build_model(setting, n_classes, seed=None, mn_layers=None):
    """The setting's network (MN where the setting says), wrapped in ``L.Classifier``."""
    layers = setting.mn_layers if mn_layers is None else mn_layers
    kw = dict(n_classes=n_classes, mn_layers=layers, n_components=setting.n_components,
              em_iters=setting.em_iters, seed=seed)
    if setting.gbn_layers:                # generalized batch normalization (gbn.py)
        if setting.model != 'cifar_cnn':
            raise ValueError('gbn_layers is supported for the cifar_cnn model only; got '
                             '{!r}'.format(setting.model))
        kw.update(gbn_layers=setting.gbn_layers, gbn_options=dict(
            deviation=setting.gbn_deviation, alpha=setting.gbn_alpha))
    if setting.model == 'cifar_cnn':
        net = CifarCNN(**kw)
    elif setting.model == 'inception_v3':
        net = InceptionV3(**kw)
    elif setting.model.startswith('densenet'):
        net = DenseNet(depth=int(setting.model[len('densenet'):]), growth_rate=12, **kw)
    else:
        raise ValueError('unknown model {!r}'.format(setting.model))
    return L.Classifier(net)


def build_optimizer(setting, model):
    if setting.optimizer == 'rmsprop':
        opt = chainer.optimizers.RMSprop(lr=setting.lr, alpha=0.9, eps=1e-8)
    elif setting.optimizer == 'nesterov':
        opt = chainer.optimizers.NesterovAG(lr=setting.lr, momentum=0.9)
    else:
        raise ValueError('unknown optimizer {!r}'.format(setting.optimizer))
    opt.setup(model)
    if setting.weight_decay:
        opt.add_hook(chainer.optimizer_hooks.WeightDecay(setting.weight_decay))
    return opt


def schedule_extension(setting, epochs, iters_per_epoch):
    """The learning-rate policy as a trainer extension and its trigger."""
    kind = setting.schedule[0]
    if kind == 'exponential':
        _, rate, every = setting.schedule
        return extensions.ExponentialShift('lr', rate), (every, 'epoch')
    if kind == 'step':
        _, factor, fractions = setting.schedule
        total = epochs * iters_per_epoch
        steps = sorted({max(1, int(round(f * total))) for f in fractions})
        return extensions.MultistepShift('lr', factor, steps, setting.lr), (1, 'iteration')
    raise ValueError('unknown schedule {!r}'.format(setting.schedule))


def run_epochs(setting, epochs=None, scale=None):
    if epochs is not None and scale is not None:
        raise ValueError('give --epochs or --scale, not both')
    if epochs is None:
        epochs = setting.epochs if scale is None else max(1, int(round(setting.epochs * scale)))
    if epochs < 1:
        raise ValueError('epochs must be >= 1; got {}'.format(epochs))
    return epochs


# -- run -----------------------------------------------------------------------------------

def run(args, extra_extensions=()):
    """Train one setting; ``extra_extensions``: (extension, trigger) pairs (for tests)."""
    setting = registry.get(args.name)
    communicator = getattr(args, 'communicator', None)
    if setting.model == 'dcgan' and communicator:
        raise ValueError('--communicator is not supported for the DCGAN settings')
    if setting.model == 'dcgan':          # Section 4.5: GAN training (mixnorm_chainer.gan)
        from mixnorm_chainer import gan
        return gan.run(args, setting, extra_extensions)
    dataset = args.dataset or setting.dataset
    epochs = run_epochs(setting, args.epochs, args.scale)
    batch_size = args.batch_size or setting.batch_size
    out = output_dir(args.out, setting, dataset)
    # ChainerMN (under mpiexec): one rank per process; batch_size is the global mini-batch.
    comm = multi_node.create_communicator(communicator) if communicator else None
    rank0 = comm is None or comm.rank == 0
    rank_batch = multi_node.per_rank_batch(batch_size, comm)
    device = chainer.get_device(multi_node.rank_device(args.device, comm))
    device.use()

    train, test, n_classes = get_dataset(dataset, data_dir=args.data_dir,
                                         size=args.input_size, seed=args.seed)
    if args.train_limit:
        train = train[:args.train_limit]
    if args.test_limit:
        test = test[:args.test_limit]
    if comm is not None:                  # each rank gets an equal share
        import chainermn
        train = chainermn.scatter_dataset(train, comm, shuffle=True, seed=args.seed)
        test = chainermn.scatter_dataset(test, comm)
    rank_seed = args.seed + (0 if comm is None else comm.rank)
    if dataset != 'digits' and not args.no_augment:
        train = augment(train, pad=4, flip=True, seed=rank_seed)

    numpy.random.seed(args.seed)          # chainer's initializers draw from numpy's RNG
    model = build_model(setting, n_classes, seed=args.seed)
    if comm is not None and args.sync_norm:
        model = multi_node.synchronize_normalization(model, comm)
    model.to_device(device)
    optimizer = build_optimizer(setting, model)
    if comm is not None:
        optimizer = chainermn.create_multi_node_optimizer(optimizer, comm)
    order = chainer.iterators.ShuffleOrderSampler(numpy.random.RandomState(rank_seed))
    train_iter = chainer.iterators.SerialIterator(train, rank_batch, order_sampler=order)
    test_iter = chainer.iterators.SerialIterator(test, args.test_batch_size, repeat=False,
                                                 shuffle=False)
    updater = training.StandardUpdater(train_iter, optimizer, device=device)
    trainer = training.Trainer(updater, (epochs, 'epoch'), out=out)
    iters_per_epoch = int(math.ceil(len(train) / rank_batch))

    evaluator = extensions.Evaluator(test_iter, model, device=device)
    if comm is not None:
        evaluator = chainermn.create_multi_node_evaluator(evaluator, comm)
    trainer.extend(evaluator)
    shift, trigger = schedule_extension(setting, epochs, iters_per_epoch)
    trainer.extend(shift, trigger=trigger)
    snapshot = 'snapshot_epoch_{.updater.epoch}' + ('' if comm is None
                                                    else '_rank{}'.format(comm.rank))
    trainer.extend(extensions.snapshot(filename=snapshot, n_retains=1, autoload=args.resume),
                   trigger=(1, 'epoch'))
    for extension, trigger in extra_extensions:
        trainer.extend(extension, trigger=trigger)
    if comm is not None:
        trainer.extend(multi_node.check_resumed_ranks(comm), trigger=(1, 'epoch'))
    if not rank0:                         # logs, reports and recordings: rank 0 only
        return _run_trainer(trainer, comm)
    trainer.extend(extensions.observe_lr())
    trainer.extend(extensions.LogReport(trigger=(1, 'epoch'), filename='log.json'))
    trainer.extend(extensions.PrintReport(
        ['epoch', 'iteration', 'main/loss', 'main/accuracy', 'validation/main/loss', ACC_KEY,
         'lr', 'elapsed_time']))
    if extensions.PlotReport.available():
        trainer.extend(extensions.PlotReport(['main/loss', 'validation/main/loss'], 'epoch',
                                             filename='loss.png'))
        trainer.extend(extensions.PlotReport(['main/accuracy', ACC_KEY], 'epoch',
                                             filename='accuracy.png'))
    if not args.no_progress:
        trainer.extend(extensions.ProgressBar(update_interval=10))

    if args.record or setting.is_mn:
        fractions = tuple(float(f) for f in args.record_fractions.split(','))
        trainer.extend(ActivationRecorder(model.predictor, args.record or (), fractions,
                                          seed=args.seed))

    ranks = 1 if comm is None else comm.size
    record = {'setting': setting.to_dict(), 'dataset': dataset, 'epochs': epochs,
              'batch_size': batch_size, 'iterations_per_epoch': iters_per_epoch,
              'n_train': len(train) * ranks, 'n_test': len(test) * ranks, 'seed': args.seed,
              'device': str(device), 'argv': sys.argv, 'versions': software_versions()}
    if comm is not None:
        record['communicator'] = {'name': communicator, 'size': comm.size,
                                  'sync_norm': bool(args.sync_norm)}
    with open(os.path.join(out, 'setting.json'), 'w') as f:
        json.dump(record, f, indent=1)
    print('{}: {} on {} ({} train / {} test), {} epochs x {} iterations, batch {}{}, out {}'
          .format(setting.name, setting.model, dataset, record['n_train'], record['n_test'],
                  epochs, iters_per_epoch, batch_size,
                  '' if comm is None else ' ({} per rank x {} ranks{})'.format(
                      rank_batch, comm.size, '' if args.sync_norm else ', unsynchronized'),
                  out), flush=True)
    return _run_trainer(trainer, comm)


def _run_trainer(trainer, comm):
    try:
        trainer.run()
    except Exception:
        if comm is not None and comm.size > 1:
            # the other ranks may wait in a collective for this one: end them all
            import traceback
            traceback.print_exc()
            comm.mpi_comm.Abort(1)
        raise
    return trainer.out


def output_dir(out, setting, dataset):
    """``out``, or ``results/NAME`` (``results/NAME@DATASET`` for another dataset); created."""
    out = out or os.path.join('results', setting.name if dataset == setting.dataset
                              else '{}@{}'.format(setting.name, dataset))
    os.makedirs(out, exist_ok=True)
    return out


def software_versions():
    """The versions a run's ``setting.json`` records."""
    return {'chainer': chainer.__version__, 'numpy': numpy.__version__,
            'python': sys.version.split()[0]}


# -- summarize -----------------------------------------------------------------------------

def load_run(directory):
    """setting.json of a run as a dict, with its evaluated log entries under ``log``."""
    run = plotting.load_run(directory)
    return dict(run.record, log=run.log, dir=run.dir)


def max_accuracy_at(log, epochs, fractions=(0.25, 0.5, 0.75, 1.0)):
    """Maximum test accuracy (%) over the epochs up to each fraction (Tables 2, 4)."""
    out = []
    for frac in fractions:
        limit = int(math.ceil(frac * epochs - 1e-9))
        accs = [e[ACC_KEY] for e in log if e['epoch'] <= limit]
        out.append(100 * max(accs) if accs else None)
    return out


def steps_to_reach(log, target):
    """First iteration at which test accuracy (%) >= target (Tables 3, 5, 6); entries without a
    test accuracy are skipped."""
    for e in log:
        if ACC_KEY in e and 100 * e[ACC_KEY] >= target - 1e-9:
            return e['iteration']
    return None


def format_value(v, spec='{:.2f}'):
    """``spec.format(v)``, or '-' for a missing value (the summary tables)."""
    return '-' if v is None else spec.format(v)


_fmt = format_value


def summarize(directories, out=None):
    """Print Tables 2/4 and 3/5/6 from run directories, next to the paper's numbers."""
    out = out or sys.stdout
    runs = [load_run(d) for d in directories]
    gan_dirs = [r['dir'] for r in runs if r['setting']['model'] == 'dcgan']
    if gan_dirs:                          # Section 4.5: FID instead of accuracy
        from mixnorm_chainer import gan
        gan.summarize(gan_dirs, out=out)
        runs = [r for r in runs if r['setting']['model'] != 'dcgan']
    groups = {}
    for r in runs:
        key = (r['setting']['table'], r['dataset'])
        groups.setdefault(key, []).append(r)
    for (table, dataset), members in sorted(groups.items()):
        print('\n{} on {}: maximum test accuracy (%) after 25/50/75/100% of the epochs'
              ' (ours | paper)'.format(table, dataset), file=out)
        print('{:<22} {:>6} {:>31} | {}'.format('run', 'epochs', 'ours', 'paper'), file=out)
        for r in members:
            ours = max_accuracy_at(r['log'], r['epochs'])
            paper = r['setting']['paper'].get('acc_at')
            print('{:<22} {:>6} {:>31} | {}'.format(
                r['setting']['name'], len(r['log']), ' '.join(_fmt(v, '{:7.2f}') for v in ours),
                ' '.join(_fmt(v, '{:7.2f}') for v in paper) if paper else '-'), file=out)
        # baselines may sit in another table's group (GBN rows -> Table 2's BN-2)
        by_name = {r['setting']['name']: r for r in runs if r['dataset'] == dataset}
        rows = []
        for r in members:
            base = r['setting']['baseline'] or r['setting']['name']
            if base not in by_name or not by_name[base]['log']:
                continue
            target = 100 * max(e[ACC_KEY] for e in by_name[base]['log'])
            steps = steps_to_reach(r['log'], target)
            best = 100 * max(e[ACC_KEY] for e in r['log']) if r['log'] else None
            rows.append((r['setting']['name'], base, target, steps, best, r['setting']['paper']))
        if rows:
            print('\nsteps to reach the baseline\'s maximum accuracy (ours | paper)', file=out)
            print('{:<22} {:<22} {:>8} {:>8} {:>8} | {:>8} {:>8}'.format(
                'run', 'baseline', 'target', 'steps', 'max acc', 'steps', 'max acc'), file=out)
            for name, base, target, steps, best, paper in rows:
                print('{:<22} {:<22} {:>8} {:>8} {:>8} | {:>8} {:>8}'.format(
                    name, base, _fmt(target), _fmt(steps, '{:d}'), _fmt(best),
                    _fmt(paper.get('steps_to_baseline'), '{:.3g}'),
                    _fmt(paper.get('max_acc'))), file=out)
    return runs


# -- cost (Table 7) ------------------------------------------------------------------------

def cost(args, out=None):
    """Table 7: iterations/sec of a DenseNet training step, BN vs MN (last BN) with K=2..5."""
    out = out or sys.stdout
    device = chainer.get_device(args.device)
    device.use()
    results = []
    print('Table 7 on {}: DenseNet training iterations/sec, MN replacing the last BN '
          '(input {}x{}, {} timed iterations after {} warm-up)'.format(
              device, args.input_size, args.input_size, args.iters, args.warmup), file=out)
    print('{:<6} {:>2} {:>6} {:>5} {:>10} {:>14}'.format(
        'model', 'K', 'batch', 'dim', 'it/s', 'paper (TitanX)'), file=out)
    for (batch, dim), paper in registry.TABLE7.items():
        if args.batch_sizes and batch not in args.batch_sizes:
            continue
        depth = registry.TABLE7_DEPTH[dim] if not args.depth else args.depth
        for K in args.components:
            setting = registry.Setting(
                name='cost', table='Table 7', dataset='cifar100',
                model='densenet{}'.format(depth), label='BN' if K == 1 else 'MN',
                mn_layers=() if K == 1 else ('final',), n_components=max(K, 1), em_iters=2,
                optimizer='nesterov', lr=0.1, weight_decay=1e-4)
            numpy.random.seed(0)
            model = build_model(setting, 100, seed=0)
            model.to_device(device)
            opt = build_optimizer(setting, model)
            xp = device.xp
            x = xp.asarray(numpy.random.default_rng(0).normal(
                size=(batch, 3, args.input_size, args.input_size)).astype(numpy.float32))
            t = xp.asarray(numpy.random.default_rng(1).integers(0, 100, batch).astype(
                numpy.int32))
            for _ in range(args.warmup):
                opt.update(model, x, t)
            _sync(device)
            start = time.perf_counter()
            for _ in range(args.iters):
                opt.update(model, x, t)
            _sync(device)
            rate = args.iters / (time.perf_counter() - start)
            results.append({'depth': depth, 'batch': batch, 'dim': dim, 'K': K, 'its': rate,
                            'paper': paper.get(K)})
            print('{:<6} {:>2} {:>6} {:>5} {:>10.3f} {:>14}'.format(
                'BN' if K == 1 else 'MN', K, batch, dim, rate, _fmt(paper.get(K))), file=out,
                flush=True)
    return results


def _sync(device):
    if device.xp is not numpy:
        device.device.synchronize()


# -- command line --------------------------------------------------------------------------

def build_parser():
    p = argparse.ArgumentParser(prog='mixnorm-exp', description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='command', required=True)

    ls = sub.add_parser('list', help='the registered settings')
    ls.add_argument('--table', help='only settings of this table (e.g. "Table 2")')

    r = sub.add_parser('run', help='train one setting')
    r.add_argument('name', help='setting name (see `mixnorm-exp list`)')
    r.add_argument('--dataset', choices=('cifar10', 'cifar100', 'digits'),
                   help="override the setting's dataset (digits: offline, small)")
    r.add_argument('--data-dir', help='folder with cifar-10-python.tar.gz / '
                   'cifar-100-python.tar.gz or their extracted folders')
    r.add_argument('--epochs', type=int, help='run this many epochs (the first part of the '
                   "paper's schedule; step drops scale with the run)")
    r.add_argument('--scale', type=float, help="epochs = round(scale * paper's epochs)")
    r.add_argument('--batch-size', type=int, help="override the paper's batch size")
    r.add_argument('--input-size', type=int, default=None,
                   help='image side for digits (default 16)')
    r.add_argument('--train-limit', type=int, help='use only the first N training images')
    r.add_argument('--test-limit', type=int, help='use only the first N test images')
    r.add_argument('--test-batch-size', type=int, default=500)
    r.add_argument('--no-augment', action='store_true', help='no crop/flip augmentation')
    r.add_argument('--device', default='@numpy', help="chainer device: '@numpy', '@cupy:0'")
    r.add_argument('--seed', type=int, default=0)
    r.add_argument('--out', help='output folder (default results/NAME)')
    r.add_argument('--resume', action='store_true', help='continue from the newest snapshot')
    r.add_argument('--no-progress', action='store_true')
    r.add_argument('--communicator', choices=multi_node.COMMUNICATORS,
                   help='data-parallel ChainerMN training, launched as `mpiexec -n P '
                   'mixnorm-exp run ...` (--batch-size stays the global mini-batch)')
    r.add_argument('--no-sync-norm', dest='sync_norm', action='store_false',
                   help='with --communicator: each rank normalizes (BN and MN) its own share '
                   'of the batch instead of the global batch')
    r.add_argument('--record', nargs='+', metavar='LAYER',
                   help='capture the input of these normalization layers (e.g. conv2) and, for '
                   'MN layers, their fitted mixture into recording.npz (Figures 1, 8); MN '
                   'runs always record their per-iteration component counts (Figure 9)')
    r.add_argument('--record-fractions', default='0.2,0.4,0.6,0.8,1.0',
                   help='fractions of training at which to capture (comma-separated)')
    g = r.add_argument_group('GAN settings (dcgan-*, Section 4.5)')
    g.add_argument('--iterations', type=int, help="generator updates (paper: 100000)")
    g.add_argument('--fid-interval', type=int, help='updates between FID evaluations and '
                   'sample grids (paper: 10000)')
    g.add_argument('--fid-samples', type=int, default=10000,
                   help='generated images per FID (default %(default)s)')
    g.add_argument('--fid-real-samples', type=int,
                   help='real (training) images for the FID statistics (default: all)')
    g.add_argument('--fid-extractor', choices=('inception', 'small'), default='inception',
                   help="FID features: 'inception' (comparable to published FIDs; needs "
                   "--inception-weights) or 'small' (offline stand-in, not comparable)")
    g.add_argument('--inception-weights', metavar='NPZ',
                   help='FID Inception weights converted with `python -m mixnorm_chainer.fid '
                   'convert pt_inception-2015-12-05-6726825d.pth NPZ`')
    g.add_argument('--fid-batch-size', type=int, default=100)
    g.add_argument('--width', type=int, default=512,
                   help="DCGAN channels ch (generator's first map, discriminator's last conv; "
                   'default %(default)s as chainer-gan-lib)')
    g.add_argument('--log-interval', type=int,
                   help='updates per log entry (default gcd(fid interval, 100))')
    g.add_argument('--snapshot-interval', type=int,
                   help='updates between snapshots (default: the FID interval)')

    s = sub.add_parser('summarize', help="print the paper's tables from run folders")
    s.add_argument('dirs', nargs='+')

    c = sub.add_parser('cost', help='Table 7: DenseNet iterations/sec, BN vs MN')
    c.add_argument('--device', default='@numpy')
    c.add_argument('--iters', type=int, default=10)
    c.add_argument('--warmup', type=int, default=2)
    c.add_argument('--input-size', type=int, default=32)
    c.add_argument('--batch-sizes', type=int, nargs='*', help='subset of 64 128')
    c.add_argument('--components', type=int, nargs='*', default=[1, 2, 3, 4, 5],
                   help='K values; 1 = BN')
    c.add_argument('--depth', type=int, help='override the DenseNet depth (for quick runs)')
    return p


def _gbn(s):
    """'GBN cvar(0.75): conv3' for a GBN setting's layer column, '-' for the all-BN ones."""
    if not s.gbn_layers:
        return '-'
    alpha = '' if s.gbn_alpha is None else '({:g})'.format(s.gbn_alpha)
    return 'GBN {}{}: {}'.format(s.gbn_deviation, alpha, ','.join(s.gbn_layers))


def list_settings(table=None, out=None):
    out = out or sys.stdout
    rows = [s for s in registry.SETTINGS.values() if table is None or s.table == table]
    print('{:<22} {:<12} {:<9} {:<13} {:<26} {:>2} {:>2} {:<9} {:>6} {:>7} {:>5} {:>4}'
          .format('name', 'table', 'data', 'model', 'MN or GBN layers', 'K', 'EM', 'optim', 'lr',
                  'wd', 'batch', 'ep'), file=out)
    for s in rows:
        print('{:<22} {:<12} {:<9} {:<13} {:<26} {:>2} {:>2} {:<9} {:>6g} {:>7g} {:>5} {:>4}'
              .format(s.name, s.table, s.dataset, s.model, ','.join(s.mn_layers) or _gbn(s),
                      s.n_components if s.is_mn else '-', s.em_iters if s.is_mn else '-',
                      s.optimizer, s.lr, s.weight_decay, s.batch_size,
                      s.epochs if s.iterations is None else '{:g}K'.format(s.iterations / 1e3)),
              file=out)
    return rows


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == 'list':
            list_settings(args.table)
        elif args.command == 'run':
            run(args)
        elif args.command == 'summarize':
            summarize(args.dirs)
        elif args.command == 'cost':
            cost(args)
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as e:
        print('mixnorm-exp: error: {}'.format(e.args[0] if e.args else e), file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
