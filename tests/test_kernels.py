"""The CUDA kernels of mixnorm_chainer/kernels/, run on the CPU by tests/cuda_kernel_harness.py.

The harness compiles the very kernel strings the package passes to ``cuda.elementwise`` /
``cuda.reduce`` with g++ and runs them with CuPy's semantics; ``kernels.enabled`` is switched to
follow ``chainer.config.mixnorm_kernels`` for numpy arrays, so the package's own dispatch runs
the kernel path on the CPU. Every result is compared with the xp path (the reference) and,
where one exists, with an independent computation.
"""
import chainer
import chainer.functions as F
import numpy
import pytest

from mixnorm_chainer import (
    MixtureNormalization,
    fit_gmm,
    kernels,
    mixture_normalization,
    queue_normalization,
)
from mixnorm_chainer.functions import MixtureNormalizationFunction
from mixnorm_chainer.kernels import self_check

import cuda_kernel_harness as harness


@pytest.fixture
def on_cpu(monkeypatch):
    """Kernels compiled for the CPU, used for numpy arrays (:func:`harness.use_for_numpy`)."""
    harness.use_for_numpy(monkeypatch)
    return harness


both = harness.both


EPS = {numpy.dtype(t): float(numpy.finfo(t).eps) for t in (numpy.float32, numpy.float64)}
EPS[numpy.dtype(numpy.float16)] = EPS[numpy.dtype(numpy.float32)]   # computed in float32


def close(a, b, ulps, terms=1.0):
    """The kernel result a equals the reference b to the rounding of the compute dtype.

    Normwise: ``max|a - b| <= ulps * eps * max(max|b|, terms, 1)``, eps of a's compute dtype
    (float32 for float16 arrays, which both paths compute in float32). ``terms``: the size of
    the terms that cancel in the result (the rounding error follows them, not the result); the
    unit scale covers results that cancel to ~0 on the scale of the data. float16 arrays are
    compared element by element: within one float16 unit in the last place (both paths round a
    float32 result once), plus that float32 bound. ``ulps`` is set about 10x above the error
    measured for each call.
    """
    a, b = numpy.asarray(a), numpy.asarray(b)
    assert a.shape == b.shape
    bound = ulps * EPS[a.dtype] * max(numpy.abs(b).max(initial=0.0), terms, 1.0)
    diff = numpy.abs(a.astype(numpy.float64) - b.astype(numpy.float64))
    if a.dtype == numpy.float16:
        assert b.dtype == numpy.float16
        ulp = numpy.maximum(numpy.spacing(numpy.abs(a)), numpy.spacing(numpy.abs(b)))
        excess = diff - ulp.astype(numpy.float64)
        assert (excess <= bound).all(), '{:.0f} float16 ulps apart ({:.3g} eps32 over one)'.format(
            (diff / ulp).max(), excess.max() / (bound / ulps))
    else:
        assert (diff <= bound).all(), '{:.3g} eps apart (allowed {})'.format(
            diff.max() / (bound / ulps), ulps)


def rows(rng, m, D, K, offset=0.0, dtype=numpy.float64):
    centres = rng.normal(scale=4.0, size=(K, D))
    return (centres[rng.integers(0, K, size=m)] + rng.normal(size=(m, D)) + offset).astype(dtype)


DTYPES = [numpy.float32, numpy.float64]


# -- each kernel against the xp path ----------------------------------------------------------

@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('m, D, K', [(257, 5, 3), (31, 1, 5), (3, 4, 5), (100, 7, 1)])
def test_kmeans_kernels(on_cpu, dtype, m, D, K):
    from mixnorm_chainer import gmm
    rng = numpy.random.default_rng(0)
    X = rows(rng, m, D, K, dtype=dtype)
    centers = rows(rng, K, D, K, dtype=dtype)
    d2 = ((X[None, :, :] - centers[:, None, :]) ** 2).sum(axis=2)          # independent
    numpy.testing.assert_array_equal(kernels.kmeans_assign(X, centers), d2.argmin(axis=0))
    closest = rng.uniform(0, 30, size=m).astype(dtype)
    close(kernels.nearest_squared_distances(X, centers, closest),    # D <= 7 roundings (0
          numpy.minimum(closest[None], d2), 10)                         # measured: same order)
    ours, ref = both(lambda: gmm.kmeans_assign(X, centers, (X * X).sum(axis=1)))
    numpy.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('K', [1, 2, 3, 4, 5])
