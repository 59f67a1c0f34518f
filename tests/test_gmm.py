import warnings

import numpy
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from mixnorm_chainer import GaussianMixture, fit_gmm
from mixnorm_chainer.seeding import kmeans_plusplus

from reference import diag_gmm_log_likelihood


def mixture_sample(rng, m, weights, means, sds):
    counts = rng.multinomial(m, weights)
    X = numpy.concatenate([rng.normal(mu, sd, size=(n, len(mu)))
                           for n, mu, sd in zip(counts, means, sds)])
    return X[rng.permutation(m)]


@pytest.fixture
def three_blobs():
    rng = numpy.random.default_rng(0)
    means = numpy.array([[-4.0, 0.0, 2.0], [0.0, 3.0, -2.0], [5.0, -3.0, 0.0]])
    sds = numpy.array([[1.0, 0.5, 0.8], [0.6, 1.2, 0.7], [0.9, 0.9, 0.4]])
    weights = numpy.array([0.5, 0.3, 0.2])
    return mixture_sample(rng, 6000, weights, means, sds), weights, means, sds


def sklearn_from(params, n_iter, reg_covar=1e-6):
    return SkGaussianMixture(
        n_components=len(params.weights), covariance_type='diag', max_iter=n_iter, tol=0,
        reg_covar=reg_covar, weights_init=params.weights, means_init=params.means,
        precisions_init=1.0 / params.variances)


