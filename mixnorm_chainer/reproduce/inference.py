"""The paper's other inference strategies (Section 3.2), "precise BN" for MN, and their CLI glue.

Test mode normalizes with the queue of the last T fitted mixtures (Eq. 38-39,
:mod:`mixnorm_chainer.queue`). Section 3.2 first describes another strategy: "maintain last T
mini-batches from the training stage ... aggregate all instances in the queue into a large pool
of samples and fit a Gaussian mixture model to it", then normalize every test batch with it.
The strategies compared by :func:`evaluate_strategies` (and ``mixnorm-exp evaluate``):

* ``'queue'``: test mode as trained, Eq. 38 over the queue with the decay of Eq. 39 (the
  link's ``inference`` form, ``'consistent'`` by default). For a BN-only model: BN test mode.
* ``'printed'``: the same queue with Eq. 38 as printed (``inference='printed'``).
* ``'pool'``: the pool strategy. A link built with ``pool_rows`` > 0 keeps that many rows of
  each of the last T training batches (:class:`~mixnorm_chainer.MixtureNormalization`);
  :func:`pool_fit` fits one mixture to them (Eq. 26-31) and :func:`store_mixture` makes it the
  queue's only entry.
* ``'recompute'``: like "precise BN": with the final weights, forward N training batches in
  test mode, fit each MN layer's mixture to its inputs and store it (:func:`recompute`).
* ``'train-mode'``: each test batch is normalized with its own fitted mixture (the MN layers in
  training mode, Eq. 34-36), BN layers in test mode (their running averages).

A stored mixture is the pair the training step pushes: the fitted GMM (its posteriors are the
rho of Eq. 38, here with one entry rho = nu of Eq. 31) and the Eq. 35-36 statistics of the rows
under the fit's responsibilities. With one queue entry (tau = 1, Eq. 39) test mode is exactly
the training transform of Eq. 34-35 with those statistics, in both forms of Eq. 38.

Every strategy of :func:`evaluate_strategies` runs on a deep copy of the model, so the model's
queues, pools, random generators and BN running averages are unchanged. BN layers are left as
they are by every strategy (their running averages are not recomputed).

CLI (wired into ``mixnorm-exp`` by :mod:`mixnorm_chainer.reproduce.runner`; also
``python -m mixnorm_chainer.reproduce.inference``):

    mixnorm-exp recompute RUN [--batches N] [--rows-per-batch R] [--snapshot FILE]
                              [--device D] [--data-dir DIR]
    mixnorm-exp evaluate RUN [RUN ...] [--strategies queue,printed,pool,recompute,train-mode]
                             [--batches N] [--rows-per-batch R] [--json FILE] [--device D]
                             [--data-dir DIR]
"""
import argparse
import copy
import os
import sys

import chainer
import chainer.functions as F
import numpy
from chainer.backend import get_array_module
from chainer.backends import cuda

from mixnorm_chainer.functions import (
    ComponentStatistics,
    component_statistics,
    compute_dtype,
    to_rows,
)
from mixnorm_chainer.gmm import GaussianMixture, centering_shift, fit_gmm, rows_problem
from mixnorm_chainer.links import MixtureNormalization, pool_indices, pool_memory_bytes
from mixnorm_chainer.queue import push
from mixnorm_chainer.reproduce import builders, registry, runfolder, seeds

#: the strategies of :func:`evaluate_strategies`, in the order of the tables
STRATEGIES = ('queue', 'printed', 'pool', 'recompute', 'train-mode')
#: default number of training batches of ``recompute`` and the 'recompute' strategy
DEFAULT_BATCHES = 20


# -- the MN layers of a model --------------------------------------------------------------

def short_name(name):
    """A link path without the leading ``/`` and an ``L.Classifier``'s ``predictor/``."""
    name = name.lstrip('/')
    return name[len('predictor/'):] if name.startswith('predictor/') else name


def mn_links(model):
    """``{name: link}`` of the :class:`~mixnorm_chainer.MixtureNormalization` links of a model,
    named by their ``model.namedlinks()`` path (e.g. ``'/predictor/conv3_norm'``)."""
    return {name: link for name, link in model.namedlinks(skipself=True)
            if isinstance(link, MixtureNormalization)}


# -- one mixture from rows -------------------------------------------------------------------

