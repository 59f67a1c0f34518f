"""The CUDA kernels of the per-set fit (mixnorm_chainer/kernels/group.py), run on the CPU by
tests/cuda_kernel_harness.py.

As in tests/test_kernels.py: the harness compiles the kernel strings the package passes to
``cuda.elementwise`` / ``cuda.reduce`` with g++, and ``kernels.enabled`` follows
``chainer.config.mixnorm_kernels`` for numpy arrays, so group_gmm's own dispatch runs the
kernel path on the CPU. Each kernel is compared with the xp path (the reference) and with a
computation written here; the sets include pruned components, ties and constant sets.
"""

import chainer
import chainer.functions as F
import numpy
import pytest

import mixnorm_chainer as mn
from mixnorm_chainer import group_gmm
from mixnorm_chainer.kernels import group as group_kernels
from mixnorm_chainer.kernels import self_check

import cuda_kernel_harness as harness
from script_loader import load_script

GROUP_KERNELS = {'mixnorm_set_assign', 'mixnorm_set_label_sums', 'mixnorm_set_e_step',
                 'mixnorm_set_moments'}
DTYPES = [numpy.float32, numpy.float64]


@pytest.fixture
def on_cpu(monkeypatch):
    """Kernels compiled for the CPU, used for numpy arrays (:func:`harness.use_for_numpy`)."""
    harness.use_for_numpy(monkeypatch)
    return harness


both = harness.both


def close(a, b, ulps, terms=1.0):
    """``max|a - b| <= ulps * eps * max(max|b|, terms, 1)`` (eps of a's dtype); ``terms``:
    the size of the terms that cancel in b."""
    a, b = numpy.asarray(a), numpy.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    unit = float(numpy.finfo(a.dtype).eps) * max(numpy.abs(b).max(initial=0.0), terms, 1.0)
    err = numpy.abs(a.astype(numpy.float64) - b.astype(numpy.float64)).max(initial=0.0) / unit
    assert err <= ulps, f'{err:.3g} eps apart (allowed {ulps})'
    return err


def sets(S, m, K, dtype, seed=0):
    """S sets of m values, each a mixture of K modes of its own; set 1 constant, set 2 mostly
    zeros (a ReLU map), set 3 with values of two magnitudes only (ties)."""
    rng = numpy.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(S, K))
    X = numpy.take_along_axis(centres, rng.integers(0, K, size=(S, m)), axis=1)
    X += rng.uniform(0.2, 1.5, size=(S, 1)) * rng.normal(size=(S, m))
    X[1] = 2.5
    X[2] = numpy.maximum(X[2] - X[2].max() + 0.5, 0)
    X[3] = numpy.where(rng.random(m) < 0.5, -1.0, 1.0)
    return X.astype(dtype)


def pruned(S, K, seed=0):
    """A live mask with one or two components dropped in some sets (at least one live)."""
    live = numpy.random.default_rng(seed).random((S, K)) < 0.7
    live[numpy.arange(S), numpy.arange(S) % K] = True
    return live


def mixture(rng, S, K, dtype, live):
    weights = numpy.where(live, rng.dirichlet(numpy.ones(K), size=S), 0)
    weights /= weights.sum(axis=1, keepdims=True)
    means = rng.normal(scale=3.0, size=(S, K))
    variances = rng.uniform(0.3, 3, size=(S, K))
    return [a.astype(dtype) for a in (weights, means, variances)]


# -- each kernel against the xp path ------------------------------------------------------------

@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('S, m, K', [(6, 97, 3), (5, 4, 4), (7, 33, 1), (4, 64, 5)])
def test_assign_and_label_sums(on_cpu, dtype, S, m, K):
    X = sets(S, m, K, dtype)
    rng = numpy.random.default_rng(K)
    centers = X[:, rng.integers(0, m, size=K)] + rng.normal(size=(S, K)).astype(dtype)
    centers[0, -1] = centers[0, 0]                   # duplicate centres: ties to the lower k
    live = pruned(S, K)
    labels = group_kernels.kmeans_assign(X, centers, live)
    assert labels.dtype == numpy.int32
    numpy.testing.assert_array_equal(labels, group_gmm.kmeans_assign(X, centers, live))
    d2 = numpy.where(live[:, :, None], (X[:, None, :] - centers[:, :, None]) ** 2, numpy.inf)
    numpy.testing.assert_array_equal(labels, d2.argmin(axis=1))             # independent
    assert live[numpy.arange(S)[:, None], labels].all()
    counts, moves = group_kernels.label_sums(X, labels, centers)
    onehot = labels[:, None, :] == numpy.arange(K)[None, :, None]
    numpy.testing.assert_array_equal(counts, onehot.sum(axis=2))
    ref = numpy.where(onehot, X[:, None, :] - centers[:, :, None], 0).sum(axis=2)
    close(moves, ref, 50, numpy.abs(X).max())                  # measured 4.9 eps
    ours, ref = both(lambda: group_gmm.kmeans_step(X, centers, live))
    close(ours, ref, 15, numpy.abs(X).max())                    # measured 1.5 eps


