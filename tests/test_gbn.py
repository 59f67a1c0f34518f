"""Generalized batch normalization: std/mean = BN exactly, MAD/median and
CVaR/quantile against direct numpy computations from the quadrangle formulas, float64
gradient checks, running estimates / test mode, serialization, bad input, models, runner."""
import json
import os

import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest
from chainer import gradient_check

from mixnorm_chainer import GeneralizedBatchNormalization, generalized_batch_normalization
from mixnorm_chainer.gbn import fixed_generalized_batch_normalization, statistic_weights
from mixnorm_chainer.models import CifarCNN
from mixnorm_chainer.reproduce import builders, registry, runner

C = 3
PAIRS = [('mad', None), ('cvar', 0.75), ('cvar', 0.25), ('cvar', 0.5), ('cvar', 0.9)]


def batch(shape=(5, C, 2, 3), seed=0, dtype=numpy.float64):
    """Skewed (ReLU-like) activations without ties, channel offsets."""
    rng = numpy.random.default_rng(seed)
    x = rng.gamma(2.0, size=shape) + numpy.arange(shape[1]).reshape((1, -1) + (1,) * (
        len(shape) - 2))
    return x.astype(dtype)


def affine(seed=1, dtype=numpy.float64):
    rng = numpy.random.default_rng(seed)
    return rng.uniform(0.5, 1.5, C).astype(dtype), rng.normal(size=C).astype(dtype)


def channel_rows(x):
    return numpy.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


# -- independent numpy references, written from the formulas --------------------------------

def ref_statistics(x, deviation, alpha=None):
    """(S, D) per channel: median / mean|x - median|; and for 'cvar' the alpha-quantile
    (inverse of the empirical cdf) and D = min_C {C + E(X - C)_+ / (1 - alpha)} - EX
    (Rockafellar-Uryasev), the minimum taken over the sample points (the function is
    piecewise linear and convex, so its minimum is at a sample)."""
    rows = channel_rows(x).astype(numpy.float64)
    S, D = [], []
    for v in rows.T:
        if deviation == 'mad':
            s = numpy.median(v)
            d = numpy.abs(v - s).mean()
        elif deviation == 'std':
            s = v.mean()
            d = numpy.sqrt(((v - s) ** 2).mean())
        else:
            s = numpy.quantile(v, alpha, method='inverted_cdf')
            cvar = min(c + numpy.maximum(v - c, 0).mean() / (1 - alpha) for c in v)
            d = cvar - v.mean()
        S.append(s)
        D.append(d)
    return numpy.array(S), numpy.array(D)


