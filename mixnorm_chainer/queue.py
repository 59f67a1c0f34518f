"""The parameter queue and test-mode mixture normalization (Section 3.2, Eq. 38-39).

During training each MN layer keeps the last T mixtures (t = 0 oldest ... T-1 newest). At test
time a row x is normalized against all T*K components at once, each queue entry weighted by
its decay factor (Eq. 39)

    tau^t = (1 - zeta) / (1 - zeta^T) * zeta^(T - t - 1),

with posterior ``rho_tk(x) = tau^t lambda_k^t p_k^t(x) / sum_{q,j} tau^q lambda_j^q p_j^q(x)``.

Eq. 38 as printed scales each term by ``1 / sqrt(tau^t lambda_k^t)``. When all T entries are
equal, rho_tk = tau^t nu_k(x), so the printed form returns ``sum_t sqrt(tau^t)`` times the
training transform (3.127 for T = 10, zeta = 0.9), while scaling by ``1 / sqrt(lambda_k^t)``
returns exactly the training transform (sum_t tau^t = 1):

    xhat = sum_t sum_k rho_tk(x) / sqrt(lambda_k^t) * (x - mu_k^t) / sqrt(sigma_k^t^2 + eps).

That consistent form is the default (``form='consistent'``); ``form='printed'`` is Eq. 38
verbatim. Before the queue is full the entries present are used and tau is renormalized over
them.

What a queue entry holds. A training step normalizes with two mixtures: the fitted GMM
(weights, means and variances with the fit's variance floor) gives the responsibilities nu (Eq.
31), and the statistics of Eq. 35-36 computed from nu give lambda, mu, sigma^2 of the
transform. The two differ by one M-step unless EM has converged. The layer's
:class:`ParameterQueue` therefore keeps both: ``statistics`` (Eq. 35-36, used in the
normalizing factors) and ``fit`` (the GMM, used in the posteriors rho). With one entry (or T
equal entries), test mode then reproduces the training output of that batch exactly. Without
``fit`` the posteriors use the statistics with ``sigma^2 + eps`` (a single mixture per entry,
as the paper's queue of ``(2KC + K) T`` values).

The gradient w.r.t. x stops at rho, as it stops at nu in training.

Numerics: rows and means are centred on the queue's mean before the Gaussian quadratic forms
are expanded (and components far from that centre are evaluated as written), so float32
posteriors hold for data far from the origin; the densities are
:func:`mixnorm_chainer.gaussian.log_gaussian_prob`, the fit's E-step's. A non-finite entry of
x, or one so large that its squared distances would overflow, does not reach other rows, nor
other channels of its own row: the posterior of a row is computed from its other channels only
(the diagonal GMM's marginal); the entry itself is normalized as usual (NaN/inf stay NaN/inf).
"""
import numpy
from chainer.backend import get_array_module

from mixnorm_chainer import kernels, options
from mixnorm_chainer.functions import (
    MixtureNormalizationFunction,
    compute_dtype,
    inv_sqrt_weights,
    to_rows,
)
from mixnorm_chainer.gaussian import log_gaussian_prob, logsumexp

#: the parts of a mixture, in the order of :class:`~mixnorm_chainer.ComponentStatistics`
_PARTS = ('weights', 'means', 'variances')


def decay_weights(n_present, queue_length, decay):
    """Eq. 39 for the newest ``n_present`` of ``queue_length`` entries, oldest first, summing to 1.

    For a full queue this is exactly ``(1 - zeta) / (1 - zeta^T) zeta^(T - t - 1)``.
    """
    if not 1 <= n_present <= queue_length:
        raise ValueError(f'need 1 <= n_present <= queue_length; got {n_present} of {queue_length}')
    powers = decay ** numpy.arange(queue_length - 1, -1, -1, dtype=numpy.float64)
    tau = powers[queue_length - n_present:]
    return tau / tau.sum()


