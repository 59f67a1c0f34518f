"""DenseNet (and Inception-V3, Table 6) with Nesterov at the paper's lr: BN vs MN, first
steps, output scale at init.

The check for "DenseNet with MN and Nesterov at lr 0.1" (Section 4.4, Figure 5) on offline
digits: MN with the default gamma = 1 diverges within a few steps where BN trains, and starting
gamma at 1/sqrt(K) (``initial_gamma='1/sqrt(K)'``) removes that. The suspected cause is Eq. 34's
output scale: a row owned by one component is divided by sqrt(lambda_k), so the layer's output
has a second moment of about K at initialization instead of BN's 1.

For each variant and seed (the seed sets both the model's initialization and the batch order):
the training loss of the first and last of ``--steps`` updates (batch 64, NesterovAG momentum
0.9, wd 1e-4), the largest loss, "diverged" (last loss > first loss, or non-finite), the
gradient norm at initialization, and the second moment E[y^2] (mean over channels and rows) of
the trans1, trans2 and final normalizations' output on the first batch, before the ReLU (for
an MN layer with Eq. 40's fused ReLU: Eq. 34 + affine recomputed from its fit without the
ReLU); a BN layer gives ~1. Then a summary per variant over the seeds.

    python experiments/densenet_nag_check.py --depth 22 --size 32 --steps 12 --seeds 0,1,2
    python experiments/densenet_nag_check.py --depth 40 --size 16 --steps 12 --seeds 0,1,2 \\
        --variants bn,all5,all5g
    python experiments/densenet_nag_check.py --layer-moments
    python experiments/densenet_nag_check.py --model inception --size 32 --steps 12 \\
        --seeds 0,1,2

``--model inception`` checks Table 6 the same way: the registry's ``inc-c100-nag1-BN`` and
``inc-c100-nag1-MN`` rows (MN at inc2/1 and inc3/0, K=5, "EM iter." 2, gamma 1) and the MN row
with gamma 1/sqrt(K), Nesterov lr 0.14 (the paper's), wd 5e-4; E[y^2] is then the range over
the 10 normalizations at the MN row's positions (4 in inc2/1, 6 in inc3/0).

``--layer-moments`` instead measures E[y^2] of a single ``MixtureNormalization`` in training
mode (K = 1, 3, 5, default gamma and '1/sqrt(K)') on well-separated mixture data and on
ReLU-like data, next to Eq. 34's prediction for hard-assigned rows: E[y^2] = sum_k lambda_k *
(1/lambda_k) * sigma_k^2 / (sigma_k^2 + eps) ~= K_eff (components left after pruning).
"""
import argparse
import shlex
import sys
import time

import numpy

# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy >= 2 support)
# isort: on
import chainer
import chainer.links as L

from mixnorm_chainer import MixtureNormalization, mixture_normalization
from mixnorm_chainer.functions import to_rows
from mixnorm_chainer.models import DenseNet
from mixnorm_chainer.reproduce import builders, registry
from mixnorm_chainer.reproduce.datasets import get_digits

ALL_MN = ('trans1', 'trans2', 'final')
RULE = {'initial_gamma': '1/sqrt(K)'}
#: key: (label, mn_layers, MN options)
VARIANTS = {
    'bn': ('BN', (), {}),
    'final5': ('MN final K=5', ('final',), {'n_components': 5}),
    'all5': ('MN t1/t2/final K=5', ALL_MN, {'n_components': 5}),
    'final1': ('MN final K=1', ('final',), {'n_components': 1}),
    'final5g': ('MN final K=5 g=1/sqrt(K)', ('final',), dict(n_components=5, **RULE)),
    'all5g': ('MN t1/t2/final K=5 g=1/sqrt(K)', ALL_MN, dict(n_components=5, **RULE)),
}
#: Table 6 through the registry: key: (label, setting name, MN options over the setting's)
INCEPTION_VARIANTS = {
    'bn': ('BN', 'inc-c100-nag1-BN', {}),
    'table6': ('MN inc2/1+inc3/0 K=5', 'inc-c100-nag1-MN', {}),
    'table6g': ('MN inc2/1+inc3/0 K=5 g=1/sqrt(K)', 'inc-c100-nag1-MN', RULE),
}
BATCH = 64
#: per model: variants, default lr, weight decay
MODELS = {'densenet': (VARIANTS, 0.1, 1e-4), 'inception': (INCEPTION_VARIANTS, 0.14, 5e-4)}