@pytest.mark.parametrize('offset', [0.0, 1e3])
def test_e_step_kernel(on_cpu, dtype, K, offset):
    from mixnorm_chainer import gmm
    rng = numpy.random.default_rng(K)
    X = rows(rng, 301, 6, K, offset, dtype) - offset                       # centred, as in fits
    weights = rng.dirichlet(numpy.ones(K)).astype(dtype)
    means = rows(rng, K, 6, K, dtype=dtype)
    variances = rng.uniform(0.3, 3, size=(K, 6)).astype(dtype)
    (lr, ln), (lr0, ln0) = both(lambda: gmm.e_step(X, weights, means, variances))
    log_p = numpy.abs(ln0).max()           # log nu = log p_k(x) - log p(x): they cancel
    close(lr, lr0, 50, log_p)                                   # measured 4.8 eps
    close(ln, ln0, 30)                                          # 3.0
    close(numpy.exp(lr).sum(axis=0), numpy.ones(301), 4, log_p)   # 0.37


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('kind', ['soft', 'one-hot', 'uniform', 'empty component'])
def test_moment_kernels(on_cpu, dtype, kind):
    from mixnorm_chainer import gmm
    rng = numpy.random.default_rng(1)
    K, m = 4, 203
    X = rows(rng, m, 5, K, dtype=dtype)
    if kind == 'soft':
        resp = rng.dirichlet(numpy.ones(K), size=m).T
    elif kind == 'one-hot':
        resp = numpy.eye(K)[rng.integers(0, K, size=m)].T
    elif kind == 'uniform':
        resp = numpy.full((K, m), 1.0 / K)
    else:
        resp = numpy.eye(K)[rng.integers(0, K - 1, size=m)].T          # last component empty
    resp = numpy.ascontiguousarray(resp, dtype)
    # count_eps of m_step (with count_eps > 0 the one-pass variance of the reference and the
    # centred one of the kernels differ by mean^2 count_eps / n: rounding-sized here)
    count_eps = 10 * numpy.finfo(dtype).eps
    ours, ref = both(lambda: gmm.component_moments(X, resp, count_eps=count_eps))
    # the reference's variance is the one-pass sum r x^2 / n - mean^2: those terms cancel
    r64, X64 = resp.astype(numpy.float64), X.astype(numpy.float64)
    n = r64.sum(axis=1)[:, None] + count_eps
    terms = [1.0, (r64 @ numpy.abs(X64) / n).max(), (r64 @ X64 ** 2 / n).max()]
    for a, b, t in zip(ours, ref, terms):
        close(a, b, 30, t)                                      # measured 3.0 eps


def test_moments_of_a_tight_far_component(on_cpu):
    """float32 kernels are centred per component: the tight component's variance is right."""
    from mixnorm_chainer import gmm
    rng = numpy.random.default_rng(0)
    X = rng.normal(size=(2000, 3))
    X[:200, 0] = 50 + 0.01 * rng.normal(size=200)        # variance 1e-4, mean^2 / var 2.5e7
    resp = numpy.zeros((2, 2000))
    resp[0, :200] = 1
    resp[1, 200:] = 1
    X32, resp32 = X.astype(numpy.float32), resp.astype(numpy.float32)
    with chainer.using_config('mixnorm_kernels', True):
        n32, mu32, v32 = gmm.component_moments(X32, resp32)
    # reference from the definition, float64, on the same (float32) inputs, two passes
    X64, r64 = X32.astype(numpy.float64), resp32.astype(numpy.float64)
    n = r64.sum(axis=1)
    mu = r64 @ X64 / n[:, None]
    var = numpy.stack([r @ (X64 - m) ** 2 for r, m in zip(r64, mu)]) / n[:, None]
    assert var[0, 0] == pytest.approx(1e-4, rel=0.2)
    numpy.testing.assert_array_equal(n32, n)
    eps = numpy.finfo(numpy.float32).eps
    assert numpy.abs(mu32 - mu).max() <= 40 * eps * numpy.abs(X64).max()    # measured 3.8
    # every variance to 10x its measured relative error, 5e-6 (the tight one: centred on a
    # float32 mean off by ~4 eps * 50, squared, over 1e-4); a one-pass float32 variance would
    # be off by ~eps * mean^2 / var ~ 300%
    numpy.testing.assert_allclose(v32, var, rtol=5e-5, atol=0)


