"""Mixture Group Normalization (MN over the per-sample sets B_i of GN/LN/IN, Eq. 8-10, 34-36).

References independent of the implementation: ``F.group_normalization`` (K = 1), a numpy
fit-and-transform written with loops over sets and components (:func:`reference_fit`,
:func:`reference_transform`), the package's batch-set ``mixture_normalization`` on one-channel
samples, and finite differences (``gradient_check``). Tolerances are ~10x the measured error
(docs/group-normalization.md lists the measurements).
"""
import math

import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest
import scipy.special
import scipy.stats
from chainer import gradient_check

import mixnorm_chainer as mn
from mixnorm_chainer import group_gmm
from mixnorm_chainer.reproduce import weights

EPS64 = float(numpy.finfo(numpy.float64).eps)


# --- the independent reference: loops over sets and components, float64 -------------------

def reference_fit(values, K, kmeans_iters=1, em_iters=1, min_weight=0.01, reg_covar=1e-6,
                  sample_fraction=1.0):
    """One set's fit as documented: centre on the set mean, strided subset, quantile seeds,
    Lloyd, hard M-step, EM, pruning. Returns (weights, means, variances, live, nu (m, K))."""
    x = numpy.asarray(values, dtype=numpy.float64)
    c = x.mean()
    xc = x - c
    m = len(xc)
    n = min(m, max(K, math.ceil(sample_fraction * m)))
    sub = numpy.array([xc[j * m // n] for j in range(n)])
    ordered = sorted(sub)
    centers = numpy.array([ordered[(2 * k + 1) * n // (2 * K)] for k in range(K)])
    live = numpy.ones(K, dtype=bool)

    def nearest(v):
        best = None
        for k in range(K):
            if live[k] and (best is None or abs(v - centers[k]) < abs(v - centers[best])):
                best = k
        return best

    for _ in range(kmeans_iters):
        labels = numpy.array([nearest(v) for v in sub])
        for k in range(K):
            members = sub[labels == k]
            if len(members):
                centers[k] = centers[k] + (members - centers[k]).sum() / len(members)
    labels = numpy.array([nearest(v) for v in sub])
    resp = numpy.stack([(labels == k).astype(float) for k in range(K)], axis=1)

    def m_step(resp, live):
        nk = numpy.where(live, resp.sum(axis=0) + 10 * EPS64, 0.0)
        safe = numpy.where(live, nk, 1.0)
        mu = numpy.array([(resp[:, k] * sub).sum() / safe[k] for k in range(K)])
        var = numpy.array([(resp[:, k] * (sub - mu[k]) ** 2).sum() / safe[k] + reg_covar
                           for k in range(K)])
        return nk / nk.sum(), mu, var

    def e_step(data, w, mu, var, live):
        lp = numpy.full((len(data), K), -numpy.inf)
        for k in range(K):
            if live[k]:
                lp[:, k] = math.log(w[k]) + scipy.stats.norm.logpdf(data, mu[k], math.sqrt(var[k]))
        return numpy.exp(lp - scipy.special.logsumexp(lp, axis=1, keepdims=True))

    w, mu, var = m_step(resp, live)
    for _ in range(em_iters):
        w, mu, var = m_step(e_step(sub, w, mu, var, live), live)
    if min_weight > 0:
        keep = w >= min_weight
        keep[numpy.argmax(w)] = True
        if not keep.all():
            live = keep
            w, mu, var = m_step(e_step(sub, w, mu, var, live), live)
    return numpy.where(live, w, 0), mu + c, var, live, e_step(xc, w, mu, var, live)


def reference_transform(x, gamma, beta, groups, nu, eps=2e-5, affine='output', activation=None):
    """Eq. 34-36 (37, 40) per set, straight from the equations: nu (N*G, K, m)."""
    x = numpy.asarray(x, dtype=numpy.float64)
    N, C = x.shape[:2]
    Cg = C // groups
    out = numpy.zeros_like(x)
    for n in range(N):
        for g in range(groups):
            block = x[n, g * Cg:(g + 1) * Cg]
            X = block.reshape(-1)
            gam = numpy.repeat(gamma[g * Cg:(g + 1) * Cg], X.size // Cg)
            bet = numpy.repeat(beta[g * Cg:(g + 1) * Cg], X.size // Cg)
            tau = nu[n * groups + g]
            y = numpy.zeros_like(X)
            for k in range(tau.shape[0]):
                if tau[k].sum() == 0:
                    continue
                nuhat = tau[k] / tau[k].sum()                       # Eq. 36
                lam = tau[k].mean()
                mu = (nuhat * X).sum()
                var = (nuhat * (X - mu) ** 2).sum()                 # Eq. 35
                if affine == 'statistics':                          # Eq. 37
                    z = (X - mu - bet) / numpy.sqrt(numpy.maximum(gam * var, 0) + eps)
                    z = z / math.sqrt(lam)
                else:
                    z = gam * (X - mu) / math.sqrt(var + eps) / math.sqrt(lam) + bet
                y += tau[k] * (numpy.maximum(z, 0) if activation == 'relu' else z)   # Eq. 34, 40
            out[n, g * Cg:(g + 1) * Cg] = y.reshape(block.shape)
    return out


# --- data ------------------------------------------------------------------------------------

def bimodal(shape, seed=0, low=(-4.0, 0.5), high=(6.0, 1.0), p_low=0.3, offset=0.0):
    """x of ``shape`` whose every value is from N(low) with probability p_low, else N(high)."""
    rng = numpy.random.default_rng(seed)
    pick = rng.random(shape) < p_low
    x = numpy.where(pick, rng.normal(*low, size=shape), rng.normal(*high, size=shape))
    return x + offset, pick


def params(C, seed=0, dtype=numpy.float64):
    rng = numpy.random.default_rng(seed)
    return (rng.uniform(0.5, 1.5, size=C).astype(dtype), rng.normal(size=C).astype(dtype))


def random_nu(S, K, m, seed=0):
    nu = numpy.random.default_rng(seed).dirichlet(numpy.full(K, 0.7), size=(S, m))
    return numpy.ascontiguousarray(nu.transpose(0, 2, 1))          # (S, K, m)


def sets_of(x, groups):
    return x.reshape(x.shape[0] * groups, -1)


# --- K = 1 is group normalization -------------------------------------------------------------

@pytest.mark.parametrize('groups', [1, 2, 6])
def test_k1_equals_group_normalization(groups):
    x, _ = bimodal((3, 6, 4, 5), seed=1)
    gamma, beta = params(6)
    gy = numpy.random.default_rng(2).normal(size=x.shape)
    results = []
    for fn in (lambda *v: mn.mixture_group_normalization(*v, groups, n_components=1, eps=1e-5),
               lambda *v: F.group_normalization(*v[:1], groups, *v[1:], eps=1e-5)):
        v = [chainer.Variable(a.copy()) for a in (x, gamma, beta)]
        y = fn(*v)
        y.grad = gy
        y.backward()
        results.append([y.array] + [a.grad for a in v])
    for ours, gn in zip(*results):       # measured <= 8.9e-16 (outputs), 4.4e-15 (gradients)
        numpy.testing.assert_allclose(ours, gn, rtol=0, atol=4e-14)


# --- the fit against the independent reference ------------------------------------------------

FIT_CASES = [
    # (K, kmeans_iters, em_iters, min_weight, sample_fraction)
    (2, 1, 1, 0.01, 1.0),
    (3, 1, 1, 0.01, 1.0),
    (3, 2, 3, 0.0, 1.0),
    (3, 1, 1, 0.2, 0.5),
]


@pytest.mark.parametrize('K, kmeans_iters, em_iters, min_weight, fraction', FIT_CASES)
def test_fit_matches_the_reference(K, kmeans_iters, em_iters, min_weight, fraction):
    x, _ = bimodal((3, 4, 5, 5), seed=3)
    x[2, 2:] = numpy.maximum(x[2, 2:] - 7, 0)          # a mostly-zero ReLU set (~89% zeros)
    X = sets_of(x, 2)
    fit = mn.fit_set_mixtures(X, K, kmeans_iters=kmeans_iters, em_iters=em_iters,
                              min_weight=min_weight, sample_fraction=fraction)
    for s in range(X.shape[0]):
        w, mu, var, live, nu = reference_fit(X[s], K, kmeans_iters, em_iters, min_weight,
                                             sample_fraction=fraction)
        numpy.testing.assert_array_equal(fit.live[s], live)
        # measured <= 2.2e-16 (weights), 1.8e-15 (means), 1.4e-15 relative (variances),
        # 1.0e-15 (nu)
        numpy.testing.assert_allclose(fit.weights[s], w, rtol=0, atol=3e-15)
        numpy.testing.assert_allclose(fit.means[s][live], mu[live], rtol=0, atol=2e-14)
        numpy.testing.assert_allclose(fit.variances[s][live], var[live], rtol=1.5e-14)
        numpy.testing.assert_allclose(fit.responsibilities[s].T, nu, rtol=0, atol=1e-14)


@pytest.mark.parametrize('K', [2, 3])
@pytest.mark.parametrize('groups', [1, 2, 4])
@pytest.mark.parametrize('affine, activation', [('output', None), ('output', 'relu'),
                                                ('statistics', None)])
def test_transform_matches_the_reference(K, groups, affine, activation):
    x, _ = bimodal((3, 4, 3, 5), seed=4)
    gamma, beta = params(4, seed=5)
    y = mn.mixture_group_normalization(x, gamma, beta, groups, n_components=K, affine=affine,
                                       activation=activation)
    fit = group_gmm.fit_set_mixtures(sets_of(x, groups), K)
    expected = reference_transform(x, gamma, beta, groups, fit.responsibilities, affine=affine,
                                   activation=activation)
    assert y.shape == x.shape and y.dtype == x.dtype
    # measured <= 3.1e-15 relative to max |y| (both cases)
    numpy.testing.assert_allclose(y.array, expected, rtol=0, atol=3e-14 * abs(expected).max())
    # with given (random, soft) responsibilities too
    nu = random_nu(3 * groups, K, x.size // (3 * groups), seed=6)
    y = mn.mixture_group_normalization(x, gamma, beta, groups, responsibilities=nu,
                                       affine=affine, activation=activation)
    expected = reference_transform(x, gamma, beta, groups, nu, affine=affine,
                                   activation=activation)
    numpy.testing.assert_allclose(y.array, expected, rtol=0, atol=3e-14 * abs(expected).max())


@pytest.mark.parametrize('affine, activation', [('output', None), ('output', 'relu'),
                                                ('statistics', None), ('statistics', 'relu')])
def test_one_channel_sets_equal_batch_mixture_normalization_per_sample(affine, activation):
    """groups = C = 1: each sample is one set, which is the batch set of that sample alone, so
    the package's mixture_normalization on it (rows (H*W, 1)) gives the same output."""
    x, _ = bimodal((3, 1, 6, 5), seed=7)
    gamma, beta = params(1, seed=8)
    y = mn.mixture_group_normalization(x, gamma, beta, 1, n_components=3, affine=affine,
                                       activation=activation)
    nu = group_gmm.fit_set_mixtures(sets_of(x, 1), 3).responsibilities
    for n in range(3):
        expected = mn.mixture_normalization(x[n:n + 1], gamma, beta, nu[n].T, affine=affine,
                                            activation=activation)
        # measured <= 6.4e-14 relative to max |y|
        numpy.testing.assert_allclose(y.array[n:n + 1], expected.array, rtol=0,
                                      atol=6e-13 * abs(expected.array).max())


# --- what the mixture is for -------------------------------------------------------------------

def test_separated_modes_are_recovered_and_keep_their_scale():
    x, low = bimodal((2, 4, 16, 16), seed=9)           # 30% N(-4, 0.5^2), 70% N(6, 1)
    gamma, beta = numpy.ones(4), numpy.zeros(4)
    layer = mn.MixtureGroupNormalization(2, 4, n_components=2)
    y = layer(x).array
    fit = layer.last_fit
    pick = sets_of(low, 2)
    assert fit.live.all()
    order = numpy.argsort(fit.means, axis=1)           # (low mode, high mode) per set
    w = numpy.take_along_axis(fit.weights, order, axis=1)
    mu = numpy.take_along_axis(fit.means, order, axis=1)
    var = numpy.take_along_axis(fit.variances, order, axis=1)
    sd = numpy.sqrt(var)
    X = sets_of(x, 2)
    for s in range(X.shape[0]):
        # the modes are 20 standard deviations apart: the fit is the modes' own statistics
        frac = pick[s].mean()
        # (measured <= 2e-15, 2.5e-14, 1.9e-13 relative: one set's broad mode takes a
        # posterior of up to 1e-12 of the narrow mode's values; the variances include reg_covar)
        numpy.testing.assert_allclose(w[s], [frac, 1 - frac], rtol=0, atol=2e-14)
        numpy.testing.assert_allclose(mu[s], [X[s][pick[s]].mean(), X[s][~pick[s]].mean()],
                                      rtol=0, atol=2.5e-13)
        numpy.testing.assert_allclose(var[s], [X[s][pick[s]].var() + 1e-6,
                                               X[s][~pick[s]].var() + 1e-6], rtol=2e-12)
        # and the truth, within >= 5 standard errors of 512 values per set (0.02 for the
        # weights, 0.03 and 0.05 for the means, 6% and 4% for the standard deviations)
        numpy.testing.assert_allclose(w[s], [0.3, 0.7], atol=0.1)
        numpy.testing.assert_allclose(mu[s], [-4, 6], atol=0.25)
        numpy.testing.assert_allclose(sd[s], [0.5, 1.0], rtol=0.3)
    gn = F.group_normalization(x, 2, gamma, beta, eps=2e-5).array
    for out, squeezed in ((y, False), (gn, True)):
        Y = sets_of(out, 2)
        for s in range(X.shape[0]):
            for mode, lam in ((pick[s], w[s, 0]), (~pick[s], w[s, 1])):
                spread = Y[s][mode].std()
                if squeezed:               # GN divides both modes by the set's std (~4.7):
                    assert spread < 0.25   # measured 0.097-0.236
                else:                      # MN: each mode by its own, times 1/sqrt(lambda);
                    # off 1 by ~eps / (2 sigma_k^2): measured <= 5e-5
                    assert abs(spread * math.sqrt(lam) - 1) < 5e-4


# --- gradients ---------------------------------------------------------------------------------

@pytest.mark.parametrize('K', [2, 3])
@pytest.mark.parametrize('affine, activation', [('output', None), ('output', 'relu'),
                                                ('statistics', None)])
def test_gradient_check_float64(K, affine, activation):
    x, _ = bimodal((2, 4, 3, 3), seed=10)
    gamma, beta = params(4, seed=11)
    nu = random_nu(4, K, 18, seed=12)
    gy = numpy.random.default_rng(13).normal(size=x.shape)

    def f(x, gamma, beta):
        return mn.mixture_group_normalization(x, gamma, beta, 2, responsibilities=nu,
                                              affine=affine, activation=activation)

    # measured: analytic vs central differences <= 3.2e-9 (any entry)
    gradient_check.check_backward(f, (x, gamma, beta), gy, eps=1e-6, atol=3e-8, rtol=3e-7,
                                  dtype=numpy.float64)


@pytest.mark.parametrize('K', [2, 3])
def test_double_backward_float64(K):
    x, _ = bimodal((2, 4, 3, 3), seed=14)
    gamma, beta = params(4, seed=15)
    nu = random_nu(4, K, 18, seed=16)
    rng = numpy.random.default_rng(17)
    gy = rng.normal(size=x.shape)
    ggx, ggg, ggb = rng.normal(size=x.shape), rng.normal(size=4), rng.normal(size=4)

    def f(x, gamma, beta):
        return mn.mixture_group_normalization(x, gamma, beta, 2, responsibilities=nu)

    gradient_check.check_double_backward(f, (x, gamma, beta), gy, (ggx, ggg, ggb), eps=1e-6,
                                         atol=3e-8, rtol=3e-7, dtype=numpy.float64)


def test_gradient_stops_at_the_responsibilities():
    """The fitted path's gradient is that of the same transform with its responsibilities
    given as constants (Section 3.2)."""
    x, _ = bimodal((2, 4, 3, 3), seed=18)
    gamma, beta = params(4, seed=19)
    gy = numpy.random.default_rng(20).normal(size=x.shape)
    nu = group_gmm.fit_set_mixtures(sets_of(x, 2), 3).responsibilities
    grads = []
    for given in (None, nu):
        v = chainer.Variable(x.copy())
        y = mn.mixture_group_normalization(v, gamma, beta, 2, responsibilities=given)
        y.grad = gy
        y.backward()
        grads.append(v.grad)
    numpy.testing.assert_array_equal(grads[0], grads[1])


# --- determinism: test mode = training mode, a sample's output is its own ----------------------

def test_test_mode_equals_training_mode():
    x, _ = bimodal((4, 6, 5, 5), seed=21)
    layer = mn.MixtureGroupNormalization(3, n_components=3, initial_beta=0.5)
    y_train = layer(x).array
    with chainer.using_config('train', False):
        y_test = layer(x).array
    numpy.testing.assert_array_equal(y_train, y_test)


def test_a_sample_gives_the_same_output_whatever_else_is_in_the_batch_or_ran_before():
    x, _ = bimodal((5, 6, 5, 5), seed=22)
    other, _ = bimodal((5, 6, 5, 5), seed=23, low=(0, 3), high=(9, 0.2))
    layer = mn.MixtureGroupNormalization(2, n_components=3, activation='relu')
    y = layer(x).array
    perm = [3, 0, 4, 1, 2]
    numpy.testing.assert_array_equal(layer(x[perm]).array, y[perm])     # permuted batch
    mixed = other.copy()
    mixed[1] = x[0]                                                     # other samples replaced
    layer(other)                                                        # and something before
    numpy.testing.assert_array_equal(layer(mixed).array[1], y[0])
    numpy.testing.assert_array_equal(layer(x[:1]).array, y[:1])          # a batch of one


# --- edge cases --------------------------------------------------------------------------------

def test_mostly_zero_relu_map_is_finite_with_components_pruned():
    x, _ = bimodal((3, 4, 6, 6), seed=24)
    x = numpy.maximum(x - 7, 0)                         # ~85% exact zeros
    v = chainer.Variable(x)
    layer = mn.MixtureGroupNormalization(2, n_components=3)
    y = layer(v)
    layer.cleargrads()                                  # (chainer starts parameter grads at NaN)
    F.sum(y * y).backward()
    assert numpy.isfinite(y.array).all() and numpy.isfinite(v.grad).all()
    assert numpy.isfinite(layer.gamma.grad).all()
    fit = layer.last_fit
    assert (fit.n_live < 3).all()                       # the duplicate zero seed is pruned
    for a in (fit.weights, fit.means, fit.variances, fit.responsibilities):
        assert numpy.isfinite(a).all()
    numpy.testing.assert_allclose(fit.weights.sum(axis=1), 1, rtol=1e-12)


def test_constant_map_is_finite_and_gives_beta():
    x = numpy.full((2, 4, 3, 3), 3.25)
    x[1] = -7.0
    gamma, beta = params(4, seed=25)
    v = chainer.Variable(x)
    layer = mn.MixtureGroupNormalization(2, 4, n_components=3, initial_gamma=gamma,
                                         initial_beta=beta)
    y = layer(v)
    layer.cleargrads()
    F.sum(y * y).backward()
    assert (layer.last_fit.n_live == 1).all()
    numpy.testing.assert_allclose(y.array, numpy.broadcast_to(beta[None, :, None, None],
                                                              x.shape), atol=1e-12)
    assert numpy.isfinite(v.grad).all() and numpy.isfinite(layer.gamma.grad).all()
    # pruning off: the duplicate components live on with weight ~1e-15, still finite
    y = mn.mixture_group_normalization(x, gamma, beta, 2, min_weight=0)
    assert numpy.isfinite(y.array).all()


def test_float16_and_mixed16():
    x, _ = bimodal((3, 4, 5, 5), seed=26)
    x16 = x.astype(numpy.float16)
    reference = mn.MixtureGroupNormalization(2, 4, n_components=3, dtype=numpy.float32)(
        x16.astype(numpy.float32)).array
    for dtype in (numpy.float16, chainer.mixed16):
        with chainer.using_config('dtype', dtype):
            layer = mn.MixtureGroupNormalization(2, n_components=3)
        v = chainer.Variable(x16)
        y = layer(v)
        F.sum(y).backward()
        assert y.dtype == numpy.float16 and v.grad.dtype == numpy.float16
        assert layer.gamma.dtype == (numpy.float32 if dtype is chainer.mixed16 else numpy.float16)
        assert layer.last_fit.means.dtype == numpy.float32
        # measured 1.9e-4 relative to max |y| (the float16 rounding of input and output)
        assert abs(y.array - reference).max() < 2e-3 * abs(reference).max()


@pytest.mark.parametrize('K', [1, 2, 3])
@pytest.mark.parametrize('groups', [1, 2])
def test_float32_agrees_with_float64_far_from_the_origin(K, groups):
    x, _ = bimodal((3, 4, 5, 4), seed=27, low=(-2, 0.5), high=(2, 1), p_low=0.5, offset=1e4)
    x = x.astype(numpy.float32).astype(numpy.float64)   # the same input in both dtypes
    gamma, beta = params(4, seed=28)
    y64 = mn.mixture_group_normalization(x, gamma, beta, groups, n_components=K).array
    y32 = mn.mixture_group_normalization(x.astype(numpy.float32), gamma.astype(numpy.float32),
                                         beta.astype(numpy.float32), groups,
                                         n_components=K).array
    # measured <= 8.9e-7 relative to max |y| (a few float32 units of roundoff)
    assert abs(y32 - y64).max() < 8e-6 * abs(y64).max()


def test_bad_input_and_options_are_one_line_errors():
    x = numpy.zeros((2, 6, 3, 3))
    gamma, beta = numpy.ones(6), numpy.zeros(6)
    cases = [
        (lambda: mn.mixture_group_normalization(x, gamma, beta, 4), 'not divisible'),
        (lambda: mn.MixtureGroupNormalization(4)(x), 'not divisible'),
        (lambda: mn.MixtureGroupNormalization(4, 6), 'not divisible'),
        (lambda: mn.MixtureGroupNormalization(2)(numpy.zeros(6)), 'shape'),
        (lambda: mn.MixtureGroupNormalization(2, 4)(x), 'built for 4'),
        (lambda: mn.MixtureGroupNormalization(0), 'groups must be an integer >= 1'),
        (lambda: mn.MixtureGroupNormalization(2, n_components=0), 'n_components'),
        (lambda: mn.MixtureGroupNormalization(2, em_iters=1, kmeans_iters=2), 'kmeans_iters'),
        (lambda: mn.MixtureGroupNormalization(2, sample_fraction=0), 'sample_fraction'),
        (lambda: mn.mixture_group_normalization(x, gamma, beta, 2, affine='x'), 'affine'),
        (lambda: mn.mixture_group_normalization(x, gamma[:4], beta, 2), 'gamma'),
        (lambda: mn.mixture_group_normalization(x, gamma, beta, 2,
                                                responsibilities=numpy.ones((4, 2, 5))),
         'responsibilities'),
    ]
    nan = x.copy()
    nan[1, 2, 0, 0] = numpy.nan
    cases.append((lambda: mn.MixtureGroupNormalization(2)(nan), 'NaN or inf'))
    huge = numpy.full(x.shape, 1e18, numpy.float32)   # sums of squares over a set overflow
    cases.append((lambda: mn.MixtureGroupNormalization(2)(huge), 'overflow float32'))
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert '\n' not in str(info.value)


def test_deferred_size_and_serialization():
    layer = mn.MixtureGroupNormalization(2, initial_gamma=2.0)
    assert layer.gamma.array is None
    x, _ = bimodal((2, 4, 3, 3), seed=29)
    layer(x)
    assert layer.size == 4 and (layer.gamma.array == 2).all()
    state = {}
    layer.serialize(chainer.serializers.DictionarySerializer(state))
    fresh = mn.MixtureGroupNormalization(2, 4)
    fresh.serialize(chainer.serializers.NpzDeserializer(state))
    numpy.testing.assert_array_equal(fresh(x).array, layer(x).array)


# --- weights export ----------------------------------------------------------------------------

def test_weights_export_covers_the_layer():
    model = chainer.Sequential(L.Convolution2D(3, 4, 3, pad=1),
                               mn.MixtureGroupNormalization(2, 4, initial_beta=0.25))
    state, _ = weights.export_state_dict(model)
    assert set(state) == {'0.weight', '0.bias', '1.weight', '1.bias'}
    numpy.testing.assert_array_equal(state['1.bias'], numpy.full(4, 0.25, numpy.float32))
    fresh = chainer.Sequential(L.Convolution2D(3, 4, 3, pad=1),
                               mn.MixtureGroupNormalization(2, 4))
    weights.import_state_dict(fresh, state)
    x = numpy.random.default_rng(30).normal(size=(2, 3, 5, 5)).astype(numpy.float32)
    numpy.testing.assert_array_equal(fresh(x).array, model(x).array)
    with pytest.raises(ValueError, match='not initialized'):
        weights.export_state_dict(chainer.Sequential(mn.MixtureGroupNormalization(2)))