def fit_to_rows(link, rows, seed=0, kmeans_iters=None, em_iters=None):
    """Fit the link's mixture to ``rows`` (m, C) and take the Eq. 35-36 statistics of the rows.

    The GMM is fitted by :func:`~mixnorm_chainer.fit_gmm` (k-means++, k-means, EM, pruning;
    Eq. 26-31) with the link's K, ``reg_covar`` and ``min_weight``, on all rows (no
    ``sample_fraction``); ``kmeans_iters`` / ``em_iters`` are fit_gmm's (default: the link's
    split of its "EM iter.", ``link.kmeans_iters`` / ``link.gmm_em_iters``), ``seed`` the
    k-means++ draws (an int or a ``numpy.random.Generator``; the link's generator is not used).
    The statistics are the training transform's (Eq. 35-36) under the fit's responsibilities nu
    (Eq. 31): ``lambda_k = mean_i nu_ik``, ``mu_k = nuhat_k^T x``,
    ``sigma_k^2 = nuhat_k^T (x - mu_k)^2`` (biased: divided by ``sum_i nu_ik``, no eps).

    Returns:
        ``(fit, statistics)``: the :class:`~mixnorm_chainer.GaussianMixture` and a
        :class:`~mixnorm_chainer.ComponentStatistics` (means in float64), as a training step
        would push them onto the queue (:func:`store_mixture`).
    """
    xp = get_array_module(rows)
    rows = xp.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != link.size or rows.shape[0] < 1:
        raise ValueError(f'fit_to_rows: expected rows of shape (m, {link.size}) with m >= 1 for '
                         f'a layer of {link.size} channels; got shape {rows.shape}')
    if rows.dtype.kind != 'f':
        raise ValueError(f'fit_to_rows: rows must be floating point; got dtype {rows.dtype}')
    rows = rows.astype(compute_dtype(rows.dtype), copy=False)
    problem = rows_problem(rows, link.reg_covar)
    if problem is not None:
        raise ValueError(f'fit_to_rows: {problem}; the mixture cannot be fitted to these rows')
    fit = fit_gmm(rows, link.n_components,
                  kmeans_iters=link.kmeans_iters if kmeans_iters is None else kmeans_iters,
                  em_iters=link.gmm_em_iters if em_iters is None else em_iters, seed=seed,
                  min_weight=link.min_weight, reg_covar=link.reg_covar, check_finite=False)
    return fit, rows_statistics(rows, fit.responsibilities(rows))


def rows_statistics(rows, nu):
    """Eq. 35-36 of rows (m, C) under responsibilities nu (m, K), as the training transform
    computes them (centred on :func:`~mixnorm_chainer.gmm.centering_shift` when the rows are
    far off-centre): a :class:`~mixnorm_chainer.ComponentStatistics`, means in float64."""
    nu = nu.astype(rows.dtype, copy=False)
    shift = centering_shift(rows)
    lam, _, mu_s, var = component_statistics(rows if shift is None else rows - shift, nu)
    means = mu_s.astype(numpy.float64)
    if shift is not None:
        means += shift.astype(numpy.float64)
    return ComponentStatistics(lam, means, var)


def store_mixture(link, fit, statistics):
    """Make ``(fit, statistics)`` the link's whole queue: one entry, ``queue_count = 1``.

    Test mode (Eq. 38-39 with T' = 1, tau = 1) then normalizes every batch with this mixture:
    the posteriors rho are the fit's nu (Eq. 31), the factors the statistics' (Eq. 34-35).
    ``fit``: a :class:`~mixnorm_chainer.GaussianMixture` or ``(weights, means, variances)``;
    ``statistics``: ``(lambda, mu, sigma^2)`` (:func:`fit_to_rows` returns both). At most the
    link's K components (pruned ones are stored with weight 0). The link's pool, random
    generator and options are not touched.
    """
    if isinstance(fit, GaussianMixture):
        means = fit.centred_means.astype(numpy.float64)
        if fit.center is not None:
            means = means + fit.center.astype(numpy.float64)
        fit = (fit.weights, means, fit.variances)
    mixtures = []
    for what, mixture in (('fit', fit), ('statistics', statistics)):
        weights, means, variances = (link.device.send(a).astype(numpy.float64)
                                     for a in mixture)
        K = weights.shape[0]
        if (weights.ndim != 1 or not 1 <= K <= link.n_components
                or means.shape != (K, link.size) or variances.shape != (K, link.size)):
            raise ValueError(f'store_mixture: the {what} must be (K,), (K, C), (K, C) with '
                             f'K <= {link.n_components} and C = {link.size}; got '
                             f'{weights.shape}, {means.shape}, {variances.shape}')
        mixtures.append((weights, means, variances))
    for names, mixture in ((link._fit_queue, mixtures[0]),
                           (link._statistics_queue, mixtures[1])):
        queue = [getattr(link, name) for name in names]
        for q, fill in zip(queue, (0, 0, 1)):
            q[...] = fill
        push(queue, mixture)
    link.queue_count = 1


