"""Small-batch study: time per training step of the CifarCNN rows BN-2, MN-2, GN-2, MGN1-2 and
MGN-2, measured alternately in one process (the machine's load then affects every variant alike).

The models and optimizers are the rows' own (``registry.get`` + ``builders``), on random
16x16 digits-sized inputs, 10 classes. Per batch size, every repeat times one RMSprop update
of each variant in turn; the first repeat is dropped as warm-up and the median of the others is
printed, with the ratios MGN1/GN, MGN/GN, MGN/MN, MN/BN and GN/BN.

Usage: python experiments/group_norm_step_time.py [--batches 2,8,64] [--repeats 9] [--size 16]
"""
# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy 2 shim)
# isort: on
import argparse
import time

import numpy

from mixnorm_chainer.reproduce import builders, registry

ROWS = {'BN': 'cnn-c10-BN-2', 'MN': 'cnn-c10-MN-2', 'GN': 'cnn-c10-GN-2',
        'MGN1': 'cnn-c10-MGN1-2', 'MGN': 'cnn-c10-MGN-2'}
RATIOS = (('MGN1', 'GN'), ('MGN', 'GN'), ('MGN', 'MN'), ('MN', 'BN'), ('GN', 'BN'))


def step_times(batch, size, repeats, rng):
    x = rng.normal(size=(batch, 3, size, size)).astype(numpy.float32)
    t = rng.integers(0, 10, batch).astype(numpy.int32)
    setups = {}
    for label, name in ROWS.items():
        setting = registry.get(name)
        model = builders.build_model(setting, 10, seed=0)
        setups[label] = (model, builders.build_optimizer(setting, model))
    times = {label: [] for label in setups}
    for _ in range(repeats):
        for label, (model, opt) in setups.items():
            start = time.perf_counter()
            opt.update(model, x, t)
            times[label].append(time.perf_counter() - start)
    return {label: float(numpy.median(v[1:])) for label, v in times.items()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--batches', default='2,8,64')
    p.add_argument('--repeats', type=int, default=9)
    p.add_argument('--size', type=int, default=16)
    args = p.parse_args()
    rng = numpy.random.default_rng(0)
    head = '{:>5} ' + ' '.join(['{:>8}'] * len(ROWS)) + ' ' + ' '.join(['{:>9}'] * len(RATIOS))
    print('CifarCNN training step (RMSprop), {}x{} inputs, ms per step (median of {} repeats '
          'after a warm-up), and ratios'.format(args.size, args.size, args.repeats - 1))
    print(head.format('batch', *ROWS, *('{}/{}'.format(a, b) for a, b in RATIOS)))
    for batch in [int(b) for b in args.batches.split(',')]:
        med = step_times(batch, args.size, args.repeats, rng)
        print(('{:>5} ' + ' '.join(['{:8.1f}'] * len(ROWS)) + ' '
               + ' '.join(['{:9.2f}'] * len(RATIOS))).format(
            batch, *(1000 * med[k] for k in ROWS), *(med[a] / med[b] for a, b in RATIOS)),
            flush=True)


if __name__ == '__main__':
    main()
