"""CUDA kernels (CuPy ElementwiseKernel / ReductionKernel) for the GMM fit and the MN transform.

Each kernel is built with chainer's memoized ``cuda.elementwise`` / ``cuda.reduce`` and its
body is the literal string in that call. They are used automatically when the arrays are cupy
arrays; the xp code in :mod:`~mixnorm_chainer.gaussian` (the log-density),
:mod:`~mixnorm_chainer.gmm`, :mod:`~mixnorm_chainer.functions` and :mod:`~mixnorm_chainer.queue`
stays the path for numpy and the reference the kernels are tested against (this module takes
only the constant ``LOG_2PI`` from them; :mod:`mixnorm_chainer.kernels.self_check` compares
the two). ``chainer.config.mixnorm_kernels = False`` (or the environment variable
``MIXNORM_KERNELS=0``) forces the xp path on the GPU too.

Layout. Rows are addressed in an ``(N, C, S)`` view: an NCHW activation reshaped (no copy) to
``S = H * W`` positions per image, rows ``r = n * S + s`` (the order of
:func:`~mixnorm_chainer.functions.to_rows`); ``(m, D)`` rows are the case ``S = 1``. A thread
per element (n, c, s) of NCHW reads consecutive ``s`` for consecutive threads (coalesced), and
the transform needs no NCHW <-> rows transposes. Per-component arrays are ``(K, C)``,
responsibilities ``(K, m)`` (GMM) or ``(m, K)`` (transform coefficients).

Precision: every quadratic form and variance is computed centred on the component's own mean
(``(x - mu)^2`` written out), as :func:`~mixnorm_chainer.gaussian.far_components` prescribes
for the GPU; sums over rows run in the compute dtype (float32 for float16 input).

Host synchronizations: none inside these kernels. A training step synchronizes twice, where
the xp path does too (each marked "host synchronization" in the code): the input check of
:func:`~mixnorm_chainer.gmm.rows_problem` and the pruning decision of
:func:`~mixnorm_chainer.gmm.prune`; test mode does not synchronize.

The kernels use only what ``tests/cuda_kernel_harness.py`` checks on the CPU: typed parameters
(with placeholders), ``raw`` parameters indexed linearly, the index ``i``, broadcasting,
reductions over given axes (identity, map, reduce, post-map) and plain device functions in a
preamble.
"""
import os

import chainer
import numpy
from chainer.backends import cuda

from mixnorm_chainer.gaussian import LOG_2PI

#: default of ``chainer.config.mixnorm_kernels`` (the environment variable MIXNORM_KERNELS=0
#: turns the kernels off)
chainer.global_config.mixnorm_kernels = os.environ.get('MIXNORM_KERNELS', '1') != '0'


def enabled(*arrays):
    """True when the kernels are switched on and the arrays are on the GPU (cupy)."""
    if not getattr(chainer.config, 'mixnorm_kernels', True):
        return False
    return any(isinstance(a, cuda.ndarray) for a in arrays) if cuda.available else False


_INDEX = '''
__device__ ptrdiff_t row_of(ptrdiff_t i, int C, int S) {   // element (n, c, s) -> row n S + s
    return (i / ((ptrdiff_t)C * S)) * S + i % S;
}
__device__ ptrdiff_t at(ptrdiff_t r, int c, int C, int S) {  // row r, channel c -> (N, C, S)
    return ((r / S) * C + c) * S + r % S;
}
'''


def _ncs(x):
    """``x`` as the (N, C, S) view the kernels address (no copy)."""
    return x.reshape(x.shape[0], x.shape[1], -1)


# -- k-means (Section 4.2) ------------------------------------------------------------------