def build(args, seed, variant):
    """(classifier, MN layer names, names whose E[y^2] is recorded) of one variant."""
    numpy.random.seed(seed)          # chainer's initializers draw from numpy.random
    if args.model == 'densenet':
        _, mn_layers, options = VARIANTS[variant]
        return (L.Classifier(DenseNet(args.depth, 12, args.classes, mn_layers=mn_layers,
                                      em_iters=2, seed=seed, **options)), mn_layers, ALL_MN)
    _, name, options = INCEPTION_VARIANTS[variant]
    model = builders.build_model(registry.get(name), args.classes, seed=seed,
                                 mn_options=options)
    table6 = registry.get('inc-c100-nag1-MN')
    positions = builders.build_model(table6, args.classes).predictor.mn_norm_names()
    return model, tuple(model.predictor.mn_norm_names()), tuple(positions)


def pre_activation(link, x):
    """The normalization's output before the ReLU, for the input x it was just called on."""
    if not isinstance(link, MixtureNormalization):
        return None                  # BN: its output is already pre-ReLU
    nu = link.last_fit.responsibilities(to_rows(x))
    with chainer.no_backprop_mode():
        return mixture_normalization(x, link.gamma.array, link.beta.array, nu, link.eps,
                                     link.affine).array


def record_outputs(net, names):
    """Wrap the named normalizations so each call stores E[y^2] (pre-ReLU) in the returned
    dict; returns (moments, undo)."""
    moments = {}
    links = net.norm_layers()
    for name in names:
        link = links[name]

        def forward(x, link=link, name=name, original=link.forward):
            y = original(x)
            pre = pre_activation(link, x.array if isinstance(x, chainer.Variable) else x)
            out = y.array if pre is None else pre
            moments[name] = float((out.astype(numpy.float64) ** 2).mean())
            return y
        link.forward = forward

    def undo():
        for name in names:
            del links[name].forward
    return moments, undo


def run_one(args, X, T, seed, variant):
    model, mn_layers, recorded = build(args, seed, variant)
    opt = chainer.optimizers.NesterovAG(lr=args.lr, momentum=0.9)
    opt.setup(model)
    opt.add_hook(chainer.optimizer_hooks.WeightDecay(MODELS[args.model][2]))
    order = numpy.random.RandomState(seed)
    losses, grad, moments, error = [], None, {}, None
    for step in range(args.steps):
        idx = order.choice(len(T), args.batch, replace=False)
        undo = None
        if step == 0:
            moments, undo = record_outputs(model.predictor, recorded)
        try:
            model.cleargrads()
            loss = model(X[idx], T[idx])
            loss.backward()
        except ValueError as e:      # e.g. MN asked to fit non-finite activations
            error = f'step {step + 1}: {str(e).splitlines()[0][:60]}'
            losses.append(float('nan'))
            break
        finally:
            if undo is not None:
                undo()
        losses.append(float(loss.array))
        if step == 0:
            grad = numpy.sqrt(sum(float((p.grad.astype(numpy.float64) ** 2).sum())
                                  for p in model.params() if p.grad is not None))
        del loss
        opt.update()                 # uses the gradients above (plus the weight-decay hook)
    return dict(losses=losses, grad=grad, moments=moments, error=error, mn_layers=mn_layers,
                recorded=recorded)


def fmt(v, spec='.2f'):
    if v is None:
        return '-'
    return format(v, spec) if numpy.isfinite(v) else str(v)


def table(header, rows):
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '|'.join('---' for _ in header) + '|')
    for row in rows:
        print('| ' + ' | '.join(row) + ' |')
    print(flush=True)


