"""Numerical robustness: float32 far from the origin, tight components, mixed precision,
overflow, test mode vs training, per-layer random streams, serialization (docs/numerics.md)."""
import chainer
import chainer.functions as F
import numpy
import pytest

from mixnorm_chainer import MixtureNormalization, fit_gmm, mixture_normalization
from mixnorm_chainer import gmm as gmm_module
from mixnorm_chainer.models import CifarCNN, InceptionV3
from mixnorm_chainer.models.norm import layer_seed

C = 8


def normwise(a, b):
    """max|a - b| / max|b| (entries near 0 do not blow it up)."""
    return float(numpy.abs(numpy.asarray(a, numpy.float64) - b).max() / numpy.abs(b).max())


def clustered(rng, shape=(8, C, 6, 6), spread=3.0):
    """Three modes per position, channel-wise (well separated: every fit finds them)."""
    N, _, H, W = shape
    modes = numpy.array([-spread, 0.0, spread])[rng.integers(0, 3, size=(N, 1, H, W))]
    return modes + 0.5 * rng.normal(size=shape)


OFFSET_CASES = {
    'near origin': lambda rng: clustered(rng),
    'offset 1e3': lambda rng: clustered(rng) + 1e3,
    'offset 1e4': lambda rng: clustered(rng) + 1e4,
    'channel offsets 1..1e4': lambda rng: clustered(rng) + numpy.logspace(0, 4, C)[:, None, None],
    'constant channel at 100': lambda rng: numpy.concatenate(
        [clustered(rng, (8, C - 1, 6, 6)), numpy.full((8, 1, 6, 6), 100.0)], axis=1),
    'offset 1e4, std 0.5': lambda rng: 1e4 + 0.5 * rng.normal(size=(8, C, 6, 6)),
}


@pytest.mark.parametrize('case', sorted(OFFSET_CASES))
def test_float32_agrees_with_float64_far_from_the_origin_in_training_and_test_mode(case):
    """float32 MN vs float64 MN on the same (float32) inputs, 4 training steps then test mode:
    within 1e-4 normwise. Before centring the test-mode posteriors and keeping the queue in
    float64, test mode was off by up to 3.8 (offset 1e4) and 0.22 (constant channel)."""
    make = OFFSET_CASES[case]
    rng = numpy.random.default_rng(0)
    links = {dt: MixtureNormalization(C, n_components=3, dtype=dt, seed=0)
             for dt in (numpy.float32, numpy.float64)}
    for _ in range(4):
        x = make(rng).astype(numpy.float32)
        out = {dt: link(x.astype(dt)).array for dt, link in links.items()}
        assert normwise(out[numpy.float32], out[numpy.float64]) < 1e-4
    x = make(rng).astype(numpy.float32)
    with chainer.using_config('train', False):
        out = {dt: link(x.astype(dt)).array for dt, link in links.items()}
    assert normwise(out[numpy.float32], out[numpy.float64]) < 1e-4


# -- a tight component far from the batch mean ---------------------------------------------

