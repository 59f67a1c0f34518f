"""Self-tests of tests/cuda_kernel_harness.py: CuPy kernel semantics on the CPU vs numpy.

Every kernel here is compiled with the system C++ compiler (about 0.3 s each, cached on
disk); tests skip without one, or fail when MIXNORM_REQUIRE_CXX=1.
"""

import numpy
import pytest

import cuda_kernel_harness as harness

SQUARED_DIFF = ('float32 x, float32 y', 'float32 z', 'z = (x - y) * (x - y)', 'squared_diff')
SUM_OF_SQUARES = ('T x', 'T y', 'x * x', 'a + b', 'y = a', '0', 'sum_of_squares')


@pytest.fixture(autouse=True)
def _need_cxx():
    harness.require_cxx()


def _rand(*shape, dtype=numpy.float32, seed=0):
    return numpy.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_squared_diff_broadcasting_scalar_views_and_out():
    kernel = harness.elementwise(*SQUARED_DIFF)
    x, y = _rand(2, 1, 4), _rand(3, 4, seed=1)
    z = kernel(x, y)
    assert z.shape == (2, 3, 4) and z.dtype == numpy.float32
    numpy.testing.assert_allclose(z, (x - y) ** 2, rtol=1e-6)
    numpy.testing.assert_allclose(kernel(x, 2.5), (x - 2.5) ** 2, rtol=1e-6)
    # a strided (transposed) input view, and an output given explicitly
    xt = _rand(4, 3, seed=2).T
    out = numpy.zeros((3, 4), numpy.float32)
    assert kernel(xt, y, out) is out
    numpy.testing.assert_allclose(out, (xt - y) ** 2, rtol=1e-6)
    assert harness.elementwise(*SQUARED_DIFF) is kernel  # memoized like chainer's wrapper


def test_cupy_argument_checks():
    kernel = harness.elementwise(*SQUARED_DIFF)
    x = _rand(3)
    with pytest.raises(TypeError, match='mismatched'):
        kernel(x, x.astype(numpy.float64))  # CuPy does not cast arrays
    with pytest.raises(ValueError, match='Out shape'):
        kernel(_rand(2, 3), x, numpy.empty(3, numpy.float32))  # out must be the full shape
    with pytest.raises(TypeError, match='Wrong number'):
        kernel(x)
    with pytest.raises(ValueError, match='size'):
        kernel(x, x, size=3)  # size= only when every array is raw
    with pytest.raises(ValueError, match='undecided'):
        kernel(1.0, 2.0)
    with pytest.raises(ValueError, match="'i'"):
        harness.elementwise('T i', 'T y', 'y = i', 'bad_name')
    with pytest.raises(ValueError, match='verbatim'):
        harness.reduce(*SUM_OF_SQUARES, reduce_type='float64')


def test_placeholders_bind_from_arrays_not_scalars():
    kernel = harness.elementwise('T x, U a, T s', 'T y', 'y = x * (T)a + s', 'scale_shift')
    for t, u in ((numpy.float32, numpy.float64), (numpy.float64, numpy.float32)):
        x, a = _rand(5, dtype=t), _rand(5, dtype=u, seed=1)
        y = kernel(x, a, 0.5)
        assert y.dtype == t
        # x a + 0.5 can cancel to ~0: within two roundings of its terms (one, with FMA)
        terms = numpy.abs(x * a.astype(t)) + 0.5
        assert (numpy.abs(y - (x * a.astype(t) + t(0.5))) <= 2 * numpy.finfo(t).eps * terms).all()
    with pytest.raises(TypeError, match='mismatched'):
        kernel(_rand(2), _rand(2), numpy.zeros(2))  # T bound to float32, then float64
    with pytest.raises(TypeError, match='not bound'):
        harness.elementwise('T x', 'U y', 'y = x', 'unbound')(_rand(2))


def test_raw_input_indexed_in_a_loop_honours_strides():
    kernel = harness.elementwise(
        'raw T x, int32 C', 'T y',
        'T s = 0; for (int c = 0; c < C; ++c) s += x[i * C + c]; y = s + 0 * x.size();',
        'row_sums')
    x = _rand(7, 10)[:, ::2]  # (7, 5) view with a column stride of two elements
    y = numpy.empty(7, numpy.float32)  # the non-raw output gives the loop size
    kernel(x, x.shape[1], y)
    # a sum of 5 terms of either sign: within 5 float32 roundings of sum |x|
    bound = 5 * numpy.finfo(numpy.float32).eps * numpy.abs(x).sum(axis=1)
    assert (numpy.abs(y - x.sum(axis=1)) <= bound).all()


