"""The golden cases of ``mixnorm-crosscheck`` (:mod:`mixnorm_chainer.reproduce.crosscheck`,
whose docstring describes each kind): :func:`build_cases` computes every case's inputs and
expected outputs with this package (Eq. 26-31 fits, Eq. 34-37 training transform and its
gradients, Eq. 38-40 test mode over a queue, and Mixture Group Normalization: the
deterministic per-set fit and Eq. 34-37, 40 over the sets of GN/LN/IN), from fixed seeds.
"""
import chainer
import numpy

from mixnorm_chainer.functions import MixtureNormalizationFunction, compute_dtype, to_rows
from mixnorm_chainer.gmm import e_step, fit_gmm, m_step
from mixnorm_chainer.group_gmm import fit_set_mixtures
from mixnorm_chainer.group_normalization import (
    MixtureGroupNormalization,
    mixture_group_normalization,
)
from mixnorm_chainer.links import MixtureNormalization
from mixnorm_chainer.queue import queue_normalization, queue_posterior

# -- building the cases -------------------------------------------------------------------

def _centres(rng, C):
    return rng.normal(scale=3.0, size=(3, C)), rng.uniform(0.5, 1.5, size=(3, C))


def _data(rng, shape, dtype, centres=None):
    """Inputs with cluster structure in the rows (so the GMM has something to find)."""
    N, C = shape[:2]
    m = N * int(numpy.prod(shape[2:], dtype=numpy.int64))
    centres, scales = _centres(rng, C) if centres is None else centres
    labels = rng.integers(0, 3, size=m)
    rows = centres[labels] + rng.normal(size=(m, C)) * scales[labels]
    if len(shape) == 2:
        x = rows
    else:
        x = rows.reshape((N,) + tuple(shape[2:]) + (C,))
        x = numpy.moveaxis(x, -1, 1)
    return numpy.ascontiguousarray(x + 1.0).astype(dtype)


def _affine(rng, C, dtype):
    return (rng.uniform(0.5, 1.5, size=C).astype(dtype),
            (0.3 * rng.normal(size=C)).astype(dtype))


def _backprop(fn, x, gamma, beta, gy):
    """y and the gradients of <y, gy> w.r.t. x, gamma, beta, through chainer."""
    v = [chainer.Variable(a.copy()) for a in (x, gamma, beta)]
    for a in v:
        a.cleargrad()
    y = fn(*v)
    y.grad = gy.copy()
    y.backward()
    return {'y': y.array, 'gx': v[0].grad, 'ggamma': v[1].grad, 'gbeta': v[2].grad}


def _case(name, kind, equation, inputs, outputs, options, optional=None, **extra):
    return dict(name=name, kind=kind, equation=equation, options=options, inputs=inputs,
                outputs=outputs, optional_outputs=optional or {}, **extra)


def train_case(name, shape, dtype, seed, affine='output', activation=None, K=3, eps=2e-5):
    rng = numpy.random.default_rng(seed)
    dtype = numpy.dtype(dtype)
    x = _data(rng, shape, dtype)
    gamma, beta = _affine(rng, shape[1], dtype)
    gy = rng.normal(size=shape).astype(dtype)
    cdt = numpy.float32 if dtype == numpy.float16 else dtype
    rows = to_rows(x).astype(cdt)
    if K == 1:
        nu = numpy.ones((rows.shape[0], 1), cdt)
        equation = 'K=1: batch normalization (Eq. 34-36 with nu = 1)'
        fit = None
    else:
        gmm = fit_gmm(rows, K, kmeans_iters=1, em_iters=1, seed=seed)
        nu = gmm.responsibilities(rows).astype(cdt)
        equation = 'Eq. 34-36' + (' + Eq. 37 (affine on the statistics)'
                                  if affine == 'statistics' else '') \
            + (' + Eq. 40 (per-component ReLU)' if activation == 'relu' else '')
        fit = dict(seed=seed, n_components=K, kmeans_iters=1, em_iters=1, min_weight=0.01,
                   reg_covar=1e-6, kept_components=gmm.n_components)
    nodes = []

    def fn(xv, gv, bv):
        node = MixtureNormalizationFunction(nu, eps, affine, activation)
        nodes.append(node)
        return node.apply((xv, gv, bv))[0]

    out = _backprop(fn, x, gamma, beta, gy)
    stats = nodes[0].statistics
    optional = {'weights': stats.weights, 'means': stats.means, 'variances': stats.variances}
    options = dict(eps=eps, affine=affine, activation=activation, n_components=nu.shape[1])
    meta = _case(name, 'mn_train', equation,
                 dict(x=x, gamma=gamma, beta=beta, nu=nu, gy=gy), out, options, optional,
                 responsibilities_from=fit)
    if K == 1:
        meta['torch_equivalent'] = ('torch.nn.functional.batch_norm(x, None, None, gamma, beta, '
                                    f'training=True, eps={eps})')
    return meta