def kmeans_assign(X, centers):
    """Index of the nearest centre of every row of X (m, D): (m,) int32; ties to the lower k."""
    m, D = X.shape
    xp = cuda.get_array_module(X)
    labels = xp.empty(m, numpy.int32)
    cuda.elementwise(
        'raw T x, raw T centers, int32 K, int32 D', 'int32 label',
        '''
        T best = 0;
        int arg = 0;
        for (int k = 0; k < K; ++k) {
            T d = 0;
            for (int j = 0; j < D; ++j) {
                T t = x[i * D + j] - centers[k * D + j];
                d += t * t;
            }
            if (k == 0 || d < best) { best = d; arg = k; }
        }
        label = arg;
        ''', 'mixnorm_kmeans_assign')(X, centers, centers.shape[0], D, labels)
    return labels


def nearest_squared_distances(X, candidates, closest):
    """k-means++: ``min(closest_i, ||x_i - c_t||^2)`` for every candidate t, (T, m)."""
    m, D = X.shape
    xp = cuda.get_array_module(X)
    out = xp.empty((candidates.shape[0], m), X.dtype)
    cuda.elementwise(
        'raw T x, raw T candidates, T closest, int32 m, int32 D', 'T dist',
        '''
        ptrdiff_t t = i / m, r = i % m;
        T d = 0;
        for (int j = 0; j < D; ++j) {
            T u = x[r * D + j] - candidates[t * D + j];
            d += u * u;
        }
        dist = d < closest ? d : closest;
        ''', 'mixnorm_nearest_squared_distances')(X, candidates, closest[None, :], m, D, out)
    return out


# -- EM (Eq. 26-31) ---------------------------------------------------------------------------

def e_step(X, weights, means, variances):
    """Fused E-step over rows X (m, D): ``(log nu (K, m), log p(x) (m,))`` (Eq. 31, log domain).

    One thread per row evaluates the K diagonal-Gaussian log-densities (centred on each mean),
    their max-subtracted log-sum-exp, and writes the log-responsibilities and the row's
    log-likelihood.
    """
    xp = cuda.get_array_module(X)
    m, D = X.shape
    K = means.shape[0]
    with numpy.errstate(divide='ignore'):
        log_coef = xp.log(weights) - 0.5 * (xp.log(variances).sum(axis=1) + D * LOG_2PI)
    log_resp = xp.empty((K, m), X.dtype)
    log_norm = xp.empty(m, X.dtype)
    cuda.elementwise(
        'raw T x, raw T means, raw T precisions, raw T log_coef, int32 K, int32 D',
        'raw T log_resp, T log_norm',
        '''
        ptrdiff_t m = _ind.size();
        T top = -CUDART_INF;
        for (int k = 0; k < K; ++k) {
            T q = 0;
            for (int j = 0; j < D; ++j) {
                T u = x[i * D + j] - means[k * D + j];
                q += u * u * precisions[k * D + j];
            }
            T lp = log_coef[k] - q / 2;
            log_resp[k * m + i] = lp;
            if (lp > top) top = lp;
        }
        T ref = isfinite(top) ? top : 0;
        T total = 0;
        for (int k = 0; k < K; ++k) total += exp(log_resp[k * m + i] - ref);
        T norm = log(total) + ref;
        for (int k = 0; k < K; ++k) log_resp[k * m + i] -= norm;
        log_norm = norm;
        ''', 'mixnorm_e_step')(X, means, 1 / variances, log_coef, K, D, log_resp, log_norm)
    return log_resp, log_norm


def weighted_sums(X3, resp, shift):
    """``sum_r resp[k, r] (x[r, c] - shift[c])`` (K, C) for rows in the (N, C, S) view X3 and
    responsibilities resp (K, m)."""
    N, C, S = X3.shape
    K = resp.shape[0]
    return cuda.reduce(
        'U r, T x, U shift', 'U total', 'r * ((U)x - shift)', 'a + b', 'total = a', '0',
        'mixnorm_weighted_sums')(
            resp.reshape(K, N, 1, S), X3[None], shift[None, None, :, None], axis=(1, 3))