def test_raw_output_and_size():
    reverse = harness.elementwise('T x', 'raw T y', 'y[_ind.size() - 1 - i] = x', 'reverse')
    x = _rand(6)
    buf = numpy.zeros(12, numpy.float32)
    reverse(x, buf[::2])  # a non-contiguous raw output is written in place
    numpy.testing.assert_array_equal(buf[::2], x[::-1])
    numpy.testing.assert_array_equal(buf[1::2], 0)
    double = harness.elementwise('raw T x', 'raw T y', 'y[i] = 2 * x[i]', 'double_raw')
    y = double(x, size=4)
    assert y.shape == (4,)
    numpy.testing.assert_array_equal(y, 2 * x[:4])


def test_int32_argmin_and_multiple_outputs():
    argmin = harness.elementwise(
        'raw T d, int32 K', 'int32 best, T dmin',
        'int b = 0; for (int k = 1; k < K; ++k) if (d[i * K + k] < d[i * K + b]) b = k; '
        'best = b; dmin = d[i * K + b];',
        'argmin_k')
    d = _rand(9, 4)
    best, dmin = argmin(d, 4, numpy.empty(9, numpy.int32), numpy.empty(9, numpy.float32))
    assert best.dtype == numpy.int32
    numpy.testing.assert_array_equal(best, d.argmin(axis=1))
    numpy.testing.assert_array_equal(dmin, d.min(axis=1))


def test_preamble_and_cuda_math_names():
    preamble = '''
    __device__ __forceinline__ float clamp01(float v) { return min(max(v, 0.0f), 1.0f); }
    template <typename T> __device__ T sq(T v) { return v * v; }
    '''
    kernel = harness.elementwise(
        'float32 x', 'float32 y, float64 e',
        'y = clamp01(x) + rsqrt(sq(x) + 1.0f) + (isfinite(x) ? 0.0f : 1.0f) + exp(x); '
        'e = x > 3 ? CUDART_INF : (double)log1p(fabs(x));',
        'math_names', preamble=preamble)
    x = numpy.append(_rand(20) * 2, [numpy.inf, 5]).astype(numpy.float32)
    with numpy.errstate(all='ignore'):
        want = (numpy.clip(x, 0, 1) + 1 / numpy.sqrt(x * x + 1) + ~numpy.isfinite(x)
                + numpy.exp(x))
        want_e = numpy.where(x > 3, numpy.inf, numpy.log1p(numpy.abs(x)).astype(numpy.float64))
    y, e = kernel(x)
    numpy.testing.assert_allclose(y, want, rtol=1e-6)
    numpy.testing.assert_allclose(e, want_e, rtol=1e-6)


def test_float16_loads_to_float_and_rounds_on_store():
    kernel = harness.elementwise('T x, T y', 'T z', 'z = x * y + x', 'fma16')
    x, y = _rand(50, dtype=numpy.float16), _rand(50, dtype=numpy.float16, seed=1)
    z = kernel(x, y)
    assert z.dtype == numpy.float16
    x32, y32 = x.astype(numpy.float32), y.astype(numpy.float32)
    numpy.testing.assert_array_equal(z, (x32 * y32 + x32).astype(numpy.float16))
    total = harness.reduce('T x', 'T y', 'x', 'a + b', 'y = a', '0', 'sum16',
                           reduce_type='float')(x.reshape(5, 10), axis=1)
    # the float32 sum (10 terms of either sign, in another order than numpy's pairwise sum)
    # rounded once: within one float16 unit of numpy's, plus the float32 roundings
    want = x32.reshape(5, 10).sum(axis=1)
    bound = (numpy.spacing(numpy.abs(want.astype(numpy.float16))).astype(numpy.float32)
             + 10 * numpy.finfo(numpy.float32).eps * numpy.abs(x32).reshape(5, 10).sum(axis=1))
    assert (numpy.abs(total.astype(numpy.float32) - want) <= bound).all()


def test_reduction_axes_keepdims_and_float64_accumulation():
    kernel = harness.reduce(*SUM_OF_SQUARES, reduce_type='double')
    x = _rand(4, 6, 5)
    x64 = x.astype(numpy.float64)
    for axis in (1, -1, (0, 2), None):
        got = kernel(x, axis=axis)
        want = (x64 * x64).sum(axis=axis).astype(numpy.float32)
        assert got.dtype == numpy.float32 and got.shape == want.shape
        numpy.testing.assert_allclose(got, want, rtol=1e-6)
    got = kernel(x, axis=(0, 2), keepdims=True)
    assert got.shape == (1, 6, 1)
    numpy.testing.assert_allclose(got, (x64 * x64).sum(axis=(0, 2), keepdims=True), rtol=1e-6)
    out = numpy.empty(4, numpy.float32)
    assert kernel(x, axis=(1, 2), out=out) is out
    numpy.testing.assert_allclose(out, (x64 * x64).sum(axis=(1, 2)), rtol=1e-6)