def _queue_from_training(shape, dtype, seed, T, steps, K, eps, min_weight=0.01):
    """A queue filled by training-mode forward passes of the MixtureNormalization link."""
    rng = numpy.random.default_rng(seed)
    link = MixtureNormalization(shape[1], n_components=K, queue_length=T, eps=eps, dtype=dtype,
                                seed=seed, min_weight=min_weight)
    centres = _centres(rng, shape[1])
    with chainer.using_config('train', True):
        for _ in range(steps):
            link(_data(rng, shape, dtype, centres))
    return link.queue.statistics, link.queue.fit, link.queue.count, rng, centres


def queue_case(name, shape, dtype, seed, form='consistent', affine='output', activation=None,
              T=4, steps=4, K=3, eps=2e-5, decay=0.9, queue=None, min_weight=0.01):
    dtype = numpy.dtype(dtype)
    if queue is None:
        stats, fit, n_present, rng, centres = _queue_from_training(shape, dtype, seed, T, steps,
                                                                   K, eps, min_weight)
    else:
        stats = tuple(numpy.asarray(a, dtype) for a in queue)
        fit = stats
        n_present, rng, centres = stats[0].shape[0], numpy.random.default_rng(seed), None
    qw = stats[0]
    x = _data(rng, shape, dtype, centres)
    gamma, beta = _affine(rng, shape[1], dtype)
    gy = rng.normal(size=shape).astype(dtype)

    def fn(xv, gv, bv):
        return queue_normalization(xv, gv, bv, *stats, n_present, decay, eps, form, affine,
                                   activation, fit=fit)

    out = _backprop(fn, x, gamma, beta, gy)
    rows = to_rows(x).astype(compute_dtype(x.dtype))
    post = queue_posterior(rows, *stats, n_present, decay, eps, fit)
    options = dict(eps=eps, affine=affine, activation=activation, form=form, decay=decay,
                   n_present=int(n_present), queue_length=int(qw.shape[0]),
                   n_components=int(qw.shape[1]))
    equation = ('Eq. 38-39, ' + ('consistent form: 1/sqrt(lambda)' if form == 'consistent'
                                 else 'printed form: 1/sqrt(tau lambda)')
                + (' + Eq. 37' if affine == 'statistics' else '')
                + (' + Eq. 40' if activation == 'relu' else ''))
    inputs = dict(x=x, gamma=gamma, beta=beta, queue_weights=stats[0], queue_means=stats[1],
                  queue_variances=stats[2], queue_fit_weights=fit[0], queue_fit_means=fit[1],
                  queue_fit_variances=fit[2], gy=gy)
    meta = _case(name, 'mn_test', equation, inputs, out, options, {'posterior': post})
    if qw.shape == (1, 1):
        meta['equation'] = 'K=1, T=1: batch normalization in test mode (fixed statistics)'
        meta['torch_equivalent'] = ('torch.nn.functional.batch_norm(x, queue_means[0, 0], '
                                    'queue_variances[0, 0], gamma, beta, training=False, '
                                    f'eps={eps})')
    return meta


