"""GBN: time per training step and per normalization layer, BN vs GBN (vs MN), measured
alternately in one process (the machine's load then affects every contender alike).

Usage: python experiments/gbn_step_time.py [--size 16] [--batch 64] [--repeats 7]
Prints the median over repeats (first repeat dropped as warm-up) and the ratio to BN.
"""
# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy 2 shim)
# isort: on
import argparse
import time

import chainer
import chainer.functions as F
import chainer.links as L
import numpy

from mixnorm_chainer import GeneralizedBatchNormalization, MixtureNormalization
from mixnorm_chainer.models import CifarCNN

VARIANTS = {
    'BN': dict(),
    'GBN mad': dict(gbn_layers=('conv3',), gbn_options=dict(deviation='mad')),
    'GBN cvar 0.75': dict(gbn_layers=('conv3',), gbn_options=dict(deviation='cvar', alpha=0.75)),
    'GBN cvar 0.25': dict(gbn_layers=('conv3',), gbn_options=dict(deviation='cvar', alpha=0.25)),
    'MN (K=3)': dict(mn_layers=('conv3',)),
}


def median_ms(times):
    return 1000 * float(numpy.median(times[1:]))


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--size', type=int, default=16)
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--repeats', type=int, default=7)
    args = p.parse_args()
    rng = numpy.random.default_rng(0)

    # (a) one layer, forward + backward, followed by ReLU: 256 x 128 x 8 x 8 (CIFAR conv3 input)
    x = rng.normal(size=(256, 128, 8, 8)).astype(numpy.float32)
    gy = rng.normal(size=x.shape).astype(numpy.float32)
    layers = {'BN': L.BatchNormalization(128), 'GBN std': GeneralizedBatchNormalization(128),
              'GBN mad': GeneralizedBatchNormalization(128, 'mad'),
              'GBN cvar 0.75': GeneralizedBatchNormalization(128, 'cvar', alpha=0.75),
              'MN (K=3)': MixtureNormalization(128, seed=0)}
    times = {k: [] for k in layers}
    for _ in range(args.repeats):
        for name, link in layers.items():
            xv = chainer.Variable(x)
            start = time.perf_counter()
            y = F.relu(link(xv))
            y.grad = gy
            y.backward()
            times[name].append(time.perf_counter() - start)
    base = median_ms(times['BN'])
    print('(a) layer fwd+bwd, 256x128x8x8 float32, then ReLU')
    for name, t in times.items():
        print('  {:<14} {:8.1f} ms  {:5.2f}x BN'.format(name, median_ms(t), median_ms(t) / base))

    # (b) CifarCNN training step (RMSprop), normalization at conv3 as in the registry rows
    xb = rng.normal(size=(args.batch, 3, args.size, args.size)).astype(numpy.float32)
    tb = rng.integers(0, 10, args.batch).astype(numpy.int32)
    setups = {}
    for name, kw in VARIANTS.items():
        numpy.random.seed(0)
        model = L.Classifier(CifarCNN(10, **kw))
        opt = chainer.optimizers.RMSprop(lr=0.01, alpha=0.9, eps=1e-8)
        opt.setup(model)
        setups[name] = (model, opt)
    times = {k: [] for k in setups}
    for _ in range(args.repeats):
        for name, (model, opt) in setups.items():
            start = time.perf_counter()
            opt.update(model, xb, tb)
            times[name].append(time.perf_counter() - start)
    base = median_ms(times['BN'])
    print('(b) CifarCNN training step, batch {}, {}x{} inputs, norm at conv3'.format(
        args.batch, args.size, args.size))
    for name, t in times.items():
        print('  {:<14} {:8.1f} ms  {:5.2f}x BN'.format(name, median_ms(t), median_ms(t) / base))


if __name__ == '__main__':
    main()