def weighted_centred_squares(X3, resp, means, shift):
    """``sum_r resp[k, r] (x[r, c] - shift[c] - mean[k, c])^2`` (K, C): the two-pass variance
    sums (``means`` in shifted coordinates)."""
    N, C, S = X3.shape
    K = resp.shape[0]
    return cuda.reduce(
        'U r, T x, U shift, U mean', 'U total',
        'r * ((U)x - shift - mean) * ((U)x - shift - mean)', 'a + b', 'total = a', '0',
        'mixnorm_weighted_centred_squares')(
            resp.reshape(K, N, 1, S), X3[None], shift[None, None, :, None],
            means[:, None, :, None], axis=(1, 3))


# -- the MN transform (Eq. 34-37, 40) ----------------------------------------------------------

def transform_forward(x, coef, slope, centre, offset, shift, relu):
    """``y = sum_k coef[r, k] f(slope_kc (x - shift_c - centre_kc) + offset_kc)`` on NCHW x.

    f is the identity or ReLU (Eq. 40); ``slope = gamma / sqrt(sigma^2 + eps)`` (or Eq. 37's
    factors), ``centre`` the component centres in shifted coordinates,
    ``offset = sqrt(lambda) beta``; x may be float16 (computed in the dtype of ``slope``).
    Returns y with x's shape and dtype.
    """
    x3 = _ncs(x)
    N, C, S = x3.shape
    y = cuda.get_array_module(x).empty_like(x)
    cuda.elementwise(
        'T x, raw U coef, raw U slope, raw U centre, raw U offset, raw U shift, int32 K, '
        'int32 C, int32 S, bool relu', 'T y',
        '''
        int c = (int)((i / S) % C);
        ptrdiff_t r = row_of(i, C, S);
        U xs = (U)x - shift[c];
        U out = 0;
        for (int k = 0; k < K; ++k) {
            U z = slope[k * C + c] * (xs - centre[k * C + c]) + offset[k * C + c];
            if (relu && z < 0) z = 0;
            out += coef[r * K + k] * z;
        }
        y = (T)out;
        ''', 'mixnorm_transform_forward', preamble=_INDEX)(
            x3, coef, slope, centre, offset, shift, coef.shape[1], C, S, bool(relu), _ncs(y))
    return y


def transform_gradient_sums(x, gy, coef, slope, centre, offset, shift, relu):
    """``P_kc = sum_r coef_rk G_rc [z > 0]`` and ``Q_kc = sum_r coef_rk G_rc [z > 0] (x - c_k)``
    (K, C), the sums over rows the backward pass needs (``[z > 0]``: Eq. 40's ReLU only)."""
    x3, g3 = _ncs(x), _ncs(gy)
    N, C, S = x3.shape
    K = coef.shape[1]
    args = (coef.reshape(N, S, K).transpose(2, 0, 1)[:, :, None, :], x3[None], g3[None],
            slope[:, None, :, None], centre[:, None, :, None], offset[:, None, :, None],
            shift[None, None, :, None])
    params = 'U coef, T x, T g, U slope, U centre, U offset, U shift'
    if relu:
        P = cuda.reduce(
            params, 'U total',
            'slope * ((U)x - shift - centre) + offset > 0 ? coef * (U)g : (U)0',
            'a + b', 'total = a', '0', 'mixnorm_transform_sum_p_relu')(*args, axis=(1, 3))
        Q = cuda.reduce(
            params, 'U total',
            'slope * ((U)x - shift - centre) + offset > 0 '
            '? coef * (U)g * ((U)x - shift - centre) : (U)0',
            'a + b', 'total = a', '0', 'mixnorm_transform_sum_q_relu')(*args, axis=(1, 3))
    else:
        P = cuda.reduce(
            params, 'U total', 'coef * (U)g', 'a + b', 'total = a', '0',
            'mixnorm_transform_sum_p')(*args, axis=(1, 3))
        Q = cuda.reduce(
            params, 'U total', 'coef * (U)g * ((U)x - shift - centre)', 'a + b', 'total = a',
            '0', 'mixnorm_transform_sum_q')(*args, axis=(1, 3))
    return P, Q


