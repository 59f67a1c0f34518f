import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest

from mixnorm_chainer import MixtureNormalization, mixture_normalization
from mixnorm_chainer.functions import to_rows
from mixnorm_chainer.options import split_em_iters
from mixnorm_chainer.queue import decay_weights

import reference

C = 4


def clustered_batch(seed=0, shape=(8, C, 6, 6), dtype=numpy.float64):
    """Conv-like activations with three well-separated modes per position."""
    rng = numpy.random.default_rng(seed)
    N, _, H, W = shape
    modes = numpy.array([-6.0, 0.0, 6.0])[rng.integers(0, 3, size=(N, 1, H, W))]
    x = modes + rng.normal(scale=0.7, size=shape) + numpy.arange(C)[None, :, None, None]
    return x.astype(dtype)


def make_link(**kw):
    args = dict(n_components=3, dtype=numpy.float64, seed=0)
    args.update(kw)
    link = MixtureNormalization(C, **args)
    rng = numpy.random.default_rng(42)
    link.gamma.array[:] = rng.uniform(0.5, 1.5, C)
    link.beta.array[:] = rng.normal(size=C)
    return link


def fit_queue(link):
    return link.queue.fit


def fill_queue_with_last_entry(link):
    for name in link.queue.ARRAYS:
        q = getattr(link.queue, name)
        q[:] = q[-1]
    link.queue.count = link.queue_length


def test_em_iters_split_into_kmeans_and_em():
    assert split_em_iters(2) == (1, 1)
    assert split_em_iters(4) == (2, 2)
    assert split_em_iters(8) == (4, 4)
    assert split_em_iters(3) == (1, 2)
    link = MixtureNormalization(C, em_iters=8)
    assert (link.kmeans_iters, link.gmm_em_iters) == (4, 4)


def test_training_output_is_the_transform_with_the_fitted_responsibilities():
    link = make_link()
    x = clustered_batch()
    y = link(x)
    nu = link.last_fit.responsibilities(to_rows(x))
    expected = reference.mixture_normalization(x, link.gamma.array, link.beta.array, nu)
    numpy.testing.assert_allclose(y.array, expected, rtol=1e-10, atol=1e-10)
    assert link.n_effective_components == 3
    numpy.testing.assert_allclose(link.last_fit.weights.sum(), 1)
    lam, mu, var = reference.statistics(to_rows(x), nu)
    numpy.testing.assert_allclose(link.queue.weights[-1], lam, rtol=1e-10)
    numpy.testing.assert_allclose(link.queue.means[-1], mu, rtol=1e-10)
    numpy.testing.assert_allclose(link.queue.variances[-1], var, rtol=1e-10)
    assert link.queue.count == 1


@pytest.mark.parametrize('shape', [(8, C, 6, 6), (50, C)])
def test_k1_link_equals_batch_normalization_link(shape):
    x = clustered_batch(shape=(8, C, 6, 6))
    if len(shape) == 2:
        x = x[:, :, 0, :].transpose(0, 2, 1).reshape(-1, C)[:50]
    mn = MixtureNormalization(C, n_components=1, dtype=numpy.float64)
    bn = L.BatchNormalization(C, dtype=numpy.float64, eps=2e-5)
    gy = numpy.random.default_rng(1).normal(size=x.shape)
    outs = []
    for link in (mn, bn):
        link.cleargrads()
        v = chainer.Variable(x.copy())
        y = link(v)
        y.grad = gy
        y.backward()
        outs.append((y.array, v.grad, link.gamma.grad, link.beta.grad))
    for a, b in zip(*outs):
        numpy.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    with chainer.using_config('train', False):
        y_test = mn(x).array
    rows = to_rows(x)
    expected = F.fixed_batch_normalization(x, mn.gamma.array, mn.beta.array, rows.mean(0),
                                           rows.var(0), eps=2e-5).array
    numpy.testing.assert_allclose(y_test, expected, rtol=1e-10, atol=1e-10)


def test_decay_weights_are_equation_39():
    numpy.testing.assert_allclose(decay_weights(10, 10, 0.9), reference.decay_weights(10, 0.9))
    numpy.testing.assert_allclose(decay_weights(3, 10, 0.9), reference.decay_weights(3, 0.9))
    assert decay_weights(10, 10, 0.9).argmax() == 9                    # newest last, largest
    numpy.testing.assert_allclose(decay_weights(4, 4, 1.0), 0.25)