def training(args):
    variants, _, wd = MODELS[args.model]
    keys = args.variants.split(',')
    unknown = [k for k in keys if k not in variants]
    if unknown:
        sys.exit(f'unknown variant(s) {unknown}; choose from {",".join(variants)}')
    seeds = [int(s) for s in args.seeds.split(',')]
    network = (f'DenseNet-{args.depth} (k=12' if args.model == 'densenet' else
               'Inception-V3 (Table 6 rows inc-c100-nag1-BN/-MN')
    print(f'{network}, {args.classes} classes), digits {args.size}x{args.size}, '
          f'batch {args.batch}, NesterovAG lr {args.lr} momentum 0.9, wd {wd:g}, '
          f'{args.steps} steps, MN "EM iter." 2, fused ReLU (Eq. 40); seeds {seeds} '
          '(init + batch order)')
    print('E[y^2]: second moment of the normalization output before ReLU on the first batch '
          '(* = MN layer, else BN); grad norm: of all parameter gradients at init.\n',
          flush=True)
    train, _ = get_digits(args.size)
    X = numpy.stack([image for image, _ in train])
    T = numpy.array([label for _, label in train])
    results = {}
    rows = []
    for key in keys:
        label = variants[key][0]
        for seed in seeds:
            start = time.time()
            r = results[key, seed] = run_one(args, X, T, seed, key)
            r['time'] = time.time() - start
            losses = r['losses']
            finite = numpy.isfinite(losses).all()
            r['diverged'] = (not finite) or losses[-1] > losses[0]
            ref = results.get(('bn', seed))
            if key != 'bn' and ref is not None and len(ref['losses']) == len(losses):
                diff = fmt(float(numpy.max(numpy.abs(numpy.subtract(losses, ref['losses'])))),
                           '.1e')
            else:
                diff = '-'
            rows.append([label, str(seed), fmt(losses[0]), fmt(losses[-1]),
                         fmt(float(numpy.max(losses))), 'yes' if r['diverged'] else 'no',
                         fmt(r['grad'])] + moment_columns(r) + [diff, f'{r["time"]:.0f}'])
            print(f'  [{label}, seed {seed}: {r["time"]:.0f} s; losses '
                  + ' '.join(fmt(v) for v in losses)
                  + (f'; {r["error"]}' if r['error'] else '') + ']', flush=True)
    print()
    moment_header = (['E[y^2] trans1', 'E[y^2] trans2', 'E[y^2] final']
                     if args.model == 'densenet' else ['E[y^2] at the MN positions (range)'])
    table(['variant', 'seed', 'loss step 1', f'loss step {args.steps}', 'max loss',
           'diverged', 'grad norm init'] + moment_header + ['max abs(loss - BN)', 'time s'],
          rows)
    summary = []
    for key in keys:
        label = variants[key][0]
        rs = [results[key, s] for s in seeds]
        mn_layers = rs[0]['mn_layers']
        final = numpy.array([r['losses'][-1] for r in rs])
        grads = [r['grad'] for r in rs if r['grad'] is not None]
        mn_moments = [r['moments'][n] for r in rs for n in mn_layers if n in r['moments']]
        summary.append([label, f'{fmt(float(numpy.median(final)))} '
                               f'[{fmt(float(numpy.min(final)))}, {fmt(float(numpy.max(final)))}]',
                        f'{sum(r["diverged"] for r in rs)}/{len(rs)}',
                        fmt(float(numpy.median(grads))) if grads else '-',
                        (f'{min(mn_moments):.2f}-{max(mn_moments):.2f}' if mn_moments else '-')])
    table(['variant', f'final loss (step {args.steps}): median [min, max]', 'diverged',
           'median grad norm init', 'E[y^2] of MN layers (range)'], summary)


def moment_columns(r):
    """E[y^2] per recorded normalization (* = MN) for DenseNet's three, else their range."""
    if r['recorded'] == ALL_MN:
        return [fmt(r['moments'].get(n)) + ('*' if n in r['mn_layers'] else '')
                for n in ALL_MN]
    values = [r['moments'][n] for n in r['recorded'] if n in r['moments']]
    if not values:
        return ['-']
    return [f'{min(values):.2f}-{max(values):.2f}' + ('*' if r['mn_layers'] else '')]


def layer_data(kind, K, rng, m=4096, C=4):
    """(m, C) rows: 'mixture' = K well-separated Gaussians (unit std, means 12 apart per
    channel, weights proportional to 1..K); 'relu' = relu(N(0, 1)) (K ignored)."""
    if kind == 'relu':
        return numpy.maximum(rng.normal(size=(m, C)), 0)
    weights = numpy.arange(1, K + 1) / (K * (K + 1) / 2)
    labels = rng.choice(K, size=m, p=weights)
    means = 12.0 * numpy.stack([rng.permutation(K) for _ in range(C)], axis=1)
    return means[labels] + rng.normal(size=(m, C))