def transform_backward(x, gy, coef, slope, centre, offset, shift, relu, nuhat=None,
                       s_s1=None, r=None, mu=None):
    """``dL/dx`` on NCHW: the direct term ``sum_k coef_rk slope_kc G_rc [z > 0]`` and, in
    training (``nuhat`` (m, K) given), the term through the statistics
    ``- sum_k nuhat_rk (s_s1_kc + r_kc (x - shift_c - mu_kc))`` (MixtureNormalizationGrad).
    """
    x3 = _ncs(x)
    N, C, S = x3.shape
    K = coef.shape[1]
    gx = cuda.get_array_module(x).empty_like(gy)
    train = nuhat is not None
    if not train:                      # placeholders, never read
        nuhat, s_s1, r, mu = coef, slope, slope, slope
    cuda.elementwise(
        'T g, T x, raw U coef, raw U slope, raw U centre, raw U offset, raw U shift, '
        'raw U nuhat, raw U s_s1, raw U r, raw U mu, int32 K, int32 C, int32 S, bool relu, '
        'bool train', 'T gx',
        '''
        int c = (int)((i / S) % C);
        ptrdiff_t row = row_of(i, C, S);
        U xs = (U)x - shift[c];
        U gv = (U)g;
        U out = 0;
        for (int k = 0; k < K; ++k) {
            int kc = k * C + c;
            if (!relu || slope[kc] * (xs - centre[kc]) + offset[kc] > 0)
                out += coef[row * K + k] * slope[kc] * gv;
            if (train) out -= nuhat[row * K + k] * (s_s1[kc] + r[kc] * (xs - mu[kc]));
        }
        gx = (T)out;
        ''', 'mixnorm_transform_backward', preamble=_INDEX)(
            _ncs(gy), x3, coef, slope, centre, offset, shift, nuhat, s_s1, r, mu, K, C, S,
            bool(relu), train, _ncs(gx))
    return gx


# -- test mode (Eq. 38-39) ---------------------------------------------------------------------

def queue_coefficients(x, shift, means, variances, log_prior, inv_sqrt_weight, limit):
    """``coef_rj = rho_j(x_r) / sqrt(weight_j)`` (m, J) of Eq. 38 on NCHW x directly.

    rho: ``log_prior_j + log N(x_r - shift | means_j, variances_j)`` normalized over j, each
    row over its usable channels only (finite and ``|x - shift| <= limit``; a row with none
    gets the prior). ``means`` are centred on ``shift``; ``limit`` a 1-element array.
    """
    x3 = _ncs(x)
    N, C, S = x3.shape
    J = means.shape[0]
    xp = cuda.get_array_module(x)
    coef = xp.empty((N * S, J), means.dtype)
    cuda.elementwise(
        'raw T x, raw U shift, raw U means, raw U precisions, raw U log_det, raw U log_prior, '
        'raw U inv_sqrt_weight, raw U limit, int32 J, int32 C, int32 S', 'raw U coef',
        '''
        U top = -CUDART_INF;
        for (int j = 0; j < J; ++j) {
            U lp = log_prior[j];
            for (int c = 0; c < C; ++c) {
                U xs = (U)x[at(i, c, C, S)] - shift[c];
                if (!(fabs(xs) <= limit[0])) continue;      // NaN, inf, or overflowing
                U u = xs - means[j * C + c];
                lp -= (u * u * precisions[j * C + c] + log_det[j * C + c]) / 2;
            }
            coef[i * J + j] = lp;
            if (lp > top) top = lp;
        }
        U ref = isfinite(top) ? top : 0;
        U total = 0;
        for (int j = 0; j < J; ++j) total += exp(coef[i * J + j] - ref);
        for (int j = 0; j < J; ++j)
            coef[i * J + j] = exp(coef[i * J + j] - ref) / total * inv_sqrt_weight[j];
        ''', 'mixnorm_queue_coefficients', preamble=_INDEX)(
            x3, shift, means, 1 / variances, xp.log(variances) + LOG_2PI,
            log_prior, inv_sqrt_weight, limit, J, C, S, coef, size=N * S)
    return coef