# -- the row pool (Section 3.2's first strategy) --------------------------------------------

def pool_rows_of(link):
    """The rows in the link's pool, all filled entries concatenated oldest first (n, C)."""
    if not link.pool_rows or not link.pool_count:
        raise ValueError('the MN layer keeps no row pool{}: build it with pool_rows > 0 '
                         '(mixnorm-exp run --mn-option pool_rows=N) and train'.format(
                             '' if link.pool_rows else ' (pool_rows=0)'))
    sizes = cuda.to_cpu(link.pool_sizes)
    T = link.queue_length
    return link.xp.concatenate([link.pool[t, :int(sizes[t])]
                                for t in range(T - link.pool_count, T)])


def pool_fit(link, seed=0):
    """The pool strategy: fit one mixture to the link's pool (:func:`pool_rows_of`,
    :func:`fit_to_rows`) and make it the link's queue (:func:`store_mixture`). Changes the
    link's queue in place (use a copy of the model to keep it, as :func:`evaluate_strategies`
    does). Returns ``(fit, statistics)``."""
    fit, statistics = fit_to_rows(link, pool_rows_of(link), seed=seed)
    store_mixture(link, fit, statistics)
    return fit, statistics


# -- recompute ("precise BN" for MN) --------------------------------------------------------

class _Stop(Exception):
    """Raised by :class:`_InputCapture` to end a forward pass once it has what it needs."""


class _InputCapture(chainer.LinkHook):
    """Collects the input rows of the ``targets`` ({name: link}) links (unless ``keep`` is
    False) and ends the forward pass (:class:`_Stop`) once every target (``stop='all'``) or
    the first one (``stop='first'``) has been reached in it."""

    name = 'mixnorm_inference_capture'

    def __init__(self, targets, rows_per_batch=None, keep=True, stop='all'):
        self.names = {id(link): name for name, link in targets.items()}
        self.rows = {name: [] for name in targets}
        self.rows_per_batch = rows_per_batch
        self.keep, self.stop = keep, stop
        self.reached = []

    def forward_preprocess(self, args):
        name = self.names.get(id(args.link))
        if name is None:
            return
        self.reached.append(name)
        if self.keep:
            x = args.args[0] if args.args else next(iter(args.kwargs.values()))
            xa = x.array if isinstance(x, chainer.Variable) else x
            rows = to_rows(xa).astype(compute_dtype(xa.dtype), copy=False)
            if self.rows_per_batch:
                rows = rows[get_array_module(rows).asarray(
                    pool_indices(rows.shape[0], self.rows_per_batch))]
            self.rows[name].append(rows)
        if self.stop == 'first' or set(self.reached) >= set(self.rows):
            raise _Stop