# -- the transform ------------------------------------------------------------------------------

def transform_case(rng, shape, K, dtype, offset=0.0, nu_kind='soft'):
    x = (rng.normal(size=shape) + rng.integers(0, 3, size=shape) * 2 + offset).astype(dtype)
    m = shape[0] * int(numpy.prod(shape[2:]))
    if nu_kind == 'soft':
        nu = rng.dirichlet(numpy.full(K, 0.7), size=m)
    else:
        nu = numpy.eye(K)[rng.integers(0, K, size=m)]
    gamma = rng.uniform(0.5, 1.5, size=shape[1])
    beta = rng.normal(size=shape[1])
    gy = rng.normal(size=shape)
    cdt = numpy.float32 if dtype == numpy.float16 else dtype
    return x, gamma.astype(cdt), beta.astype(cdt), nu.astype(cdt), gy.astype(dtype)


def transform_terms(x, gamma, beta, nu, gy, eps=2e-5):
    """The size of the terms the transform's outputs and gradients are sums of (float64, from
    the definition): the largest slope ``|gamma| / sqrt(sigma_k^2 + eps)`` times the spread
    of x around its channel means, times the largest output gradient (a component of one row
    has sigma_k = 0, a slope of ``gamma / sqrt(eps)`` ~ 200 and outputs that cancel to ~0)."""
    C = x.shape[1]
    X = numpy.moveaxis(x.astype(numpy.float64), 1, -1).reshape(-1, C)
    G = numpy.moveaxis(gy.astype(numpy.float64), 1, -1).reshape(-1, C)
    nu = nu.astype(numpy.float64)
    counts = nu.sum(axis=0)
    nuhat = nu[:, counts > 0] / counts[counts > 0]
    mu = nuhat.T @ X
    var = numpy.stack([w @ (X - m) ** 2 for w, m in zip(nuhat.T, mu)])
    slope = numpy.abs(gamma).max() / numpy.sqrt(var.min() + eps)
    return slope * max(numpy.abs(X - X.mean(axis=0)).max(), 1.0) * max(numpy.abs(G).max(), 1.0)


def run_transform(x, gamma, beta, nu, gy, shift=None, **options):
    """Forward and backward; ``shift``: a centring constant given to the function node, as the
    layer gives its fit's centre (None: mixture_normalization's own)."""
    vs = [chainer.Variable(a.copy()) for a in (x, gamma, beta)]
    if shift is None:
        y = mixture_normalization(*vs, nu, **options)
    else:
        y, = MixtureNormalizationFunction(nu, shift=shift, **options).apply(vs)
    y.grad = gy
    y.backward()
    return [y.array] + [v.grad for v in vs]