def tight_far_rows(m=2000):
    """10% of the rows at 50 +- 0.01 in channel 0, the rest N(0, 1): the tight component's
    mean^2/variance is 2.5e7, far beyond float32's one-pass range."""
    rng = numpy.random.default_rng(0)
    X = rng.normal(size=(m, 4))
    X[:m // 10, 0] = 50 + 0.01 * rng.normal(size=m // 10)
    nu = numpy.zeros((m, 2))
    nu[:m // 10, 0] = 1
    nu[m // 10:, 1] = 1
    return X.astype(numpy.float32).astype(numpy.float64), nu


def test_fit_gmm_float32_variance_of_a_tight_far_component():
    """Before: float32 returned the 1e-6 floor or 4.9e-4 where float64 gives 8.8e-5."""
    X, _ = tight_far_rows()
    fits = {dt: fit_gmm(X.astype(dt), 2, kmeans_iters=1, em_iters=1, seed=0)
            for dt in (numpy.float32, numpy.float64)}
    numpy.testing.assert_allclose(fits[numpy.float32].variances, fits[numpy.float64].variances,
                                  rtol=1e-3)
    assert fits[numpy.float64].variances[:, 0].min() < 1e-3     # the tight one is there


def test_transform_float32_with_a_tight_far_component():
    """Before: max |y32 - y64| = 3.45 (transform variance 0 instead of 1e-4) and the x
    gradient 37% off; now within the float32 resolution of the inputs themselves (an input at
    50 is known to 3.8e-6 = 4e-4 of the component's std)."""
    X, nu = tight_far_rows()
    gamma, beta = numpy.ones(4), numpy.zeros(4)
    gy = numpy.random.default_rng(1).normal(size=X.shape)
    results = {}
    for dt in (numpy.float32, numpy.float64):
        v = chainer.Variable(X.astype(dt))
        y = mixture_normalization(v, gamma.astype(dt), beta.astype(dt), nu.astype(dt))
        y.grad = gy.astype(dt)
        y.backward()
        results[dt] = (y.array, v.grad)
    (y32, g32), (y64, g64) = results[numpy.float32], results[numpy.float64]
    assert normwise(y32, y64) < 3e-4
    assert normwise(g32, g64) < 3e-4


def test_component_moments_match_the_centred_float64_sums():
    X, nu = tight_far_rows()
    n, means, variances = gmm_module.component_moments(X.astype(numpy.float32),
                                                       nu.T.astype(numpy.float32))
    for k in range(2):
        w = nu[:, k] / nu[:, k].sum()
        mu = w @ X
        numpy.testing.assert_allclose(means[k], mu, rtol=1e-6, atol=1e-6)
        numpy.testing.assert_allclose(variances[k], w @ (X - mu) ** 2, rtol=1e-4)
    assert list(gmm_module.far_components(means, variances)) == [True, False]


@pytest.fixture
def every_component_far(monkeypatch):
    """The path the GPU takes without a host decision: every component centred on its mean."""
    def all_far(means, variances, linear=False):
        return numpy.ones(means.shape[0], dtype=bool)
    for module in ('gaussian', 'gmm', 'functions'):
        monkeypatch.setattr(f'mixnorm_chainer.{module}.far_components', all_far)


@pytest.mark.parametrize('activation', [None, 'relu'])
@pytest.mark.parametrize('affine', ['output', 'statistics'])
def test_the_centred_path_equals_the_expanded_one(activation, affine, request):
    """The same results (float64) whether components are expanded or centred on their means:
    fit, training output, gradients and test mode (on data where none is far by itself)."""
    def run():
        rng = numpy.random.default_rng(3)
        link = MixtureNormalization(C, n_components=3, dtype=numpy.float64, seed=0,
                                    activation=activation, affine=affine)
        link.gamma.array[:] = rng.uniform(0.5, 1.5, C)
        link.beta.array[:] = rng.normal(size=C)
        for _ in range(3):
            v = chainer.Variable(clustered(rng))
            y = link(v)
            link.cleargrads()
            F.sum(y * rng.normal(size=y.shape)).backward()   # sum(y * y) has P = 0
        far = y.creator.saved.far
        with chainer.using_config('train', False):
            t = link(clustered(rng)).array
        return far, [y.array, v.grad, link.gamma.grad, link.beta.grad, t,
                     link.last_fit.variances]

    far, expanded = run()
    assert not far.any()
    request.getfixturevalue('every_component_far')
    far, centred = run()
    assert far.all()
    for a, b in zip(expanded, centred):
        assert numpy.isfinite(a).all()
        numpy.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


# -- mixed precision -------------------------------------------------------------------------

def test_mixed16_keeps_parameters_and_statistics_in_float32_or_better():
    """Before: under mixed16 the queue was float16, input std 300 gave queue variances
    [60992, inf] and every test-mode output NaN."""
    x = (300 * clustered(numpy.random.default_rng(0))).astype(numpy.float16)
    outputs = {}
    for dtype in (numpy.float32, chainer.mixed16):
        with chainer.using_config('dtype', dtype):
            link = MixtureNormalization(C, seed=0)
            y = link(x.astype(chainer.get_dtype()))
            with chainer.using_config('train', False):
                outputs[dtype] = link(x.astype(chainer.get_dtype())).array
        if dtype is chainer.mixed16:
            assert link.gamma.dtype == numpy.float32 and y.dtype == numpy.float16
            assert link.queue.variances.dtype == numpy.float64
            assert outputs[dtype].dtype == numpy.float16
    assert numpy.isfinite(outputs[chainer.mixed16]).all()
    assert normwise(outputs[chainer.mixed16], outputs[numpy.float32]) < 2e-3


@pytest.mark.slow
def test_cifar_cnn_train_and_test_step_under_mixed16_match_float32():
    rng = numpy.random.default_rng(0)
    x = rng.normal(size=(16, 3, 16, 16)).astype(numpy.float32)
    t = rng.integers(0, 10, size=16).astype(numpy.int32)
    runs = {}
    for dtype in (numpy.float32, chainer.mixed16):
        with chainer.using_config('dtype', dtype):
            numpy.random.seed(0)
            model = CifarCNN(10, mn_layers=('conv2', 'conv3'), seed=0)
            optimizer = chainer.optimizers.MomentumSGD(lr=1e-3)
            if dtype is chainer.mixed16:
                optimizer.use_fp32_update()
            optimizer.setup(model)
            xin = x.astype(chainer.get_dtype())
            loss = F.softmax_cross_entropy(model(xin), t)
            model.cleargrads()
            loss.backward()
            grads = numpy.concatenate([p.grad.ravel().astype(numpy.float64)
                                       for _, p in sorted(model.namedparams())])
            optimizer.update()
            with chainer.using_config('train', False):
                logits = model(xin).array
            runs[dtype] = float(loss.array), grads, logits
    (l32, g32, y32), (l16, g16, y16) = runs[numpy.float32], runs[chainer.mixed16]
    assert y16.dtype == numpy.float16 and numpy.isfinite(y16).all()
    assert abs(l16 - l32) < 1e-2 * l32
    assert numpy.linalg.norm(g16 - g32) < 0.1 * numpy.linalg.norm(g32)
    assert normwise(y16, y32) < 1e-2


# -- overflow ---------------------------------------------------------------------------

def test_fit_gmm_rejects_magnitudes_whose_squares_overflow():
    """Before: float32 rows of ~1e20 returned weights [nan]."""
    X = numpy.random.default_rng(0).normal(size=(500, 3)) * 1e20
    with pytest.raises(ValueError, match='magnitude .* overflow float32'):
        fit_gmm(X.astype(numpy.float32), 2, seed=0)
    assert numpy.isfinite(fit_gmm(X, 2, seed=0).weights).all()          # float64 handles it


def test_link_rejects_overflowing_training_input_and_keeps_its_state():
    """Before: the training output was NaN at 1e19 without an error."""
    link = MixtureNormalization(C, seed=0)
    link(clustered(numpy.random.default_rng(0)).astype(numpy.float32))
    before = link.queue.means.copy()
    x = (1e19 * clustered(numpy.random.default_rng(1))).astype(numpy.float32)
    with pytest.raises(ValueError, match=r'training mode.*magnitude.*\n?.*diverged'):
        link(x)
    assert link.queue.count == 1
    numpy.testing.assert_array_equal(link.queue.means, before)


def test_function_rejects_overflowing_input_but_propagates_nan():
    x = numpy.ones((6, 2), numpy.float32)
    nu = numpy.full((6, 2), 0.5, numpy.float32)
    g, b = numpy.ones(2, numpy.float32), numpy.zeros(2, numpy.float32)
    with pytest.raises(ValueError, match='magnitude'):
        mixture_normalization(x * 1e20, g, b, nu)
    x[0, 0] = numpy.nan
    assert numpy.isnan(mixture_normalization(x, g, b, nu).array[:, 0]).all()


def test_test_mode_huge_entry_stays_finite_and_local():
    """An entry whose squares would overflow leaves the posterior of its row to the other
    channels; its own output stays finite (its normalized value)."""
    link = MixtureNormalization(C, seed=0)
    rng = numpy.random.default_rng(0)
    for _ in range(3):
        link(clustered(rng).astype(numpy.float32))
    x = clustered(rng).astype(numpy.float32)
    bad = x.copy()
    bad[1, 2, 3, 4] = 1e30
    with chainer.using_config('train', False):
        clean = link(x).array
        y = link(bad).array
    assert numpy.isfinite(y).all()
    mask = numpy.ones(x.shape, dtype=bool)
    mask[1, :, 3, 4] = False
    numpy.testing.assert_allclose(y[mask], clean[mask], rtol=1e-5, atol=1e-5)  # (rounding:
    assert abs(y[1, 2, 3, 4]) > 1e28                        # a masked pass sums differently)


# -- test mode vs training -------------------------------------------------------------------

def test_single_entry_test_mode_reproduces_training_exactly():
    """Before: the posteriors used sigma^2 + eps of the transform's statistics, so test mode on
    the training batch differed by up to 13 (ReLU-like data, EM iter. 2) and 9 (EM iter. 40)."""
    for em_iters in (2, 40):
        rng = numpy.random.default_rng(em_iters)
        x = numpy.maximum(rng.normal(size=(16, C, 6, 6)) + rng.normal(size=(1, C, 1, 1)), 0)
        link = MixtureNormalization(C, n_components=3, em_iters=em_iters, queue_length=1,
                                    dtype=numpy.float64, seed=0)
        y = link(x).array
        with chainer.using_config('train', False):
            numpy.testing.assert_allclose(link(x).array, y, rtol=1e-9, atol=1e-9)


def _train_test_gap(n_rows_per_image, seed):
    rng = numpy.random.default_rng(seed)
    link = MixtureNormalization(C, n_components=3, dtype=numpy.float64, seed=seed)
    for _ in range(15):
        x = clustered(rng, (n_rows_per_image, C, 6, 6))
        y = link(x).array
    with chainer.using_config('train', False):
        t = link(x).array
    return float(numpy.sqrt(((t - y) ** 2).mean() / (y ** 2).mean()))


@pytest.mark.slow
def test_full_queue_on_stationary_data_differs_from_training_by_sampling_noise():
    """T = 10 entries from a stationary distribution: the test-mode output of the last
    training batch differs from its training output by that batch's sampling noise (relative
    RMS ~7% at 576 rows, ~3% at 4608; it shrinks like 1/sqrt(rows): not a bias)."""
    small = numpy.mean([_train_test_gap(16, s) for s in range(3)])
    large = numpy.mean([_train_test_gap(128, s) for s in range(3)])
    assert small < 0.12 and large < 0.05
    assert large < 0.6 * small


# -- per-layer random streams ----------------------------------------------------------------

def test_each_mn_layer_draws_its_own_reproducible_stream():
    """Before: every MN layer of a model got the model's seed and drew the same rows."""
    def draws(model):
        return {name: link._rng.integers(1 << 30, size=4).tolist()
                for name, link in model.namedlinks() if isinstance(link, MixtureNormalization)}

    a = draws(CifarCNN(10, mn_layers=('conv2', 'conv3'), seed=0))
    assert a['/conv2_norm'] != a['/conv3_norm']
    assert a == draws(CifarCNN(10, mn_layers=('conv2', 'conv3'), seed=0))
    assert a != draws(CifarCNN(10, mn_layers=('conv2', 'conv3'), seed=1))
    inception = draws(InceptionV3(10, mn_layers=('inc2/0',), seed=0))
    assert len(inception) > 1 and len({tuple(v) for v in inception.values()}) == len(inception)
    assert layer_seed(None, 'conv2') is None


# -- serialization ---------------------------------------------------------------------------

@pytest.mark.parametrize('fmt', ['npz', 'hdf5'])
def test_save_and_load_round_trip(tmp_path, fmt):
    """Before: save_hdf5 failed (options and RNG state were numpy unicode strings)."""
    pytest.importorskip('h5py') if fmt == 'hdf5' else None
    save = getattr(chainer.serializers, f'save_{fmt}')
    load = getattr(chainer.serializers, f'load_{fmt}')
    rng = numpy.random.default_rng(0)
    link = MixtureNormalization(C, seed=0, sample_fraction=0.5, inference='printed')
    link(clustered(rng).astype(numpy.float32))
    path = str(tmp_path / f'mn.{fmt}')
    save(path, link)
    other = MixtureNormalization(C, seed=5)
    load(path, other)
    assert other.options() == link.options()
    x = clustered(rng).astype(numpy.float32)
    with chainer.using_config('train', False):
        numpy.testing.assert_array_equal(other(x).array, link(x).array)
    numpy.testing.assert_array_equal(other(x).array, link(x).array)     # same RNG draws


def test_loads_a_snapshot_of_version_0_1(tmp_path):
    """0.1 stored options as a unicode string and had no fitted mixtures in its queue: it
    loads, warns, and test mode uses the statistics for the posteriors."""
    link = MixtureNormalization(C, seed=0)
    link(clustered(numpy.random.default_rng(0)))
    arrays = {'gamma': link.gamma.array, 'beta': link.beta.array,
              'queue_weights': link.queue.weights, 'queue_means': link.queue.means,
              'queue_variances': link.queue.variances, 'queue_count': numpy.array(1),
              'mn_options': numpy.array(__import__('json').dumps(link.options())),
              'mn_rng_state': numpy.array(__import__('json').dumps(
                  link._rng.bit_generator.state))}
    path = str(tmp_path / 'old.npz')
    numpy.savez(path, **arrays)
    other = MixtureNormalization(C)
    with pytest.warns(UserWarning, match='no fitted mixtures'):
        chainer.serializers.load_npz(path, other)
    assert other.options() == link.options()
    numpy.testing.assert_array_equal(other.queue.fit_means, link.queue.means)
    with chainer.using_config('train', False):
        assert numpy.isfinite(other(clustered(numpy.random.default_rng(1))).array).all()


def test_double_backprop_says_what_to_do():
    link = MixtureNormalization(C, seed=0)
    x = chainer.Variable(clustered(numpy.random.default_rng(0)).astype(numpy.float32))
    y = link(x)
    gx, = chainer.grad([F.sum(y * y)], [x], enable_double_backprop=True)
    with pytest.raises(NotImplementedError, match='gradient penalty'):
        F.sum(gx * gx).backward()