class ParameterQueue:
    """The parameter queue of a layer: the mixtures of its last T training steps (Eq. 38).

    Entry t = 0 is the oldest, T - 1 the newest. Each entry holds both mixtures its training
    step normalized with: ``statistics`` (``weights``, ``means``, ``variances``: lambda, mu,
    sigma^2 of Eq. 35-36, used in the normalizing factors) and ``fit`` (``fit_weights``,
    ``fit_means``, ``fit_variances``: the fitted GMM, whose densities give the posteriors rho).
    Shapes (T, K) and (T, K, C), float64 whatever the layer's dtype (a float32 mean far from
    the origin is off by half a float32 unit of its magnitude, which test mode would inherit);
    a pruned component is stored with weight 0 (mean 0, variance 1). ``count`` entries are
    filled (the newest ones).
    """

    #: the arrays (saved as ``queue_<name>``, with ``queue_count``)
    ARRAYS = _PARTS + tuple('fit_' + part for part in _PARTS)

    def __init__(self, length, n_components, size):
        self.length = int(length)
        shape = (self.length, int(n_components))
        for prefix in ('', 'fit_'):
            setattr(self, prefix + 'weights', numpy.zeros(shape, numpy.float64))
            setattr(self, prefix + 'means', numpy.zeros(shape + (int(size),), numpy.float64))
            setattr(self, prefix + 'variances', numpy.ones(shape + (int(size),), numpy.float64))
        self.count = 0

    @property
    def statistics(self):
        """``(weights (T, K), means (T, K, C), variances (T, K, C))`` of Eq. 35-36."""
        return self.weights, self.means, self.variances

    @property
    def fit(self):
        """``(weights, means, variances)`` of the fitted GMMs (same shapes)."""
        return self.fit_weights, self.fit_means, self.fit_variances

    def push(self, statistics, fit):
        """Append one training step's mixtures, dropping the oldest entry.

        ``statistics`` and ``fit``: ``(lambda (K',), mu (K', C), sigma^2 (K', C))`` each with
        K' <= K (the missing, pruned components are stored with weight 0)."""
        for prefix, mixture in (('', statistics), ('fit_', fit)):
            for part, new, fill in zip(_PARTS, mixture, (0, 0, 1)):
                q = getattr(self, prefix + part)
                q[:-1] = q[1:].copy()
                q[-1] = fill
                q[-1, :new.shape[0]] = new
        self.count = min(self.count + 1, self.length)

    def newest_fit(self):
        """Copies of the newest entry's fitted GMM, ``(weights (K,), means (K, C), variances
        (K, C))`` in float64 where the queue is (pruned components with weight 0), or None when
        empty: where a warm-started fit starts (:mod:`mixnorm_chainer.warm_start`)."""
        if self.count == 0:
            return None
        return tuple(getattr(self, 'fit_' + part)[-1].copy() for part in _PARTS)

    def clear(self):
        """Empty the queue (test mode then refuses to run until the next push)."""
        for name in self.ARRAYS:
            getattr(self, name)[...] = 1 if name.endswith('variances') else 0
        self.count = 0

    def serialize(self, serializer, prefix='queue_'):
        """Save or load the arrays (in place) and ``count`` under ``prefix + name``."""
        for name in self.ARRAYS:
            serializer(prefix + name, getattr(self, name))
        self.count = int(serializer(prefix + 'count', self.count))

    def device_resident_accept(self, visitor):
        """Move the arrays with the link (``to_device``, ``to_gpu``)."""
        for name in self.ARRAYS:
            setattr(self, name, visitor.visit_array(getattr(self, name)))


def aligned_mixture(weights, means, variances, n_present, decay):
    """The queue's newest ``n_present`` mixtures averaged component by component: one mixture.

    For queues whose entries line up (component k of every entry describes the same mode, as
    warm-started fits keep them, :mod:`mixnorm_chainer.warm_start`), slot k's components are
    merged by moment matching with the decay weights tau of Eq. 39:
    ``lambda_k = sum_t tau_t lambda_k^t``, ``mu_k = sum_t tau_t lambda_k^t mu_k^t / lambda_k``,
    ``sigma_k^2 = sum_t tau_t lambda_k^t (sigma_k^t^2 + (mu_k^t - mu_k)^2) / lambda_k``.
    Returns ``(lambda (1, K), mu (1, K, C), sigma^2 (1, K, C))``, a queue of one entry; a slot
    with no mass in any entry gets weight 0, mean 0, variance 1. Used for the test-mode
    strategy 'aligned' (:mod:`mixnorm_chainer.reproduce.inference`) instead of Eq. 38's mixture
    of all T*K components; on queues that do not line up it mixes unrelated components."""
    xp = get_array_module(weights)
    T = weights.shape[0]
    tau = xp.asarray(decay_weights(n_present, T, decay), dtype=weights.dtype)
    lam, mu, var = weights[T - n_present:], means[T - n_present:], variances[T - n_present:]
    mass = tau[:, None] * lam                                      # (T', K)
    total = mass.sum(axis=0)
    share = mass / xp.where(total > 0, total, 1)[None, :]
    merged_mu = (share[:, :, None] * mu).sum(axis=0)
    merged_var = (share[:, :, None] * (var + (mu - merged_mu[None]) ** 2)).sum(axis=0)
    empty = (total <= 0)[:, None]
    return (total[None], xp.where(empty, 0, merged_mu)[None],
            xp.where(empty, 1, merged_var)[None])