@pytest.mark.parametrize('dtype', DTYPES + [numpy.float16])
@pytest.mark.parametrize('shape', [(4, 3, 5, 7), (37, 6), (2, 1, 3, 3), (1, 2, 1, 3)])
@pytest.mark.parametrize('K', [1, 2, 3, 4, 5])
@pytest.mark.parametrize('activation', [None, 'relu'])
@pytest.mark.parametrize('affine', ['output', 'statistics'])
@pytest.mark.parametrize('offset', [0.0, 30.0])
def test_transform_kernels_match_the_xp_path(on_cpu, dtype, shape, K, activation, affine,
                                             offset):
    rng = numpy.random.default_rng(K + len(shape))
    case = transform_case(rng, shape, K, dtype, offset, 'one-hot' if K == 5 else 'soft')
    # off the origin: rows shifted by the channel means in the compute dtype (a fit's centre,
    # which is what the layer gives; for float16 input not a float16 value)
    shift = None if not offset else numpy.moveaxis(
        case[0].astype(case[1].dtype), 1, -1).reshape(-1, shape[1]).mean(axis=0)
    ours, ref = both(lambda: run_transform(*case, shift=shift, activation=activation,
                                           affine=affine))
    terms = transform_terms(*case)
    for a, b in zip(ours, ref):        # measured 13 (float64), 9.5 (float32) eps of the terms;
        close(a, b, 100, terms)        # float16: within one float16 ulp + 0.45 eps32


@pytest.mark.parametrize('dtype', DTYPES)
def test_transform_kernels_far_from_the_origin(on_cpu, dtype):
    rng = numpy.random.default_rng(5)
    case = [a.astype(dtype) for a in transform_case(rng, (4, 3, 5, 5), 3, numpy.float64,
                                                    offset=1e4)]
    with chainer.using_config('mixnorm_kernels', False):     # float64 xp path, same inputs
        reference = run_transform(*(a.astype(numpy.float64) for a in case))
    with chainer.using_config('mixnorm_kernels', True):
        ours = run_transform(*case)
    terms = transform_terms(*case)
    for a, b in zip(ours, reference):
        close(a, b, 40, terms)                                  # measured 3.9 eps