@pytest.mark.parametrize('n_em', [1, 2, 5])
def test_em_iterations_match_sklearn_step_for_step(three_blobs, n_em):
    """From the same k-means initialization, each EM iteration equals scikit-learn's."""
    X = three_blobs[0]
    init = fit_gmm(X, 3, kmeans_iters=1, em_iters=0, seed=3, min_weight=0)
    ours = fit_gmm(X, 3, kmeans_iters=1, em_iters=n_em, seed=3, min_weight=0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', ConvergenceWarning)
        sk = sklearn_from(init, n_em).fit(X)
    numpy.testing.assert_allclose(ours.weights, sk.weights_, rtol=1e-9)
    numpy.testing.assert_allclose(ours.means, sk.means_, rtol=1e-9, atol=1e-9)
    numpy.testing.assert_allclose(ours.variances, sk.covariances_, rtol=1e-9)
    numpy.testing.assert_allclose(ours.responsibilities(X), sk.predict_proba(X), atol=1e-9)
    numpy.testing.assert_allclose(ours.log_likelihood(X), sk.score_samples(X), rtol=1e-10)


def test_converged_likelihood_matches_sklearn(three_blobs):
    X = three_blobs[0]
    ours = fit_gmm(X, 3, kmeans_iters=10, em_iters=200, seed=0)
    sk = SkGaussianMixture(3, covariance_type='diag', max_iter=500, tol=1e-10,
                           random_state=0).fit(X)
    assert abs(ours.score(X) - sk.score(X)) < 1e-6 * abs(sk.score(X))


def test_recovers_known_parameters(three_blobs):
    X, weights, means, sds = three_blobs
    gmm = fit_gmm(X, 3, kmeans_iters=5, em_iters=50, seed=1)
    order = numpy.argsort(gmm.means[:, 0])
    numpy.testing.assert_allclose(gmm.weights[order], weights, atol=0.02)
    numpy.testing.assert_allclose(gmm.means[order], means, atol=0.08)
    numpy.testing.assert_allclose(numpy.sqrt(gmm.variances[order]), sds, rtol=0.06)


def test_paper_setting_is_close_to_converged(three_blobs):
    """EM iter. 2 (1 k-means + 1 EM) after k-means++ already lands near the optimum here."""
    X = three_blobs[0]
    quick = fit_gmm(X, 3, kmeans_iters=1, em_iters=1, seed=0)
    full = fit_gmm(X, 3, kmeans_iters=10, em_iters=200, seed=0)
    assert quick.score(X) > full.score(X) - 0.05


def test_log_likelihood_and_responsibilities_from_the_equations():
    rng = numpy.random.default_rng(1)
    gmm = GaussianMixture(numpy.array([0.2, 0.8]), rng.normal(size=(2, 4)),
                          rng.uniform(0.5, 2, size=(2, 4)))
    X = rng.normal(size=(50, 4))
    expected = diag_gmm_log_likelihood(X, gmm.weights, gmm.means, gmm.variances)
    numpy.testing.assert_allclose(gmm.log_likelihood(X), expected, rtol=1e-12)
    nu = gmm.responsibilities(X)
    numpy.testing.assert_allclose(nu.sum(axis=1), 1, rtol=1e-12)
    comp0 = numpy.log(0.2) + diag_gmm_log_likelihood(X, [1.0], gmm.means[:1], gmm.variances[:1])
    numpy.testing.assert_allclose(numpy.log(nu[:, 0]), comp0 - expected, rtol=1e-10)


def test_kmeans_plusplus_seeds_one_centre_per_separated_cluster():
    rng = numpy.random.default_rng(2)
    centres = numpy.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    X = numpy.concatenate([c + rng.normal(scale=0.1, size=(200, 2)) for c in centres])
    for seed in range(5):
        seeds = kmeans_plusplus(X, 3, numpy.random.default_rng(seed))
        nearest = numpy.argmin(((seeds[:, None] - centres[None]) ** 2).sum(-1), axis=1)
        assert sorted(nearest) == [0, 1, 2]


def test_deterministic_for_a_seed(three_blobs):
    X = three_blobs[0][:500]
    a = fit_gmm(X, 4, seed=7, sample_fraction=0.5)
    b = fit_gmm(X, 4, seed=7, sample_fraction=0.5)
    c = fit_gmm(X, 4, seed=8, sample_fraction=0.5)
    for name in ('weights', 'means', 'variances'):
        numpy.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not numpy.array_equal(a.means, c.means)


def test_sample_fraction_fits_on_a_subset(three_blobs):
    X = three_blobs[0]
    full = fit_gmm(X, 3, kmeans_iters=3, em_iters=10, seed=0)
    quarter = fit_gmm(X, 3, kmeans_iters=3, em_iters=10, seed=0, sample_fraction=0.25)
    assert not numpy.allclose(full.means, quarter.means)       # really a different fit
    assert quarter.score(X) > full.score(X) - 0.01              # Section 5.1: accurate enough


def test_sample_fraction_uses_that_many_rows():
    """Rows outside the subsample cannot influence the fit: 25% of the rows, drawn by the seed."""
    X = numpy.arange(400, dtype=numpy.float64)[:, None]
    gmm = fit_gmm(X, 1, seed=0, sample_fraction=0.25, min_weight=0)
    idx = numpy.sort(numpy.random.default_rng(0).choice(400, 100, replace=False))
    numpy.testing.assert_allclose(gmm.means[0, 0], X[idx].mean())


def test_pruning_merges_a_tiny_component():
    rng = numpy.random.default_rng(3)
    X = numpy.concatenate([rng.normal(size=(995, 2)), 50 + rng.normal(size=(5, 2))])
    kept = fit_gmm(X, 2, seed=0, min_weight=0)
    assert kept.n_components == 2 and kept.weights.min() < 0.01
    pruned = fit_gmm(X, 2, seed=0, min_weight=0.01)
    assert pruned.n_components == 1
    numpy.testing.assert_allclose(pruned.weights, [1.0])
    numpy.testing.assert_allclose(pruned.means[0], X.mean(axis=0), rtol=1e-6)   # merged
    numpy.testing.assert_allclose(pruned.variances[0], X.var(axis=0) + 1e-6, rtol=1e-6)


@pytest.mark.parametrize('X', [
    numpy.ones((50, 3)),                                              # all rows identical
    numpy.repeat(numpy.array([[0.0, 1.0], [2.0, 5.0]]), 20, axis=0),  # 2 distinct rows, K = 3
    numpy.array([[1.0, 2.0], [3.0, 4.0]]),                            # fewer rows than K
    numpy.array([[1.0, 2.0]]),                                        # one row
    numpy.c_[numpy.linspace(0, 1, 60), numpy.full(60, 7.0)],          # a constant column
    numpy.zeros((30, 4)),                                             # dead ReLU batch
    1.0 + 1e-9 * numpy.random.default_rng(0).normal(size=(40, 3)),   # near-duplicates
])
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
def test_degenerate_data_gives_a_valid_mixture(X, dtype):
    gmm = fit_gmm(X.astype(dtype), 3, kmeans_iters=1, em_iters=1, seed=0)
    assert 1 <= gmm.n_components <= 3
    for a in (gmm.weights, gmm.means, gmm.variances):
        assert numpy.isfinite(a).all()
    assert (gmm.variances >= 1e-6 * 0.99).all()
    numpy.testing.assert_allclose(gmm.weights.sum(), 1, rtol=1e-5)
    assert numpy.isfinite(gmm.log_likelihood(X.astype(dtype))).all()
    nu = gmm.responsibilities(X.astype(dtype))
    numpy.testing.assert_allclose(nu.sum(axis=1), 1, rtol=1e-5)


def test_duplicate_rows_collapse_to_one_component():
    gmm = fit_gmm(numpy.ones((50, 3)), 3, seed=0)
    assert gmm.n_components == 1


def test_float16_is_fitted_in_float32(three_blobs):
    gmm = fit_gmm(three_blobs[0].astype(numpy.float16), 3, seed=0)
    assert gmm.means.dtype == numpy.float32


@pytest.mark.parametrize('kwargs, message', [
    (dict(X=numpy.ones(5)), 'shape'),
    (dict(X=numpy.ones((0, 3))), 'at least one row'),
    (dict(X=numpy.array([[1.0, numpy.nan]])), 'NaN'),
    (dict(X=numpy.array([[1.0, numpy.inf]])), 'NaN or inf'),
    (dict(X=numpy.ones((5, 2), dtype=numpy.int32)), 'floating'),
    (dict(n_components=0), 'n_components'),
    (dict(em_iters=-1), 'em_iters'),
    (dict(kmeans_iters=1.5), 'kmeans_iters'),
    (dict(sample_fraction=0), 'sample_fraction'),
    (dict(sample_fraction=1.5), 'sample_fraction'),
    (dict(min_weight=1), 'min_weight'),
    (dict(reg_covar=0), 'reg_covar'),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    args = dict(X=numpy.ones((5, 2)), n_components=2)
    args.update(kwargs)
    X = args.pop('X')
    with pytest.raises(ValueError, match=message):
        fit_gmm(X, **args)


def test_rows_of_the_wrong_width_are_rejected():
    gmm = fit_gmm(numpy.random.default_rng(0).normal(size=(20, 3)), 2, seed=0)
    with pytest.raises(ValueError, match=r'\(m, 3\)'):
        gmm.responsibilities(numpy.ones((4, 2)))


def test_float32_fit_far_from_the_origin_matches_float64(three_blobs):
    """Rows offset by 1000 (mean^2 >> variance): float32 fit and posteriors stay accurate."""
    X = three_blobs[0][:3000] + 1000.0
    f64 = fit_gmm(X, 3, seed=0)
    f32 = fit_gmm(X.astype(numpy.float32), 3, seed=0)
    assert f32.center is not None
    numpy.testing.assert_allclose(f32.means, f64.means, rtol=1e-5)
    numpy.testing.assert_allclose(f32.variances, f64.variances, rtol=2e-3)
    nu32 = f32.responsibilities(X.astype(numpy.float32))
    numpy.testing.assert_allclose(nu32, f64.responsibilities(X), atol=1e-4)
    # log-likelihoods: float32 rounds x ~ 1000 (and the means) to ~6e-5, which moves them by
    # that times their sensitivity sum_j |x_j - mu_j| / var_j (x - mu cancels); measured 0.25
    # of eps32 * max|x| * sensitivity, allowed 2.5
    ll32, ll64 = f32.log_likelihood(X.astype(numpy.float32)), f64.log_likelihood(X)
    nu64 = f64.responsibilities(X)
    sensitivity = numpy.einsum('mk,mkd->m', nu64,
                               numpy.abs(X[:, None] - f64.means[None]) / f64.variances[None])
    bound = 2.5 * numpy.finfo(numpy.float32).eps * numpy.abs(X).max() * sensitivity
    assert (numpy.abs(ll32 - ll64) <= bound).all()