def em_case(name, seed, m=300, D=4, K=3, n_iters=3, reg_covar=1e-6):
    """EM from a fixed initialization (the k-means initialization of a seeded fit)."""
    rng = numpy.random.default_rng(seed)
    X = to_rows(_data(rng, (m, D), numpy.float64))
    init = fit_gmm(X, K, kmeans_iters=1, em_iters=0, seed=seed, min_weight=0)
    params = (init.weights, init.means, init.variances)
    X2 = X * X
    hist = {'weights': [], 'means': [], 'variances': [], 'mean_log_likelihood': []}
    for _ in range(n_iters):
        log_resp, log_norm = e_step(X, *params, X2=X2)
        params = m_step(X, X2, numpy.exp(log_resp), reg_covar)
        for key, value in zip(hist, params + (log_norm.mean(),)):
            hist[key].append(value)
    outputs = {k: numpy.stack(v) for k, v in hist.items()}
    inputs = dict(X=X, init_weights=init.weights, init_means=init.means,
                  init_variances=init.variances)
    options = dict(n_iters=n_iters, reg_covar=reg_covar, n_components=K,
                   m_step='n_k = sum_i nu_ik + 10 * finfo(dtype).eps; lambda = n_k / sum n; '
                          'mu = sum_i nu_ik x_i / n_k; '
                          'sigma^2 = max(sum_i nu_ik x_i^2 / n_k - mu^2, 0) + reg_covar',
                   e_step='nu_ik ∝ lambda_k N(x_i | mu_k, diag sigma_k^2) (no eps), '
                          'mean_log_likelihood = mean_i log p(x_i) under the parameters '
                          'before the M-step')
    return _case(name, 'gmm_em', 'Eq. 26-27, 31 (E-step) and the M-step', inputs, outputs,
                 options)


def fit_case(name, seed, m=400, D=3, K=3, kmeans_iters=1, em_iters=1):
    """A seeded fit on well-separated clusters (centres >= 8 apart, unit-scale spread), where
    any k-means++ seeding finds the same clusters: so a foreign fit's score is comparable."""
    rng = numpy.random.default_rng(seed)
    centres = 8.0 * numpy.eye(3, D) + rng.normal(scale=0.5, size=(3, D))
    X = to_rows(_data(rng, (m, D), numpy.float64,
                      (centres, rng.uniform(0.5, 1.5, size=(3, D)))))
    gmm = fit_gmm(X, K, kmeans_iters=kmeans_iters, em_iters=em_iters, seed=seed)
    inputs = dict(X=X, weights=gmm.weights, means=gmm.means, variances=gmm.variances)
    outputs = dict(responsibilities=gmm.responsibilities(X), log_likelihood=gmm.log_likelihood(X))
    options = dict(seed=seed, n_components=K, kmeans_iters=kmeans_iters, em_iters=em_iters,
                   min_weight=0.01, reg_covar=1e-6, sample_fraction=1.0,
                   kept_components=gmm.n_components)
    return _case(name, 'gmm_fit', 'fit: k-means++ (2 + int(log K) trials), k-means, EM, '
                 'pruning (Sections 4.2, 5.3); outputs Eq. 31 and Eq. 26 of the fitted mixture',
                 inputs, outputs, options, {'fit_score': numpy.float64(gmm.score(X))},
                 optional_tolerance={'fit_score': 'loglik'})


def _group_data(rng, shape, groups, dtype, special=None):
    """x whose every set (a row of ``x.reshape(N*G, m)``) has 2 or 3 modes (1-D centres ~3-4
    apart on average); ``special`` {set: 'constant' | 'zeros' | 'mostly_zero'} replaces a set
    by a constant 1.5, all zeros, or a ReLU map with ~85% zeros."""
    S = shape[0] * groups
    m = int(numpy.prod(shape, dtype=numpy.int64)) // S
    X = numpy.empty((S, m))
    for s in range(S):
        n_modes = 2 + s % 2
        centres = numpy.sort(rng.normal(scale=4.0, size=n_modes))
        scales = rng.uniform(0.3, 1.0, size=n_modes)
        labels = rng.integers(0, n_modes, size=m)
        X[s] = centres[labels] + scales[labels] * rng.normal(size=m) + 1.0
    for s, kind in (special or {}).items():
        X[s] = {'constant': numpy.full(m, 1.5), 'zeros': numpy.zeros(m),
                'mostly_zero': numpy.maximum(rng.normal(size=m) - 1.0, 0)}[kind]
    return numpy.ascontiguousarray(X.reshape(shape)).astype(dtype)


