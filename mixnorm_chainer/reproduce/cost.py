"""Table 7: iterations/sec of a DenseNet training step, BN vs MN (``mixnorm-exp cost``)."""
import sys
import time

import numpy

from mixnorm_chainer.reproduce import builders, registry, runfolder
from mixnorm_chainer.reproduce.runfolder import format_value


def densenet_final_channels(depth, growth_rate=12):
    """Channels at a DenseNet's final BN: 16 + 3 * ((depth - 4) // 3) * growth_rate."""
    return 16 + 3 * ((depth - 4) // 3) * growth_rate


def cost(args, out=None):
    """Table 7: iterations/sec of a DenseNet training step, BN vs MN (last BN) with K=2..5.

    With ``--depth`` the rows are the given depth's network (its own final channel count in the
    dim column) for each batch size, without the paper's numbers (they are for other
    networks)."""
    out = out or sys.stdout
    device = runfolder.get_device(args.device)
    device.use()
    configs = _configs(args.depth, args.batch_sizes)
    print('Table 7 on {}: DenseNet training iterations/sec, MN replacing the last BN '
          '(input {}x{}, {} timed iterations after {} warm-up){}'.format(
              device, args.input_size, args.input_size, args.iters, args.warmup,
              '' if not args.depth else '; DenseNet-{} (--depth): the paper\'s numbers are '
              'for DenseNet-20/40 and are not shown'.format(args.depth)), file=out)
    print('{:<6} {:>2} {:>6} {:>5} {:>10} {:>14}'.format(
        'model', 'K', 'batch', 'dim', 'it/s', 'paper (TitanX)'), file=out)
    results = []
    for batch, dim, depth, paper in configs:
        for K in args.components:
            rate = iterations_per_second(depth, K, batch, args.input_size, device, args.iters,
                                         args.warmup)
            results.append({'depth': depth, 'batch': batch, 'dim': dim, 'K': K, 'its': rate,
                            'paper': paper.get(K)})
            print('{:<6} {:>2} {:>6} {:>5} {:>10.3f} {:>14}'.format(
                'BN' if K == 1 else 'MN', K, batch, dim, rate, format_value(paper.get(K))),
                file=out, flush=True)
    return results


def _configs(depth=None, batch_sizes=None):
    """``[(batch, dim, depth, {K: paper it/s})]``: Table 7's, or with ``depth`` that network at
    Table 7's batch sizes (no paper numbers); only ``batch_sizes`` when given."""
    if depth:
        batches = sorted({b for b, _ in registry.TABLE7})
        configs = [(b, densenet_final_channels(depth), depth, {}) for b in batches]
    else:
        configs = [(b, dim, registry.TABLE7_DEPTH[dim], paper)
                   for (b, dim), paper in registry.TABLE7.items()]
    configs = [c for c in configs if not batch_sizes or c[0] in batch_sizes]
    if not configs:
        raise runfolder.RunError('--batch-sizes {}: Table 7 has batch sizes {}'.format(
            ' '.join(map(str, batch_sizes)), ' '.join(
                str(b) for b in sorted({b for b, _ in registry.TABLE7}))))
    return configs


def iterations_per_second(depth, K, batch, input_size, device, iters, warmup):
    """Training steps per second of DenseNet-``depth`` (MN with ``K`` components at its last
    normalization; K = 1: BN) on a fixed random batch, after ``warmup`` steps."""
    setting = registry.Setting(
        name='cost', table='Table 7', dataset='cifar100',
        model='densenet{}'.format(depth), label='BN' if K == 1 else 'MN',
        mn_layers=() if K == 1 else ('final',), n_components=max(K, 1), em_iters=2,
        optimizer='nesterov', lr=0.1, weight_decay=1e-4)
    with runfolder.seeded_numpy_random(0):      # chainer's initializers draw from it
        model = builders.build_model(setting, 100, seed=0)
    model.to_device(device)
    opt = builders.build_optimizer(setting, model)
    xp = device.xp
    x = xp.asarray(numpy.random.default_rng(0).normal(
        size=(batch, 3, input_size, input_size)).astype(numpy.float32))
    t = xp.asarray(numpy.random.default_rng(1).integers(0, 100, batch).astype(numpy.int32))
    for _ in range(warmup):
        opt.update(model, x, t)
    runfolder.synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        opt.update(model, x, t)
    runfolder.synchronize(device)
    return iters / (time.perf_counter() - start)
