"""One-dimensional Gaussian mixtures fitted to many sets at once (Mixture Group Normalization).

Group, layer and instance normalization compute their statistics over a per-sample set
``B_i`` (Section 2.2, Eq. 8-10): for sample n and group g, the ``m = (C/G) * H * W`` scalars of
that sample's channels in group g. Mixture Normalization over such sets (Section 3.2: "can be
applied to all the variations of batch normalization ... simply by constructing B_i
accordingly") needs one univariate mixture ``p(x) = sum_k lambda_k N(x | mu_k, sigma_k^2)``
(Eq. 26-27 with D = 1) per set: S = N*G mixtures per layer call. :func:`fit_set_mixtures` fits
them all at once on an (S, m) array, with no Python loop over sets (only over iterations, and
over the K components where that is clearer). The schedule is that of the batch-set fit
(:func:`mixnorm_chainer.fit_gmm`):

1. seeding: the initial centre of component k is the ``(k + 1/2) / K`` quantile of the set
   (:func:`quantile_seeds`; deterministic, see below),
2. ``kmeans_iters`` Lloyd k-means iterations (:func:`kmeans_step`),
3. an M-step on the hard k-means assignment (initial weights, means, variances),
4. ``em_iters`` EM iterations (:func:`e_step`, Eq. 31 in the log domain; :func:`m_step`),
5. pruning (Section 5.3): per set, components whose weight falls under ``min_weight`` are
   dropped (a per-set ``live`` mask, not ragged arrays) and that set's values re-assigned to
   its other components by one more E-step and M-step.

Deterministic seeding. The paper seeds with k-means++ (random draws). Here the mixture must be a
function of the set alone, because test mode normalizes a sample with its own sets'
mixtures: the same sample must give the same output whatever else is in the batch and whatever
ran before, and training mode must equal test mode. Quantile seeding does that with no random
stream (there is no ``seed`` argument), and on one-dimensional data it spreads the initial
centres over the distribution as k-means++ aims to. ``sample_fraction`` < 1 fits on a
deterministic strided subset (:func:`strided_subset`), for the same reason.

Degenerate sets (a ReLU map that is mostly zeros, a constant map: fewer distinct values than
K) get duplicate seeds; ties go to the lower component, the duplicate one stays empty, keeps a
weight of ~1e-15 and is pruned. Results are finite, never NaN. Each set is fitted centred on
its own mean (:func:`set_centers`; the fit is shift-equivariant), so float32 stays precise for
data far from the origin. Layout: per-set, per-component arrays are (S, K); per-value ones
(S, K, m). Written once against ``xp`` (numpy or cupy); the one host synchronization is the
pruning decision (and the input check). On cupy arrays the assignment, the k-means sums, the
E-step and the M-step sums run as CUDA kernels (:mod:`mixnorm_chainer.kernels.group`; the switch
of :func:`mixnorm_chainer.kernels.enabled`).
"""
import math

import numpy
from chainer.backend import get_array_module

from mixnorm_chainer import kernels, options
from mixnorm_chainer.gaussian import LOG_2PI
from mixnorm_chainer.gmm import rows_problem
from mixnorm_chainer.kernels import group as group_kernels


class SetMixtures:
    """S fitted univariate Gaussian mixtures, one per set (Eq. 26-27, D = 1).

    Attributes:
        weights: lambda, (S, K); 0 where ``live`` is False, each row sums to 1.
        means: mu, (S, K) (``centred_means + center``).
        variances: sigma^2, (S, K), at least ``reg_covar``.
        live: (S, K) bool, the components each set kept after pruning (Section 5.3); the
            means and variances of the others are finite placeholders.
        responsibilities: nu (S, K, m), the posterior of Eq. 31 of every value of each set
            (0 for components that are not live); sums to 1 over K.
        center: (S,), the per-set constant the fit subtracted (:func:`set_centers`).
        centred_means: ``means - center`` as fitted.
    """

    def __init__(self, weights, centred_means, variances, live, responsibilities, center):
        self.weights = weights
        self.centred_means = centred_means
        self.variances = variances
        self.live = live
        self.responsibilities = responsibilities
        self.center = center

    @property
    def means(self):
        return self.centred_means + self.center[:, None]

    @property
    def n_components(self):
        """K, the components each set started with (live or not)."""
        return int(self.weights.shape[1])

    @property
    def n_live(self):
        """(S,) number of components each set kept after pruning."""
        return self.live.sum(axis=1)

    def __repr__(self):
        return (f'SetMixtures(sets={self.weights.shape[0]}, n_components={self.n_components}, '
                f'set_size={self.responsibilities.shape[2]})')


