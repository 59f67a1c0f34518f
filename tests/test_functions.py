import functools

import chainer
import chainer.functions as F
import numpy
import pytest
from chainer import gradient_check

from mixnorm_chainer import mixture_normalization
from mixnorm_chainer.functions import MixtureNormalizationFunction

import reference


def make_case(shape, K, dtype=numpy.float64, seed=0):
    rng = numpy.random.default_rng(seed)
    x = rng.normal(size=shape)
    if len(shape) == 4:                      # give channels a skewed, offset distribution
        x = numpy.exp(0.7 * x) + 3.0
    m = shape[0] * int(numpy.prod(shape[2:]))
    nu = rng.dirichlet(numpy.full(K, 0.5), size=m)
    gamma = rng.uniform(0.5, 1.5, size=shape[1])
    beta = rng.normal(size=shape[1])
    return x.astype(dtype), gamma.astype(dtype), beta.astype(dtype), nu.astype(dtype)


SHAPES = [(4, 3, 5, 6), (30, 5)]


def mn_with(x, gamma, beta, nu):
    return mixture_normalization(x, gamma, beta, nu)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('K', [1, 2, 4])
@pytest.mark.parametrize('affine', ['output', 'statistics'])
@pytest.mark.parametrize('activation', [None, 'relu'])
def test_forward_matches_equations(shape, K, affine, activation):
    x, gamma, beta, nu = make_case(shape, K)
    y = mixture_normalization(x, gamma, beta, nu, affine=affine, activation=activation)
    expected = reference.mixture_normalization(x, gamma, beta, nu, affine=affine,
                                               activation=activation)
    assert y.shape == x.shape and y.dtype == x.dtype
    numpy.testing.assert_allclose(y.array, expected, rtol=1e-11, atol=1e-11)


def one_pass_factor(x, nu):
    """``1 + max mu^2 / sigma^2`` over components and channels (float64, Eq. 35-36): the
    one-pass variance ``sum nu x^2 / n - mu^2`` loses that many units of roundoff."""
    rows = numpy.moveaxis(x, 1, -1).reshape(-1, x.shape[1]).astype(numpy.float64)
    _, mu, var = reference.statistics(rows, nu.astype(numpy.float64))
    return 1 + (mu ** 2 / var).max()