def test_assign_ties_go_to_the_lower_component(on_cpu):
    X = numpy.array([[1.0, 0.0, 2.0, 1.0], [5.0, 5.0, 5.0, 5.0]])
    centers = numpy.array([[0.0, 2.0, 9.0], [5.0, 5.0, 5.0]])       # 1.0 is midway: k = 0
    live = numpy.array([[True, True, True], [False, True, True]])   # set 1: all equal, k = 1
    labels = group_kernels.kmeans_assign(X, centers, live)
    numpy.testing.assert_array_equal(labels, [[0, 0, 1, 0], [1, 1, 1, 1]])
    counts, moves = group_kernels.label_sums(X, labels, centers)
    numpy.testing.assert_array_equal(counts, [[3, 1, 0], [0, 4, 0]])
    numpy.testing.assert_array_equal(moves, [[2, 0, 0], [0, 0, 0]])
    # an empty component keeps its centre
    numpy.testing.assert_array_equal(group_kernels.kmeans_step(X, centers, live),
                                     [[2 / 3, 2, 9], [5, 5, 5]])


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('K', [1, 2, 3, 5])
@pytest.mark.parametrize('far', [0.0, 40.0])
def test_e_step(on_cpu, dtype, K, far):
    rng = numpy.random.default_rng(K)
    S, m = 6, 71
    X = sets(S, m, K, dtype, seed=K)
    live = pruned(S, K, seed=K)
    weights, means, variances = mixture(rng, S, K, dtype, live)
    means[:, -1] += dtype(far)                # a component far from its set: nu underflows
    ours, ref = both(lambda: group_gmm.e_step(X, weights, means, variances, live))
    assert (ours[~numpy.broadcast_to(live[:, :, None], ours.shape)] == 0).all()
    close(ours.sum(axis=1), numpy.ones((S, m), dtype), 20)        # measured 2.0 eps
    close(ours, ref, 20)                                        # measured 1.8 eps
    d = X[:, None, :].astype(numpy.float64) - means[:, :, None]
    lp = numpy.where(live[:, :, None], numpy.log(numpy.where(live, weights, 1))[:, :, None]
                     - 0.5 * (numpy.log(2 * numpy.pi * variances)[:, :, None]
                              + d * d / variances[:, :, None]), -numpy.inf)
    nu = numpy.exp(lp - lp.max(axis=1, keepdims=True))            # independent, float64
    close(ours, (nu / nu.sum(axis=1, keepdims=True)).astype(dtype), 30)     # measured 2.8


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('kind', ['soft', 'one-hot', 'pruned', 'empty component'])
def test_m_step(on_cpu, dtype, kind):
    rng = numpy.random.default_rng(1)
    S, K, m = 5, 4, 83
    X = sets(S, m, K, dtype, seed=1)
    live = pruned(S, K, seed=2) if kind == 'pruned' else numpy.ones((S, K), bool)
    if kind == 'soft':
        resp = rng.dirichlet(numpy.ones(K), size=(S, m)).transpose(0, 2, 1)
    elif kind == 'pruned':
        resp = group_gmm.e_step(X, *mixture(rng, S, K, dtype, live), live)
    else:
        labels = rng.integers(0, K - (kind == 'empty component'), size=(S, m))
        resp = labels[:, None, :] == numpy.arange(K)[None, :, None]
    resp = numpy.ascontiguousarray(resp, dtype)
    ours, ref = both(lambda: group_gmm.m_step(X, resp, live, 1e-6))
    scale = numpy.abs(X).max()
    for a, b, terms in zip(ours, ref, (1.0, scale, scale ** 2)):
        close(a, b, 40, terms)                                      # measured 3.8 eps
    n = resp.astype(numpy.float64).sum(axis=2) + 10 * numpy.finfo(dtype).eps   # independent
    mu = (resp * X[:, None, :]).astype(numpy.float64).sum(axis=2) / numpy.where(live, n, 1)
    close(ours[1], mu.astype(dtype), 40, scale)                     # measured 3.8 eps