def strided_subset(X, sample_fraction, n_components):
    """The values a fit of ``sample_fraction`` uses: ``n = min(m, max(K, ceil(f m)))`` values
    of each set (S, m), those at positions ``floor(j m / n)``, j = 0..n-1 (evenly spaced,
    starting at the first; Section 5.1's subsampling without random draws). X itself when
    n = m."""
    m = X.shape[1]
    n = min(m, max(n_components, int(math.ceil(sample_fraction * m))))
    if n == m:
        return X
    xp = get_array_module(X)
    return X[:, xp.asarray((numpy.arange(n, dtype=numpy.int64) * m) // n)]


def set_centers(X):
    """The mean of each set (S,): every fit and transform works on ``x - center``."""
    return X.mean(axis=1)


def quantile_seeds(X, n_components):
    """Initial centres (S, K): centre k is the value of rank ``floor((k + 1/2) m / K)`` among
    the set's m sorted values (the (k + 1/2)/K quantile, taken from the data, no interpolation).
    A deterministic seeding: a function of the set alone."""
    m = X.shape[1]
    ranks = ((2 * numpy.arange(n_components) + 1) * m) // (2 * n_components)
    xp = get_array_module(X)
    return xp.sort(X, axis=1)[:, xp.asarray(ranks)]


def squared_distances(X, centers, live):
    """``(x - c_k)^2`` of every value to every centre, (S, K, m); inf for components not live."""
    xp = get_array_module(X)
    d = X[:, None, :] - centers[:, :, None]
    return xp.where(live[:, :, None], d * d, numpy.inf)


def kmeans_assign(X, centers, live):
    """Index of the nearest live centre of every value, (S, m); ties go to the lower k."""
    if kernels.enabled(X):
        return group_kernels.kmeans_assign(X, centers, live)
    return squared_distances(X, centers, live).argmin(axis=1)


def one_hot(labels, n_components, dtype):
    """(S, K, m) indicator of ``labels`` (S, m)."""
    xp = get_array_module(labels)
    return (labels[:, None, :] == xp.arange(n_components)[None, :, None]).astype(dtype)


def kmeans_step(X, centers, live):
    """One Lloyd iteration: ``centers + sum(assign * (x - centers)) / counts`` per component (a
    centre that loses all its values keeps its place)."""
    if kernels.enabled(X):
        return group_kernels.kmeans_step(X, centers, live)
    xp = get_array_module(X)
    assign = one_hot(kmeans_assign(X, centers, live), centers.shape[1], X.dtype)
    counts = assign.sum(axis=2)
    moves = (assign * (X[:, None, :] - centers[:, :, None])).sum(axis=2)
    return centers + moves / xp.where(counts > 0, counts, 1)


def m_step(X, resp, live, reg_covar):
    """M-step from responsibilities ``resp`` (S, K, m) (scikit-learn's, per set):

    ``n_k = sum_i r_ik`` (+10 machine epsilon, so an empty component stays finite),
    weights ``lambda_k = n_k / sum_j n_j`` (over live components), means
    ``mu_k = sum_i r_ik x_i / n_k``, variances ``sigma_k^2 = sum_i r_ik (x_i - mu_k)^2 / n_k +
    reg_covar`` (two passes, centred on mu_k). Returns ``(weights, means, variances)``, (S, K).
    """
    if kernels.enabled(X):
        return group_kernels.m_step(X, resp, live, reg_covar)
    xp = get_array_module(X)
    nk = resp.sum(axis=2) + 10 * numpy.finfo(X.dtype).eps
    nk = xp.where(live, nk, 0)
    safe = xp.where(live, nk, 1)
    means = (resp * X[:, None, :]).sum(axis=2) / safe
    d = X[:, None, :] - means[:, :, None]
    variances = (resp * d * d).sum(axis=2) / safe + reg_covar
    return nk / nk.sum(axis=1, keepdims=True), means, variances


def estimate_weighted_log_prob(X, weights, means, variances, live):
    """``log lambda_k + log N(x_i | mu_k, sigma_k^2)`` (Eq. 26-27), (S, K, m); -inf for
    components that are not live."""
    xp = get_array_module(X)
    d = X[:, None, :] - means[:, :, None]
    log_w = xp.log(xp.where(live, weights, 1))
    lp = -0.5 * (LOG_2PI + xp.log(variances)[:, :, None] + d * d / variances[:, :, None])
    lp += log_w[:, :, None]
    return xp.where(live[:, :, None], lp, -numpy.inf)


def e_step(X, weights, means, variances, live):
    """E-step: the responsibilities nu_k(x_i) of Eq. 31, (S, K, m), via log-sum-exp over the
    live components (rows sum to 1 over K; 0 for components that are not live)."""
    if kernels.enabled(X):
        return group_kernels.e_step(X, weights, means, variances, live)
    xp = get_array_module(X)
    lp = estimate_weighted_log_prob(X, weights, means, variances, live)
    lp -= lp.max(axis=1, keepdims=True)          # at least one component is live: finite
    resp = xp.exp(lp)
    resp /= resp.sum(axis=1, keepdims=True)
    return resp


def prune(X, params, live, min_weight, reg_covar):
    """Section 5.3 per set: components with weight < ``min_weight`` are dropped from ``live``
    (the heaviest is always kept) and that set's values re-assigned to the rest by an E-step
    over them and an M-step; sets that drop nothing keep their parameters.
    Returns ``(params, live)``. One host synchronization (whether any set dropped one)."""
    xp = get_array_module(X)
    weights = params[0]
    keep = live & (weights >= min_weight)
    keep[xp.arange(weights.shape[0]), weights.argmax(axis=1)] = True
    changed = (keep != live).any(axis=1)
    if not bool(changed.any()):                  # host synchronization
        return params, live
    refit = m_step(X, e_step(X, *params, keep), keep, reg_covar)
    params = tuple(xp.where(changed[:, None], new, old) for new, old in zip(refit, params))
    return params, keep


def sets_problem(X, reg_covar):
    """:func:`~mixnorm_chainer.gmm.rows_problem` of the sets X (S, m): each is a fit of m
    one-dimensional values. None, or what is wrong (one line). One host synchronization."""
    return rows_problem(X.reshape(-1, 1), reg_covar, X.shape[1])


def fit_set_mixtures(X, n_components, *, kmeans_iters=1, em_iters=1, sample_fraction=1.0,
                     min_weight=0.01, reg_covar=1e-6, check_finite=True):
    """Fit one univariate GMM to each row (set) of X (S, m), all sets at once.

    Args:
        X: numpy or cupy array (S, m); float16 is fitted in float32.
        n_components: K, components per set before pruning.
        kmeans_iters: Lloyd iterations after the quantile seeding.
        em_iters: EM iterations after the k-means initialization (the paper's "EM iter." is
            ``kmeans_iters + em_iters``).
        sample_fraction: fit on a strided subset of ``ceil(sample_fraction * m)`` values of each
            set (at least K; :func:`strided_subset`); the responsibilities are for all m.
        min_weight: per-set pruning threshold on lambda_k (Section 5.3); 0 disables pruning.
        reg_covar: variance floor added to every sigma^2.
        check_finite: raise ValueError on NaN/inf or overflowing entries (one host sync).

    Returns:
        :class:`SetMixtures` in X's dtype (float32 for float16). Deterministic: each set's
        mixture depends on that set's values only.
    """
    xp = get_array_module(X)
    X = xp.asarray(X)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1 or X.dtype.kind != 'f':
        raise ValueError('fit_set_mixtures expects floating-point sets X of shape (S, m), '
                         f'S, m >= 1; got {X.dtype} {X.shape}')
    K, kmeans_iters, em_iters, sample_fraction, min_weight, reg_covar = options.check_all(
        n_components=n_components, kmeans_iters=kmeans_iters, em_iters=em_iters,
        sample_fraction=sample_fraction, min_weight=min_weight, reg_covar=reg_covar).values()
    if X.dtype == numpy.float16:
        X = X.astype(numpy.float32)
    if check_finite:
        problem = sets_problem(X, reg_covar)
        if problem is not None:
            raise ValueError(f'fit_set_mixtures: X (sets of shape {X.shape}): {problem}')
    center = set_centers(X)
    Xc = X - center[:, None]
    Xf = strided_subset(Xc, sample_fraction, K)
    live = xp.ones((X.shape[0], K), dtype=bool)

    centers = quantile_seeds(Xf, K)
    for _ in range(kmeans_iters):
        centers = kmeans_step(Xf, centers, live)
    resp = one_hot(kmeans_assign(Xf, centers, live), K, Xf.dtype)
    params = m_step(Xf, resp, live, reg_covar)
    for _ in range(em_iters):
        params = m_step(Xf, e_step(Xf, *params, live), live, reg_covar)
    if min_weight > 0:
        params, live = prune(Xf, params, live, min_weight, reg_covar)
    weights, means, variances = params
    resp = e_step(Xc, weights, means, variances, live)
    return SetMixtures(xp.where(live, weights, 0), means, variances, live, resp, center)