def layer_moments(args):
    seeds = [int(s) for s in args.seeds.split(',')]
    print('E[y^2] of MixtureNormalization(4, n_components=K) in training mode ("EM iter." 2), '
          f'4096 rows x 4 channels, mean over seeds {seeds}; prediction for hard-assigned rows '
          '(Eq. 34): sum_k lambda_k (1/lambda_k) sigma_k^2/(sigma_k^2+eps) ~= K_eff, times '
          'gamma^2 (1/K with the rule). "max nu": mean over rows of the largest '
          'responsibility (1 = hard assignment).\n')
    rows = []
    for kind, label in (('mixture', 'K well-separated Gaussians'), ('relu', 'relu(N(0,1))')):
        for K in (1, 3, 5):
            out = {None: [], '1/sqrt(K)': []}
            keff, hard, pred = [], [], []
            for seed in seeds:
                x = layer_data(kind, K, numpy.random.default_rng(seed)).astype(numpy.float32)
                for rule in out:
                    link = MixtureNormalization(4, n_components=K, seed=seed, initial_gamma=rule)
                    with chainer.using_config('train', True):
                        y = link(x).array.astype(numpy.float64)
                    out[rule].append(float((y ** 2).mean()))
                    if rule is None:
                        lam, _, var = link.last_statistics
                        keff.append(link.n_effective_components)
                        hard.append(float(link.last_fit.responsibilities(x).max(axis=1).mean()))
                        pred.append(float((lam > 0).astype(float) @ (var / (var + link.eps))
                                          .mean(axis=1)))
            rows.append([label, str(K), f'{numpy.mean(keff):.1f}', f'{numpy.mean(hard):.3f}',
                         f'{numpy.mean(pred):.2f}', f'{numpy.mean(out[None]):.3f}',
                         f'{numpy.mean(pred) / K:.2f}', f'{numpy.mean(out["1/sqrt(K)"]):.3f}'])
    table(['data', 'K', 'K_eff', 'max nu', 'predicted (gamma=1)', 'E[y^2] gamma=1',
           'predicted (1/sqrt(K))', 'E[y^2] 1/sqrt(K)'], rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--seeds', default='0,1,2', help='comma-separated (init + batch order)')
    p.add_argument('--model', choices=sorted(MODELS), default='densenet',
                   help='densenet (Section 4.4) or inception (Table 6, through the registry)')
    p.add_argument('--depth', type=int, default=22)
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--steps', type=int, default=12)
    p.add_argument('--batch', type=int, default=BATCH,
                   help='batch size (default 64; the paper: DenseNet 64, Table 6 256)')
    p.add_argument('--lr', type=float, default=None,
                   help="default: the paper's (DenseNet 0.1, Table 6 0.14)")
    p.add_argument('--classes', type=int, default=10, help='classifier outputs (digits: 10)')
    p.add_argument('--variants', default=None,
                   help='comma-separated subset of ' + ','.join(VARIANTS) + ' (densenet) or '
                   + ','.join(INCEPTION_VARIANTS) + ' (inception); default all')
    p.add_argument('--layer-moments', action='store_true',
                   help='only the single-layer E[y^2] table (a few seconds)')
    args = p.parse_args(argv)
    variants, lr, _ = MODELS[args.model]
    args.lr = lr if args.lr is None else args.lr
    args.variants = args.variants or ','.join(variants)
    if args.depth < 7 or (args.depth - 4) % 3:
        p.error('--depth must be 3n + 4 with n >= 1 (7, 10, ..., 22, 40); got {}'.format(
            args.depth))
    argv = sys.argv[1:] if argv is None else argv
    print('$ python experiments/densenet_nag_check.py ' + ' '.join(map(shlex.quote, argv)))
    print(f'(numpy {numpy.__version__}, chainer {chainer.__version__})\n', flush=True)
    start = time.time()
    if args.layer_moments:
        layer_moments(args)
    else:
        training(args)
    print(f'wall time {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