def ref_output(x, gamma, beta, S, D, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (gamma.reshape(shape) * (x - S.reshape(shape)) / numpy.sqrt(D.reshape(shape) ** 2
            + eps) + beta.reshape(shape))


def upper_tail_mean(v, alpha):
    """Mean of the upper (1 - alpha) fraction of v, the boundary sample counted fractionally."""
    s = numpy.sort(v)[::-1]
    need, total, acc = (1 - alpha) * len(v), 0.0, 0.0
    for value in s:
        take = min(1.0, need - total)
        if take <= 0:
            break
        acc += take * value
        total += take
    return acc / need


# -- std / mean is BN exactly ---------------------------------------------------------------

@pytest.mark.parametrize('dtype', [numpy.float64, numpy.float32])
@pytest.mark.parametrize('shape', [(5, C, 2, 3), (7, C)])
def test_std_equals_chainer_batch_normalization_exactly(dtype, shape):
    x = batch(shape, dtype=dtype)
    gamma, beta = affine(dtype=dtype)
    gy = numpy.random.default_rng(3).normal(size=shape).astype(dtype)
    outs = []
    for fn in (lambda *a: generalized_batch_normalization(*a, deviation='std', eps=1e-3),
               lambda *a: F.batch_normalization(*a, eps=1e-3)):
        xs = [chainer.Variable(a.copy()) for a in (x, gamma, beta)]
        y = fn(*xs)
        y.grad = gy
        y.backward()
        outs.append([y.array] + [v.grad for v in xs])
    for ours, bn in zip(*outs):
        numpy.testing.assert_array_equal(ours, bn)


def test_std_link_equals_L_batch_normalization_in_training():
    x = batch()
    ours = GeneralizedBatchNormalization(C, deviation='std', dtype=numpy.float64)
    bn = L.BatchNormalization(C, dtype=numpy.float64)
    gy = numpy.random.default_rng(3).normal(size=x.shape)
    res = []
    for link in (ours, bn):
        link.gamma.array[:], link.beta.array[:] = affine()
        link.cleargrads()
        xv = chainer.Variable(x.copy())
        y = link(xv)
        y.grad = gy
        y.backward()
        res.append((y.array, xv.grad, link.gamma.grad, link.beta.grad))
    for a, b in zip(*res):
        numpy.testing.assert_array_equal(a, b)
    S, D = ref_statistics(x, 'std')
    numpy.testing.assert_allclose(ours.avg_center, 0.1 * S, rtol=1e-12)
    numpy.testing.assert_allclose(ours.avg_deviation, 0.9 + 0.1 * D, rtol=1e-12)
    numpy.testing.assert_allclose(bn.avg_mean, ours.avg_center, rtol=1e-12)


# -- MAD / median and CVaR / quantile against numpy -------------------------------------------

@pytest.mark.parametrize('deviation, alpha', PAIRS)
@pytest.mark.parametrize('shape', [(5, C, 2, 3), (6, C, 1, 3), (12, C), (13, C)])
def test_statistics_and_output_match_numpy(deviation, alpha, shape):
    x = batch(shape, seed=sum(shape))
    gamma, beta = affine()
    y, (S, D) = generalized_batch_normalization(x, gamma, beta, deviation, alpha, eps=1e-3,
                                                return_statistics=True)
    S_ref, D_ref = ref_statistics(x, deviation, alpha)
    numpy.testing.assert_allclose(S, S_ref, rtol=1e-12, atol=1e-12)
    numpy.testing.assert_allclose(D, D_ref, rtol=1e-12, atol=1e-12)
    numpy.testing.assert_allclose(y.array, ref_output(x, gamma, beta, S_ref, D_ref, 1e-3),
                                  rtol=1e-11, atol=1e-11)
    if deviation == 'cvar':   # D = mean of the upper (1 - alpha) tail - mean
        rows = channel_rows(x)
        tail = numpy.array([upper_tail_mean(v, alpha) for v in rows.T])
        numpy.testing.assert_allclose(D, tail - rows.mean(axis=0), rtol=1e-12)
        # ReLU after centering at q_alpha keeps the upper tail: fraction above S ~ 1 - alpha
        above = (rows > S[None, :]).mean(axis=0)
        assert numpy.all(numpy.abs(above - (1 - alpha)) < 1 / rows.shape[0] + 1e-12)


def test_ties_give_the_numpy_statistics():
    """Integer-valued channels with ties (also at the median, where sum_i sign(x_i - S) != 0
    and the MAD weights need their median term)."""
    x = numpy.array([[1, 2, 2, 5, 5], [0, 0, 0, 0, 7], [3, 1, 3, 3, 2]], float).T
    x = numpy.concatenate([x, x[:3] + 1.0])[:, :C]       # m = 8
    x5 = x[:5]
    gamma, beta = affine()
    for v in (x, x5):
        for deviation, alpha in [('mad', None), ('cvar', 0.5), ('cvar', 0.75)]:
            if (1 - alpha if alpha else 1) * v.shape[0] < 1:
                continue
            y, (S, D) = generalized_batch_normalization(v, gamma, beta, deviation, alpha,
                                                        return_statistics=True)
            S_ref, D_ref = ref_statistics(v, deviation, alpha)
            numpy.testing.assert_allclose(S, S_ref, rtol=1e-12, atol=1e-12)
            numpy.testing.assert_allclose(D, D_ref, rtol=1e-12, atol=1e-12)
            a, b = statistic_weights(v, deviation, alpha)
            numpy.testing.assert_allclose(a.sum(axis=0), 1, rtol=1e-12)   # S: a mean of x's
            numpy.testing.assert_allclose((a * v).sum(axis=0), S, rtol=1e-12)
            if deviation == 'cvar':                       # CVaR weights: >= 0, sum to 1
                w = b + 1 / v.shape[0]
                assert numpy.all(w >= -1e-15)
                numpy.testing.assert_allclose(w.sum(axis=0), 1, rtol=1e-12)
            xv = chainer.Variable(v.copy())
            y = generalized_batch_normalization(xv, gamma, beta, deviation, alpha)
            F.sum(y * y).backward()
            assert numpy.all(numpy.isfinite(xv.grad))


@pytest.mark.parametrize('m', [10, 11])
def test_mad_is_the_cvar_deviation_at_one_half(m):
    """Quantile quadrangle at alpha = 1/2: CVaR_1/2(X) - EX = E|X - median| (any m)."""
    x = batch((m, C))
    gamma, beta = affine()
    _, (_, d_mad) = generalized_batch_normalization(x, gamma, beta, 'mad',
                                                    return_statistics=True)
    _, (_, d_cvar) = generalized_batch_normalization(x, gamma, beta, 'cvar', 0.5,
                                                     return_statistics=True)
    numpy.testing.assert_allclose(d_mad, d_cvar, rtol=1e-12)


def test_deviations_are_deviation_measures():
    """D(X + c) = D(X), D(lambda X) = lambda D(X), D >= 0 and D(constant) = 0."""
    x = batch((11, C))
    gamma, beta = affine()
    for deviation, alpha in PAIRS:
        def stats(v, deviation=deviation, alpha=alpha):
            return generalized_batch_normalization(v, gamma, beta, deviation, alpha,
                                                   return_statistics=True)[1]
        S, D = stats(x)
        S2, D2 = stats(2.5 * x + 7)
        numpy.testing.assert_allclose(S2, 2.5 * S + 7, rtol=1e-12)
        numpy.testing.assert_allclose(D2, 2.5 * D, rtol=1e-12)
        assert numpy.all(D > 0)
        y, (S0, D0) = generalized_batch_normalization(numpy.full((11, C), 3.0), gamma, beta,
                                                      deviation, alpha,
                                                      return_statistics=True)
        numpy.testing.assert_allclose(D0, 0, atol=1e-14)
        numpy.testing.assert_allclose(y.array, numpy.broadcast_to(beta, (11, C)))


def test_weights_are_the_subgradients_of_the_order_statistics():
    """a, b from statistic_weights: the quantile weight is one-hot on x_(k), k = ceil(alpha m);
    the CVaR weights sum to 1 and put (k - alpha m)/((1 - alpha) m) on x_(k)."""
    rows = channel_rows(batch((10, C)))
    a, b = statistic_weights(rows, 'cvar', 0.75)
    k = 8                                         # ceil(0.75 * 10)
    order = numpy.argsort(rows, axis=0)
    for c in range(C):
        assert a[order[k - 1, c], c] == 1 and a[:, c].sum() == 1
        w = b[:, c] + 1 / 10
        numpy.testing.assert_allclose(w.sum(), 1, rtol=1e-12)
        numpy.testing.assert_allclose(w[order[k:, c]], 1 / 2.5)
        numpy.testing.assert_allclose(w[order[k - 1, c]], (8 - 7.5) / 2.5)
        numpy.testing.assert_allclose(w[order[:k - 1, c]], 0, atol=1e-15)


# -- gradients ----------------------------------------------------------------------------------

@pytest.mark.parametrize('deviation, alpha', PAIRS)
@pytest.mark.parametrize('shape', [(4, C, 2, 3), (12, C), (13, C)])
def test_gradient_check_float64(deviation, alpha, shape):
    x = batch(shape, seed=5)                      # no ties: the subgradient is the gradient
    gamma, beta = affine()
    gy = numpy.random.default_rng(6).normal(size=shape)
    gradient_check.check_backward(
        lambda *a: generalized_batch_normalization(*a, deviation=deviation, alpha=alpha,
                                                   eps=1e-3),
        (x, gamma, beta), gy, eps=1e-6, atol=1e-6, rtol=1e-5, dtype=numpy.float64)


def test_gradient_check_test_mode_function():
    x = batch()
    gamma, beta = affine()
    center = numpy.array([0.5, 1.0, 2.0])
    dev = numpy.array([1.0, 0.7, 1.3])
    gy = numpy.random.default_rng(6).normal(size=x.shape)
    gradient_check.check_backward(
        lambda *a: fixed_generalized_batch_normalization(*a, center, dev, eps=1e-3),
        (x, gamma, beta), gy, eps=1e-6, atol=1e-6, rtol=1e-5, dtype=numpy.float64)
    y = fixed_generalized_batch_normalization(x, gamma, beta, center, dev, eps=1e-3)
    numpy.testing.assert_allclose(y.array, ref_output(x, gamma, beta, center, dev, 1e-3),
                                  rtol=1e-12)


def test_mad_gradient_is_the_envelope_formula():
    """dD/dx_i = sign(x_i - median)/m (no ties): checked through a sum over D."""
    x = batch((9, C))
    xv = chainer.Variable(x.copy())
    gamma, beta = affine()
    _, b = statistic_weights(channel_rows(x), 'mad')
    med = numpy.median(x, axis=0)
    numpy.testing.assert_allclose(b, numpy.sign(x - med) / 9, rtol=1e-12)
    y = generalized_batch_normalization(xv, gamma, beta, 'mad')
    F.sum(y).backward()
    assert numpy.all(numpy.isfinite(xv.grad))


@pytest.mark.parametrize('dtype, tol', [(numpy.float32, 1e-5), (numpy.float16, 2e-2)])
@pytest.mark.parametrize('deviation, alpha', PAIRS[:2])
def test_lower_precision_close_to_float64(dtype, tol, deviation, alpha):
    x = batch()
    gamma, beta = affine()
    y64 = generalized_batch_normalization(x, gamma, beta, deviation, alpha).array
    xv = chainer.Variable(x.astype(dtype))
    y = generalized_batch_normalization(xv, gamma.astype(dtype), beta.astype(dtype),
                                        deviation, alpha)
    assert y.dtype == dtype
    numpy.testing.assert_allclose(y.array.astype(numpy.float64), y64, atol=tol * 10,
                                  rtol=tol)
    F.sum(y).backward()
    assert xv.grad.dtype == dtype and numpy.all(numpy.isfinite(xv.grad))


# -- the link: running estimates, test mode, serialization --------------------------------------

def make_link(deviation='cvar', alpha=0.75, **kw):
    link = GeneralizedBatchNormalization(C, deviation=deviation, alpha=alpha,
                                         dtype=numpy.float64, **kw)
    link.gamma.array[:], link.beta.array[:] = affine()
    return link


@pytest.mark.parametrize('deviation, alpha', [('std', None)] + PAIRS[:3])
def test_running_estimates_and_test_mode_consistency(deviation, alpha):
    x = batch()
    link = make_link(deviation, alpha, decay=0.8)
    y_train = link(x).array
    S, D = ref_statistics(x, deviation, alpha)
    numpy.testing.assert_allclose(link.avg_center, 0.2 * S, rtol=1e-12)
    numpy.testing.assert_allclose(link.avg_deviation, 0.8 + 0.2 * D, rtol=1e-12)
    for _ in range(150):                          # 0.8^151 ~ 2e-15
        link(x)
    numpy.testing.assert_allclose(link.avg_center, S, rtol=1e-10)
    numpy.testing.assert_allclose(link.avg_deviation, D, rtol=1e-10)
    with chainer.using_config('train', False):
        y_test = link(x).array
    numpy.testing.assert_allclose(y_test, y_train, rtol=1e-9, atol=1e-9)
    assert link.n_updates == 151


def test_test_mode_nonfinite_entry_stays_local():
    x = batch()
    link = make_link()
    link(x)
    bad = x.copy()
    bad[1, 2, 0, 1] = numpy.nan
    with chainer.using_config('train', False):
        y = link(bad).array
        ref = link(x).array
    assert numpy.isnan(y[1, 2, 0, 1])
    mask = numpy.ones(x.shape, bool)
    mask[1, 2, 0, 1] = False
    numpy.testing.assert_array_equal(y[mask], ref[mask])


@pytest.mark.parametrize('fmt', ['npz', 'hdf5', 'npz-0.2'])
def test_serialization_round_trip(tmp_path, fmt):
    """npz and HDF5 (options saved as JSON bytes; HDF5 could not store the str of 0.2), and a
    0.2 snapshot whose options are a str still loads."""
    x = batch()
    link = make_link('cvar', 0.25, decay=0.7, eps=1e-4)
    for seed in range(3):
        link(batch(seed=seed))
    path = str(tmp_path / 'gbn.snapshot')
    save, load = {'hdf5': (chainer.serializers.save_hdf5, chainer.serializers.load_hdf5)}.get(
        fmt, (chainer.serializers.save_npz, chainer.serializers.load_npz))
    save(path, link)
    if fmt == 'npz-0.2':
        with numpy.load(path) as z:
            old = dict(z)
        old['gbn_options'] = numpy.array(json.dumps(link.options(), sort_keys=True))
        numpy.savez(path, **old)
        path += '.npz'
    other = GeneralizedBatchNormalization(C, deviation='mad', dtype=numpy.float64)
    load(path, other)
    assert other.options() == link.options() == {
        'size': C, 'deviation': 'cvar', 'alpha': 0.25, 'decay': 0.7, 'eps': 1e-4}
    assert other.n_updates == 3
    with chainer.using_config('train', False):
        numpy.testing.assert_array_equal(other(x).array, link(x).array)
    with pytest.raises(ValueError, match='size'):
        load(path, GeneralizedBatchNormalization(C + 1))


def test_model_with_gbn_serializes(tmp_path):
    numpy.random.seed(0)
    model = CifarCNN(10, gbn_layers=('conv3',), gbn_options=dict(deviation='cvar', alpha=0.75))
    x = numpy.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(numpy.float32)
    model(x)
    path = str(tmp_path / 'model.npz')
    chainer.serializers.save_npz(path, model)
    numpy.random.seed(1)
    other = CifarCNN(10, gbn_layers=('conv3',), gbn_options=dict(deviation='mad'))
    chainer.serializers.load_npz(path, other)
    assert other.conv3_norm.options()['deviation'] == 'cvar'
    with chainer.using_config('train', False):
        numpy.testing.assert_array_equal(other(x).array, model(x).array)


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize('kw, match', [
    (dict(deviation='cvar'), 'needs alpha'),
    (dict(deviation='cvar', alpha=0.0), r'\(0, 1\)'),
    (dict(deviation='cvar', alpha=1.0), r'\(0, 1\)'),
    (dict(deviation='cvar', alpha=-0.2), r'\(0, 1\)'),
    (dict(deviation='cvar', alpha=float('nan')), r'\(0, 1\)'),
    (dict(deviation='cvar', alpha='high'), 'number'),
    (dict(deviation='mad', alpha=0.5), "'cvar' deviation only"),
    (dict(deviation='var'), 'deviation must be one of'),
    (dict(deviation='std', decay=1.0), 'decay'),
    (dict(deviation='std', eps=0.0), 'eps'),
])
def test_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        GeneralizedBatchNormalization(C, **kw)
    if set(kw) <= {'deviation', 'alpha'}:
        with pytest.raises(ValueError, match=match):
            generalized_batch_normalization(batch(), *affine(), **kw)


def test_bad_input():
    link = make_link()
    with pytest.raises(ValueError, match='channels'):
        link(batch((5, C + 1, 2, 2)))
    with pytest.raises(ValueError, match='floating point'):
        link(numpy.ones((5, C), numpy.int32))
    with pytest.raises(ValueError, match='shape'):
        link(numpy.ones(5))
    with pytest.raises(ValueError, match='no rows'):
        link(numpy.ones((0, C)))
    with pytest.raises(ValueError, match='test mode'), chainer.using_config('train', False):
        link(batch())
    for bad in (numpy.nan, numpy.inf):
        x = batch()
        x[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match='non-finite'):
            link(x)
    assert link.n_updates == 0                    # state unchanged
    numpy.testing.assert_array_equal(link.avg_center, 0)
    numpy.testing.assert_array_equal(link.avg_deviation, 1)
    with pytest.raises(ValueError, match='upper tail'):   # (1 - 0.75) * 3 < 1
        link(batch((3, C)))
    assert link.n_updates == 0
    link(batch((4, C)))                           # (1 - 0.75) * 4 = 1: allowed
    with pytest.raises(ValueError, match='shape'):
        generalized_batch_normalization(batch(), numpy.ones(C), numpy.zeros(C + 1))


# -- models and the runner ----------------------------------------------------------------------

def test_cifar_cnn_gbn_layers():
    model = CifarCNN(10, mn_layers=('conv2',), gbn_layers=('conv3',),
                     gbn_options=dict(deviation='cvar', alpha=0.25))
    norms = model.norm_layers()
    assert isinstance(norms['conv3'], GeneralizedBatchNormalization)
    assert norms['conv3'].options() == {'size': 128, 'deviation': 'cvar', 'alpha': 0.25,
                                        'decay': 0.9, 'eps': 2e-5}
    assert isinstance(norms['conv1'], L.BatchNormalization)
    assert type(norms['conv2']).__name__ == 'MixtureNormalization'
    with pytest.raises(ValueError, match='both'):
        CifarCNN(10, mn_layers=('conv3',), gbn_layers=('conv3',))
    with pytest.raises(ValueError, match='unknown'):
        CifarCNN(10, gbn_layers=('conv9',))


def test_cifar_cnn_with_std_gbn_equals_bn_model():
    x = numpy.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(numpy.float32)
    outs = []
    for kw in (dict(), dict(gbn_layers=('conv3',), gbn_options=dict(deviation='std'))):
        numpy.random.seed(0)
        model = CifarCNN(10, **kw)
        y = model(x)
        F.sum(y * y).backward()
        outs.append((y.array, model.conv1.W.grad))
    numpy.testing.assert_array_equal(outs[0][0], outs[1][0])
    numpy.testing.assert_array_equal(outs[0][1], outs[1][1])


def test_registry_rows_build_gbn_models():
    for ds in ('c10', 'c100'):
        base = registry.get(f'cnn-{ds}-BN-2')
        for key, deviation, alpha in (('mad', 'mad', None), ('cvar', 'cvar', 0.75),
                                      ('cvar25', 'cvar', 0.25)):
            s = registry.get(f'cnn-{ds}-GBN-{key}-2')
            assert s.table == 'GBN' and s.baseline == base.name and not s.is_mn
            assert (s.gbn_layers, s.gbn_deviation, s.gbn_alpha) == (('conv3',), deviation,
                                                                     alpha)
            for field in ('model', 'optimizer', 'lr', 'weight_decay', 'batch_size', 'epochs',
                          'schedule', 'dataset'):
                assert getattr(s, field) == getattr(base, field)
            assert s.to_dict()['gbn_layers'] == ['conv3']
    model = builders.build_model(registry.get('cnn-c10-GBN-cvar-2'), 10, seed=0)
    norm = model.predictor.conv3_norm
    assert isinstance(norm, GeneralizedBatchNormalization)
    assert (norm.deviation, norm.alpha) == ('cvar', 0.75)
    assert isinstance(model.predictor.conv2_norm, L.BatchNormalization)


@pytest.mark.slow
def test_runner_runs_gbn_and_summarizes_against_bn(tmp_path, capsys):
    tiny = ['--dataset', 'digits', '--input-size', '8', '--train-limit', '64', '--test-limit',
            '64', '--batch-size', '32', '--epochs', '2', '--no-progress']
    dirs = []
    for name in ('cnn-c10-BN-2', 'cnn-c10-GBN-cvar-2'):
        out = str(tmp_path / name)
        assert runner.main(['run', name, '--out', out] + tiny) == 0
        dirs.append(out)
    with open(os.path.join(dirs[1], 'setting.json')) as f:
        record = json.load(f)
    assert record['setting']['gbn_layers'] == ['conv3']
    assert record['setting']['gbn_alpha'] == 0.75
    capsys.readouterr()
    assert runner.main(['summarize'] + dirs) == 0
    text = capsys.readouterr().out
    assert 'GBN on digits' in text and 'Table 2 on digits' in text
    # the GBN run is compared with BN-2 although BN-2 is in Table 2's group
    line = [ln for ln in text.splitlines() if ln.startswith('cnn-c10-GBN-cvar-2 ')][-1]
    assert 'cnn-c10-BN-2' in line
