"""Fitting the diagonal Gaussian mixture of Mixture Normalization (Sections 3.2, 4.2, 5.1, 5.3).

One mixture per MN layer, joint over the D = C channels of the rows x_1..x_m of a mini-batch
(PAPER-NOTES 1): ``p(x) = sum_k lambda_k N(x | mu_k, diag(sigma_k^2))`` (Eq. 26-27), fitted as
the paper does:

1. k-means++ seeding with ``2 + int(log K)`` local trials per centre (Section 4.2), or the
   cheaper AFK-MC² seeding that Section 5.1 names (``init='afkmc2'``; both in
   :mod:`mixnorm_chainer.seeding`),
2. ``kmeans_iters`` Lloyd k-means iterations,
3. an M-step on the hard k-means assignment (initial lambda, mu, sigma^2),
4. ``em_iters`` EM iterations, the E-step in the log domain (Eq. 31 via log-sum-exp),
5. pruning (Section 5.3): components with lambda_k < ``min_weight`` are dropped and their
   rows re-assigned to the rest by one more E-step over the kept components and an M-step.

A warm start (``init`` a mixture, e.g. the previous training step's) replaces steps 1-3: EM
starts from that mixture (:mod:`mixnorm_chainer.warm_start` decides when a layer does this).

The paper's "EM iter." is ``kmeans_iters + em_iters`` (PAPER-NOTES 2). ``sample_fraction`` < 1
fits on a random subset of rows (Section 5.1: >= 25% is "sufficiently accurate").

The code is written once against ``xp`` (numpy or cupy). Random draws come from a host
``numpy.random.Generator`` (a few numbers per fit), so a seed gives the same mixture on CPU and
GPU. The only host-device synchronization is the pruning decision (a K-vector to the host).
The structure follows scikit-learn's ``mixture/_gaussian_mixture.py``: one function per step.

Every quantity the fit needs from *all* rows is a sum over rows, taken through a ``reduction``
(:mod:`mixnorm_chainer.reduction`: all rows here, or spread over MPI ranks). The seedings live
in :mod:`mixnorm_chainer.seeding`.
"""
import math
from collections import namedtuple

import numpy
from chainer.backend import get_array_module
from chainer.backends import cuda

from mixnorm_chainer import kernels, options
from mixnorm_chainer.gaussian import far_components, log_gaussian_prob, logsumexp, squared
from mixnorm_chainer.reduction import LOCAL
from mixnorm_chainer.seeding import afkmc2, kmeans_plusplus, squared_distances


class GaussianMixture:
    """A fitted diagonal-covariance Gaussian mixture (Eq. 26-27).

    Attributes:
        weights: lambda, shape (K,), non-negative, summing to 1.
        means: mu, shape (K, D) (``centred_means + center``).
        variances: sigma^2, shape (K, D), at least the fit's variance floor.
        center: None, or a (D,) point the fit subtracted from the rows (:func:`fit_gmm` sets
            it for data far from the origin). Densities are evaluated on ``x - center``
            against ``centred_means``, so they keep float32 precision where the means
            themselves are only known to a float32 unit of roundoff of their magnitude.
        centred_means: ``mu - center`` as fitted (``means`` when there is no center).
    """

    def __init__(self, weights, means, variances, center=None):
        self.weights = weights
        self.variances = variances
        self.center = center
        self.centred_means = means if center is None else means - center

    @classmethod
    def from_centred(cls, weights, centred_means, variances, center):
        """The mixture whose means are ``centred_means + center``, keeping the centred ones."""
        gmm = cls(weights, centred_means, variances)
        gmm.center = center
        return gmm

    @property
    def means(self):
        if self.center is None:
            return self.centred_means
        return self.centred_means + self.center

    def _centred(self, X):
        X = self._rows(X)
        if self.center is None:
            return X, self.centred_means
        return X - self.center, self.centred_means

    @property
    def means64(self):
        """The means in float64, ``centred_means + center`` summed there (exact for float32
        parts; what the parameter queue stores)."""
        return uncentred(self.centred_means, self.center)

    @property
    def n_components(self):
        """The number of components K (after pruning, when fitted by :func:`fit_gmm`)."""
        return int(self.weights.shape[0])

    def _rows(self, X):
        means = self.centred_means
        X = get_array_module(means).asarray(X)
        if X.ndim != 2 or X.shape[1] != means.shape[1]:
            raise ValueError(f'expected rows of shape (m, {means.shape[1]}), got {X.shape}')
        return X.astype(means.dtype, copy=False)

    def weighted_log_prob(self, X):
        """``log lambda_k + log N(x_i | mu_k, sigma_k^2)``, shape (m, K) (Eq. 26-27)."""
        X, means = self._centred(X)
        return log_gaussian_prob(X, means, self.variances) + _log(self.weights)[None, :]

    def responsibilities(self, X):
        """Posterior nu_k(x_i) of Eq. 31, shape (m, K); rows sum to 1."""
        X, means = self._centred(X)
        log_resp, _ = e_step(X, self.weights, means, self.variances)
        return get_array_module(log_resp).exp(log_resp).T

    def log_likelihood(self, X):
        """``log p(x_i)`` of each row (Eq. 26), shape (m,)."""
        return logsumexp(self.weighted_log_prob(X), axis=1)

    def score(self, X):
        """Mean log-likelihood per row (scikit-learn's ``GaussianMixture.score``)."""
        return float(self.log_likelihood(X).mean())

    def __repr__(self):
        return (f'GaussianMixture(n_components={self.n_components}, '
                f'dim={self.centred_means.shape[1]})')


