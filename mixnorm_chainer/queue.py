"""The parameter queue and test-mode mixture normalization (Section 3.2, Eq. 38-39).

During training each MN layer keeps the last T mixtures ``theta_t = (lambda^t, mu^t, sigma^t)``
(t = 0 oldest ... T-1 newest; ``(2KC + K) T`` values). At test time a row x is normalized
against all T*K components at once, each queue entry weighted by its decay factor (Eq. 39)

    tau^t = (1 - zeta) / (1 - zeta^T) * zeta^(T - t - 1),

with posterior ``rho_tk(x) = tau^t lambda_k^t p_k^t(x) / sum_{q,j} tau^q lambda_j^q p_j^q(x)``.

Eq. 38 as printed scales each term by ``1 / sqrt(tau^t lambda_k^t)``. When all T entries are
equal, rho_tk = tau^t nu_k(x), so the printed form returns ``sum_t sqrt(tau^t)`` times the
training transform (3.127 for T = 10, zeta = 0.9; PAPER-NOTES 6), while scaling by
``1 / sqrt(lambda_k^t)`` returns exactly the training transform (sum_t tau^t = 1):

    xhat = sum_t sum_k rho_tk(x) / sqrt(lambda_k^t) * (x - mu_k^t) / sqrt(sigma_k^t^2 + eps).

That consistent form is the default (``form='consistent'``); ``form='printed'`` is Eq. 38
verbatim. Before the queue is full the entries present are used and tau is renormalized over
them (PAPER-NOTES 7). Component densities use ``sigma^2 + eps``, the variance the training
transform divides by. The gradient w.r.t. x stops at rho, as it stops at nu in training.

A non-finite entry of x does not reach other rows, nor other channels of its own row: the
posterior of a row is computed from its finite channels only (the diagonal GMM's marginal),
and the non-finite entry stays non-finite in the output.
"""
import numpy
from chainer.backend import get_array_module

from mixnorm_chainer.functions import (
    MixtureNormalizationFunction,
    compute_dtype,
    inv_sqrt_weights,
    to_rows,
)
from mixnorm_chainer.gmm import LOG_2PI, logsumexp

INFERENCE_FORMS = ('consistent', 'printed')


def decay_weights(n_present, queue_length, decay):
    """Eq. 39 for the newest ``n_present`` of ``queue_length`` entries, oldest first, summing to 1.

    For a full queue this is exactly ``(1 - zeta) / (1 - zeta^T) zeta^(T - t - 1)``.
    """
    if not 1 <= n_present <= queue_length:
        raise ValueError(f'need 1 <= n_present <= queue_length; got {n_present} of {queue_length}')
    powers = decay ** numpy.arange(queue_length - 1, -1, -1, dtype=numpy.float64)
    tau = powers[queue_length - n_present:]
    return tau / tau.sum()


def push(queue, statistics):
    """Append one mixture to the queue arrays (in place), dropping the oldest entry.

    Args:
        queue: ``(weights (T, K), means (T, K, C), variances (T, K, C))``.
        statistics: ``(lambda (K',), mu (K', C), sigma^2 (K', C))`` with K' <= K; the
            missing (pruned) components are stored with weight 0.
    """
    for q, new, fill in zip(queue, statistics, (0, 0, 1)):
        q[:-1] = q[1:].copy()
        q[-1] = fill
        q[-1, :new.shape[0]] = new


def masked_log_gaussian_prob(X, means, variances):
    """``log N(x_i | mu_j, sigma_j^2)`` (m, J) over the finite channels of each row only."""
    xp = get_array_module(X)
    finite = xp.isfinite(X)
    mask = finite.astype(X.dtype)
    X0 = xp.where(finite, X, 0)
    precisions = 1.0 / variances
    quad = mask @ ((means * means) * precisions).T - 2 * (X0 @ (means * precisions).T) \
        + (X0 * X0) @ precisions.T
    log_det = mask @ (xp.log(variances) + LOG_2PI).T
    return -0.5 * (log_det + quad)


def queue_mixture(weights, means, variances, n_present, decay, eps):
    """The T'*K components of the newest ``n_present`` entries, flattened.

    Returns ``(tau (J,), lambda (J,), mu (J, C), sigma^2 + eps (J, C))`` with J = T'*K;
    pruned components have lambda = 0 and so take no part.
    """
    xp = get_array_module(weights)
    T, K = weights.shape
    sl = slice(T - n_present, T)
    tau = xp.asarray(numpy.repeat(decay_weights(n_present, T, decay), K), dtype=weights.dtype)
    return (tau, weights[sl].reshape(-1), means[sl].reshape(-1, means.shape[-1]),
            variances[sl].reshape(-1, means.shape[-1]) + eps)


def queue_normalization(x, gamma, beta, weights, means, variances, n_present, decay, eps,
                        form='consistent', affine='output', activation=None):
    """Test-mode mixture normalization over a parameter queue (Eq. 38-39).

    Args:
        x: (N, C, ...) Variable or array.
        gamma, beta: (C,) scale and shift, as in training.
        weights, means, variances: the queue, (T, K), (T, K, C), (T, K, C), oldest first.
        n_present: how many of the newest entries hold mixtures (1..T).
        decay: zeta of Eq. 39.
        form: ``'consistent'`` (default, 1/sqrt(lambda)) or ``'printed'`` (Eq. 38 verbatim,
            1/sqrt(tau lambda)).
    """
    if form not in INFERENCE_FORMS:
        raise ValueError(f'form must be one of {INFERENCE_FORMS}; got {form!r}')
    xa = x.array if hasattr(x, 'array') else x
    xp = get_array_module(xa)
    dtype = compute_dtype(xa.dtype)
    X = to_rows(xa).astype(dtype, copy=False)
    tau, lam, mu, var_eff = (a.astype(dtype, copy=False) for a in
                             queue_mixture(weights, means, variances, n_present, decay, eps))
    with numpy.errstate(divide='ignore'):
        log_prior = xp.log(tau * lam)
    weighted = masked_log_gaussian_prob(X, mu, var_eff) + log_prior[None, :]
    rho = xp.exp(weighted - logsumexp(weighted, axis=1)[:, None])
    prior = tau * lam
    weight = lam if form == 'consistent' else prior
    coef = rho * inv_sqrt_weights(weight)[None, :]
    shift = (prior[:, None] * mu).sum(axis=0) / prior.sum()
    node = MixtureNormalizationFunction(
        None, eps, affine, activation, rows=X,
        fixed=(coef, xp.sqrt(weight), mu, var_eff - eps, shift))
    y, = node.apply((x, gamma, beta))
    return y
