"""The diagonal Gaussian of the mixture (Eq. 27) and how it is evaluated precisely.

:func:`log_gaussian_prob` is the one xp definition of ``log N(x | mu_k, diag(sigma_k^2))``: the
E-step of the fit (:func:`mixnorm_chainer.gmm.e_step`, Eq. 31) and the test-mode posteriors
(:func:`mixnorm_chainer.queue.queue_posterior`, Eq. 38) both call it; the CUDA kernels
(:mod:`mixnorm_chainer.kernels`) compute the same quantity in their strings and are tested
against it.

Precision: the quadratic form ``sum_d (x_d - mu_kd)^2 / sigma_kd^2`` is expanded into BLAS
products where that is precise, and written out for the components :func:`far_components`
names (a mean far from the origin of the rows compared with the component's spread, where the
expansion would cancel catastrophically in float32). Callers centre their rows first.
"""
import math

import numpy
from chainer.backend import get_array_module

#: a python float, so that it does not promote float32 arrays (numpy 2 / cupy 14 promotion)
LOG_2PI = math.log(2.0 * math.pi)


def precise_ratio(dtype, linear=False):
    """The largest ``mean^2 / variance`` at which expanded forms keep ~1e-4 relative precision
    in ``dtype``: quadratic ones (``sum x^2 / n - mean^2``, ``(x^2 - 2 x mean + mean^2) / var``)
    lose about ``mean^2 / variance`` units of roundoff (840 in float32, 4.5e11 in float64),
    linear ones (``a x - a mean``, ``sum g x - mean sum g``) its square root (7e5 in float32).
    """
    ratio = 1e-4 / float(numpy.finfo(dtype).eps)
    return ratio * ratio if linear else ratio


def far_components(means, variances, linear=False):
    """Components whose means (of centred rows) are far from 0 compared to their spread.

    Host boolean array (K,): True where some channel has ``mean^2 > precise_ratio * variance``
    (or a zero variance), i.e. where the expanded forms of :func:`precise_ratio` (quadratic, or
    ``linear``) would lose precision; those components are computed centred on their own mean
    (exact, one more pass over the rows each). On the GPU every component is treated as far:
    deciding would cost a host synchronization, and the centred form costs little there.
    """
    xp = get_array_module(means)
    if xp is not numpy:
        return numpy.ones(means.shape[0], dtype=bool)
    with numpy.errstate(divide='ignore', invalid='ignore'):
        near = means * means <= precise_ratio(means.dtype, linear) * variances
    return ~near.all(axis=1)


def log_gaussian_prob(X, means, variances, X2=None, usable=None):
    """``log N(x_i | mu_k, diag(sigma_k^2))`` of rows X (m, D), shape (m, K) (Eq. 27).

    Args:
        X: rows, centred on the same point as ``means``.
        means, variances: (K, D).
        X2: optional ``X * X`` (the fit computes it once per fit).
        usable: None, or a boolean (m, D): the entries of each row that take part. The density
            of a row is then that of its usable channels (the diagonal Gaussian's marginal):
            an unusable entry (NaN, inf, too large) reaches neither other rows nor other
            channels of its own row.

    The quadratic form is expanded, ``x^2/s - 2 x mu/s + mu^2/s`` (two BLAS products for all
    components), except for the components :func:`far_components` names, whose
    ``sum_d (x_d - mu_kd)^2 / s_kd`` is computed as written (precise in float32). The
    normalizer is ``sum_d log sigma_kd^2 + D' log(2 pi)`` over the D' channels used.
    """
    xp = get_array_module(X)
    mask = None
    if usable is not None:
        X, mask, X2 = xp.where(usable, X, 0), usable.astype(X.dtype), None
    precisions = 1.0 / variances
    far = far_components(means, variances)
    near = numpy.flatnonzero(~far)
    if near.size == means.shape[0]:
        quad = _expanded_quadratic(X, means, precisions, X2, mask)
    else:
        quad = xp.empty((X.shape[0], means.shape[0]), dtype=X.dtype)
        if near.size:
            quad[:, near] = _expanded_quadratic(X, means[near], precisions[near], X2, mask)
        for k in numpy.flatnonzero(far):
            d = X - means[k]
            if mask is not None:
                d *= mask
            quad[:, k] = squared(d) @ precisions[k]
    if mask is None:
        quad += (xp.log(variances).sum(axis=1) + X.shape[1] * LOG_2PI)[None, :]
    else:
        quad += mask @ xp.log(variances).T + mask.sum(axis=1, keepdims=True) * LOG_2PI
    quad *= -0.5
    return quad


def _expanded_quadratic(X, means, precisions, X2=None, mask=None):
    """``sum_d (x_id - mu_kd)^2 p_kd`` as (m, K), expanded into BLAS products (masked entries
    of X are 0 and their ``mu^2 p`` terms left out)."""
    quad = (X * X if X2 is None else X2) @ precisions.T
    quad -= 2 * (X @ (means * precisions).T)
    mean_terms = (means * means) * precisions
    quad += mean_terms.sum(axis=1) if mask is None else mask @ mean_terms.T
    return quad


def squared(a):
    """``a * a``, in place."""
    a *= a
    return a


def logsumexp(a, axis):
    """``log(sum(exp(a), axis))`` with the max subtracted first (no overflow/underflow)."""
    xp = get_array_module(a)
    a_max = a.max(axis=axis, keepdims=True)
    a_max = xp.where(xp.isfinite(a_max), a_max, 0)
    out = xp.log(xp.exp(a - a_max).sum(axis=axis, keepdims=True)) + a_max
    return out.squeeze(axis)