def _inputs(batch):
    """x of a batch given as ``(x, t)`` (what ``concat_examples`` returns) or as x."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _predictor(model):
    return getattr(model, 'predictor', model)


def _forward_until(model, batch, capture):
    """Forward the batch's x through the model's predictor in test mode, no graph, with the
    capture hook, until the capture has what it needs."""
    capture.reached = []
    with chainer.using_config('train', False), chainer.no_backprop_mode(), capture:
        try:
            _predictor(model)(_inputs(batch))
        except _Stop:
            pass


def gather_inputs(model, batches, layer_names, rows_per_batch=None):
    """The input rows of MN layers over batches, in test mode: ``{name: rows (m, C)}``.

    Each batch's x (``(x, t)`` pairs or arrays, on the model's device) goes through the model's
    predictor (``model.predictor`` of an ``L.Classifier``, else the model) with
    ``chainer.config.train = False`` and no graph; the inputs of the links named in
    ``layer_names`` (:func:`mn_links` names; any link works) are captured by a link hook as
    rows (``to_rows``: N*H*W rows of C channels per batch, in the compute dtype) and
    concatenated over the batches. ``rows_per_batch``: keep only that many rows of each batch
    and layer (:func:`~mixnorm_chainer.links.pool_indices`; no random draws). A forward pass
    ends once every named layer has been reached (the layers after them are not run; a link
    called twice in one forward pass is captured once). Nothing in the model changes.
    """
    if isinstance(layer_names, str):
        layer_names = [layer_names]
    links = dict(model.namedlinks(skipself=True))
    unknown = [name for name in layer_names if name not in links]
    if unknown:
        raise ValueError('gather_inputs: no link named {}; the MN layers are {}'.format(
            ', '.join(map(repr, unknown)), ', '.join(mn_links(model)) or 'none'))
    capture = _InputCapture({name: links[name] for name in layer_names}, rows_per_batch)
    n = 0
    for batch in batches:
        _forward_until(model, batch, capture)
        n += 1
    missing = [name for name, rows in capture.rows.items() if not rows]
    if n == 0 or missing:
        raise ValueError('gather_inputs: {}; give at least one batch whose forward pass reaches '
                         'the layers'.format('no batches' if n == 0 else 'the forward pass '
                                             'never reached ' + ', '.join(missing)))
    xp = get_array_module(capture.rows[layer_names[0]][0])
    return {name: rows[0] if len(rows) == 1 else xp.concatenate(rows)
            for name, rows in capture.rows.items()}


def _first_reached(model, batch, candidates):
    """The name of the first of the ``candidates`` links the batch's forward pass reaches
    (the pass stops there), or None."""
    capture = _InputCapture(candidates, keep=False, stop='first')
    _forward_until(model, batch, capture)
    return capture.reached[0] if capture.reached else None


def recompute(model, batches, n_batches=None, rows_per_batch=None, seed=0):
    """Recompute every MN layer's mixture from training batches with the final weights.

    MN's "precise BN": the first ``n_batches`` of ``batches`` (``(x, t)`` pairs or arrays on
    the model's device; default all) go through the model in test mode without a graph, each MN
    layer's input rows are gathered (:func:`gather_inputs`), one mixture is fitted to them
    (:func:`fit_to_rows` with ``seed``) and stored as the layer's queue (:func:`store_mixture`).
    Layers are recomputed in forward order, one gathering pass each: the first MN layer the
    forward pass reaches, then the next with the earlier ones already recomputed, so each
    layer's mixture is fitted to the inputs it will see at test time. A gathering pass stops at
    the layer it gathers, so no MN layer that is not yet recomputed runs in test mode (the
    queues may be empty). BN layers are left alone (their running averages are kept).

    Changes the model's MN queues in place (work on a copy to keep them). Returns ``{name:
    {'batches': n, 'rows': m, 'channels': C, 'bytes': memory of the gathered rows,
    'components': K after pruning}}`` in forward order; MN layers the forward pass never
    reaches are not changed and not listed.
    """
    batches = list(batches)[:n_batches]
    if not batches:
        raise ValueError('recompute: no training batches given; give at least one')
    remaining = mn_links(model)
    if not remaining:
        raise ValueError('nothing to recompute: the model has no MN layers')
    done = {}
    while remaining:
        name = _first_reached(model, batches[0], remaining)
        if name is None:
            break
        link = remaining.pop(name)
        rows = gather_inputs(model, batches, [name], rows_per_batch)[name]
        fit, statistics = fit_to_rows(link, rows, seed=seed)
        store_mixture(link, fit, statistics)
        done[name] = {'batches': len(batches), 'rows': int(rows.shape[0]),
                      'channels': int(rows.shape[1]), 'bytes': int(rows.nbytes),
                      'components': fit.n_components}
    return done


# -- evaluation ------------------------------------------------------------------------------

def _loss_and_accuracy(model, y, t):
    lossfun = getattr(model, 'lossfun', F.softmax_cross_entropy)
    accfun = getattr(model, 'accfun', F.accuracy)
    return float(lossfun(y, t).array), float(accfun(y, t).array)


def evaluate(model, batches, train_mode_mn=False):
    """Test accuracy and loss over ``(x, t)`` batches: ``{'accuracy', 'loss', 'n'}`` (means
    over the examples; accuracy as a fraction).

    The model's predictor runs with ``chainer.config.train = False`` and no graph. With
    ``train_mode_mn`` the MN layers run in training mode (each batch normalized with its own
    fitted mixture, Eq. 34-36) while every other layer (BN) stays in test mode; that is done on
    a deep copy, so the model's queues, pools and random generators are unchanged either way.
    """
    if train_mode_mn:
        model = copy.deepcopy(model)
        for link in mn_links(model).values():
            link.forward = _train_mode_forward(link)
    total = {'loss': 0.0, 'accuracy': 0.0, 'n': 0}
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for x, t in batches:
            loss, accuracy = _loss_and_accuracy(model, _predictor(model)(x), t)
            n = int(t.shape[0])
            total['loss'] += loss * n
            total['accuracy'] += accuracy * n
            total['n'] += n
    if not total['n']:
        raise ValueError('evaluate: no test batches given')
    return {'accuracy': total['accuracy'] / total['n'], 'loss': total['loss'] / total['n'],
            'n': total['n']}


def _train_mode_forward(link):
    """The link's own forward in training mode (for the 'train-mode' strategy, on a copy)."""
    def forward(x):
        with chainer.using_config('train', True):
            return type(link).forward(link, x)
    return forward