def group_case(name, shape, dtype, seed, groups, K=3, affine='output', activation=None,
               eps=2e-5, kmeans_iters=1, em_iters=1, sample_fraction=1.0, min_weight=0.01,
               reg_covar=1e-6, special=None):
    """Mixture Group Normalization (the link and the function agree, in training and in test
    mode, bit for bit): y and gradients, and the sets' fitted mixtures (optional)."""
    rng = numpy.random.default_rng(seed)
    dtype = numpy.dtype(dtype)
    x = _group_data(rng, shape, groups, dtype, special)
    C = shape[1]
    gamma, beta = _affine(rng, C, dtype)
    gy = rng.normal(size=shape).astype(dtype)
    layer = dict(n_components=K, eps=eps, em_iters=kmeans_iters + em_iters,
                 kmeans_iters=kmeans_iters, min_weight=min_weight, reg_covar=reg_covar,
                 sample_fraction=sample_fraction, activation=activation, affine=affine)
    out = _backprop(lambda xv, gv, bv: mixture_group_normalization(xv, gv, bv, groups, **layer),
                    x, gamma, beta, gy)
    link = MixtureGroupNormalization(groups, C, dtype=dtype, **layer)
    link.gamma.array[...] = gamma
    link.beta.array[...] = beta
    for train in (True, False):                  # training mode = test mode, bit for bit
        with chainer.using_config('train', train):
            y = link(x).array
        if not numpy.array_equal(y, out['y']):
            raise AssertionError(f'{name}: the link (train={train}) differs from the function')
    S = shape[0] * groups
    fit = fit_set_mixtures(x.reshape(S, -1).astype(compute_dtype(dtype)), K,
                           kmeans_iters=kmeans_iters, em_iters=em_iters,
                           sample_fraction=sample_fraction, min_weight=min_weight,
                           reg_covar=reg_covar)
    if not numpy.array_equal(fit.responsibilities, link.last_fit.responsibilities):
        raise AssertionError(f'{name}: fit_set_mixtures differs from the layer\'s fit')
    live = fit.live
    optional = dict(fit_weights=fit.weights, fit_means=numpy.where(live, fit.means, 0),
                    fit_variances=numpy.where(live, fit.variances, 0),
                    responsibilities=fit.responsibilities)
    options = dict(groups=groups, n_components=K, kmeans_iters=kmeans_iters, em_iters=em_iters,
                   layer_em_iters=kmeans_iters + em_iters, sample_fraction=sample_fraction,
                   min_weight=min_weight, reg_covar=reg_covar, eps=eps, affine=affine,
                   activation=activation)
    sets = {1: 'G=1: mixture layer normalization (Eq. 8 sets)',
            C: 'G=C: mixture instance normalization (Eq. 9 sets)'}.get(
                groups, f'G={groups}: mixture group normalization (Eq. 10 sets)')
    equation = (sets + ', deterministic fit, Eq. 34-36'
                + (' + Eq. 37' if affine == 'statistics' else '')
                + (' + Eq. 40' if activation == 'relu' else ''))
    meta = _case(name, 'mn_group', equation, dict(x=x, gamma=gamma, beta=beta, gy=gy), out,
                 options, optional, modes=['train', 'test'],
                 kept_components=[int(k) for k in live.sum(axis=1)],
                 special_sets={str(k): v for k, v in (special or {}).items()})
    if K == 1:
        meta['equation'] = sets + ', K=1: group normalization'
        meta['torch_equivalent'] = (f'torch.nn.functional.group_norm(x, {groups}, gamma, beta, '
                                    f'eps={eps})')
    return meta