def uncentred(centred_means, center):
    """``centred_means + center`` in float64 (exact for float32 parts); ``center`` may be None."""
    means = centred_means.astype(numpy.float64)
    return means if center is None else means + center.astype(numpy.float64)


def _log(a):
    xp = get_array_module(a)
    with numpy.errstate(divide='ignore'):
        return xp.log(a)


# Internally every per-row, per-component array is laid out (K, m): component-major, so the
# reductions over the few components run over contiguous rows (numpy reduces a short last axis
# slowly). The public methods return the (m, K) transposes.

def argmin_components(d):
    """``d.argmin(axis=0)`` for (K, m) d, as K - 1 elementwise passes; ties go to the lower k.
    (``xp.where``, not a boolean-mask assignment, which would synchronize with the GPU.)"""
    xp = get_array_module(d)
    best = d[0]
    labels = xp.zeros(d.shape[1], dtype=numpy.int32)
    for k in range(1, d.shape[0]):
        closer = d[k] < best
        best = xp.where(closer, d[k], best)
        labels = xp.where(closer, numpy.int32(k), labels)
    return labels


def one_hot(labels, n_classes, dtype):
    """(K, m) indicator of ``labels`` (m,)."""
    xp = get_array_module(labels)
    return (xp.arange(n_classes)[:, None] == labels[None, :]).astype(dtype)


def kmeans_assign(X, centers, X_sq):
    """Index of the nearest centre of each row, shape (m,)."""
    if kernels.enabled(X):
        return kernels.kmeans_assign(X, centers)
    return argmin_components(squared_distances(X, centers, X_sq))


def kmeans_step(X, centers, X_sq, reduction=LOCAL):
    """One Lloyd iteration; a centre that loses all its rows stays where it was."""
    xp = get_array_module(X)
    resp = one_hot(kmeans_assign(X, centers, X_sq), centers.shape[0], X.dtype)
    counts, sums = reduction.sum(resp.sum(axis=1), resp @ X)
    return xp.where(counts[:, None] > 0, sums / xp.maximum(counts, 1)[:, None], centers)


