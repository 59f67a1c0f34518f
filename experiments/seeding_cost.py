"""What each training fit's start costs and buys: k-means++ vs AFK-MC² vs a warm start, side by
side in one run, on activations captured from real training.

    python experiments/seeding_cost.py [--device @numpy|@cupy:0] [--seeds 0,1,2]
        [--json seeding_cost.json] [--quick] [--nets cnn,dense] [--dense-depth 28]
        [--capture-from 100] [--stream 40] [--train-steps 30] [--warmup 5]

The three inits are ``'kmeans++'`` (the paper's: k-means++ seeding, 1 Lloyd iteration, 1 EM
iteration for "EM iter." 2), ``'afkmc2'`` (AFK-MC² seeding instead of k-means++, same
iterations) and ``'previous'`` (EM warm-started from the previous step's mixture: 2 EM
iterations, k-means++ reseeding when :mod:`mixnorm_chainer.warm_start`'s rule says).

**Streams.** Per seed and network, the row's model is trained on the offline digits (scikit-learn,
:mod:`mixnorm_chainer.reproduce.datasets`) at batch 64 with the row's optimizer (the paper's
k-means++ init) for ``capture_from + stream`` steps; the input of one MN layer (its ``forward``
wrapped) is kept at steps ``capture_from - 1 .. capture_from + stream - 1``. The first of those
batches only primes (warm starts start from its fit; every contender fits it once, untimed); the
``stream`` batches after it are measured, in training order.

* ``cnn``: CifarCNN of row ``cnn-c10-MN-2`` (MN at conv3, K=3, EM iter. 2, RMSprop lr 0.01,
  wd 2e-5), 16x16 digits: rows 64*4*4 = 1024 x 128.
* ``dense``: the ``dense40-c100-MN`` setting (MN at trans1, trans2, final, K=5, EM iter. 2,
  initial gamma 1/sqrt(K), NAG lr 0.1, wd 1e-4; 10 digit classes), 8x8 digits, capturing the
  'final' MN layer: rows 64*2*2 = 256 x C. The depth is ``--dense-depth``, **28 by default**
  (8 layers per block, C = 304; one CPU step 3-4x cheaper than depth 40's C = 448, whose
  capture alone takes over 2 min per seed on one core); ``--dense-depth 40`` is the row itself.

**Numbers** (every one is a median over the stream for one seed; the tables print the median over
seeds and [min, max] over seeds; ``--json`` has every seed's):

1. ``fit_gmm ms``: wall time of one step's fit, ``fit_gmm`` alone on the batch's rows (as the
   layer calls it: ``check_finite=False``, the layer's ``min_weight`` and ``reg_covar``). For
   ``previous``: :class:`~mixnorm_chainer.warm_start.WarmStart`'s decision and its ``fit_gmm``
   call(s) (two when the warm fit is stopped after its first EM iteration and reseeded),
   starting from this chain's own fit of the previous batch (pushed onto the fitting layer's
   queue untimed; its read from the queue is timed, as in a training step): each init's fits
   are ``MixtureNormalization.fit_mixture`` of a layer with the captured link's options. The
   three inits are timed in turn on each batch (the order rotating), the device synchronized
   around each timing.
2. ``layer fwd+bwd ms``: a fresh :class:`~mixnorm_chainer.MixtureNormalization` per init
   (the model's options: K, EM iter., fused ReLU, initial gamma, the seed), fed the stream in
   order; forward and backward (a fixed random upstream gradient) of one step, timed in turn
   per batch as in 1.
3. ``score``: ``gmm.score(rows)`` (mean log-likelihood per row, nats; higher is better) of the
   fit of 1 on its own batch. ``reseeds``: steps of the stream where the warm start reseeded
   (chain of 1; ``layer reseeds``: the layer of 2).
4. ``score vs iterations``: per batch, the mixture refitted with more or fewer iterations: warm
   (``em_iters`` 0..4 from the previous batch's fit of the warm chain of 1, no reseeding) and
   cold (k-means++ and AFK-MC² seeding, ``kmeans_iters`` 1 + ``em_iters`` 0..3; "EM iter." =
   their sum). Columns: median score, the median over batches of (score - the cold default's
   score on the same batch; the cold default = k-means++, 1 k-means + 1 EM), the fit's median
   ms (sequential, not alternated), and whether the row's median score reaches the cold
   default's median score. ``reaches at``: the fewest iterations of each kind that do.
5. ``training step ms``: CifarCNN MN-2 with each init, all three copied from the capture model at
   the end of its capture (weights, MN queues, optimizer state), fed the same batches (those that
   follow the capture), one update of each model in turn (order rotating); median over
   ``--train-steps`` steps after ``--warmup``; ratios to ``kmeans++`` (median of per-step ratios).

**Seeds**: ``--seeds`` sets the batch order of the capture (and of 5), the MN layers' seeds
and the fits' random streams; the initial weights are those of ``numpy.random.seed(0)`` for
every seed. ``--quick``: a handful of steps at toy sizes (DenseNet depth 10), a CPU dry run of
under a minute (CI: tests/test_seeding_cost.py). Run the real measurement with one thread per
process (``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1``) on a quiet core, or on a GPU.
"""
# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy >= 2 support)
# isort: on
import argparse
import dataclasses
import json
import math
import statistics
import sys
import time

