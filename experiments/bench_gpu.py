"""GPU speed of mixnorm-chainer, as ratios measured side by side in one run.

    python experiments/bench_gpu.py [--device @cupy:0] [--json bench_gpu.json] [--quick]

1. MN layer forward+backward vs chainer's ``L.BatchNormalization`` (each followed by ReLU;
   MN also with Eq. 40's fused ReLU) at 256 x 128 x 8 x 8 and 128 x 768 x 7 x 7 (goal: MN
   <= 2x BN), kernels on and off;
2. one EM iteration (E-step + M-step) on 16384 x 128 rows, K=3, vs the memory-bandwidth
   floor: the bytes it must move (read the rows for the E-step and for the M-step, write and
   read the responsibilities) divided by the device's peak bandwidth (goal: within 3x);
3. the MN layer step with each ``init`` (k-means++, AFK-MC², warm-started EM), side by side;
4. Table 7: DenseNet-20/40 training iterations/sec, BN vs MN (last BN) K=2..5 at batch 64
   and 128 (paper, TitanX: MN K=3 at 0.88 of BN; goal >= 0.90).

Timings alternate between the contenders (A B A B ...) and report the median of adjacent
ratios. ``--device @numpy --quick`` is the dry run CI uses.
"""
import argparse
import json
import statistics
import sys
import time

import numpy

# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy >= 2 support)
# isort: on
import chainer
import chainer.functions as F
import chainer.links as L

from mixnorm_chainer import MixtureNormalization, gmm
from mixnorm_chainer.reproduce import cost, runfolder


def alternate(a, b, device, repeats):
    """Median seconds of a and b, and the median ratio a/b over adjacent runs."""
    a()
    b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, times in ((a, ta), (b, tb)):
            runfolder.synchronize(device)
            start = time.perf_counter()
            fn()
            runfolder.synchronize(device)
            times.append(time.perf_counter() - start)
    return (statistics.median(ta), statistics.median(tb),
            statistics.median(x / y for x, y in zip(ta, tb)))


def layer_step(link, x, gy, relu_after):
    def step():
        v = chainer.Variable(x)
        y = link(v)
        if relu_after:
            y = F.relu(y)
        y.grad = gy
        y.backward()
    return step


def bench_layers(device, shapes, repeats):
    rows = []
    rng = numpy.random.default_rng(0)
    for shape in shapes:
        x = numpy.maximum(rng.normal(size=shape) + rng.choice([-1, 0.5, 2], size=(1, shape[1],
                                                                               1, 1)), 0)
        x = device.send((x * 2).astype(numpy.float32))
        gy = device.send(rng.normal(size=shape).astype(numpy.float32))
        bn = L.BatchNormalization(shape[1])
        bn.to_device(device)
        for fused in (False, True):
            for use in (True, False):
                mn = MixtureNormalization(shape[1], n_components=3, em_iters=2, seed=0,
                                          activation='relu' if fused else None)
                mn.to_device(device)
                with chainer.using_config('mixnorm_kernels', use):
                    t_mn, t_bn, ratio = alternate(layer_step(mn, x, gy, not fused),
                                                  layer_step(bn, x, gy, True), device, repeats)
                rows.append({'shape': list(shape), 'eq40_relu': fused, 'kernels': use,
                             'mn_ms': 1e3 * t_mn, 'bn_ms': 1e3 * t_bn, 'mn_over_bn': ratio})
                print('layer {:>16} {:<14} kernels {:<3}: MN {:8.3f} ms  BN+ReLU {:8.3f} ms  '
                      'MN/BN {:.2f} (goal <= 2)'.format(
                          'x'.join(map(str, shape)), 'Eq.40 ReLU' if fused else 'then ReLU',
                          'on' if use else 'off', 1e3 * t_mn, 1e3 * t_bn, ratio), flush=True)
    return rows


def bench_inits(device, shapes, repeats):
    """The MN layer step (kernels on, then ReLU) with each ``init`` (the paper's k-means++,
    AFK-MC², warm-started EM), timed in turn on the same input, against k-means++."""
    rows = []
    rng = numpy.random.default_rng(0)
    inits = ('kmeans++', 'afkmc2', 'previous')
    for shape in shapes:
        x = numpy.maximum(rng.normal(size=shape) + rng.choice([-1, 0.5, 2], size=(1, shape[1],
                                                                               1, 1)), 0)
        x = device.send((x * 2).astype(numpy.float32))
        gy = device.send(rng.normal(size=shape).astype(numpy.float32))
        steps = {}
        for init in inits:
            mn = MixtureNormalization(shape[1], n_components=3, em_iters=2, seed=0, init=init)
            mn.to_device(device)
            steps[init] = layer_step(mn, x, gy, True)
            steps[init]()                     # the first step seeds every layer
        times = {init: [] for init in inits}
        for _ in range(repeats):
            for init in inits:
                runfolder.synchronize(device)
                start = time.perf_counter()
                steps[init]()
                runfolder.synchronize(device)
                times[init].append(time.perf_counter() - start)
        base = times['kmeans++']
        for init in inits:
            ratio = statistics.median(t / b for t, b in zip(times[init], base))
            rows.append({'shape': list(shape), 'init': init,
                         'ms': 1e3 * statistics.median(times[init]), 'over_kmeans++': ratio})
            print('layer {:>16} init {:<9}: {:8.3f} ms  x{:.3f} of k-means++'.format(
                'x'.join(map(str, shape)), init, 1e3 * statistics.median(times[init]), ratio),
                flush=True)
    return rows