def component_moments(X, resp, reduction=LOCAL, X2=None, count_eps=0.0, shift=None):
    """Weighted counts, means and variances of rows X (m, D) per component.

    ``n_k = sum_i r_ki + count_eps``, ``mean_k = sum_i r_ki x_i / n_k`` and
    ``var_k = sum_i r_ki (x_i - mean_k)^2 / n_k`` for responsibilities ``resp`` (K, m): the
    EM M-step of the diagonal GMM and Eq. 35-36 of the transform. A component
    with ``n_k = 0`` gets mean 0 and variance 0. With ``shift`` (D,) the moments are those of
    ``x - shift`` (the means in shifted coordinates).

    The variance is the one-pass ``sum_i r_ki x_i^2 / n_k - mean_k^2`` (one product with
    ``X2 = X * X``) where that is precise, and the centred two-pass sum for the components
    :func:`~mixnorm_chainer.gaussian.far_components` names (a tight component far from the
    batch mean: one-pass float32 would return 0 or the floor; measured in docs/numerics.md).
    On the GPU the reduction kernels sum every component centred (two passes), and X may also
    be the (N, D, S) view of N*S rows the kernels address (:mod:`mixnorm_chainer.kernels`). All
    sums go through ``reduction`` (all-reduced when distributed; the choice of components is
    made from the reduced sums, so every rank makes the same one).
    """
    xp = get_array_module(X)
    if kernels.enabled(X):
        X3 = X if X.ndim == 3 else X[:, :, None]
        shift = xp.zeros(X3.shape[1], resp.dtype) if shift is None else shift
        n, sum_x = reduction.sum(resp.sum(axis=1), kernels.weighted_sums(X3, resp, shift))
        n = n + count_eps
        safe_n = xp.where(n > 0, n, 1)[:, None]
        means = sum_x / safe_n
        centred, = reduction.sum(kernels.weighted_centred_squares(X3, resp, means, shift))
        return n, means, xp.maximum(centred / safe_n, 0)
    if shift is not None:
        X, X2 = X - shift, None
    one_pass = xp is numpy      # on the GPU every component takes the centred pass
    sums = [resp.sum(axis=1), resp @ X]
    if one_pass:
        sums.append(resp @ (X * X if X2 is None else X2))
    n, sum_x, *sum_x2 = reduction.sum(*sums)
    n = n + count_eps
    safe_n = xp.where(n > 0, n, 1)[:, None]
    means = sum_x / safe_n
    if one_pass:
        variances = sum_x2[0] / safe_n - means * means
        far = numpy.flatnonzero(far_components(means, variances))
    else:
        far = numpy.arange(means.shape[0])
    if far.size:
        centred, = reduction.sum(xp.stack([resp[k] @ squared(X - means[k]) for k in far]))
        if far.size == means.shape[0]:
            variances = centred / safe_n
        else:
            variances[far] = centred / safe_n[far]
    return n, means, xp.maximum(variances, 0)


def m_step(X, X2, resp, reg_covar, reduction=LOCAL):
    """M-step: lambda, mu, sigma^2 from responsibilities ``resp`` (K, m) (scikit-learn's).

    ``n_k = sum_i r_ik`` (+10 machine epsilon, so an empty component stays finite),
    ``lambda_k = n_k / sum_j n_j``, ``mu_k = sum_i r_ik x_i / n_k``,
    ``sigma_k^2 = sum_i r_ik (x_i - mu_k)^2 / n_k + reg_covar`` (the variance floor), from the
    sums over rows of :func:`component_moments` (all-reduced when distributed).
    """
    nk, means, variances = component_moments(X, resp, reduction, X2,
                                              count_eps=10 * numpy.finfo(X.dtype).eps)
    return nk / nk.sum(), means, variances + reg_covar


def e_step(X, weights, means, variances, X2=None):
    """E-step in the log domain: ``(log nu (K, m), log p(x) (m,))`` with nu from Eq. 31."""
    if kernels.enabled(X):
        return kernels.e_step(X, weights, means, variances)
    # component-major (K, m): the reductions over the few components run over contiguous rows
    weighted = get_array_module(X).ascontiguousarray(log_gaussian_prob(X, means, variances, X2).T)
    weighted += _log(weights)[:, None]
    log_norm = logsumexp(weighted, axis=0)
    return weighted - log_norm[None, :], log_norm


def prune(X, X2, gmm_params, min_weight, reg_covar, reduction=LOCAL):
    """Section 5.3: drop components with lambda_k < min_weight, merge their rows into the rest.

    The rows are re-assigned by an E-step over the kept components (their posteriors
    renormalized), followed by an M-step. The largest component is always kept. This is the
    one host decision of the fit (K-vector to host).
    """
    weights, means, variances = gmm_params
    w = cuda.to_cpu(weights)                 # host synchronization (the pruning decision)
    keep = w >= min_weight
    if keep.all():
        return gmm_params
    keep[int(w.argmax())] = True
    xp = get_array_module(X)
    idx = xp.asarray(numpy.flatnonzero(keep))
    log_resp, _ = e_step(X, weights[idx], means[idx], variances[idx], X2)
    return m_step(X, X2, xp.exp(log_resp), reg_covar, reduction)