def pool_problem(model):
    """Why the 'pool' strategy is unavailable for the model (one line), or None."""
    links = mn_links(model)
    if not links:
        return 'the model has no MN layers'
    without = [name for name, link in links.items() if not link.pool_rows]
    if without:
        return ('no row pool: {} built with pool_rows=0 (train with --mn-option '
                'pool_rows=N)'.format(', '.join(map(short_name, without))))
    empty = [name for name, link in links.items() if not link.pool_count]
    if empty:
        return 'the row pool of {} is empty (no training step since it was built)'.format(
            ', '.join(map(short_name, empty)))
    return None


def evaluate_strategies(model, test_batches, train_batches=None, strategies=STRATEGIES,
                        n_batches=None, rows_per_batch=None, seed=0):
    """Test accuracy of each inference strategy (see the module docstring).

    Args:
        model: a trained classifier (``L.Classifier``), on the batches' device.
        test_batches: ``(x, t)`` pairs of the test set.
        train_batches: ``(x, t)`` pairs of training data for 'recompute' (its first
            ``n_batches``; default all); without them 'recompute' is unavailable.
        strategies: names from :data:`STRATEGIES`.
        rows_per_batch, seed: of :func:`recompute`; ``seed`` also of :func:`pool_fit`.

    Returns:
        ``{strategy: {'accuracy': fraction, 'loss': mean, 'n': examples}}``, plus
        ``'recomputed'`` (what :func:`recompute` returned) for 'recompute' and ``'pool'``
        (``{name: {'rows': rows fitted, 'bytes': the pool's memory}}``) for 'pool'; a
        strategy that does not apply is ``{'unavailable': reason}`` (all but 'queue' for a
        model without MN layers, 'queue' and 'printed' for an empty queue, 'pool' without row
        pools, 'recompute' without training batches). Every strategy runs on a deep copy: the
        model is unchanged.
    """
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError('unknown strategy {}; the strategies are {}'.format(
            ', '.join(map(repr, unknown)), ', '.join(STRATEGIES)))
    test_batches = list(test_batches)
    links = mn_links(model)
    empty = [short_name(name) for name, link in links.items() if not link.queue_count]
    results = {}
    for strategy in strategies:
        if strategy != 'queue' and not links:
            results[strategy] = {'unavailable': 'the model has no MN layers'}
            continue
        if strategy in ('queue', 'printed') and empty:
            results[strategy] = {'unavailable': 'the queue of {} is empty (no training step '
                                 'since it was built)'.format(', '.join(empty))}
            continue
        if strategy == 'pool' and pool_problem(model):
            results[strategy] = {'unavailable': pool_problem(model)}
            continue
        if strategy == 'recompute' and not train_batches:
            results[strategy] = {'unavailable': 'no training batches given'}
            continue
        if strategy == 'train-mode':
            results[strategy] = evaluate(model, test_batches, train_mode_mn=True)
            continue
        work = copy.deepcopy(model)
        extra = {}
        if strategy == 'printed':
            for link in mn_links(work).values():
                link.inference = 'printed'
        elif strategy == 'pool':
            extra['pool'] = {}
            for name, link in mn_links(work).items():
                extra['pool'][name] = {'rows': int(pool_rows_of(link).shape[0]), 'bytes':
                                       pool_memory_bytes(link.queue_length, link.pool_rows,
                                                         link.size)}
                pool_fit(link, seed=seed)
        elif strategy == 'recompute':
            extra['recomputed'] = recompute(work, train_batches, n_batches, rows_per_batch,
                                            seed)
        results[strategy] = dict(evaluate(work, test_batches), **extra)
        del work
    return results


# -- run folders (the CLI) -------------------------------------------------------------------