def queue_components(weights, means, variances, n_present):
    """The T'*K components of the newest ``n_present`` entries, flattened (oldest first).

    Returns ``(lambda (J,), mu (J, C), sigma^2 (J, C))`` with J = T'*K; pruned components have
    lambda = 0.
    """
    sl = slice(weights.shape[0] - n_present, weights.shape[0])
    C = means.shape[-1]
    return weights[sl].reshape(-1), means[sl].reshape(-1, C), variances[sl].reshape(-1, C)


def usable_entries(X, means, variances):
    """Entries of X that enter the posterior (boolean (m, C)), or None when all do: finite,
    and small enough that ``sum_c (x_c - mu_c)^2 / sigma_c^2`` stays finite in X's dtype for
    every component. On the CPU the common all-usable case is detected first (two reductions,
    no mask)."""
    xp = get_array_module(X)
    limit = usable_limit(X.dtype, means, variances)
    if xp is numpy and X.size and -limit <= X.min() and X.max() <= limit:
        return None
    return xp.abs(X) <= limit


def usable_limit(dtype, means, variances):
    """The largest centred |x| whose quadratic form over the C channels stays finite in dtype
    for every component (means centred, variances (J, C)): a 0-d array."""
    xp = get_array_module(means)
    fmax = float(numpy.finfo(dtype).max)
    max_prec = (1.0 / variances).max().astype(numpy.float64)
    limit = xp.sqrt(fmax / (8.0 * means.shape[1] * max_prec)) - xp.abs(means).max()
    return xp.minimum(limit, fmax)


def queue_posterior(X, weights, means, variances, n_present, decay, eps, fit=None, shift=None):
    """rho (m, J) of Eq. 38 for rows X (m, C) over the J = n_present*K newest components.

    ``rho_j(x) = tau_j lambda_j p_j(x) / sum_q tau_q lambda_q p_q(x)`` with the densities of the
    fitted mixtures ``fit`` (or, when None, of the statistics with ``sigma^2 + eps``); a
    component whose statistics have no mass takes no part. Rows and means are centred on
    ``shift`` (default: :func:`queue_centre`), the means in the queue's dtype, before anything
    is computed in X's dtype. A row with no usable channel gets the prior.
    """
    xp = get_array_module(X)
    if shift is None:
        tau = _decay(weights, n_present, decay)
        lam, mu, _ = queue_components(weights, means, variances, n_present)
        shift = queue_centre(tau, lam, mu).astype(X.dtype)
    log_prior, post_mu_s, post_var = _posterior_mixture(
        weights, means, variances, n_present, decay, eps, fit, shift)
    Xs = X - shift
    weighted = log_gaussian_prob(Xs, post_mu_s, post_var,
                                 usable=usable_entries(Xs, post_mu_s, post_var))
    weighted += log_prior[None, :]
    return xp.exp(weighted - logsumexp(weighted, axis=1)[:, None])


def _posterior_mixture(weights, means, variances, n_present, decay, eps, fit, shift):
    """The J components the posterior rho is taken over, in the dtype of ``shift``:
    ``(log(tau lambda) (J,), means - shift (J, C), variances (J, C))`` of the fitted mixtures
    ``fit`` (a component whose statistics have no mass gets lambda 0), or of the statistics
    with ``sigma^2 + eps`` when ``fit`` is None."""
    xp = get_array_module(weights)
    tau = _decay(weights, n_present, decay)
    lam, mu, var = queue_components(weights, means, variances, n_present)
    if fit is None:
        post_lam, post_mu, post_var = lam, mu, var + eps
    else:
        post_lam, post_mu, post_var = queue_components(*fit, n_present)
        post_lam = xp.where(lam > 0, post_lam, 0)
    with numpy.errstate(divide='ignore'):
        log_prior = xp.log(tau * post_lam).astype(shift.dtype)
    return log_prior, _centred(post_mu, shift), post_var.astype(shift.dtype)