def magnitude_limit(dtype, m, D, reg_covar=None):
    """The largest |x| a fit of m rows of D channels handles in ``dtype`` without overflow.

    Sums of squared deviations run over up to m rows, and a row's quadratic form (unless
    ``reg_covar`` is None: no densities) sums D squared distances divided by variances as small
    as ``reg_covar``; centred rows are at most 2|x| and distances 4|x| apart. Beyond this bound
    they could reach the dtype's largest value (float32: ~8e13 for D = 768; float64: ~1e150).
    """
    fmax = float(numpy.finfo(dtype).max)
    limit = math.sqrt(fmax / (16.0 * max(m, 1)))
    if reg_covar is not None:
        limit = min(limit, math.sqrt(fmax * reg_covar / (64.0 * max(D, 1))))
    return limit


def rows_problem(X, reg_covar, m=None):
    """None when the rows X (m, D) can be fitted, else what is wrong with them (one line).

    NaN/inf, or entries beyond :func:`magnitude_limit` (whose squares would overflow X's dtype,
    e.g. activations of a diverged network). One host synchronization. ``m``: the rows of the
    whole batch, when X is one rank's share; ``reg_covar`` None: no densities are evaluated.
    """
    xp = get_array_module(X)
    bounds = xp.stack([X.max(), -X.min()]) if X.size else xp.zeros(2)
    largest = float(bounds.max())      # host synchronization; NaN if any entry is NaN
    if not math.isfinite(largest):
        return 'non-finite input (NaN or inf)'
    limit = magnitude_limit(X.dtype, X.shape[0] if m is None else m, X.shape[1], reg_covar)
    if largest > limit:
        return (f'entries of magnitude {largest:.3g} exceed {limit:.3g}, beyond which sums of '
                f'their squares overflow {X.dtype} (has training diverged? lower the learning '
                'rate, or normalize in float64)')
    return None


def random_generator(seed):
    """The host ``numpy.random.Generator`` that a fit or a layer draws from.

    ``seed``: a Generator (used as it is), an int or ``SeedSequence`` (its own stream), or
    None: a stream seeded by one draw from numpy's global random state, so that
    ``numpy.random.seed(s)`` makes the draws repeat, as it does for chainer's initializers and
    scikit-learn's ``random_state=None``.
    """
    if isinstance(seed, numpy.random.Generator):
        return seed
    if seed is None:
        seed = numpy.random.randint(numpy.iinfo(numpy.int64).max, dtype=numpy.int64)
    return numpy.random.default_rng(seed)


def _check_rows(X):
    if X.ndim != 2:
        raise ValueError(f'fit_gmm expects rows X of shape (m, D); got shape {X.shape}')
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f'fit_gmm needs at least one row and one column; got shape {X.shape}')
    if X.dtype.kind != 'f':
        raise ValueError(f'fit_gmm expects floating-point rows; got dtype {X.dtype}')