# -- the fit and the layer ------------------------------------------------------------------

@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('K, kmeans_iters, em_iters, min_weight, fraction', [
    (3, 1, 1, 0.01, 1.0), (2, 2, 3, 0.05, 1.0), (4, 1, 2, 0.2, 0.5), (3, 0, 2, 0.0, 1.0)])
def test_fit_set_mixtures_with_kernels_equals_the_xp_path(on_cpu, dtype, K, kmeans_iters,
                                                          em_iters, min_weight, fraction):
    X = sets(8, 120, K, dtype, seed=K) + dtype(30)
    ours, ref = both(lambda: group_gmm.fit_set_mixtures(
        X, K, kmeans_iters=kmeans_iters, em_iters=em_iters, min_weight=min_weight,
        sample_fraction=fraction))
    numpy.testing.assert_array_equal(ours.live, ref.live)
    assert ours.live[1].sum() == 1 or not min_weight     # the constant set keeps one component
    numpy.testing.assert_array_equal(ours.center, ref.center)
    scale = numpy.abs(X - X.mean(axis=1, keepdims=True)).max()
    close(ours.weights, ref.weights, 20)                             # measured 1.5 eps
    close(ours.centred_means, ref.centred_means, 20, scale)          # 1.3
    close(ours.variances, ref.variances, 5, scale ** 2)              # 0.15
    close(ours.responsibilities, ref.responsibilities, 10, scale)    # 0.71
    used = GROUP_KERNELS - ({'mixnorm_set_label_sums'} if kmeans_iters == 0 else set())
    assert {c['name'] for c in harness.calls} == used


def test_the_layer_with_kernels_equals_the_xp_path(on_cpu):
    """Training steps (fit, transform, backward) of MixtureGroupNormalization, float64."""
    def run():
        rng = numpy.random.default_rng(0)
        layer = mn.MixtureGroupNormalization(2, 4, n_components=3, em_iters=3,
                                             activation='relu', dtype=numpy.float64)
        out = []
        for _ in range(2):
            x = rng.normal(size=(3, 4, 5, 5)) + rng.integers(0, 3, size=(3, 1, 5, 5)) * 3
            x[0, :2] = 1.5                                   # a constant set
            v = chainer.Variable(x)
            y = layer(v)
            layer.cleargrads()
            F.sum(y * rng.normal(size=y.shape)).backward()
            out += [y.array, v.grad, layer.gamma.grad, layer.last_fit.means]
        return out

    ours, ref = both(run)
    for a, b in zip(ours, ref):
        close(a, b, 100)                                     # measured 8.9 eps
    assert {c['name'] for c in harness.calls} >= GROUP_KERNELS


def test_switch_forces_the_xp_path(on_cpu):
    X = sets(4, 20, 2, numpy.float64)
    with chainer.using_config('mixnorm_kernels', False):
        group_gmm.fit_set_mixtures(X, 2)
    assert harness.calls == []
    with chainer.using_config('mixnorm_kernels', True):
        group_gmm.fit_set_mixtures(X, 2)
    assert {c['name'] for c in harness.calls} == GROUP_KERNELS


def test_self_check_covers_the_group_kernels(on_cpu):
    errors = self_check.check(numpy)
    names = {'set_assign', 'set_label_sums', 'set_e_step', 'set_moments'}
    assert names <= set(errors)
    assert all(errors[n] <= self_check.tolerance(n) for n in names), errors


def test_launch_count_script():
    """experiments/group_launch_count.py (docs/gpu.md): the kernel path launches fewer kernels
    in every part of the fit, and exactly these CUDA kernels."""
    harness.require_cxx()
    script = load_script('experiments/group_launch_count.py')
    table = script.count_all(S=6, m=40, K=3)
    assert all(row['kernels'] < row['xp'] for row in table.values()), table
    assert [row['kernel calls'] for row in table.values()] == [
        {'mixnorm_set_assign': 1, 'mixnorm_set_label_sums': 1},
        {'mixnorm_set_e_step': 1, 'mixnorm_set_moments': 2},
        {'mixnorm_set_assign': 2, 'mixnorm_set_e_step': 2, 'mixnorm_set_label_sums': 1,
         'mixnorm_set_moments': 4},
        {'mixnorm_set_assign': 2, 'mixnorm_set_e_step': 3, 'mixnorm_set_label_sums': 1,
         'mixnorm_set_moments': 6}]