def _kernel_coefficients(x, weights, means, variances, n_present, decay, eps, fit, shift,
                         inv_sqrt_weight):
    """``rho / sqrt(weight)`` (m, J) by :func:`mixnorm_chainer.kernels.queue_coefficients`,
    from the same mixture as :func:`queue_posterior`."""
    log_prior, post_mu_s, post_var = _posterior_mixture(
        weights, means, variances, n_present, decay, eps, fit, shift)
    limit = usable_limit(shift.dtype, post_mu_s, post_var).reshape(1).astype(shift.dtype)
    return kernels.queue_coefficients(x, shift, post_mu_s, post_var, log_prior,
                                      inv_sqrt_weight, limit)


def queue_centre(tau, weights, means):
    """The mean of the queue's mixture, ``sum_j tau_j lambda_j mu_j / sum_j tau_j lambda_j``."""
    prior = tau * weights
    return (prior[:, None] * means).sum(axis=0) / prior.sum()


def _decay(weights, n_present, decay):
    """tau of Eq. 39 repeated for the K components of each entry (J,), in the queue's dtype."""
    T, K = weights.shape
    tau = numpy.repeat(decay_weights(n_present, T, decay), K)
    return get_array_module(weights).asarray(tau, dtype=weights.dtype)


def _centred(means, shift):
    """``means - shift`` computed in the means' dtype, then cast to the shift's."""
    return (means - shift.astype(means.dtype)).astype(shift.dtype)


def queue_normalization(x, gamma, beta, weights, means, variances, n_present, decay, eps,
                        form='consistent', affine='output', activation=None, fit=None):
    """Test-mode mixture normalization over a parameter queue (Eq. 38-39).

    Args:
        x: (N, C, ...) Variable or array.
        gamma, beta: (C,) scale and shift, as in training.
        weights, means, variances: the queue of the transform's statistics (Eq. 35-36),
            (T, K), (T, K, C), (T, K, C), oldest first (any float dtype; the link keeps them
            in float64).
        n_present: how many of the newest entries hold mixtures (1..T).
        decay: zeta of Eq. 39.
        eps: added to the statistics' variances in the normalizing factors (Eq. 35).
        form: ``'consistent'`` (default, 1/sqrt(lambda)) or ``'printed'`` (Eq. 38 verbatim,
            1/sqrt(tau lambda)).
        fit: None, or the queue of fitted GMMs ``(weights, means, variances)`` (same shapes)
            whose densities give the posteriors rho (what the link stores). With None the
            posteriors use the statistics with ``sigma^2 + eps``.
    """
    form = options.check('inference', form, label='form')
    eps, affine, activation = options.check_all(eps=eps, affine=affine,
                                                activation=activation).values()
    xa = x.array if hasattr(x, 'array') else x
    xp = get_array_module(xa)
    dtype = compute_dtype(xa.dtype)
    tau = _decay(weights, n_present, decay)
    lam, mu, var = queue_components(weights, means, variances, n_present)
    shift = queue_centre(tau, lam, mu).astype(dtype)
    weight = lam if form == 'consistent' else tau * lam
    if kernels.enabled(xa):               # posteriors from NCHW x directly (no rows)
        X = None
        coef = _kernel_coefficients(xa, weights, means, variances, n_present, decay, eps, fit,
                                    shift, inv_sqrt_weights(weight).astype(dtype))
    else:
        X = to_rows(xa).astype(dtype, copy=False)
        rho = queue_posterior(X, weights, means, variances, n_present, decay, eps, fit, shift)
        coef = rho * inv_sqrt_weights(weight).astype(dtype)[None, :]
    node = MixtureNormalizationFunction(
        None, eps, affine, activation, rows=X,
        fixed=(coef, xp.sqrt(weight), _centred(mu, shift), var, shift))
    y, = node.apply((x, gamma, beta))
    return y