def fit_gmm(X, n_components, *, kmeans_iters=1, em_iters=1, seed=None, sample_fraction=1.0,
            min_weight=0.01, reg_covar=1e-6, check_finite=True, reduction=LOCAL,
            init='kmeans++', chain_length=None, accept_start=None):
    """Fit a diagonal GMM to rows ``X`` (m, D) as Mixture Normalization does in training.

    Args:
        X: numpy or cupy array (m, D); float16 is fitted in float32.
        n_components: K before pruning.
        kmeans_iters: Lloyd iterations after the seeding (none after a warm start).
        em_iters: EM iterations after the k-means initialization (or from the warm start).
            The paper's "EM iter." is ``kmeans_iters + em_iters``.
        init: the seeding, ``'kmeans++'`` (the paper's,
            :func:`~mixnorm_chainer.seeding.kmeans_plusplus`) or ``'afkmc2'``
            (:func:`~mixnorm_chainer.seeding.afkmc2`); or a warm start: a
            :class:`GaussianMixture`, or ``(weights (K',), means (K', D), variances (K', D))``
            (numpy or on X's device, any float dtype, uncentred), K' <= K, that EM starts
            from. A component of weight 0 (pruned) takes no rows and is pruned again
            (``min_weight`` > 0). The returned mixture of a warm start also carries
            ``start``, a :class:`StartInfo`.
        chain_length: AFK-MC²'s chain length (None:
            :func:`~mixnorm_chainer.seeding.chain_length_for`).
        accept_start: for a warm start, None or a function of the :class:`StartInfo` that
            says, after the first EM iteration, whether to go on; when it returns False the
            fit stops there and ``fit_gmm`` returns None (the caller reseeds).
        seed: int, a ``numpy.random.Generator``, or None (a stream seeded from numpy's
            global random state: :func:`random_generator`); draws happen on the host.
        sample_fraction: fit on ``ceil(sample_fraction * m)`` random rows (at least K).
        min_weight: pruning threshold on lambda_k (Section 5.3); 0 disables pruning.
        reg_covar: variance floor added to every sigma^2 (as scikit-learn's ``reg_covar``).
        check_finite: raise ValueError on NaN/inf rows or entries whose squares would
            overflow (:func:`rows_problem`; one host sync).
        reduction: where the batch's rows are: :data:`LOCAL` (all here), or a
            :class:`mixnorm_chainer.multi_node.AllReduce` when X is this rank's share of a
            batch spread over MPI ranks (every rank then gets the global batch's mixture;
            all ranks must call with the same seed state).

    Returns:
        :class:`GaussianMixture` with K' <= K components, in X's (float32 for float16) dtype.
        Degenerate data (duplicate rows, fewer distinct rows than K, constant columns) gives
        fewer components or floored variances, never NaN.
    """
    xp = get_array_module(X)
    X = xp.asarray(X)
    _check_rows(X)
    n_components, kmeans_iters, em_iters, sample_fraction, min_weight, reg_covar = \
        options.check_all(n_components=n_components, kmeans_iters=kmeans_iters,
                          em_iters=em_iters, sample_fraction=sample_fraction,
                          min_weight=min_weight, reg_covar=reg_covar).values()
    start = None
    if isinstance(init, str):
        options.check('init', init, 'fit_gmm init')
        if init == 'previous':
            raise ValueError("fit_gmm init must be 'kmeans++', 'afkmc2' or a mixture to start "
                             "from; got 'previous' (a layer option: the layer passes the "
                             "previous mixture)")
    else:
        start = _start_mixture(init, X.shape[1], n_components)
    if chain_length is not None:
        chain_length = options.check('chain_length', chain_length)
    if X.dtype == numpy.float16:
        X = X.astype(numpy.float32)
    if check_finite:
        problem = rows_problem(X, reg_covar, reduction.total(X.shape[0]))
        if problem is not None:
            raise ValueError('fit_gmm: X contains NaN or inf' if problem.startswith('non-finite')
                             else f'fit_gmm: {problem}')
    rng = random_generator(seed)
    m = reduction.total(X.shape[0])
    if sample_fraction < 1:
        n_sub = min(m, max(n_components, int(math.ceil(sample_fraction * m))))
        if n_sub < m:
            X, reduction = reduction.subset(X, numpy.sort(rng.choice(m, n_sub, replace=False)))
    # Fitting is shift-equivariant; a far-off-centre X is centred first (float32 precision).
    shift = reduction.shift(X)
    if shift is not None:
        X = X - shift
    X2 = X * X
    X_sq = X2 @ xp.ones(X.shape[1], X.dtype)      # row norms as a BLAS product (fast)

    if start is None:
        params = seeded_start(X, X2, X_sq, n_components, rng, init, chain_length, kmeans_iters,
                              reg_covar, reduction)
    else:
        params, start_info = warm_start_em(X, X2, start, shift, reg_covar, reduction, em_iters)
        if accept_start is not None and not accept_start(start_info):
            return None
        em_iters = max(em_iters - 1, 0)
    for _ in range(em_iters):
        log_resp, _ = e_step(X, *params, X2=X2)
        params = m_step(X, X2, xp.exp(log_resp), reg_covar, reduction)
    if min_weight > 0:
        params = prune(X, X2, params, min_weight, reg_covar, reduction)
    weights, means, variances = params
    if shift is None:
        gmm = GaussianMixture(weights, means, variances)
    else:
        gmm = GaussianMixture.from_centred(weights, means, variances, shift)
    if start is not None:
        gmm.start = start_info
    return gmm