def peak_bandwidth(device):
    """Bytes/s from the device's memory clock and bus width (None on the CPU)."""
    if device.xp is numpy:
        return None
    props = device.xp.cuda.runtime.getDeviceProperties(device.device.id)
    return 2.0 * props['memoryClockRate'] * 1e3 * props['memoryBusWidth'] / 8


def bench_em(device, m, D, K, repeats):
    rng = numpy.random.default_rng(1)
    centres = rng.normal(scale=3, size=(K, D))
    X = device.send((centres[rng.integers(0, K, size=m)] + rng.normal(size=(m, D)))
                    .astype(numpy.float32))
    params = (device.send(numpy.full(K, 1.0 / K, numpy.float32)),
              device.send(centres.astype(numpy.float32)),
              device.send(numpy.ones((K, D), numpy.float32)))
    xp = device.xp

    def em_iteration():
        log_resp, _ = gmm.e_step(X, *params)
        gmm.m_step(X, None, xp.exp(log_resp), 1e-6)

    seconds = runfolder.median_seconds(em_iteration, device, repeats)
    floor_bytes = 4 * (2 * m * D + 2 * K * m)
    bandwidth = peak_bandwidth(device)
    floor = None if bandwidth is None else floor_bytes / bandwidth
    print('one EM iteration {}x{} K={}: {:.3f} ms; bandwidth floor {}{}'.format(
        m, D, K, 1e3 * seconds, '-' if floor is None else '{:.3f} ms'.format(1e3 * floor),
        '' if floor is None else ' -> {:.1f}x the floor (goal <= 3)'.format(seconds / floor)),
        flush=True)
    return {'rows': m, 'dim': D, 'K': K, 'ms': 1e3 * seconds, 'floor_bytes': floor_bytes,
            'peak_bandwidth': bandwidth, 'floor_ms': None if floor is None else 1e3 * floor,
            'over_floor': None if floor is None else seconds / floor}


def bench_table7(device, quick):
    args = argparse.Namespace(device=str(device), iters=2 if quick else 20,
                               warmup=1 if quick else 3, input_size=8 if quick else 32,
                               batch_sizes=[64] if quick else None, depth=7 if quick else None,
                               components=[1, 3] if quick else [1, 2, 3, 4, 5])
    results = cost.cost(args)
    by_config = {}
    for r in results:
        by_config.setdefault((r['depth'], r['batch']), {})[r['K']] = r['its']
    ratios = {}
    for (depth, batch), rates in sorted(by_config.items()):
        for K, rate in sorted(rates.items()):
            if K != 1 and 1 in rates:
                ratios['DenseNet-{} batch {} K={}'.format(depth, batch, K)] = rate / rates[1]
    for name, ratio in ratios.items():
        print('Table 7 {}: MN/BN iterations/sec {:.2f} (paper K=3: 0.88; goal >= 0.90)'.format(
            name, ratio))
    return {'results': results, 'mn_over_bn': ratios}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='@cupy:0')
    parser.add_argument('--json', default='bench_gpu.json')
    parser.add_argument('--quick', action='store_true', help='tiny sizes (the CI dry run)')
    args = parser.parse_args(argv)
    try:
        device = runfolder.get_device(args.device)
        device.use()
    except runfolder.RunError as e:
        print('bench_gpu: {}'.format(e), file=sys.stderr)
        return 2
    shapes = [(4, 8, 4, 4)] if args.quick else [(256, 128, 8, 8), (128, 768, 7, 7)]
    repeats = 2 if args.quick else 20
    report = {'device': str(device),
              'layers': bench_layers(device, shapes, repeats),
              'inits': bench_inits(device, shapes, repeats),
              'em': bench_em(device, *((256, 8, 3) if args.quick else (16384, 128, 3)), repeats),
              'table7': bench_table7(device, args.quick)}
    with open(args.json, 'w') as f:
        json.dump(report, f, indent=1, default=float)
    print('report written to {}'.format(args.json))
    return 0


if __name__ == '__main__':
    sys.exit(main())
