"""Refitting the mixtures of a trained model's MN layers (Section 3.2's strategies, used by
:mod:`mixnorm_chainer.reproduce.inference`): one mixture fitted to rows (:func:`fit_to_rows`)
and stored as a layer's whole queue (:func:`store_mixture`), from the layer's row pool
(:func:`pool_fit`) or from the inputs training batches give it with the final weights
(:func:`recompute`, MN's "precise BN").
"""
import chainer
import numpy
from chainer.backend import get_array_module

from mixnorm_chainer.functions import (
    ComponentStatistics,
    batch_statistics,
    compute_dtype,
    to_rows,
)
from mixnorm_chainer.gmm import GaussianMixture, fit_gmm, rows_problem, uncentred
from mixnorm_chainer.links import MixtureNormalization
from mixnorm_chainer.pool import pool_indices

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
    """Eq. 35-36 of rows (m, C) under responsibilities nu (m, K), as a training step computes
    them (:func:`~mixnorm_chainer.functions.batch_statistics`): a
    :class:`~mixnorm_chainer.ComponentStatistics`, means in float64."""
    lam, _, mu_s, var, shift, _ = batch_statistics(rows, nu.astype(rows.dtype, copy=False))
    return ComponentStatistics(lam, uncentred(mu_s, shift), var)


def store_mixture(link, fit, statistics):
    """Make ``(fit, statistics)`` the link's whole queue: one entry, ``queue.count = 1``.

    Test mode (Eq. 38-39 with T' = 1, tau = 1) then normalizes every batch with this mixture:
    the posteriors rho are the fit's nu (Eq. 31), the factors the statistics' (Eq. 34-35).
    ``fit``: a :class:`~mixnorm_chainer.GaussianMixture` or ``(weights, means, variances)``;
    ``statistics``: ``(lambda, mu, sigma^2)`` (:func:`fit_to_rows` returns both). At most the
    link's K components (pruned ones are stored with weight 0). The link's pool, random
    generator and options are not touched.
    """
    if isinstance(fit, GaussianMixture):
        fit = (fit.weights, fit.means64, fit.variances)
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
    link.queue.clear()
    link.queue.push(statistics=mixtures[1], fit=mixtures[0])


# -- the row pool (Section 3.2's first strategy) --------------------------------------------

def pool_fit(link, seed=0):
    """The pool strategy: fit one mixture to the link's pool
    (:meth:`~mixnorm_chainer.pool.RowPool.kept_rows`, :func:`fit_to_rows`) and make it the
    link's queue (:func:`store_mixture`). Changes the link's queue in place (use a copy of the
    model to keep it, as ``evaluate_strategies`` does). Returns ``(fit, statistics)``."""
    fit, statistics = fit_to_rows(link, link.pool.kept_rows(), seed=seed)
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


def predictor_of(model):
    """``model.predictor`` of an ``L.Classifier``, else the model."""
    return getattr(model, 'predictor', model)


def _forward_until(model, batch, capture):
    """Forward the batch's x through the model's predictor in test mode, no graph, with the
    capture hook, until the capture has what it needs."""
    capture.reached = []
    with chainer.using_config('train', False), chainer.no_backprop_mode(), capture:
        try:
            predictor_of(model)(_inputs(batch))
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
    and layer (:func:`~mixnorm_chainer.pool.pool_indices`; no random draws). A forward pass
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
