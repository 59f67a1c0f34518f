"""``mixnorm-demo``: CIFAR CNN with BN vs MN at conv3, side by side, on real offline data.

Table 2's BN-2 / MN-2 setting (RMSprop with the squared-gradient decay 0.9 as "momentum",
lr 0.01, weight decay 2e-5, lr x0.93 every 2 epochs; MN at conv3 with K=3, EM iter. 2), scaled
to what 2 CPU cores do in a few minutes: scikit-learn's handwritten digits (1437 train / 360
test) upsampled to 16x16 and repeated to 3 channels, batch 64, 15 epochs. Both models start
from the same seed and see the same batches. The two runs are ``mixnorm-exp run cnn-c10-BN-2``
and ``cnn-c10-MN-2`` with ``--dataset digits --batch-size 64 --epochs 15`` and the same seed
(same initialization, batch order and MN draws, hence the same logs), so a ``--seeds`` run of
those settings extends the demo's seed.

Prints test accuracy per epoch for both, the best BN accuracy, and the steps (gradient updates)
each model needs to first reach it (Table 3's measure), in words, for this one seed; writes
``summary.json`` and each run's chainer ``log.json`` under ``--out``. On a terminal chainer's
progress bar is shown; off one (a log file, a pipe) only plain lines, as ``mixnorm-exp run``.
"""
import argparse
import json
import os
import sys
import time

import chainer
import chainer.links as L
from chainer import training
from chainer.training import extensions

from mixnorm_chainer.models import CifarCNN
from mixnorm_chainer.reproduce import runfolder, seeds
from mixnorm_chainer.reproduce.datasets import get_digits


def steps_to_reach(log, target):
    """The first logged iteration whose test accuracy is >= target (a fraction), or None."""
    return seeds.first_reach(log, 100 * target)


def train_one(name, mn_layers, args, train, test):
    """Train one CifarCNN with chainer.training; returns its LogReport entries."""
    with runfolder.seeded_numpy_random(args.seed):  # chainer's initializers draw from it
        model = L.Classifier(CifarCNN(10, mn_layers=mn_layers, n_components=args.n_components,
                                      em_iters=args.em_iters, seed=args.seed))
    optimizer = chainer.optimizers.RMSprop(lr=args.lr, alpha=0.9)
    optimizer.setup(model)
    optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(args.weight_decay))
    order = runfolder.ResumableShuffle(args.seed)     # mixnorm-exp run's batch order
    train_iter = chainer.iterators.SerialIterator(train, args.batch_size, order_sampler=order)
    test_iter = chainer.iterators.SerialIterator(test, len(test), repeat=False, shuffle=False)
    updater = training.StandardUpdater(train_iter, optimizer)
    out = os.path.join(args.out, name)
    trainer = training.Trainer(updater, (args.epochs, 'epoch'), out=out)
    trainer.extend(extensions.Evaluator(test_iter, model))
    trainer.extend(extensions.ExponentialShift('lr', 0.93), trigger=(2, 'epoch'))
    trainer.extend(extensions.observe_lr())
    trainer.extend(extensions.LogReport(trigger=(1, 'epoch'), filename='log.json'))
    add_printing(trainer, args.no_progress)
    print(f'== {name} (mn_layers={list(mn_layers)}) ==', flush=True)
    trainer.run()
    with open(os.path.join(out, 'log.json')) as f:
        return json.load(f)


def add_printing(trainer, no_progress=False, interactive=None):
    """PrintReport and, on a terminal only, the progress bar (as ``mixnorm-exp run`` does):
    off a terminal (a log file, a pipe) plain lines without ANSI escape codes."""
    if interactive is None:
        interactive = runfolder.interactive()
    trainer.extend(extensions.PrintReport(
        ['epoch', 'iteration', 'main/loss', 'main/accuracy', 'validation/main/accuracy', 'lr',
         'elapsed_time'], out=sys.stdout if interactive else runfolder.PlainStdout()))
    if interactive and not no_progress:
        trainer.extend(extensions.ProgressBar(update_interval=5, out=sys.stdout))


def summarize(logs):
    """Per-epoch accuracies, best accuracies and steps to BN's best (Table 3's measure)."""
    bn_best = max(e['validation/main/accuracy'] for e in logs['BN'])
    summary = {'bn_best_accuracy': bn_best, 'runs': {}}
    for name, log in logs.items():
        acc = [e['validation/main/accuracy'] for e in log]
        summary['runs'][name] = {
            'accuracy_per_epoch': acc,
            'best_accuracy': max(acc),
            'steps_to_bn_best': steps_to_reach(log, bn_best),
            'total_steps': log[-1]['iteration'],
            'elapsed_time': log[-1]['elapsed_time'],
        }
    bn_steps = summary['runs']['BN']['steps_to_bn_best']
    mn_steps = summary['runs']['MN']['steps_to_bn_best']
    summary['mn_step_reduction'] = (None if mn_steps is None
                                    else 1.0 - mn_steps / float(bn_steps))
    return summary


