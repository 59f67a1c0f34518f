"""Time of one DCGAN update (G and D Adam steps), DCGAN-BN vs DCGAN-MN, in one process.

BN and MN updates alternate (same data and z), so machine load affects both alike; prints the
median time of each and the median of the per-pair ratios MN/BN.

    python experiments/dcgan_step_time.py [--size 16] [--width 64] [--batch 64] [--pairs 20]
    python experiments/dcgan_step_time.py --size 32 --width 512 --channels 3 --pairs 5  # paper
"""
# isort: off
import mixnorm_chainer  # noqa: F401  (first: chainer on numpy >= 2 needs _compat)
# isort: on
import argparse
import time

import chainer
import numpy

from mixnorm_chainer.models import Discriminator, Generator
from mixnorm_chainer.models.dcgan import PAPER_MN_LAYERS
from mixnorm_chainer.reproduce import gan


def build(mn_layers, args):
    numpy.random.seed(0)
    g = Generator(mn_layers=mn_layers, image_size=args.size, out_channels=args.channels,
                  ch=args.width, seed=0)
    d = Discriminator(image_size=args.size, in_channels=args.channels, ch=args.width)
    data = numpy.random.default_rng(0).uniform(
        -1, 1, (args.batch * 4, args.channels, args.size, args.size)).astype(numpy.float32)
    it = chainer.iterators.SerialIterator(data, args.batch, shuffle=False)
    return gan.GANUpdater(it, g, d, gan.make_adam(g), gan.make_adam(d), '@numpy')


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', type=int, default=16)
    p.add_argument('--width', type=int, default=64)
    p.add_argument('--channels', type=int, default=1)
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--pairs', type=int, default=20)
    p.add_argument('--warmup', type=int, default=2)
    args = p.parse_args()
    ups = {'BN': build((), args), 'MN': build(PAPER_MN_LAYERS, args)}
    times = {'BN': [], 'MN': []}
    reporter = chainer.reporter.Reporter()
    for i in range(args.warmup + args.pairs):
        for name, up in ups.items():
            with reporter.scope({}):
                start = time.perf_counter()
                up.update()
                t = time.perf_counter() - start
            if i >= args.warmup:
                times[name].append(t)
    bn, mn = numpy.asarray(times['BN']), numpy.asarray(times['MN'])
    print('DCGAN update, {}x{}x{}, width {}, batch {}, {} pairs: BN {:.3f} s, MN {:.3f} s '
          '(medians); MN/BN = {:.2f} (median of pair ratios), {:.2f} (ratio of minima)'.format(
              args.channels, args.size, args.size, args.width, args.batch, args.pairs,
              numpy.median(bn), numpy.median(mn), numpy.median(mn / bn), mn.min() / bn.min()))


if __name__ == '__main__':
    main()