class RunData:
    """A trained run rebuilt from its folder (:func:`load_run`)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def load_run(folder, snapshot=None, device='@numpy', data_dir=None, need_mn=False):
    """Rebuild the model of a ``mixnorm-exp run`` folder from a snapshot, with its data.

    ``snapshot``: a snapshot file (a path, or a name in ``folder``); default the newest readable
    ``snapshot_epoch_N``. The model is ``builders.build_model`` of the run's setting, dataset
    classes, seed and MN options (``setting.json``), with the model part of the trainer snapshot
    loaded. ``need_mn``: a run without MN layers is an error. One-line :class:`RunError` for
    a folder that holds no run, no snapshot, a DCGAN run or a snapshot that does not fit.
    """
    record_path = os.path.join(folder, 'setting.json')
    if not os.path.isfile(record_path):
        inside = seeds.expand_run_dirs([folder])
        if inside != [folder]:
            raise runfolder.RunError('{} holds the runs of several seeds ({}); give one of them'
                                     .format(folder, ', '.join(os.path.basename(d)
                                                               for d in inside)))
        raise runfolder.RunError('{} is not a run folder (no setting.json); give a folder written '
                                 'by `mixnorm-exp run`'.format(folder))
    record = runfolder.read_json(record_path, 'setting.json')
    if not isinstance(record, dict) or not isinstance(record.get('setting'), dict) \
            or 'name' not in record['setting']:
        raise runfolder.RunError('{} has no setting record; it was not written by mixnorm-exp '
                                 'run'.format(record_path))
    setting = registry.get(record['setting']['name'])
    if setting.model == 'dcgan':
        raise runfolder.RunError('{} is a DCGAN run ({}); recompute and evaluate handle '
                                 'classification runs only'.format(folder, setting.name))
    if need_mn and not setting.is_mn:
        raise runfolder.RunError('nothing to recompute: the run {} ({}) has no MN layers'.format(
            folder, setting.name))
    options = dict(record.get('options') or {})
    for key in ('dataset', 'batch_size', 'seed'):          # folders of older versions
        if key not in options and key in record:
            options[key] = record[key]
    dataset = options.get('dataset') or setting.dataset
    seed = int(options.get('seed') or 0)
    # a ChainerMN run: every rank's snapshot holds the model (rank 0's is read)
    path = _snapshot_path(folder, snapshot, '_rank0' if record.get('communicator') else '')
    device = runfolder.get_device(device)
    train, test, n_classes = builders.load_data(dataset, data_dir, options.get('input_size'),
                                                seed)
    if options.get('train_limit'):
        train = train[:options['train_limit']]
    if options.get('test_limit'):
        test = test[:options['test_limit']]
    numpy.random.seed(seed)           # as mixnorm-exp run (the weights are loaded anyway)
    model = builders.build_model(setting, n_classes, seed=seed,
                                 mn_options=options.get('mn_options'))
    try:
        chainer.serializers.load_npz(path, model, path='updater/model:main/')
    except KeyError as e:
        raise runfolder.RunError('snapshot {} does not fit the run\'s model (it has no {}); was '
                                 'it written by another setting or version?'.format(
                                     path, e.args[0] if e.args else e)) from None
    except ValueError as e:
        raise runfolder.RunError('snapshot {} does not fit the run\'s model ({})'.format(
            path, ' '.join(str(e).split()))) from None
    device.use()
    model.to_device(device)
    return RunData(folder=folder, record=record, options=options, setting=setting,
                   dataset=dataset, seed=seed, snapshot=path, device=device, model=model,
                   train=train, test=test, n_classes=n_classes,
                   batch_size=int(options.get('batch_size') or setting.batch_size),
                   test_batch_size=int(options.get('test_batch_size') or 500))


def _snapshot_path(folder, snapshot, suffix=''):
    if snapshot is not None:
        for path in (snapshot, os.path.join(folder, snapshot)):
            if os.path.isfile(path):
                return path
        raise runfolder.RunError('--snapshot {}: no such file (neither as given nor in {})'
                                 .format(snapshot, folder))
    if not runfolder.snapshot_files(folder, suffix):
        raise runfolder.RunError('{} holds no snapshot (snapshot_epoch_N{}); train the run first '
                                 '(mixnorm-exp run, or --resume it)'.format(folder, suffix))
    try:
        return runfolder.newest_readable_snapshot(folder, suffix)
    except runfolder.RunError:
        raise runfolder.RunError('{} holds no readable snapshot (all damaged); give one with '
                                 '--snapshot or rerun'.format(folder)) from None


def training_batches(run, n_batches, device=None):
    """The first ``n_batches`` full batches (the run's batch size) of the run's training set in
    the order of ``default_rng(seed).permutation``, without augmentation, as ``(x, t)`` on
    the run's device (fewer when the training set holds fewer full batches)."""
    size = run.batch_size
    available = len(run.train) // size
    if available == 0:
        raise runfolder.RunError('the training set ({} images) is smaller than the run\'s batch '
                                 'size {}'.format(len(run.train), size))
    order = numpy.random.default_rng(run.seed).permutation(len(run.train))
    return [chainer.dataset.concat_examples(
        [run.train[int(i)] for i in order[b * size:(b + 1) * size]], device or run.device)
        for b in range(min(n_batches, available))]


def evaluation_batches(run, device=None):
    """The run's test set in order, in batches of its test batch size, as ``(x, t)``."""
    size = run.test_batch_size
    return [chainer.dataset.concat_examples(
        [run.test[i] for i in range(start, min(start + size, len(run.test)))],
        device or run.device) for start in range(0, len(run.test), size)]


def save_model(model, path):
    """``save_npz(path, model)`` written atomically (a hidden temporary file, fsync,
    ``os.replace``); loadable with ``chainer.serializers.load_npz(path, model)``."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder or '.', '.{}.tmp'.format(name))
    try:
        with open(tmp, 'wb') as f:
            chainer.serializers.save_npz(f, model)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _mib(n):
    return '{:.1f} MiB'.format(n / 2 ** 20)


def main_recompute(args, out=None):
    """``mixnorm-exp recompute RUN``: recompute the MN mixtures of a run's snapshot from
    ``--batches`` training batches and write the model to ``RUN/recomputed_N.npz``."""
    out = out or sys.stdout
    run = load_run(args.run, args.snapshot, args.device, args.data_dir, need_mn=True)
    batches = training_batches(run, args.batches)
    done = recompute(run.model, batches, rows_per_batch=args.rows_per_batch, seed=run.seed)
    path = save_model(run.model, os.path.join(run.folder,
                                              'recomputed_{}.npz'.format(len(batches))))
    layers = '; '.join('{} {} rows x {} channels ({}), {} components'.format(
        short_name(name), info['rows'], info['channels'], _mib(info['bytes']),
        info['components']) for name, info in done.items())
    print('{}: MN mixtures of {} recomputed from {} training batches of {} in test mode: {}{}'
          .format(path, os.path.basename(run.snapshot), len(batches), run.batch_size, layers,
                  '' if len(batches) == args.batches else ' (the training set holds only {} '
                  'full batches)'.format(len(batches))), file=out, flush=True)
    return path


def main_evaluate(args, out=None):
    """``mixnorm-exp evaluate RUN [RUN ...]``: test accuracy (%) of each strategy per run, as a
    table (``-``: does not apply), and as JSON with ``--json``."""
    out = out or sys.stdout
    strategies = args.strategies
    folders = seeds.expand_run_dirs(args.runs)     # a folder of --seeds runs: its seeds
    records = []
    for folder in folders:                          # every folder checked before any output
        if not os.path.isfile(os.path.join(folder, 'setting.json')):
            raise runfolder.RunError('{} is not a run folder (no setting.json); give folders '
                                     'written by `mixnorm-exp run`'.format(folder))
        _snapshot_path(folder, None)
        records.append(dict(runfolder.read_json(os.path.join(folder, 'setting.json'),
                                                'setting.json'), dir=folder))
    seeds.group_variants(records)                   # one run per variant and seed
    widths = [max(len(s), 7) for s in strategies]
    run_width = max(12, max(len(r) for r in folders))
    print('{:<{}} {:>4} {}'.format('run', run_width, 'seed', ' '.join(
        '{:>{}}'.format(s, w) for s, w in zip(strategies, widths))), file=out, flush=True)
    results, notes, variants = {}, [], {}
    for folder in folders:
        run = load_run(folder, None, args.device, args.data_dir)
        needs_train = 'recompute' in strategies and bool(mn_links(run.model))
        train = training_batches(run, args.batches) if needs_train else None
        found = evaluate_strategies(
            run.model, evaluation_batches(run), train, strategies,
            rows_per_batch=args.rows_per_batch, seed=run.seed)
        if train is not None and len(train) < args.batches:
            notes.append('-  {}: recompute used {} batches (the training set holds only {} full '
                         'batches of {})'.format(folder, len(train), len(train), run.batch_size))
        if not mn_links(run.model):
            notes.append('-  {}: a BN model; its queue column is BN\'s test mode (running '
                         'averages)'.format(folder))
        cells, reasons = [], {}
        for s, w in zip(strategies, widths):
            value = found[s].get('accuracy')
            if value is None:
                reasons.setdefault(found[s]['unavailable'], []).append(s)
            cells.append('{:>{}}'.format(runfolder.format_value(
                None if value is None else 100 * value), w))
        print('{:<{}} {:>4} {}'.format(folder, run_width, run.seed, ' '.join(cells)), file=out,
              flush=True)
        notes += ['-  {}: {} {} not apply ({})'.format(
            folder, ', '.join(names), 'does' if len(names) == 1 else 'do', reason)
            for reason, names in reasons.items()]
        results[folder] = {'setting': run.setting.name, 'seed': run.seed,
                           'snapshot': run.snapshot, 'n_test': len(run.test),
                           'strategies': {s: _json_result(r) for s, r in found.items()}}
        record = runfolder.read_json(os.path.join(folder, 'setting.json'), 'setting.json')
        variants.setdefault(seeds.variant_key(record), (seeds.variant_label(record), []))[1].append(
            found)
    several = [v for v in variants.values() if len(v[1]) > 1]
    if several:
        print('over seeds: median [95% bootstrap interval of the median] (seeds)', file=out)
        for label, founds in several:
            print('{}: {}'.format(label, '; '.join('{} {}'.format(s, seeds.interval_text(
                [None if f[s].get('accuracy') is None else 100 * f[s]['accuracy']
                 for f in founds])) for s in strategies)), file=out)
    for note in notes:
        print(note, file=out)
    if args.json:
        runfolder.write_json(args.json, results)
    return results


def _json_result(result):
    """A strategy's result for JSON: accuracy in %, loss, examples and the extras."""
    if 'unavailable' in result:
        return dict(result)
    out = dict(result, accuracy=100 * result['accuracy'])
    for key in ('recomputed', 'pool'):
        if key in out:
            out[key] = {short_name(k): v for k, v in out[key].items()}
    return out


# -- argument parsing ------------------------------------------------------------------------

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError('{!r} is not an integer'.format(text)) from None
    if value < 1:
        raise argparse.ArgumentTypeError('must be a positive integer (>= 1); got {}'.format(text))
    return value


def strategy_list(text):
    """``'queue,pool'`` -> ``['queue', 'pool']``, each one of :data:`STRATEGIES`."""
    names = [s.strip() for s in str(text).split(',') if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if not names or unknown:
        raise argparse.ArgumentTypeError('{!r}: give a comma-separated list of {}'.format(
            text, ','.join(STRATEGIES)))
    return list(dict.fromkeys(names))


def _common_arguments(p):
    p.add_argument('--batches', type=_positive_int, default=DEFAULT_BATCHES,
                   help='training batches (the run\'s batch size, fixed seeded order, no '
                   'augmentation) the mixtures are recomputed from (default {})'.format(
                       DEFAULT_BATCHES))
    p.add_argument('--rows-per-batch', type=_positive_int,
                   help='keep only this many rows of each batch per MN layer (evenly spread; '
                   'default all N*H*W rows)')
    p.add_argument('--device', default='@numpy', help="chainer device: '@numpy', '@cupy:0'")
    p.add_argument('--data-dir', help='folder with the CIFAR archive or its extracted folder '
                   '(as for mixnorm-exp run)')


def add_parsers(subparsers):
    """Add the ``recompute`` and ``evaluate`` subcommands to ``subparsers`` (of
    ``mixnorm-exp``); each parser's default ``func`` is :func:`main_recompute` /
    :func:`main_evaluate`. Returns the two parsers."""
    r = subparsers.add_parser(
        'recompute', help="recompute a run's MN mixtures from training batches",
        description='Recompute the MN mixtures of a run from training batches in test mode '
        '(MN\'s "precise BN") and write the model to RUN/recomputed_N.npz '
        '(chainer.serializers.load_npz(path, model)).')
    r.add_argument('run', help='a run folder of mixnorm-exp run')
    r.add_argument('--snapshot', metavar='FILE',
                   help='snapshot to start from (default: the newest readable snapshot_epoch_N)')
    _common_arguments(r)
    r.set_defaults(func=main_recompute)
    e = subparsers.add_parser(
        'evaluate', help='test accuracy of the inference strategies of runs',
        description='Test accuracy (percent) of each inference strategy: {} (see '
        'mixnorm_chainer/reproduce/inference.py).'.format(', '.join(STRATEGIES)))
    e.add_argument('runs', nargs='+', metavar='RUN', help='run folders of mixnorm-exp run')
    e.add_argument('--strategies', type=strategy_list, default=list(STRATEGIES),
                   help='comma-separated subset of {} (default all)'.format(
                       ','.join(STRATEGIES)))
    e.add_argument('--json', metavar='FILE', help='also write the results per run to FILE')
    _common_arguments(e)
    e.set_defaults(func=main_evaluate)
    return r, e


def main(argv=None):
    """``python -m mixnorm_chainer.reproduce.inference recompute|evaluate ...`` (as ``mixnorm-exp``)."""
    parser = runfolder.ArgumentParser(prog='mixnorm-exp', description=__doc__.split('\n')[0])
    add_parsers(parser.add_subparsers(dest='command', required=True))
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (KeyError, ValueError, OSError, RuntimeError) as e:
        text = e.args[0] if isinstance(e, KeyError) and e.args else (str(e) or type(e).__name__)
        print('mixnorm-exp: error: {}'.format(' '.join(str(text).split())), file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