def test_printed_eq38_is_3_13x_the_training_transform_when_entries_agree():
    """With T equal entries the consistent form reproduces the training output of that batch
    (the queue keeps the fitted mixture for the posteriors and the Eq. 35-36 statistics for
    the normalizing factors), and the printed form is sum_t sqrt(tau^t) = 3.127 times it."""
    x = clustered_batch(1)
    results = {}
    for form in ('consistent', 'printed'):
        link = make_link(inference=form)
        results['train'] = link(x).array
        fill_queue_with_last_entry(link)
        with chainer.using_config('train', False):
            results[form] = link(x).array
    factor = numpy.sqrt(reference.decay_weights(10, 0.9)).sum()
    assert abs(factor - 3.127) < 1e-3
    numpy.testing.assert_allclose(results['consistent'], results['train'], rtol=1e-9, atol=1e-9)
    beta = make_link().beta.array[None, :, None, None]
    numpy.testing.assert_allclose(results['printed'] - beta,
                                  factor * (results['consistent'] - beta), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('form', ['consistent', 'printed'])
@pytest.mark.parametrize('activation', [None, 'relu'])
def test_test_mode_matches_equation_38_over_a_mixed_queue(form, activation):
    link = make_link(inference=form, queue_length=5, activation=activation)
    for seed in range(7):                       # more steps than T: the queue wraps
        link(clustered_batch(seed) * (1 + 0.1 * seed))
    assert link.queue.count == 5
    x = clustered_batch(99)
    with chainer.using_config('train', False):
        y = link(x).array
    expected = reference.queue_normalization(
        x, link.gamma.array, link.beta.array, link.queue.weights, link.queue.means,
        link.queue.variances, 0.9, form=form, activation=activation, fit=fit_queue(link))
    numpy.testing.assert_allclose(y, expected, rtol=1e-9, atol=1e-9)


def test_partial_queue_renormalizes_over_present_entries():
    link = make_link(queue_length=10)
    for seed in range(3):
        link(clustered_batch(seed) + seed)
    assert link.queue.count == 3
    x = clustered_batch(50)
    with chainer.using_config('train', False):
        y = link(x).array
    expected = reference.queue_normalization(
        x, link.gamma.array, link.beta.array, link.queue.weights[-3:], link.queue.means[-3:],
        link.queue.variances[-3:], 0.9, fit=[a[-3:] for a in fit_queue(link)])
    numpy.testing.assert_allclose(y, expected, rtol=1e-9, atol=1e-9)


def test_pruned_components_are_padded_and_ignored_at_test_time():
    link = make_link(n_components=3, queue_length=2)
    x = numpy.ones((4, C, 3, 3)) + numpy.arange(C)[None, :, None, None]
    link(x)                                            # identical rows -> one component
    assert link.n_effective_components == 1
    numpy.testing.assert_array_equal(link.queue.weights[-1], [1, 0, 0])
    with chainer.using_config('train', False):
        y = link(x + 0.01).array
    assert numpy.isfinite(y).all()


def test_introspection_of_the_last_fit():
    link = make_link()
    assert link.last_fit is None and link.n_effective_components is None
    link(clustered_batch())
    fit = link.last_fit
    assert fit.weights.shape == (3,) and fit.means.shape == (3, C)
    assert fit.variances.shape == (3, C)
    assert link.last_statistics.means.shape == (3, C)


def test_fully_connected_input():
    link = make_link()
    x = clustered_batch()[:, :, 0, 0]
    y = link(x)
    assert y.shape == x.shape
    expected = reference.mixture_normalization(
        x, link.gamma.array, link.beta.array, link.last_fit.responsibilities(x))
    numpy.testing.assert_allclose(y.array, expected, rtol=1e-10, atol=1e-10)
    with chainer.using_config('train', False):
        assert numpy.isfinite(link(x).array).all()


@pytest.mark.parametrize('options', [
    dict(),
    dict(inference='printed', activation='relu', affine='statistics', queue_decay=0.8,
         em_iters=4, min_weight=0.05, sample_fraction=0.5, eps=1e-3),
])
def test_queue_and_options_round_trip_through_serializers(tmp_path, options):
    link = make_link(queue_length=4, **options)
    for seed in range(3):
        link(clustered_batch(seed))
    x = clustered_batch(10)
    with chainer.using_config('train', False):
        before = link(x).array
    path = str(tmp_path / 'mn.npz')
    chainer.serializers.save_npz(path, link)
    fresh = MixtureNormalization(C, n_components=3, queue_length=4, dtype=numpy.float64)
    chainer.serializers.load_npz(path, fresh)
    assert fresh.options() == link.options()
    assert fresh.queue.count == 3
    with chainer.using_config('train', False):
        after = fresh(x).array
    numpy.testing.assert_array_equal(before, after)


def test_loading_into_a_link_of_another_shape_is_a_clear_error(tmp_path):
    link = make_link()
    link(clustered_batch())
    path = str(tmp_path / 'mn.npz')
    chainer.serializers.save_npz(path, link)
    with pytest.raises(ValueError, match='n_components=3 into one with n_components=5'):
        chainer.serializers.load_npz(path, MixtureNormalization(C, n_components=5))


def test_model_snapshot_round_trip(tmp_path):
    """Inside a Chain (as in a trainer snapshot) the queue travels too."""
    from mixnorm_chainer.models import CifarCNN
    model = CifarCNN(10, mn_layers=('conv2', 'conv3'), seed=0)
    x = numpy.random.default_rng(0).normal(size=(4, 3, 16, 16)).astype(numpy.float32)
    model(x)
    with chainer.using_config('train', False):
        before = model(x).array
    path = str(tmp_path / 'model.npz')
    chainer.serializers.save_npz(path, model)
    other = CifarCNN(10, mn_layers=('conv2', 'conv3'))
    chainer.serializers.load_npz(path, other)
    with chainer.using_config('train', False):
        numpy.testing.assert_array_equal(other(x).array, before)


# -- bad input ---------------------------------------------------------------------------

def test_non_finite_training_input_raises_and_keeps_state():
    link = make_link()
    link(clustered_batch())
    state = [q.copy() for q in (link.queue.weights, link.queue.means, link.queue.variances)]
    for bad in (numpy.nan, numpy.inf):
        x = clustered_batch(1)
        x[0, 1, 2, 3] = bad
        with pytest.raises(ValueError, match='non-finite'):
            link(x)
    assert link.queue.count == 1
    for q, s in zip((link.queue.weights, link.queue.means, link.queue.variances), state):
        numpy.testing.assert_array_equal(q, s)


def test_wrong_channel_count_raises():
    link = make_link()
    with pytest.raises(ValueError, match='5 channels.*built for 4'):
        link(numpy.ones((2, 5, 3, 3)))
    with pytest.raises(ValueError, match='shape'):
        link(numpy.ones(4))


def test_test_mode_before_training_raises():
    link = make_link()
    with chainer.using_config('train', False):
        with pytest.raises(ValueError, match='queue is empty'):
            link(clustered_batch())


@pytest.mark.parametrize('activation', [None, 'relu'])
@pytest.mark.parametrize('case', ['one_row', 'constant_channel', 'all_zero', 'near_duplicate',
                                  'two_rows'])
def test_degenerate_batches_give_finite_output(case, activation):
    link = make_link(activation=activation)
    x = clustered_batch()
    if case == 'one_row':
        x = x[:1, :, :1, :1]
    elif case == 'two_rows':
        x = x[:2, :, 0, 0]
    elif case == 'constant_channel':
        x[:, 2] = 5.0
    elif case == 'all_zero':
        x = numpy.zeros_like(x)
    elif case == 'near_duplicate':
        x = 1.0 + 1e-9 * x
    link.cleargrads()
    v = chainer.Variable(x)
    y = link(v)
    assert numpy.isfinite(y.array).all()
    F.sum(y * y).backward()
    assert numpy.isfinite(v.grad).all() and numpy.isfinite(link.gamma.grad).all()
    with chainer.using_config('train', False):
        assert numpy.isfinite(link(x).array).all()
    if case == 'all_zero':      # nothing to normalize: every output is the shift beta
        expected = link.beta.array if activation is None else numpy.maximum(link.beta.array, 0)
        numpy.testing.assert_allclose(y.array, numpy.broadcast_to(
            expected[None, :, None, None], x.shape), atol=1e-12)


def test_non_finite_entry_in_test_mode_stays_local():
    link = make_link()
    for seed in range(3):
        link(clustered_batch(seed))
    x = clustered_batch(7)
    with chainer.using_config('train', False):
        clean = link(x).array
        bad = x.copy()
        bad[1, 2, 3, 4] = numpy.nan
        bad[2, 0, 0, 0] = numpy.inf
        y = link(bad).array
    assert numpy.isnan(y[1, 2, 3, 4]) and numpy.isinf(y[2, 0, 0, 0])
    mask = numpy.ones(x.shape, dtype=bool)
    mask[1, :, 3, 4] = False
    mask[2, :, 0, 0] = False
    numpy.testing.assert_allclose(y[mask], clean[mask], rtol=1e-12, atol=1e-12)  # untouched
    assert numpy.isfinite(y[1, [0, 1, 3], 3, 4]).all()           # same position, other channels
    assert numpy.isfinite(y[2, 1:, 0, 0]).all()


def test_float16_input():
    link = MixtureNormalization(C, seed=0)
    x = clustered_batch(dtype=numpy.float16)
    v = chainer.Variable(x)
    y = link(v)
    assert y.dtype == numpy.float16 and link.last_fit.means.dtype == numpy.float32
    F.sum(y).backward()
    assert v.grad.dtype == numpy.float16
    expected = reference.mixture_normalization(
        x, link.gamma.array, link.beta.array, link.last_fit.responsibilities(to_rows(x)))
    assert numpy.abs(y.array - expected).max() < 2e-2 * numpy.abs(expected).max()
    with chainer.using_config('train', False):
        y_test = link(x)
    assert y_test.dtype == numpy.float16 and numpy.isfinite(y_test.array).all()


def test_matches_the_function_used_directly():
    link = make_link(activation='relu')
    x = clustered_batch(3)
    y = link(x)
    nu = link.last_fit.responsibilities(to_rows(x))
    direct = mixture_normalization(x, link.gamma.array, link.beta.array, nu, activation='relu')
    numpy.testing.assert_array_equal(y.array, direct.array)


@pytest.mark.parametrize('kwargs, message', [
    (dict(size=0), 'size'), (dict(n_components=0), 'n_components'),
    (dict(queue_length=0), 'queue_length'), (dict(em_iters=-1), 'em_iters'),
    (dict(queue_decay=0), 'queue_decay'), (dict(inference='eq38'), 'inference'),
    (dict(min_weight=1.0), 'min_weight'), (dict(sample_fraction=0), 'sample_fraction'),
    (dict(affine='x'), 'affine'), (dict(activation='elu'), 'activation'),
])
def test_bad_options_raise_value_error(kwargs, message):
    args = dict(size=C)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        MixtureNormalization(**args)


def test_random_state_round_trips_so_resumed_fits_are_identical(tmp_path):
    x0, x = (numpy.random.default_rng(s).normal(size=(8, C, 6, 6)) for s in (0, 1))  # soft nu
    link = make_link(sample_fraction=0.5)
    link(x0)
    path = str(tmp_path / 'mn.npz')
    chainer.serializers.save_npz(path, link)
    after_save = link(x).array
    other = make_link(seed=123, sample_fraction=0.5)
    assert not numpy.array_equal(other(x).array, after_save)   # the draws do matter here
    resumed = make_link(seed=123, sample_fraction=0.5)
    chainer.serializers.load_npz(path, resumed)
    numpy.testing.assert_array_equal(resumed(x).array, after_save)


def test_numpy_global_seed_makes_a_layer_without_seed_repeat():
    # seed=None: the layer's stream is seeded from numpy's global state when it is built (as
    # chainer's initializers and scikit-learn's random_state=None), so numpy.random.seed repeats
    # the run; K=3 with sample_fraction 0.5 draws k-means++ rows and a subsample every step
    from mixnorm_chainer.gmm import fit_gmm
    from mixnorm_chainer.models import CifarCNN
    x = numpy.random.default_rng(5).standard_normal((64, 6, 3, 3)).astype(numpy.float32)
    x[:32] += 3.0
    images = numpy.random.default_rng(6).standard_normal((8, 3, 16, 16)).astype(numpy.float32)

    def outputs(global_seed):
        numpy.random.seed(global_seed)
        link = MixtureNormalization(6, n_components=3, sample_fraction=0.5)
        model = CifarCNN(10, mn_layers=('conv2',))
        fit = fit_gmm(x.transpose(0, 2, 3, 1).reshape(-1, 6), 3, sample_fraction=0.5)
        with chainer.using_config('train', True):
            return link(x).array, fit.means, model(images).array

    first, again, other = outputs(0), outputs(0), outputs(1)
    for a, b in zip(first, again):
        numpy.testing.assert_array_equal(a, b)
    assert not numpy.array_equal(first[0], other[0])
    assert not numpy.array_equal(first[1], other[1])
    assert not numpy.array_equal(first[2], other[2])
    # an explicit seed stays its own stream, whatever numpy's global state
    numpy.random.seed(3)
    y3 = MixtureNormalization(6, n_components=3, sample_fraction=0.5, seed=7)(x).array
    numpy.random.seed(4)
    y4 = MixtureNormalization(6, n_components=3, sample_fraction=0.5, seed=7)(x).array
    numpy.testing.assert_array_equal(y3, y4)
