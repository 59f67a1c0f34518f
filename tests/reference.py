"""Independent reference implementations, written straight from the paper's equations.

Plain numpy/scipy, explicit loops over components and queue entries, (m, K, C) broadcasting:
nothing is shared with the package's implementation (no matmul factorization, no shifting).
"""
import chainer.functions as F
import numpy
import scipy.stats


def rows_of(x):
    """x (N, C, H, W) or (N, C) -> (m, C) in the order x.transpose(0, 2, 3, 1).reshape(-1, C)."""
    if x.ndim == 2:
        return x
    return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])


def unrows(rows, shape):
    if len(shape) == 2:
        return rows
    N, C, H, W = shape
    return rows.reshape(N, H, W, C).transpose(0, 3, 1, 2)


def statistics(X, nu):
    """Eq. 35-36 with explicit per-component loops: lambda (K,), mu (K, C), sigma^2 (K, C)."""
    m, K = nu.shape
    lam = numpy.empty(K)
    mu = numpy.empty((K, X.shape[1]))
    var = numpy.empty((K, X.shape[1]))
    for k in range(K):
        nuhat = nu[:, k] / nu[:, k].sum()                      # Eq. 36
        lam[k] = nu[:, k].mean()
        mu[k] = (nuhat[:, None] * X).sum(axis=0)               # E[nuhat x]
        v = X - mu[k]                                          # Eq. 35, v^k
        var[k] = (nuhat[:, None] * v ** 2).sum(axis=0)         # E[nuhat (v^k)^2]
    return lam, mu, var


def mixture_normalization(x, gamma, beta, nu, eps=2e-5, affine='output', activation=None):
    """Eq. 34-36 (+ Eq. 37 / Eq. 40 options) in float64, from the equations."""
    x = numpy.asarray(x, dtype=numpy.float64)
    X = rows_of(x)
    nu = numpy.asarray(nu, dtype=numpy.float64)
    gamma = numpy.asarray(gamma, dtype=numpy.float64)
    beta = numpy.asarray(beta, dtype=numpy.float64)
    lam, mu, var = statistics(X, nu)
    out = numpy.zeros_like(X)
    for k in range(nu.shape[1]):
        if affine == 'statistics':                             # Eq. 37 as printed
            xk = (X - (mu[k] + beta)) / numpy.sqrt(numpy.maximum(var[k] * gamma, 0) + eps)
            z = xk / numpy.sqrt(lam[k])
        else:
            xk = (X - mu[k]) / numpy.sqrt(var[k] + eps)        # Eq. 35
            z = gamma * xk / numpy.sqrt(lam[k]) + beta
        if activation == 'relu':                               # Eq. 40
            out += nu[:, k:k + 1] * numpy.maximum(z, 0)
        else:
            out += nu[:, k:k + 1] * z                          # Eq. 34 (+ affine)
    return unrows(out, x.shape)


def mixture_normalization_chainer(x, gamma, beta, nu, eps=2e-5):
    """Eq. 34-36 composed from chainer.functions, so autograd gives an independent gradient.

    nu is a constant (no gradient), as Section 3.2 prescribes.
    """
    C = x.shape[1]
    X = F.reshape(F.transpose(x, (0, 2, 3, 1)), (-1, C)) if x.ndim == 4 else x
    m, K = nu.shape
    out = 0
    for k in range(K):
        w = nu[:, k:k + 1]
        nuhat = w / w.sum()
        mu = F.sum(F.broadcast_to(nuhat, X.shape) * X, axis=0)
        v = X - F.broadcast_to(mu, X.shape)
        var = F.sum(F.broadcast_to(nuhat, X.shape) * v * v, axis=0)
        xk = v / F.broadcast_to(F.sqrt(var + eps), X.shape)
        out = out + F.broadcast_to(w / numpy.sqrt(w.mean()), X.shape) * xk
    y = out * F.broadcast_to(gamma, X.shape) + F.broadcast_to(beta, X.shape)
    if x.ndim == 4:
        N, _, H, W = x.shape
        y = F.transpose(F.reshape(y, (N, H, W, C)), (0, 3, 1, 2))
    return y


def decay_weights(T, zeta):
    """Eq. 39 literally: tau^t = (1 - zeta) / (1 - zeta^T) * zeta^(T - t - 1)."""
    return numpy.array([(1 - zeta) / (1 - zeta ** T) * zeta ** (T - t - 1) for t in range(T)])


def queue_normalization(x, gamma, beta, weights, means, variances, zeta, eps=2e-5,
                        form='consistent', activation=None, fit=None):
    """Eq. 38 with explicit loops over (t, k); densities from scipy.stats.norm.

    ``form='printed'`` uses 1/sqrt(tau^t lambda_k^t) as printed; 'consistent' 1/sqrt(lambda_k^t).
    All T entries of the queue are used (a full queue). With ``activation='relu'`` each term is
    rectified as in Eq. 40: ``sum_tk ReLU(gamma a_tk xhat^tk + rho_tk beta)``. The posterior
    uses the mixtures ``fit = (weights, means, variances)`` when given, else the statistics
    with variances + eps.
    """
    x = numpy.asarray(x, dtype=numpy.float64)
    X = rows_of(x)
    T, K = weights.shape
    tau = decay_weights(T, zeta)
    sd = numpy.sqrt(variances + eps)
    post_w, post_mu, post_sd = (weights, means, sd) if fit is None else \
        (fit[0], fit[1], numpy.sqrt(fit[2]))
    log_joint = numpy.full((X.shape[0], T, K), -numpy.inf)
    for t in range(T):
        for k in range(K):
            if weights[t, k] > 0:
                log_joint[:, t, k] = (numpy.log(tau[t] * post_w[t, k]) + scipy.stats.norm.logpdf(
                    X, post_mu[t, k], post_sd[t, k]).sum(axis=1))
    post = numpy.exp(log_joint - scipy.special.logsumexp(log_joint, axis=(1, 2), keepdims=True))
    out = numpy.zeros_like(X)
    for t in range(T):
        for k in range(K):
            if weights[t, k] > 0:
                scale = weights[t, k] if form == 'consistent' else tau[t] * weights[t, k]
                a = post[:, t, k:k + 1] / numpy.sqrt(scale)
                term = gamma * a * (X - means[t, k]) / sd[t, k] + post[:, t, k:k + 1] * beta
                out += numpy.maximum(term, 0) if activation == 'relu' else term
    return unrows(out, x.shape)


def diag_gmm_log_likelihood(X, weights, means, variances):
    """log p(x) of Eq. 26 per row, from scipy.stats.norm."""
    comp = numpy.stack([numpy.log(w) + scipy.stats.norm.logpdf(X, mu, numpy.sqrt(v)).sum(axis=1)
                        for w, mu, v in zip(weights, means, variances)], axis=1)
    return scipy.special.logsumexp(comp, axis=1)