@pytest.mark.parametrize('shape', [(4, 3, 5, 5), (50, 4)])
def test_k1_kernels_equal_batch_normalization(on_cpu, shape):
    rng = numpy.random.default_rng(3)
    x, gamma, beta, _, gy = transform_case(rng, shape, 1, numpy.float64)
    nu = numpy.ones((x.size // x.shape[1], 1))
    with chainer.using_config('mixnorm_kernels', True):
        ours = run_transform(x, gamma, beta, nu, gy)
    vs = [chainer.Variable(a.copy()) for a in (x, gamma, beta)]
    y = F.batch_normalization(*vs, eps=2e-5)
    y.grad = gy
    y.backward()
    for a, b in zip(ours, [y.array] + [v.grad for v in vs]):
        numpy.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


# -- test mode and the whole layer ------------------------------------------------------------

def queue_arrays(rng, T, K, C, pruned=True):
    weights = rng.dirichlet(numpy.ones(K), size=T)
    if pruned:
        weights[0, -1] = 0
        weights[0] /= weights[0].sum()
    means = rng.normal(scale=3, size=(T, K, C)) + 2
    variances = rng.uniform(0.3, 2, size=(T, K, C))
    return weights, means, variances


@pytest.mark.parametrize('dtype', DTYPES + [numpy.float16])
@pytest.mark.parametrize('form', ['consistent', 'printed'])
@pytest.mark.parametrize('activation', [None, 'relu'])
def test_queue_kernels_match_the_xp_path(on_cpu, dtype, form, activation):
    rng = numpy.random.default_rng(7)
    stats = queue_arrays(rng, 4, 3, 5)
    fit = (stats[0], stats[1] + 0.1, stats[2] * 1.1)
    x, gamma, beta, _, gy = transform_case(rng, (3, 5, 4, 6), 3, dtype)
    x[0, 1, 2, 3] = numpy.nan                      # a missing entry stays local

    def run():
        v = chainer.Variable(x.copy())
        y = queue_normalization(v, gamma, beta, *stats, 3, 0.9, 2e-5, form=form,
                                activation=activation, fit=fit)
        y.grad = gy
        y.backward()
        return y.array, v.grad

    ours, ref = both(run)
    assert numpy.isnan(ours[0][0, 1, 2, 3]) and numpy.isnan(ref[0][0, 1, 2, 3])
    mask = numpy.isfinite(ref[0])
    close(ours[0][mask], ref[0][mask], 150)       # measured 14 eps; float16: within one ulp
    close(ours[1], ref[1], 150)


def test_the_layer_with_kernels_equals_the_xp_path(on_cpu):
    """Training steps (fit: k-means++, k-means, EM, pruning; transform; backward) and test
    mode, float64: same draws, same results to rounding."""
    def run():
        rng = numpy.random.default_rng(0)
        link = MixtureNormalization(4, n_components=4, em_iters=4, dtype=numpy.float64, seed=0,
                                    min_weight=0.05, activation='relu')
        out = []
        for _ in range(3):
            x = rng.normal(size=(6, 4, 5, 5)) + rng.integers(0, 3, size=(6, 1, 5, 5)) * 3
            v = chainer.Variable(x)
            y = link(v)
            link.cleargrads()
            F.sum(y * rng.normal(size=y.shape)).backward()
            out += [y.array, v.grad, link.gamma.grad, link.last_fit.means]
        with chainer.using_config('train', False):
            out.append(link(x + 0.5).array)
        return out

    ours, ref = both(run)
    for a, b in zip(ours, ref):
        close(a, b, 400)                                        # measured 41 eps
    assert {c['name'] for c in harness.calls} >= {
        'mixnorm_kmeans_assign', 'mixnorm_nearest_squared_distances', 'mixnorm_e_step',
        'mixnorm_weighted_sums', 'mixnorm_weighted_centred_squares',
        'mixnorm_transform_forward', 'mixnorm_transform_sum_p_relu',
        'mixnorm_transform_sum_q_relu', 'mixnorm_transform_backward',
        'mixnorm_queue_coefficients'}


def test_fit_gmm_with_kernels_equals_the_xp_path(on_cpu):
    rng = numpy.random.default_rng(2)
    X = rows(rng, 500, 6, 3, offset=100.0)
    ours, ref = both(lambda: fit_gmm(X, 3, kmeans_iters=2, em_iters=3, seed=1))
    for name in ('weights', 'means', 'variances'):
        close(getattr(ours, name), getattr(ref, name), 500)   # measured 55 eps


@pytest.mark.parametrize('init', ['afkmc2', 'warm'])
def test_cheaper_fits_with_kernels_equal_the_xp_path(on_cpu, init):
    """AFK-MC² (its proposal pass goes through the seeding kernel) and a warm start (E-step and
    M-step kernels from a given mixture) on the kernel path equal the xp path."""
    rng = numpy.random.default_rng(3)
    X = rows(rng, 500, 6, 3, offset=100.0)
    if init == 'warm':
        start = fit_gmm(X[::-1].copy(), 3, kmeans_iters=2, em_iters=3, seed=2)
        kwargs = dict(init=(start.weights, start.means64, start.variances), em_iters=2)
    else:
        kwargs = dict(init='afkmc2', kmeans_iters=1, em_iters=1)
    calls_before = len(harness.calls)
    ours, ref = both(lambda: fit_gmm(X, 3, seed=1, **kwargs))
    assert len(harness.calls) > calls_before
    for name in ('weights', 'means', 'variances'):
        close(getattr(ours, name), getattr(ref, name), 1000)  # measured 0, 0, 422 eps
    if init == 'warm':
        assert ours.start.score == pytest.approx(ref.start.score, rel=1e-6)


def test_switch_forces_the_xp_path(on_cpu):
    x = numpy.random.default_rng(0).normal(size=(4, 3, 4, 4))
    nu = numpy.full((64, 2), 0.5)
    with chainer.using_config('mixnorm_kernels', False):
        mixture_normalization(x, numpy.ones(3), numpy.zeros(3), nu)
    assert harness.calls == []
    with chainer.using_config('mixnorm_kernels', True):
        mixture_normalization(x, numpy.ones(3), numpy.zeros(3), nu)
    assert harness.calls


def test_self_check_is_small(on_cpu):
    errors = self_check.check(numpy)
    assert len(errors) >= 16
    assert all(err <= self_check.tolerance(name) for name, err in errors.items()), errors


def test_kernels_are_off_for_numpy_arrays_without_the_harness():
    assert not kernels.enabled(numpy.ones(3))