import chainer
import numpy
from chainer.backends import cuda

from mixnorm_chainer import MixtureNormalization
from mixnorm_chainer.functions import to_rows
from mixnorm_chainer.gmm import fit_gmm, random_generator
from mixnorm_chainer.reproduce import builders, registry, runfolder
from mixnorm_chainer.reproduce.datasets import get_dataset

INITS = ('kmeans++', 'afkmc2', 'previous')
#: network key -> (registry row, MN layer captured, digits image side)
NETS = {'cnn': ('cnn-c10-MN-2', 'conv3', 16), 'dense': ('dense40-c100-MN', 'final', 8)}
WARM_ITERS = (0, 1, 2, 3, 4)          # em_iters of a warm start
COLD_EM_ITERS = (0, 1, 2, 3)          # em_iters after kmeans_iters = 1
BATCH = 64


# -- setup -----------------------------------------------------------------------------------

def net_setting(key, dense_depth):
    setting = registry.get(NETS[key][0])
    if key == 'dense' and dense_depth != 40:
        setting = dataclasses.replace(setting, model='densenet{}'.format(dense_depth))
    return setting


def build(setting, n_classes, seed, init, device):
    """The row's model (MN with ``init``) and optimizer; weights of numpy.random.seed(0)."""
    numpy.random.seed(0)
    model = builders.build_model(setting, n_classes, seed=seed, mn_options={'init': init})
    model.to_device(device)
    return model, builders.build_optimizer(setting, model)