def comparison_text(summary):
    """What this one run shows about the steps to BN's best, as a person would say it."""
    runs = summary['runs']
    bn, mn = runs['BN']['steps_to_bn_best'], runs['MN']['steps_to_bn_best']
    seed = summary.get('config', {}).get('seed')
    this = 'This run' if seed is None else f'This run (seed {seed})'
    if mn is None:
        return (f"{this}: MN never reached BN's best accuracy in {runs['MN']['total_steps']} "
                f'steps; BN reached it at step {bn}.')
    if mn == bn:
        return f"{this}: MN and BN first reached BN's best accuracy at the same step, {bn}."
    change = 1.0 - mn / float(bn)
    return "{}: MN needed {:.0%} {} steps than BN to reach BN's best accuracy ({} vs {}).".format(
        this, abs(change), 'fewer' if mn < bn else 'more', mn, bn)


def print_summary(summary):
    runs = summary['runs']
    print('\nTest accuracy per epoch (digits, 16x16):')
    print('epoch     BN      MN')
    for i, (a, b) in enumerate(zip(runs['BN']['accuracy_per_epoch'],
                                   runs['MN']['accuracy_per_epoch'])):
        print(f'{i + 1:5d}  {a:.4f}  {b:.4f}')
    print('\nBest BN test accuracy: {:.4f}'.format(summary['bn_best_accuracy']))
    for name in ('BN', 'MN'):
        r = runs[name]
        steps = r['steps_to_bn_best']
        where = 'first at' if name == 'BN' else "reached BN's best at"
        reach = (f"never reached BN's best in {r['total_steps']} steps" if steps is None else
                 f"{where} step {steps} of {r['total_steps']}")
        print(f"{name}: best {r['best_accuracy']:.4f}; {reach}; {r['elapsed_time']:.0f} s")
    print(comparison_text(summary))
    print('The paper (Table 3, CIFAR-10, BN-2 vs MN-2): MN needed 31% fewer steps.')
    print('One seed on one machine does not say whether MN trains faster: the steps to a best '
          'accuracy\nchange with the seed and with the machine (BLAS, CPU). Medians over seeds, '
          'with intervals:\n  mixnorm-exp run cnn-c10-BN-2 --dataset digits --batch-size 64 '
          '--epochs 15 --seeds 0-4 --out runs/bn\n  mixnorm-exp run cnn-c10-MN-2 --dataset '
          'digits --batch-size 64 --epochs 15 --seeds 0-4 --out runs/mn\n  mixnorm-exp '
          'summarize runs/bn runs/mn\n(their seed 0 repeats the demo at its default --seed 0). '
          'What 5 seeds showed at this scale: docs/training-speed.md')


def build_parser():
    p = argparse.ArgumentParser(
        prog='mixnorm-demo',
        description='CIFAR CNN, BN vs MN at conv3, on offline handwritten digits.')
    p.add_argument('--epochs', type=int, default=15)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--size', type=int, default=16, help='input side (digits are upsampled)')
    p.add_argument('--lr', type=float, default=0.01)
    p.add_argument('--weight-decay', type=float, default=2e-5)
    p.add_argument('--n-components', type=int, default=3)
    p.add_argument('--em-iters', type=int, default=2)
    p.add_argument('--layer', default='conv3', help='the CIFAR CNN layer that gets MN')
    p.add_argument('--train-limit', type=int, default=None,
                   help='use only the first N training images (for quick checks)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='results/demo')
    p.add_argument('--no-progress', action='store_true',
                   help='no progress bar (it is shown only on a terminal anyway)')
    return p


def run(argv=None):
    """Run the demo; returns the summary dict (also written to ``--out``/summary.json)."""
    args = build_parser().parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        raise SystemExit('mixnorm-demo: --epochs and --batch-size must be >= 1')
    os.makedirs(args.out, exist_ok=True)
    train, test = get_digits(size=args.size, seed=args.seed)
    if args.train_limit:
        train = train[:args.train_limit]
    print(f'digits: {len(train)} train / {len(test)} test images at 3x{args.size}x{args.size}; '
          f'batch {args.batch_size}, {args.epochs} epochs')
    start = time.time()
    logs = {'BN': train_one('BN', (), args, train, test),
            'MN': train_one('MN', (args.layer,), args, train, test)}
    summary = summarize(logs)
    summary['config'] = vars(args)
    summary['wall_time'] = time.time() - start
    print_summary(summary)
    path = os.path.join(args.out, 'summary.json')
    with open(path, 'w') as f:
        json.dump(summary, f, indent=1)
    print('wrote', path)
    return summary


def main(argv=None):
    """Console entry point (``mixnorm-demo``); exit status 0 on success."""
    run(argv)
    return 0


if __name__ == '__main__':
    main()
