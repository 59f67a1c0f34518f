"""DenseNet-40 with Nesterov at the paper's lr 0.1: BN vs MN, first steps and gradient scale.

Reproduces the README's "DenseNet with MN and Nesterov at lr 0.1" numbers on offline digits:
the training loss of the first ``--steps`` updates (batch 64, momentum 0.9, wd 1e-4) for BN and
for MN at the final BN with several options, and the gradient norm at initialization.

    python experiments/densenet_nag_check.py [--size 16|32] [--depth 40] [--steps 12]
"""
import argparse

import numpy

# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy >= 2 support)
# isort: on
import chainer
import chainer.links as L

from mixnorm_chainer.datasets import get_digits
from mixnorm_chainer.models import DenseNet

VARIANTS = (((), {}), (('final',), {'n_components': 5}), (('final',), {'n_components': 3}),
            (('final',), {'n_components': 5, 'min_weight': 0.05}),
            (('trans1', 'trans2', 'final'), {'n_components': 5}))


def build(depth, mn_layers, options):
    numpy.random.seed(0)
    return L.Classifier(DenseNet(depth, 12, 100, mn_layers=mn_layers, em_iters=2, seed=0,
                                 **options))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', type=int, default=16)
    p.add_argument('--depth', type=int, default=40)
    p.add_argument('--steps', type=int, default=12)
    p.add_argument('--lr', type=float, default=0.1)
    args = p.parse_args(argv)
    train, _ = get_digits(args.size)
    X = numpy.stack([image for image, _ in train])
    T = numpy.array([label for _, label in train])
    for mn_layers, options in VARIANTS:
        model = build(args.depth, mn_layers, options)
        loss = model(X[:64], T[:64])
        model.cleargrads()
        loss.backward()
        grad = numpy.sqrt(sum(float((p.grad ** 2).sum()) for p in model.params()))
        model = build(args.depth, mn_layers, options)
        opt = chainer.optimizers.NesterovAG(lr=args.lr, momentum=0.9)
        opt.setup(model)
        opt.add_hook(chainer.optimizer_hooks.WeightDecay(1e-4))
        order = numpy.random.RandomState(0)
        losses = []
        for _ in range(args.steps):
            idx = order.choice(len(T), 64, replace=False)
            opt.update(model, X[idx], T[idx])
            losses.append(float(model.loss.array))
        print('{:<28} {:<36} |grad| at init {:6.2f}  losses {}'.format(
            ','.join(mn_layers) or 'BN', str(options), grad,
            ' '.join('{:.2f}'.format(v) for v in losses)), flush=True)


if __name__ == '__main__':
    main()