def batch_order(n, seed):
    """Index arrays of successive batches: a fresh permutation per epoch, remainder dropped."""
    rng = numpy.random.default_rng([seed, 7])
    while True:
        order = rng.permutation(n)
        for b in range(n // BATCH):
            yield order[b * BATCH:(b + 1) * BATCH]


class Batches:
    def __init__(self, data, seed, device):
        self.images, self.labels = chainer.dataset.concat_examples(data[:])
        self.order = batch_order(len(self.labels), seed)
        self.device = device

    def next(self):
        ids = next(self.order)
        return self.device.send(self.images[ids]), self.device.send(self.labels[ids])


def mn_link(model, layer):
    return model.predictor.norm_layers()[layer]


def capture(key, args, seed, device):
    """Train the row's model to the end of the window, keeping the MN layer's inputs there."""
    setting = net_setting(key, args.dense_depth)
    _, layer, size = NETS[key]
    train, _, n_classes = get_dataset('digits', size=size)
    batches = Batches(train, seed, device)
    model, opt = build(setting, n_classes, seed, 'kmeans++', device)
    link = mn_link(model, layer)
    kept, step = [], [0]
    first = args.capture_from - 1
    forward = link.forward

    def keep(x):
        if first <= step[0] < args.capture_from + args.stream:
            kept.append(cuda.to_cpu(x.array).copy())
        return forward(x)

    link.forward = keep
    start = time.perf_counter()
    with chainer.using_config('train', True):
        for step[0] in range(args.capture_from + args.stream):
            opt.update(model, *batches.next())
    runfolder.synchronize(device)
    seconds = time.perf_counter() - start
    del link.forward
    return {'setting': setting, 'link': link, 'inputs': kept, 'seconds': seconds,
            'model': model, 'optimizer': opt, 'batches': batches, 'n_classes': n_classes}


# -- fits ------------------------------------------------------------------------------------

class Fitter:
    """One init's training fits, made by a layer of the captured link's options
    (:meth:`~mixnorm_chainer.MixtureNormalization.fit_mixture`, what a training step calls);
    between fits, untimed, the last fit is pushed onto the layer's queue, where the next warm
    start reads it."""

    def __init__(self, init, link, seed, index, device):
        options = dict(link.options(), init=init)
        self.layer = MixtureNormalization(options.pop('size'), **options,
                                          seed=numpy.random.SeedSequence([seed, index]))
        self.layer.to_device(device)
        self.warm = self.layer.warm_start
        self.last = None

    def prepare(self):
        """Untimed: the previous fit onto the queue, as the training step pushes it."""
        if self.last is not None:
            mixture = (self.last.weights, self.last.means64, self.last.variances)
            self.layer.queue.push(mixture, mixture)

    def fit(self, rows):
        self.last = self.layer.fit_mixture(rows)
        return self.last


def timed(device, fn, *args, **kwargs):
    """(seconds, ``fn(*args, **kwargs)``), the device synchronized before and after."""
    runfolder.synchronize(device)
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    runfolder.synchronize(device)
    return time.perf_counter() - start, out


def rotation(i):
    return INITS[i % len(INITS):] + INITS[:i % len(INITS)]


def fit_times(rows, link, seed, device):
    """Numbers 1 and 3: per init, fit ms, score, and the warm chain's fits per batch."""
    fitters = {init: Fitter(init, link, seed, k, device) for k, init in enumerate(INITS)}
    ms = {init: [] for init in INITS}
    scores = {init: [] for init in INITS}
    warm_fits = []                       # the warm chain's fit of batch i (i = 0: the prime)
    for i, X in enumerate(rows):
        for init in rotation(i):
            f = fitters[init]
            f.prepare()
            seconds, gmm = timed(device, f.fit, X)
            if i:                        # batch 0 primes (warm-up and the warm start's seed)
                ms[init].append(1e3 * seconds)
                scores[init].append(gmm.score(X))
        warm_fits.append(fitters['previous'].last)
        if i == 0:
            primed = fitters['previous'].warm.reseeds
    reseeds = fitters['previous'].warm.reseeds - primed
    return ({init: statistics.median(v) for init, v in ms.items()},
            {init: statistics.median(v) for init, v in scores.items()}, reseeds, warm_fits)


def iteration_table(rows, link, seed, warm_fits, device):
    """Number 4: score (and ms) vs iterations, warm and cold."""
    K, common = link.n_components, dict(min_weight=link.min_weight, reg_covar=link.reg_covar,
                                        check_finite=False)
    configs = [('previous', 0, e) for e in WARM_ITERS] + \
        [(init, 1, e) for init in ('kmeans++', 'afkmc2') for e in COLD_EM_ITERS]
    rngs = {c: random_generator(numpy.random.SeedSequence([seed, 100 + k]))
            for k, c in enumerate(configs)}
    scores = {c: [] for c in configs}
    ms = {c: [] for c in configs}
    for i in range(1, len(rows)):
        X = rows[i]
        for c in configs:
            init, km, em = c
            kw = dict(init=warm_fits[i - 1], em_iters=em) if init == 'previous' else \
                dict(init=init, kmeans_iters=km, em_iters=em)
            seconds, gmm = timed(device, fit_gmm, X, K, seed=rngs[c], **kw, **common)
            scores[c].append(gmm.score(X))
            ms[c].append(1e3 * seconds)
    reference = scores[('kmeans++', 1, 1)]
    ref_median = statistics.median(reference)
    table = []
    for c in configs:
        init, km, em = c
        score = statistics.median(scores[c])
        table.append({'init': init, 'kmeans_iters': km, 'em_iters': em,
                      'paper_em_iter': km + em, 'score': score,
                      'diff': statistics.median(a - b for a, b in zip(scores[c], reference)),
                      'ms': statistics.median(ms[c]), 'reaches': score >= ref_median})
    reaches = {}
    for init in ('previous', 'kmeans++', 'afkmc2'):
        hits = [r['paper_em_iter'] for r in table if r['init'] == init and r['reaches']]
        reaches[init] = min(hits) if hits else None
    return {'reference_score': ref_median, 'rows': table, 'reaches_at': reaches}


def layer_times(inputs, link, setting, seed, device):
    """Number 2: a fresh MN layer per init, forward+backward per step, in turn."""
    options = {name: getattr(link, name) for name in (
        'n_components', 'em_iters', 'kmeans_iters', 'eps', 'queue_length', 'queue_decay',
        'min_weight', 'sample_fraction', 'activation', 'affine', 'inference', 'reg_covar')}
    gamma = builders.mn_options_of(setting).get('initial_gamma')
    if gamma is not None:                # the DenseNet rows' 1/sqrt(K)
        options['initial_gamma'] = gamma
    layers = {}
    for init in INITS:
        layers[init] = MixtureNormalization(link.size, init=init, seed=seed, **options)
        layers[init].to_device(device)
    gy = device.send(numpy.random.default_rng([seed, 3]).normal(
        size=inputs[0].shape).astype(numpy.float32))
    xs = [device.send(x) for x in inputs]
    ms = {init: [] for init in INITS}

    def step(layer, x):
        def run():
            layer.cleargrads()
            y = layer(chainer.Variable(x))
            y.grad = gy
            y.backward()
        return run

    for i, x in enumerate(xs):
        for init in rotation(i):
            seconds, _ = timed(device, step(layers[init], x))
            if i:
                ms[init].append(1e3 * seconds)
        if i == 0:
            primed = layers['previous'].warm_start.reseeds
    return ({init: statistics.median(v) for init, v in ms.items()},
            layers['previous'].warm_start.reseeds - primed)


# -- the whole training step -----------------------------------------------------------------

def copy_state(source_model, source_opt, model, opt):
    model.copyparams(source_model)
    state = {}
    source_opt.serialize(chainer.serializers.DictionarySerializer(state))
    opt.serialize(chainer.serializers.NpzDeserializer(state))


def training_step_times(cap, seed, args, device):
    """Number 5: CifarCNN MN-2 per init from the capture model's state, same batches."""
    setups = {}
    for init in INITS:
        model, opt = build(cap['setting'], cap['n_classes'], seed, init, device)
        copy_state(cap['model'], cap['optimizer'], model, opt)
        setups[init] = (model, opt)
    ms = {init: [] for init in INITS}
    with chainer.using_config('train', True):
        for i in range(args.warmup + args.train_steps):
            x, t = cap['batches'].next()
            for init in rotation(i):
                model, opt = setups[init]
                seconds, _ = timed(device, opt.update, model, x, t)
                if i >= args.warmup:
                    ms[init].append(1e3 * seconds)
    link = mn_link(setups['previous'][0], NETS['cnn'][1])
    return {'ms': {init: statistics.median(v) for init, v in ms.items()},
            'over_kmeans++': {init: statistics.median(a / b for a, b in zip(
                ms[init], ms['kmeans++'])) for init in INITS},
            'reseeds': dict(link.warm_start.state['reseeds']),
            'warm_steps': link.warm_start.state['warm']}


# -- one seed, all seeds, printing -------------------------------------------------------------

def measure_net(key, args, seed, device):
    cap = capture(key, args, seed, device)
    link = cap['link']
    rows = [device.send(numpy.ascontiguousarray(to_rows(x))) for x in cap['inputs']]
    fit_ms, score, reseeds, warm_fits = fit_times(rows, link, seed, device)
    layer_ms, layer_reseeds = layer_times(cap['inputs'], link, cap['setting'], seed, device)
    table = iteration_table(rows, link, seed, warm_fits, device)
    result = {'capture_s': cap['seconds'], 'rows': list(rows[0].shape),
              'K': link.n_components, 'fit_ms': fit_ms, 'layer_ms': layer_ms,
              'score': score, 'reseeds': reseeds, 'layer_reseeds': layer_reseeds,
              'iterations': table}
    return result, cap


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {'median': statistics.median(values), 'min': min(values), 'max': max(values)}


def cell(s, fmt='{:.2f}'):
    if s is None:
        return '-'
    if s['min'] == s['max']:
        return fmt.format(s['median'])
    return '{} [{}, {}]'.format(*(fmt.format(s[k]) for k in ('median', 'min', 'max')))


def summarize_net(per_seed):
    seeds = list(per_seed)
    first = per_seed[seeds[0]]
    summary = {}
    for name in ('fit_ms', 'layer_ms', 'score'):
        summary[name] = {init: spread([per_seed[s][name][init] for s in seeds]) for init in INITS}
    for name in ('reseeds', 'layer_reseeds', 'capture_s'):
        summary[name] = spread([per_seed[s][name] for s in seeds])
    summary['reference_score'] = spread([per_seed[s]['iterations']['reference_score']
                                         for s in seeds])
    rows = []
    for j, r in enumerate(first['iterations']['rows']):
        cells = [per_seed[s]['iterations']['rows'][j] for s in seeds]
        rows.append({'init': r['init'], 'kmeans_iters': r['kmeans_iters'],
                     'em_iters': r['em_iters'], 'paper_em_iter': r['paper_em_iter'],
                     'score': spread([c['score'] for c in cells]),
                     'diff': spread([c['diff'] for c in cells]),
                     'ms': spread([c['ms'] for c in cells]),
                     'reaches': sum(c['reaches'] for c in cells)})
    summary['iterations'] = rows
    summary['reaches_at'] = {init: [per_seed[s]['iterations']['reaches_at'][init]
                                    for s in seeds] for init in INITS}
    return summary


def print_net(key, info, summary, n_seeds):
    print('\n== {}: {} ({} MN input, rows {} x {}, K={}), stream steps {}..{}, capture {} s'
          .format(key, info['setting'], info['layer'], *info['rows'], info['K'],
                  info['steps'][0], info['steps'][1], cell(summary['capture_s'], '{:.0f}')))
    width = 28
    print('{:<22}'.format('') + ''.join('{:>{}}'.format(i, width) for i in INITS))
    for name, label, fmt in (('fit_ms', 'fit_gmm ms/step', '{:.2f}'),
                             ('layer_ms', 'layer fwd+bwd ms/step', '{:.2f}'),
                             ('score', 'score (nats/row)', '{:.2f}')):
        print('{:<22}'.format(label) + ''.join(
            '{:>{}}'.format(cell(summary[name][i], fmt), width) for i in INITS))
    print('{:<22}{:>{w}}{:>{w}}{:>{w}}'.format(
        'reseeds fit / layer', '-', '-', '{} / {}'.format(
            cell(summary['reseeds'], '{:.0f}'), cell(summary['layer_reseeds'], '{:.0f}')),
        w=width))
    print('score vs iterations (median over the stream; diff: paired, vs the cold default '
          'kmeans++ k1+e1 = {} nats/row; reach: seeds whose median score >= it, of {})'.format(
              cell(summary['reference_score']), n_seeds))
    print('  {:<9} {:>6} {:>8} {:>26} {:>26} {:>22} {:>6}'.format(
        'init', 'iters', 'EM iter.', 'score', 'diff', 'ms', 'reach'))
    for r in summary['iterations']:
        iters = 'e{}'.format(r['em_iters']) if r['init'] == 'previous' else \
            'k{}+e{}'.format(r['kmeans_iters'], r['em_iters'])
        print('  {:<9} {:>6} {:>8} {:>26} {:>26} {:>22} {:>6}'.format(
            r['init'], iters, r['paper_em_iter'], cell(r['score']), cell(r['diff'], '{:+.3f}'),
            cell(r['ms']), '{}/{}'.format(r['reaches'], n_seeds)))
    print('  reaches the cold default at EM iter. (per seed): ' + '; '.join(
        '{} {}'.format(i, ','.join('-' if v is None else str(v)
                                   for v in summary['reaches_at'][i])) for i in INITS))


def print_training(summary, args):
    print('\n== training step, CifarCNN MN-2 (RMSprop), digits 16x16, batch {}: ms per step '
          '(median of {} steps after {} warm-up), ratio to kmeans++'.format(
              BATCH, args.train_steps, args.warmup))
    for init in INITS:
        print('  {:<9} {:>26} ms  x{}'.format(init, cell(summary['ms'][init], '{:.1f}'),
                                              cell(summary['over_kmeans++'][init], '{:.3f}')))
    print('  previous: reseeds per seed {}'.format(summary['reseeds']))


def parse_seeds(text):
    try:
        seeds = [int(s) for s in text.split(',') if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError('give integers separated by commas, e.g. 0,1,2') \
            from None
    if not seeds:
        raise argparse.ArgumentTypeError('give at least one seed')
    return seeds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='@numpy')
    parser.add_argument('--seeds', type=parse_seeds, default=[0, 1, 2])
    parser.add_argument('--json', default=None, help='write every number to this file')
    parser.add_argument('--quick', action='store_true', help='a handful of steps, toy sizes')
    parser.add_argument('--nets', default='cnn,dense', help='cnn, dense or both')
    parser.add_argument('--dense-depth', type=int, default=None, help='default 28 (quick: 10)')
    parser.add_argument('--capture-from', type=int, default=None,
                        help='first measured step (default 100; quick: 3)')
    parser.add_argument('--stream', type=int, default=None,
                        help='measured consecutive batches (default 40; quick: 3)')
    parser.add_argument('--train-steps', type=int, default=None,
                        help='timed training steps per init (default 30; quick: 3)')
    parser.add_argument('--warmup', type=int, default=None,
                        help='untimed training steps first (default 5; quick: 1)')
    args = parser.parse_args(argv)
    for name, full, quick in (('dense_depth', 28, 10), ('capture_from', 100, 3),
                              ('stream', 40, 3), ('train_steps', 30, 3), ('warmup', 5, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    nets = [n.strip() for n in args.nets.split(',') if n.strip()]
    if not nets or any(n not in NETS for n in nets):
        parser.error('--nets: give cnn, dense or cnn,dense')
    if args.capture_from < 1 or args.stream < 1 or args.train_steps < 1 or args.warmup < 0:
        parser.error('--capture-from, --stream, --train-steps must be >= 1, --warmup >= 0')
    try:
        device = runfolder.get_device(args.device)
        device.use()
    except runfolder.RunError as e:
        print('seeding_cost: {}'.format(e), file=sys.stderr)
        return 2
    begin = time.perf_counter()
    print('seeding cost on {}: seeds {}, inits {}; stream steps {}..{} (+1 priming batch)'.format(
        device, ','.join(map(str, args.seeds)), ', '.join(INITS), args.capture_from,
        args.capture_from + args.stream - 1), flush=True)
    report = {'device': str(device), 'args': {k: v for k, v in vars(args).items()},
              'inits': list(INITS), 'nets': {}, 'training_step': None}
    per_net = {key: {} for key in nets}
    training = {}
    infos = {}
    for seed in args.seeds:
        for key in nets:
            result, cap = measure_net(key, args, seed, device)
            per_net[key][seed] = result
            infos[key] = {'setting': cap['setting'].name + (
                '' if cap['setting'].model == 'densenet40' or key == 'cnn'
                else ' at depth {}'.format(args.dense_depth)),
                'layer': NETS[key][1], 'rows': result['rows'], 'K': result['K'],
                'steps': [args.capture_from, args.capture_from + args.stream - 1]}
            print('seed {} {}: captured in {:.1f} s; fit ms {}'.format(
                seed, key, result['capture_s'], ', '.join('{} {:.2f}'.format(i, v) for i, v in
                                                          result['fit_ms'].items())),
                flush=True)
            if key == 'cnn':
                training[seed] = training_step_times(cap, seed, args, device)
                print('seed {} training step ms: {}'.format(seed, ', '.join(
                    '{} {:.1f}'.format(i, v) for i, v in training[seed]['ms'].items())),
                    flush=True)
            del cap
    for key in nets:
        summary = summarize_net(per_net[key])
        report['nets'][key] = dict(infos[key], per_seed=per_net[key], summary=summary)
        print_net(key, infos[key], summary, len(args.seeds))
    if training:
        summary = {'ms': {i: spread([training[s]['ms'][i] for s in training]) for i in INITS},
                   'over_kmeans++': {i: spread([training[s]['over_kmeans++'][i]
                                                for s in training]) for i in INITS},
                   'reseeds': [sum(training[s]['reseeds'].values()) for s in training]}
        report['training_step'] = {'per_seed': training, 'summary': summary}
        print_training(summary, args)
    report['seconds'] = time.perf_counter() - begin
    print('\ntotal {:.0f} s'.format(report['seconds']))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1, default=_json_default)
        print('report written to {}'.format(args.json))
    return 0


def _json_default(v):
    if isinstance(v, (numpy.floating, numpy.integer)):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)


if __name__ == '__main__':
    sys.exit(main())