def seeded_start(X, X2, X_sq, n_components, rng, init, chain_length, kmeans_iters, reg_covar,
                 reduction=LOCAL):
    """Steps 1-3 of the fit: seeding (``init``), ``kmeans_iters`` Lloyd iterations, and the
    M-step on the hard assignment; returns (lambda, mu, sigma^2) of the centred rows."""
    if init == 'afkmc2':
        centers = afkmc2(X, n_components, rng, chain_length, X_sq, reduction)
    else:
        centers = kmeans_plusplus(X, n_components, rng, X_sq, reduction)
    for _ in range(kmeans_iters):
        centers = kmeans_step(X, centers, X_sq, reduction)
    resp = one_hot(kmeans_assign(X, centers, X_sq), n_components, X.dtype)
    return m_step(X, X2, resp, reg_covar, reduction)


class StartInfo(namedtuple('StartInfo', 'score weights live')):
    """How a warm start's mixture fits the batch, from the first EM iteration (host values):

    * ``score``: the batch's mean log-likelihood per row under the starting mixture;
    * ``weights``: the weights after the first M-step, the share of the batch each starting
      component explains (the start's own weights when no EM iteration runs);
    * ``live``: how many of the start's components have weight > 0 (K minus the pruned).
    """


def warm_start_em(X, X2, start, shift, reg_covar, reduction=LOCAL, em_iters=1):
    """The first EM iteration from a given mixture ``start`` (float64 ``(lambda, mu,
    sigma^2)``, uncentred, on X's device or the host): its E-step on the centred rows and,
    when ``em_iters`` > 0, the M-step. Returns ``(params, StartInfo)``: the parameters (``start``
    in the rows' coordinates and dtype when ``em_iters`` is 0) and what the reseeding decision
    needs, from all-reduced sums (every rank of a distributed fit gets the same values), in one
    host transfer."""
    xp = get_array_module(X)
    weights, means, variances = (xp.asarray(a, dtype=numpy.float64) for a in start)
    if shift is not None:
        means = means - shift.astype(numpy.float64)
    params = (weights.astype(X.dtype), means.astype(X.dtype), variances.astype(X.dtype))
    log_resp, log_norm = e_step(X, *params, X2=X2)
    if em_iters > 0:
        params = m_step(X, X2, xp.exp(log_resp), reg_covar, reduction)
    # the M-step's weights come from reduced sums already; only the log-likelihood is a local sum
    total, = reduction.sum(log_norm.sum(dtype=numpy.float64)[None])
    host = cuda.to_cpu(xp.concatenate([total, params[0].astype(numpy.float64), weights]))
    K = params[0].shape[0]
    return params, StartInfo(float(host[0]) / reduction.total(X.shape[0]), host[1:K + 1],
                             int((host[K + 1:] > 0).sum()))


def _start_mixture(init, dim, n_components):
    """``init`` (a GaussianMixture or a (weights, means, variances) triple), unchanged; a
    one-line ValueError when the shapes do not fit or, for numpy arrays, the values (a
    mixture on the GPU, as the layer's queue holds, is not read back to the host here)."""
    if isinstance(init, GaussianMixture):
        init = (init.weights, init.means64, init.variances)
    try:
        weights, means, variances = init
        shapes = [a.shape for a in (weights, means, variances)]
    except (TypeError, ValueError, AttributeError):
        raise ValueError("fit_gmm init must be 'kmeans++', 'afkmc2', a GaussianMixture or a "
                         f"(weights, means, variances) triple of arrays; got "
                         f"{type(init).__name__}") from None
    K = shapes[0][0] if len(shapes[0]) == 1 else -1
    if not (1 <= K <= n_components and shapes[1] == shapes[2] == (K, dim)):
        raise ValueError(f'fit_gmm init: a mixture of 1..{n_components} components over {dim} '
                         f'channels is needed; got weights {shapes[0]}, means {shapes[1]}, '
                         f'variances {shapes[2]}')
    if all(get_array_module(a) is numpy for a in (weights, means, variances)) and not (
            numpy.isfinite(means).all() and numpy.isfinite(variances).all() and
            (variances > 0).all() and (weights >= 0).all() and weights.sum() > 0):
        raise ValueError('fit_gmm init: the starting mixture needs finite means, variances > 0 '
                         'and weights >= 0 that are not all 0')
    return weights, means, variances
