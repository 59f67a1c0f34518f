"""CUDA kernels of Mixture Group Normalization's per-set fit (:mod:`mixnorm_chainer.group_gmm`).

S univariate mixtures, one per row of X (S, m), in group_gmm's layout: per-set, per-component
arrays (S, K), responsibilities (S, K, m), ``live`` (S, K) the components a set kept. Four
kernels, built like those of :mod:`mixnorm_chainer.kernels` (chainer's memoized
``cuda.elementwise`` / ``cuda.reduce``, the body the literal string of the call), replace the
(S, K, m) temporaries of the xp path for the hot passes:

* ``mixnorm_set_assign``, a thread per value: index of the nearest live centre (ties to the
  lower k), as :func:`~mixnorm_chainer.group_gmm.kmeans_assign`;
* ``mixnorm_set_label_sums``, a reduction over the set axis: per set and component, the count
  of the values labelled k and the sum of their ``x - centre_k`` (Lloyd's update
  ``centers + sum(assign * (x - centers)) / counts``);
* ``mixnorm_set_e_step``, a thread per value: ``log lambda_k + log N(x | mu_k, sigma_k^2)``
  over the live components, max-subtracted, exponentiated and normalized (Eq. 31), 0 for the
  others;
* ``mixnorm_set_moments``, a reduction over the set axis: ``sum_i r_ik``, ``sum_i r_ik x_i``
  and the centred ``sum_i r_ik (x_i - mu_k)^2`` of the M-step.

Each computes what the xp expression does, in the same order of operations, so the results
equal the xp path's to rounding (the sums run in another order). The few (S, K) operations
around them (the centre update, the M-step's divisions) stay xp. group_gmm dispatches here when
:func:`mixnorm_chainer.kernels.enabled` says so (cupy arrays, ``chainer.config.mixnorm_kernels``).
"""
import numpy
from chainer.backends import cuda

from mixnorm_chainer.gaussian import LOG_2PI


def kmeans_assign(X, centers, live):
    """Index (S, m) int32 of the nearest live centre of every value; ties go to the lower k."""
    S, m = X.shape
    return cuda.elementwise(
        'T x, raw T centers, raw bool live, int32 K, int32 m', 'int32 label',
        '''
        ptrdiff_t s = i / m;
        int arg = -1;
        T best = 0;
        for (int k = 0; k < K; ++k) {
            if (!live[s * K + k]) continue;
            T d = x - centers[s * K + k];
            if (arg < 0 || d * d < best) { best = d * d; arg = k; }
        }
        label = arg;
        ''', 'mixnorm_set_assign')(X, centers, live, centers.shape[1], m)


def label_sums(X, labels, centers):
    """``(counts, moves)`` (S, K): the number of values labelled k and the sum of their
    ``x - centers_k``, per set (a reduction over the set axis)."""
    xp = cuda.get_array_module(X)
    K = centers.shape[1]
    sums = cuda.reduce(
        'int32 label, T x, T center, int32 k, int32 j', 'T total',
        'label == k ? (j == 0 ? (T)1 : x - center) : (T)0', 'a + b', 'total = a', '0',
        'mixnorm_set_label_sums')(
            labels[None, :, None, :], X[None, :, None, :], centers[None, :, :, None],
            xp.arange(K, dtype=numpy.int32)[None, None, :, None],
            xp.arange(2, dtype=numpy.int32)[:, None, None, None], axis=3)
    return sums[0], sums[1]


def kmeans_step(X, centers, live):
    """One Lloyd iteration, :func:`~mixnorm_chainer.group_gmm.kmeans_step` with two kernels."""
    xp = cuda.get_array_module(X)
    counts, moves = label_sums(X, kmeans_assign(X, centers, live), centers)
    return centers + moves / xp.where(counts > 0, counts, 1)


def e_step(X, weights, means, variances, live):
    """Responsibilities (S, K, m) of Eq. 31 over the live components (0 for the others): one
    thread per value evaluates the K log-densities, subtracts their max and normalizes."""
    S, m = X.shape
    K = means.shape[1]
    resp = cuda.get_array_module(X).empty((S, K, m), X.dtype)
    cuda.elementwise(
        'T x, raw T weights, raw T means, raw T variances, raw bool live, T log_2pi, int32 K, '
        'int32 m', 'raw T resp',
        '''
        ptrdiff_t s = i / m, j = i % m;
        T top = -CUDART_INF;
        for (int k = 0; k < K; ++k) {
            ptrdiff_t sk = s * K + k;
            if (!live[sk]) continue;
            T d = x - means[sk];
            T lp = log(weights[sk]) - (log_2pi + log(variances[sk]) + d * d / variances[sk]) / 2;
            resp[sk * m + j] = lp;
            if (lp > top) top = lp;
        }
        T total = 0;
        for (int k = 0; k < K; ++k) {
            ptrdiff_t sk = s * K + k;
            T e = live[sk] ? exp(resp[sk * m + j] - top) : (T)0;
            resp[sk * m + j] = e;
            total += e;
        }
        for (int k = 0; k < K; ++k) resp[(s * K + k) * m + j] /= total;
        ''', 'mixnorm_set_e_step')(X, weights, means, variances, live, LOG_2PI, K, m, resp)
    return resp


def moments(X, resp, mean, power):
    """``sum_i r_ik (x_i - mean_k)^p`` per set and component, stacked over ``power`` (an int32
    array, or an int): p = 0 gives ``sum_i r_ik``, 1 ``sum_i r_ik x_i`` (``mean`` is not read;
    pass 0), 2 the centred ``sum_i r_ik (x_i - mean_k)^2``. Shape ``power.shape + (S, K)``."""
    ones = (1,) * numpy.ndim(power)
    if numpy.ndim(mean):
        mean = mean.reshape(ones + mean.shape + (1,))
    return cuda.reduce(
        'T r, T x, T mean, int32 p', 'T total',
        'p == 0 ? r : (p == 1 ? r * x : r * (x - mean) * (x - mean))', 'a + b', 'total = a',
        '0', 'mixnorm_set_moments')(
            resp.reshape(ones + resp.shape), X.reshape(ones + X.shape[:1] + (1,) + X.shape[1:]),
            mean, power if not numpy.ndim(power) else power.reshape(power.shape + (1, 1, 1)),
            axis=len(ones) + 2)


def m_step(X, resp, live, reg_covar):
    """:func:`~mixnorm_chainer.group_gmm.m_step` with two reductions over the set axis:
    ``(weights, means, variances)`` (S, K)."""
    xp = cuda.get_array_module(X)
    n, sum_x = moments(X, resp, 0, xp.arange(2, dtype=numpy.int32))
    nk = xp.where(live, n + 10 * numpy.finfo(X.dtype).eps, 0)
    safe = xp.where(live, nk, 1)
    means = sum_x / safe
    variances = moments(X, resp, means, 2) / safe + reg_covar
    return nk / nk.sum(axis=1, keepdims=True), means, variances