@pytest.mark.parametrize('shape', SHAPES)
def test_k1_equals_batch_normalization_forward_and_backward(shape):
    # float32: MN's one-pass variance against BN's two-pass: 2.9 eps32 x one_pass_factor
    # (25 for the offset 4-D case, 1.1 for the 2-D one) measured, allowed 10x that
    eps32 = numpy.finfo(numpy.float32).eps
    for dtype in (numpy.float64, numpy.float32):
        x, gamma, beta, _ = make_case(shape, 1, dtype)
        tol = 1e-12 if dtype == numpy.float64 else 30 * eps32 * one_pass_factor(
            x, numpy.ones((x.size // x.shape[1], 1)))
        nu = numpy.ones((x.size // x.shape[1], 1), dtype=dtype)
        gy = numpy.random.default_rng(5).normal(size=shape).astype(dtype)
        grads = []
        for fn in (functools.partial(mn_with, nu=nu),
                   functools.partial(F.batch_normalization, eps=2e-5)):
            v = [chainer.Variable(a.copy()) for a in (x, gamma, beta)]
            y = fn(*v)
            y.grad = gy
            y.backward()
            grads.append([y.array] + [a.grad for a in v])
        for ours, bn in zip(*grads):
            numpy.testing.assert_allclose(ours, bn, rtol=tol, atol=tol)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('K', [1, 3])
def test_gradient_matches_autograd_of_the_equations(shape, K):
    """Our backward vs chainer autograd through an F-composition of Eq. 34-36 (nu constant)."""
    x, gamma, beta, nu = make_case(shape, K, seed=1)
    gy = numpy.random.default_rng(2).normal(size=shape)
    results = []
    for fn in (mixture_normalization, reference.mixture_normalization_chainer):
        v = [chainer.Variable(a.copy()) for a in (x, gamma, beta)]
        y = fn(*v, nu)
        y.grad = gy
        y.backward()
        results.append([y.array] + [a.grad for a in v])
    for ours, ref in zip(*results):
        numpy.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('K', [1, 3])
@pytest.mark.parametrize('affine', ['output', 'statistics'])
@pytest.mark.parametrize('activation', [None, 'relu'])
def test_gradient_check_float64(shape, K, affine, activation):
    x, gamma, beta, nu = make_case(shape, K, seed=3)
    gy = numpy.random.default_rng(4).normal(size=shape)

    def f(x, gamma, beta):
        return mixture_normalization(x, gamma, beta, nu, affine=affine, activation=activation)

    gradient_check.check_backward(f, (x, gamma, beta), gy, eps=1e-6, atol=1e-6, rtol=1e-5,
                                  dtype=numpy.float64)


@pytest.mark.parametrize('activation', [None, 'relu'])
@pytest.mark.parametrize('affine', ['output', 'statistics'])
def test_gradient_check_fixed_statistics(activation, affine):
    """The test-mode node (statistics from the queue, constant) is differentiable too."""
    x, gamma, beta, rho = make_case((3, 2, 4, 4), 3, seed=6)
    rng = numpy.random.default_rng(7)
    scale = rng.uniform(0.5, 1, size=3)
    coef = rho / scale
    means = rng.normal(size=(3, 2)) + 3
    variances = rng.uniform(0.5, 2, size=(3, 2))
    shift = means.mean(axis=0)
    fixed = (coef, scale, means - shift, variances, shift)
    gy = rng.normal(size=x.shape)

    def f(x, gamma, beta):
        node = MixtureNormalizationFunction(None, 2e-5, affine, activation, fixed=fixed)
        return node.apply((x, gamma, beta))[0]

    gradient_check.check_backward(f, (x, gamma, beta), gy, eps=1e-6, atol=1e-6, rtol=1e-5,
                                  dtype=numpy.float64)


def test_no_gradient_through_responsibilities():
    """Moving x changes the output only through mu and sigma^2, not through nu: with nu held
    fixed, a finite difference of the forward equals the analytic directional derivative."""
    x, gamma, beta, nu = make_case((4, 3, 5, 6), 3, seed=8)
    d = numpy.random.default_rng(9).normal(size=x.shape)
    h = 1e-6
    fd = (mixture_normalization(x + h * d, gamma, beta, nu).array
          - mixture_normalization(x - h * d, gamma, beta, nu).array) / (2 * h)
    gy = numpy.random.default_rng(10).normal(size=x.shape)
    v = chainer.Variable(x.copy())
    y = mixture_normalization(v, gamma, beta, nu)
    y.grad = gy
    y.backward()
    numpy.testing.assert_allclose((v.grad * d).sum(), (gy * fd).sum(), rtol=1e-6)


@pytest.mark.parametrize('dtype, tol', [(numpy.float32, 1e-5), (numpy.float16, 2e-2)])
def test_lower_precision_agrees_with_float64(dtype, tol):
    x, gamma, beta, nu = make_case((8, 4, 6, 6), 3, seed=11)
    expected = reference.mixture_normalization(x, gamma, beta, nu)
    gy = numpy.random.default_rng(12).normal(size=x.shape)
    v = chainer.Variable(x.astype(dtype))
    y = mixture_normalization(v, gamma.astype(dtype), beta.astype(dtype), nu.astype(dtype))
    assert y.dtype == dtype
    y.grad = gy.astype(dtype)
    y.backward()
    assert v.grad.dtype == dtype
    scale = numpy.abs(expected).max()
    if dtype == numpy.float32:   # the one-pass variance: measured 1.6 (y), 2.7 (gx) eps32 x 29
        tol = 16 * numpy.finfo(numpy.float32).eps * one_pass_factor(x, nu)
    assert numpy.abs(y.array.astype(numpy.float64) - expected).max() <= tol * scale
    v64 = chainer.Variable(x.copy())
    y64 = mixture_normalization(v64, gamma, beta, nu)
    y64.grad = gy
    y64.backward()
    gscale = numpy.abs(v64.grad).max()
    assert numpy.abs(v.grad.astype(numpy.float64) - v64.grad).max() <= 5 * tol * gscale


def test_float32_is_precise_for_offset_activations():
    """Large common offsets (|mean| >> std) do not cost float32 precision (rows are shifted)."""
    x, gamma, beta, nu = make_case((8, 4, 6, 6), 3, seed=13)
    x = x + 1000.0
    expected = reference.mixture_normalization(x, gamma, beta, nu)
    y = mixture_normalization(x.astype(numpy.float32), gamma.astype(numpy.float32),
                              beta.astype(numpy.float32), nu.astype(numpy.float32))
    assert numpy.abs(y.array - expected).max() < 1e-3


def test_empty_component_is_ignored():
    x, gamma, beta, nu = make_case((30, 5), 2, seed=14)
    nu3 = numpy.c_[nu, numpy.zeros(30)]
    y2 = mixture_normalization(x, gamma, beta, nu)
    y3 = mixture_normalization(x, gamma, beta, nu3)
    numpy.testing.assert_allclose(y3.array, y2.array, rtol=1e-12)


@pytest.mark.parametrize('change, message', [
    (dict(x=numpy.ones(5)), 'shape'),
    (dict(x=numpy.ones((4, 3), dtype=numpy.int32)), 'floating'),
    (dict(gamma=numpy.ones(4)), 'gamma'),
    (dict(beta=numpy.ones((3, 1))), 'beta'),
    (dict(nu=numpy.ones((5, 2))), 'responsibilities'),
    (dict(nu=numpy.ones(4)), 'responsibilities'),
    (dict(eps=0), 'eps'),
    (dict(affine='inside'), 'affine'),
    (dict(activation='tanh'), 'activation'),
])
def test_bad_arguments_raise_value_error(change, message):
    args = dict(x=numpy.ones((4, 3)), gamma=numpy.ones(3), beta=numpy.zeros(3),
                nu=numpy.full((4, 2), 0.5))
    options = {k: change.pop(k) for k in list(change) if k in ('eps', 'affine', 'activation')}
    args.update(change)
    with pytest.raises(ValueError, match=message):
        mixture_normalization(args['x'], args['gamma'], args['beta'], args['nu'], **options)