def build_cases():
    """Every golden case, as manifest entries holding their arrays (see the module doc)."""
    f64, f32, f16 = 'float64', 'float32', 'float16'
    cases = [
        train_case('mn_train_4d_f64', (4, 3, 5, 5), f64, 0),
        train_case('mn_train_4d_f64_relu', (4, 3, 5, 5), f64, 1, activation='relu'),
        train_case('mn_train_4d_f64_stats', (4, 3, 5, 5), f64, 2, affine='statistics'),
        train_case('mn_train_4d_f64_stats_relu', (4, 3, 5, 5), f64, 3, affine='statistics',
                   activation='relu'),
        train_case('mn_train_2d_f64', (120, 6), f64, 4),
        train_case('mn_train_2d_f64_relu', (120, 6), f64, 5, activation='relu'),
        train_case('mn_train_4d_f32', (4, 3, 5, 5), f32, 6),
        train_case('mn_train_2d_f32_relu', (120, 6), f32, 7, activation='relu'),
        train_case('mn_train_4d_f16', (4, 3, 5, 5), f16, 8),
        train_case('bn_train_4d_f64', (4, 3, 5, 5), f64, 9, K=1),
        train_case('bn_train_2d_f32', (120, 6), f32, 10, K=1),
        queue_case('mn_test_4d_f64_consistent', (4, 3, 5, 5), f64, 11),
        queue_case('mn_test_4d_f64_printed', (4, 3, 5, 5), f64, 11, form='printed'),
        queue_case('mn_test_2d_f64_partial_queue', (60, 6), f64, 12, T=5, steps=3),
        queue_case('mn_test_4d_f64_relu', (4, 3, 5, 5), f64, 13, activation='relu'),
        queue_case('mn_test_4d_f64_pruned', (4, 3, 5, 5), f64, 19, K=5, min_weight=0.15),
        queue_case('mn_test_2d_f64_stats_printed', (60, 6), f64, 14, form='printed',
                  affine='statistics'),
        queue_case('mn_test_4d_f32_consistent', (4, 3, 5, 5), f32, 15),
        queue_case('mn_test_2d_f32_printed_relu', (60, 6), f32, 16, form='printed',
                  activation='relu'),
        queue_case('bn_test_4d_f64', (4, 3, 5, 5), f64, 17,
                  queue=([[1.0]], [[[0.5, 1.5, 2.0]]], [[[2.0, 0.5, 3.0]]])),
        em_case('gmm_em_f64', 18),
        fit_case('gmm_fit_seed0_f64', 0),
        fit_case('gmm_fit_seed1_f64', 1),
        group_case('mn_group_4d_g1_k3_f64', (3, 4, 4, 4), f64, 30, 1),
        group_case('mn_group_4d_g2_k2_f64', (3, 4, 4, 4), f64, 31, 2, K=2),
        group_case('mn_group_4d_gC_k3_f64', (3, 4, 4, 4), f64, 32, 4),
        group_case('mn_group_4d_g2_k1_f64', (3, 4, 4, 4), f64, 33, 2, K=1),
        group_case('mn_group_4d_g2_k3_f64_relu', (3, 4, 4, 4), f64, 34, 2, activation='relu'),
        group_case('mn_group_4d_g2_k3_f64_stats', (3, 4, 4, 4), f64, 35, 2,
                   affine='statistics'),
        group_case('mn_group_4d_g2_k3_f64_degenerate', (3, 4, 4, 4), f64, 36, 2,
                   special={0: 'constant', 1: 'mostly_zero', 4: 'zeros'}),
        group_case('mn_group_4d_g2_k2_f64_degenerate_relu', (3, 4, 4, 4), f64, 37, 2, K=2,
                   activation='relu', special={1: 'constant', 2: 'mostly_zero'}),
        group_case('mn_group_4d_batch1_g2_k3_f64', (1, 4, 4, 4), f64, 38, 2),
        group_case('mn_group_2d_g2_k2_f64', (6, 40), f64, 39, 2, K=2),
        group_case('mn_group_4d_g1_k3_f64_subsample', (3, 4, 4, 4), f64, 40, 1,
                   kmeans_iters=2, em_iters=2, sample_fraction=0.5),
        group_case('mn_group_4d_g2_k3_f64_pruned', (3, 4, 4, 4), f64, 47, 2, min_weight=0.2),
        group_case('mn_group_4d_g2_k3_f32', (3, 4, 4, 4), f32, 41, 2),
        group_case('mn_group_4d_gC_k2_f32_relu', (3, 4, 4, 4), f32, 42, 4, K=2,
                   activation='relu'),
        group_case('mn_group_4d_g1_k1_f32', (3, 4, 4, 4), f32, 43, 1, K=1),
        group_case('mn_group_4d_g2_k2_f16', (3, 4, 4, 4), f16, 44, 2, K=2),
    ]
    return cases