def test_reduction_of_broadcast_strided_views():
    n, k, c, s = 3, 4, 5, 2
    x = _rand(s, c, n).transpose(2, 1, 0)[:, None]  # (N, 1, C, S), not contiguous
    mu = _rand(s, k, seed=1).T[None, :, None, :]  # (1, K, 1, S), not contiguous
    kernel = harness.reduce('T x, T mu', 'T d', '(x - mu) * (x - mu)', 'a + b', 'd = a', '0',
                            'sq_dist', reduce_type='double')
    d = kernel(x, mu, axis=(0, 2))
    want = ((x.astype(numpy.float64) - mu) ** 2).sum(axis=(0, 2))
    assert d.shape == (k, s)
    numpy.testing.assert_allclose(d, want, rtol=1e-6)


def test_reduction_post_map_identity_and_empty():
    norm = harness.reduce('T x', 'T y', 'x * x', 'a + b', 'y = sqrt(a)', '0', 'l2norm')
    x = _rand(3, 8)
    numpy.testing.assert_allclose(norm(x, axis=1), numpy.linalg.norm(x, axis=1), rtol=1e-6)
    numpy.testing.assert_array_equal(norm(numpy.empty((2, 0), numpy.float32), axis=1), 0)
    no_identity = harness.reduce('T x', 'T y', 'x', 'max(a, b)', 'y = a', None, 'maxk')
    with pytest.raises(ValueError, match='no identity'):
        no_identity(numpy.empty((2, 0), numpy.float32), axis=1)


def test_compile_errors_show_compiler_message_and_source():
    kernel = harness.elementwise('float32 x', 'float32 y', 'y = undefined_fn(x)', 'broken')
    with pytest.raises(harness.CompileError) as info:
        kernel(_rand(2))
    message = str(info.value)
    assert "'undefined_fn' was not declared" in message
    assert 'y = undefined_fn(x);' in message and 'broken' in message
    # inputs are const, as on the GPU: writing one does not compile
    writes_input = harness.elementwise('float32 x', 'float32 y', 'x = 0; y = x', 'write_in')
    with pytest.raises(harness.CompileError, match='read-only'):
        writes_input(_rand(2))


def test_calls_record_definitions_and_arguments():
    harness.calls.clear()
    harness.elementwise(*SQUARED_DIFF)(_rand(2, 3), 1.0)
    harness.reduce(*SUM_OF_SQUARES, reduce_type='double')(_rand(2, 3), axis=1)
    elementwise, reduction = harness.calls
    assert elementwise['kind'] == 'elementwise' and elementwise['name'] == 'squared_diff'
    assert elementwise['operation'] == SQUARED_DIFF[2]
    assert elementwise['dtypes'] == ('float32', 'float32', 'float32')
    assert elementwise['ndims'] == (2, None, 2)
    assert reduction['kind'] == 'reduction' and reduction['reduce_type'] == 'double'
    assert (reduction['map_expr'], reduction['reduce_expr'], reduction['post_map_expr'],
            reduction['identity']) == SUM_OF_SQUARES[2:6]
    assert reduction['type_map'] == {'T': 'float32'} and reduction['axis'] == (1,)
    assert reduction['preamble'] == '' and reduction['ndims'] == (2, 1)


def test_planted_wrong_sign_is_caught():
    """The harness executes the given body: a wrong kernel string gives wrong numbers."""
    wrong = harness.elementwise('float32 x, float32 y', 'float32 z', 'z = (x + y) * (x + y)',
                                'squared_diff')
    x, y = _rand(10), _rand(10, seed=1)
    assert not numpy.allclose(wrong(x, y), (x - y) ** 2, rtol=1e-3)
    numpy.testing.assert_allclose(harness.elementwise(*SQUARED_DIFF)(x, y), (x - y) ** 2,
                                  rtol=1e-6)


def test_patches_chainer_cuda_wrappers(monkeypatch):
    from chainer.backends import cuda

    original = cuda.elementwise, cuda.reduce
    with harness.cpu_kernels():
        assert (cuda.elementwise, cuda.reduce) == (harness.elementwise, harness.reduce)
        x = _rand(3)
        numpy.testing.assert_allclose(cuda.elementwise(*SQUARED_DIFF)(x, 1.0), (x - 1) ** 2)
    assert (cuda.elementwise, cuda.reduce) == original
    harness.install(monkeypatch)
    assert cuda.reduce is harness.reduce
