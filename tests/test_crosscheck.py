"""Cross-checks: golden vectors (export/compare), the PyTorch reference, torch-style weights."""
import copy
import json
import os
import subprocess
import sys

import chainer
import chainer.functions as F
import numpy
import pytest

import mixnorm_chainer as mn
from mixnorm_chainer import mixture_normalization, queue_normalization
from mixnorm_chainer.functions import to_rows
from mixnorm_chainer.models import CifarCNN
from mixnorm_chainer.reproduce import crosscheck, weights

SHAPES = [(4, 3, 5, 6), (40, 5)]
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs')


@pytest.fixture
def torch():
    if os.environ.get('MIXNORM_REQUIRE_TORCH'):       # CI: fail rather than skip without torch
        import torch
    else:
        torch = pytest.importorskip('torch')
    torch.set_num_threads(1)
    return torch


@pytest.fixture(scope='module')
def golden(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp('golden'))
    crosscheck.export(directory)
    return directory


def rel_err(a, b):
    return crosscheck.errors(a, b)[1]


def make_inputs(shape, K, seed=0, dtype=numpy.float64):
    rng = numpy.random.default_rng(seed)
    x = numpy.exp(0.7 * rng.normal(size=shape)) + 2.0        # skewed, off-centre channels
    m = x.size // shape[1]
    nu = rng.dirichlet(numpy.full(K, 0.5), size=m)
    gamma = rng.uniform(0.5, 1.5, size=shape[1])
    beta = rng.normal(size=shape[1])
    gy = rng.normal(size=shape)
    return [a.astype(dtype) for a in (x, gamma, beta, nu, gy)]


def chainer_grads(fn, x, gamma, beta, gy):
    v = [chainer.Variable(a.copy()) for a in (x, gamma, beta)]
    y = fn(*v)
    y.grad = gy.copy()
    y.backward()
    return [y.array] + [a.grad for a in v]


def torch_grads(torch, fn, x, gamma, beta, gy):
    v = [torch.tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    y = fn(*v)
    y.backward(torch.as_tensor(gy))
    return [y.detach().numpy()] + [a.grad.numpy() for a in v]


def assert_all_close(got, expected, tol):
    for name, a, b in zip(('y', 'gx', 'ggamma', 'gbeta'), got, expected):
        assert a.shape == b.shape, name
        assert rel_err(a, b) <= tol, (name, rel_err(a, b))


# -- the torch reference against the Chainer transform (float64) --------------------------

@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('affine', ['output', 'statistics'])
@pytest.mark.parametrize('activation', [None, 'relu'])
def test_torch_reference_matches_chainer_training_transform(torch, shape, affine, activation):
    from mixnorm_chainer.reproduce import torch_reference as tr
    x, gamma, beta, nu, gy = make_inputs(shape, 3)
    ours = chainer_grads(lambda *v: mixture_normalization(*v, nu, affine=affine,
                                                          activation=activation),
                         x, gamma, beta, gy)
    ref = torch_grads(torch, lambda *v: tr.mixture_normalization(
        *v, torch.as_tensor(nu), affine=affine, activation=activation), x, gamma, beta, gy)
    assert_all_close(ours, ref, 1e-12)


@pytest.mark.parametrize('shape', SHAPES)
def test_torch_reference_k1_is_batch_normalization(torch, shape):
    from mixnorm_chainer.reproduce import torch_reference as tr
    x, gamma, beta, _, gy = make_inputs(shape, 1, seed=3)
    nu = numpy.ones((x.size // shape[1], 1))
    ref = torch_grads(torch, lambda *v: tr.mixture_normalization(*v, torch.as_tensor(nu)),
                      x, gamma, beta, gy)
    chainer_bn = chainer_grads(lambda *v: F.batch_normalization(*v, eps=2e-5), x, gamma, beta,
                               gy)
    torch_bn = torch_grads(torch, lambda xv, g, b: torch.nn.functional.batch_norm(
        xv, None, None, g, b, training=True, eps=2e-5), x, gamma, beta, gy)
    assert_all_close(ref, chainer_bn, 1e-12)
    assert_all_close(ref, torch_bn, 1e-12)


def random_queue(rng, T, K, C, prune=True):
    weights_ = rng.dirichlet(numpy.ones(K), size=T)
    if prune:
        weights_[1, -1] = 0                      # a pruned component (padded with weight 0)
        weights_[1] /= weights_[1].sum()
    means = rng.normal(loc=2.0, scale=1.5, size=(T, K, C))
    variances = rng.uniform(0.3, 2.0, size=(T, K, C))
    return weights_, means, variances


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('form', ['consistent', 'printed'])
@pytest.mark.parametrize('affine,activation', [('output', None), ('output', 'relu'),
                                               ('statistics', None)])
@pytest.mark.parametrize('n_present', [4, 2])
def test_torch_reference_matches_chainer_test_mode(torch, shape, form, affine, activation,
                                                   n_present):
    from mixnorm_chainer.reproduce import torch_reference as tr
    rng = numpy.random.default_rng(7)
    x, gamma, beta, _, gy = make_inputs(shape, 1, seed=4)
    queue = random_queue(rng, 4, 3, shape[1])
    args = (n_present, 0.9, 2e-5, form, affine, activation)
    ours = chainer_grads(lambda *v: queue_normalization(*v, *queue, *args), x, gamma, beta, gy)
    ref = torch_grads(torch, lambda *v: tr.queue_normalization(
        *v, *(torch.as_tensor(a) for a in queue), *args), x, gamma, beta, gy)
    assert_all_close(ours, ref, 1e-12)


def test_torch_reference_single_entry_queue_is_fixed_batch_normalization(torch):
    from mixnorm_chainer.reproduce import torch_reference as tr
    x, gamma, beta, _, gy = make_inputs((4, 3, 5, 6), 1, seed=5)
    mean, var = numpy.array([2.5, 3.0, 2.0]), numpy.array([0.5, 1.5, 2.5])
    ref = torch_grads(torch, lambda *v: tr.queue_normalization(
        *v, torch.ones(1, 1, dtype=torch.float64), torch.as_tensor(mean[None, None]),
        torch.as_tensor(var[None, None]), 1, 0.9, 2e-5), x, gamma, beta, gy)
    ours = chainer_grads(lambda xv, g, b: F.fixed_batch_normalization(xv, g, b, mean, var, 2e-5),
                         x, gamma, beta, gy)
    assert_all_close(ref, ours, 1e-12)


# -- golden vectors: export and compare -----------------------------------------------------

def test_export_writes_a_manifest_that_describes_every_array(golden):
    manifest, arrays = crosscheck.load(golden)
    cases = manifest['cases']
    names = [c['name'] for c in cases]
    assert len(names) == len(set(names))
    expected_keys = set()
    for case in cases:
        for role in ('inputs', 'outputs', 'optional_outputs'):
            for key, desc in case[role].items():
                array = arrays[f"{case['name']}/{key}"]
                assert list(array.shape) == desc['shape'] and str(array.dtype) == desc['dtype']
                expected_keys.add(f"{case['name']}/{key}")
        assert case['equation'] and case['options'] is not None
    assert expected_keys == set(arrays)
    kinds = {c['kind'] for c in cases}
    assert kinds == {'mn_train', 'mn_test', 'gmm_em', 'gmm_fit', 'mn_group'}
    mn = [c for c in cases if c['kind'].startswith('mn_')]
    assert {c['dtype'] for c in mn} == {'float64', 'float32', 'float16'}
    assert {c['layout'] for c in mn} == {'NCHW', 'NC'}
    assert {c['options']['form'] for c in mn if c['kind'] == 'mn_test'} == {'consistent',
                                                                           'printed'}
    assert {(c['options']['affine'], c['options']['activation']) for c in mn} >= {
        ('output', None), ('output', 'relu'), ('statistics', None), ('statistics', 'relu')}
    assert any(c['options']['n_present'] < c['options']['queue_length'] for c in mn
               if c['kind'] == 'mn_test')
    bn = [c for c in cases if c['name'].startswith('bn_')]
    assert {c['kind'] for c in bn} == {'mn_train', 'mn_test'}
    assert all('torch_equivalent' in c for c in bn)
    for case in mn:
        for out in ('y', 'gx', 'ggamma', 'gbeta'):
            assert out in case['outputs']
        assert numpy.isfinite(arrays[case['name'] + '/y']).all()


def test_golden_values_are_the_chainer_transform(golden):
    manifest, arrays = crosscheck.load(golden)
    case = next(c for c in manifest['cases'] if c['name'] == 'mn_train_4d_f64_relu')
    inp = crosscheck.case_inputs(case, arrays)
    y = mixture_normalization(inp['x'], inp['gamma'], inp['beta'], inp['nu'], activation='relu')
    numpy.testing.assert_array_equal(y.array, arrays['mn_train_4d_f64_relu/y'])
    # The responsibilities are those of a fitted mixture: rows of nu sum to 1, K columns.
    nu = inp['nu']
    numpy.testing.assert_allclose(nu.sum(axis=1), 1, rtol=1e-12)
    assert nu.shape == (to_rows(inp['x']).shape[0], case['options']['n_components'])


def test_export_is_deterministic(golden, tmp_path):
    crosscheck.export(str(tmp_path))
    _, first = crosscheck.load(golden)
    _, second = crosscheck.load(str(tmp_path))
    assert set(first) == set(second)
    for key in first:
        numpy.testing.assert_array_equal(first[key], second[key], err_msg=key)


def expected_outputs(golden):
    manifest, arrays = crosscheck.load(golden)
    out = {}
    for case in manifest['cases']:
        for role in ('outputs', 'optional_outputs'):
            for key in case[role]:
                k = f"{case['name']}/{key}"
                out[k] = arrays[k]
    return out


def test_compare_own_outputs_passes_with_zero_error(golden, tmp_path, capsys):
    path = str(tmp_path / 'ours.npz')
    numpy.savez(path, **expected_outputs(golden))
    assert crosscheck.main(['compare', golden, path]) == 0
    out = capsys.readouterr().out
    assert 'OK:' in out and 'FAIL' not in out
    table = [line.split() for line in out.splitlines() if line.startswith(('mn_', 'bn_', 'gmm_'))]
    assert table and all(float(row[3]) == 0 and float(row[4]) == 0 for row in table)


def test_compare_perturbed_outputs_fails_with_a_per_case_table(golden, tmp_path, capsys):
    outputs = expected_outputs(golden)
    outputs['mn_train_4d_f32/gx'] = outputs['mn_train_4d_f32/gx'] * (1 + 1e-3)
    outputs['mn_test_4d_f64_printed/y'] = outputs['mn_test_4d_f64_printed/y'] + 1e-8
    del outputs['gmm_em_f64/means']
    path = str(tmp_path / 'perturbed.npz')
    numpy.savez(path, **outputs)
    assert crosscheck.main(['compare', golden, path]) == 1
    lines = capsys.readouterr().out.splitlines()
    status = {tuple(line.split()[:2]): line.split()[-1] for line in lines
              if line.startswith(('mn_', 'bn_', 'gmm_'))}
    assert status[('mn_train_4d_f32', 'gx')] == 'FAIL'
    assert status[('mn_test_4d_f64_printed', 'y')] == 'FAIL'     # 1e-8 is far above float64 tol
    assert status[('gmm_em_f64', 'means')] == 'MISSING'
    assert status[('mn_train_4d_f32', 'y')] == 'ok'
    assert lines[-1].startswith('FAILED: 3 of')
    # Restricted to the untouched cases, and with missing outputs allowed, it passes.
    assert crosscheck.main(['compare', golden, path, '--cases', 'bn_*']) == 0
    assert crosscheck.main(['compare', golden, path, '--cases', 'gmm_em*',
                            '--allow-missing']) == 0
    assert crosscheck.main(['compare', golden, path, '--cases', 'mn_train_4d_f32',
                            '--tol-scale', '20']) == 0


def chainer_impl(case, inputs):
    """A foreign-implementation stand-in for --impl (the Chainer functions themselves)."""
    opt = case['options']
    if case['kind'] != 'mn_train':
        return None
    y, gx, gg, gb = chainer_grads(
        lambda *v: mixture_normalization(*v, inputs['nu'], opt['eps'], opt['affine'],
                                         opt['activation']),
        inputs['x'], inputs['gamma'], inputs['beta'], inputs['gy'])
    return {'y': y, 'gx': gx, 'ggamma': gg, 'gbeta': gb}


def test_compare_impl_callable(golden, tmp_path, capsys):
    save = str(tmp_path / 'impl.npz')
    args = ['compare', golden, '--impl', 'test_crosscheck:chainer_impl', '--cases', 'mn_train*',
            '--save', save]
    assert crosscheck.main(args) == 0
    assert 'OK:' in capsys.readouterr().out
    assert crosscheck.main(['compare', golden, save, '--cases', 'mn_train*']) == 0
    # Cases the callable does not implement are missing: a failure unless allowed.
    assert crosscheck.main(['compare', golden, '--impl', 'test_crosscheck:chainer_impl']) == 1
    assert crosscheck.main(['compare', golden, '--impl', 'test_crosscheck:chainer_impl',
                            '--allow-missing']) == 0


def test_compare_impl_with_the_torch_reference_passes(torch, golden, capsys):
    code = crosscheck.main(['compare', golden, '--impl',
                            'mixnorm_chainer.reproduce.torch_reference:crosscheck_impl'])
    out = capsys.readouterr().out
    assert code == 0, out
    assert 'MISSING' not in out and 'FAIL' not in out
    # Every output of every case was compared, optional ones too, except the seeded fits' own
    # scores (the torch reference has no k-means++ fit).
    manifest, _ = crosscheck.load(golden)
    n_fits = sum(c['kind'] == 'gmm_fit' for c in manifest['cases'])
    n_all = sum(len(c['outputs']) + len(c['optional_outputs']) for c in manifest['cases'])
    assert out.splitlines()[-1] == (
        f'OK: {n_all - n_fits} outputs of {len(manifest["cases"])} cases within tolerance '
        f'(float64 1e-10, float32 1e-04, float16 2e-03, relative); {n_fits} optional/'
        'allowed-missing outputs not supplied')


def sklearn_fit_impl(case, inputs):
    """A foreign seeded GMM fit (scikit-learn, its own RNG) for the gmm_fit cases' fit_score."""
    from sklearn.mixture import GaussianMixture
    if case['kind'] != 'gmm_fit':
        return None
    o = case['options']
    X = inputs['X']
    gmm = GaussianMixture(o['n_components'], covariance_type='diag', init_params='k-means++',
                          max_iter=o['kmeans_iters'] + o['em_iters'], reg_covar=o['reg_covar'],
                          random_state=1234).fit(X)
    return {'fit_score': gmm.score(X) * float(os.environ.get('SCORE_FACTOR', '1'))}


def test_a_foreign_seeded_fit_is_compared_in_log_likelihood(golden, capsys, monkeypatch):
    import warnings
    args = ['compare', golden, '--impl', 'test_crosscheck:sklearn_fit_impl', '--cases',
            'gmm_fit*', '--allow-missing']
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')          # sklearn: "did not converge" after 2 steps
        assert crosscheck.main(args) == 0        # required outputs missing, but allowed
        lines = capsys.readouterr().out.splitlines()
        status = {tuple(line.split()[:2]): line.split()[-1] for line in lines
                  if line.startswith('gmm_fit')}
        assert status[('gmm_fit_seed0_f64', 'fit_score')] == 'ok'
        assert status[('gmm_fit_seed1_f64', 'fit_score')] == 'ok'
        monkeypatch.setenv('SCORE_FACTOR', '1.001')
        assert crosscheck.main(args) == 1
    lines = capsys.readouterr().out.splitlines()
    status = {tuple(line.split()[:2]): line.split()[-1] for line in lines
              if line.startswith('gmm_fit')}
    assert status[('gmm_fit_seed0_f64', 'fit_score')] == 'FAIL'


# -- the manifest's training_mode, evaluated in plain numpy ---------------------------------
#
# recipe_transform follows the manifest's `training_mode` text step by step (nothing of
# mixnorm_chainer is used); gradients are complex-step derivatives of sum(y * gy) (exact to
# float64 roundoff, no finite-difference error), so gx, ggamma, gbeta are checked without a
# hand-written backward. Measured against the golden outputs: float64 <= 2.2e-14
# (mn_train_2d_f64 y, gx), float32 <= 1.3e-5 (mn_train_4d_f32 gx: the Chainer float32 path's
# one-pass variances, docs/crosscheck.md), float16 (the recipe in float64 rounded to float16)
# <= 3.5e-6.

#: normwise relative tolerance by the golden array's dtype: float64 ~10x the measured 2.2e-14;
#: float32 the contract's 1e-4 (~8x the measured 1.3e-5); float16: one float16 ulp of the
#: largest entry (2^-10), what a rounding flip of any entry can cost.
RECIPE_TOL = {'float64': 2e-13, 'float32': 1e-4, 'float16': 2.0 ** -10}

#: the formulas recipe_transform implements, as the manifest's training_mode writes them
RECIPE_FORMULAS = (
    'lambda_k = n_k / m', 'nuhat_ik = nu_ik / n_k (Eq. 36)', 'mu_k = sum_i nuhat_ik x_i',
    'sigma_k^2 = sum_i nuhat_ik (x_i - mu_k)^2',
    'xhat^k_i = (x_i - mu_k) / sqrt(sigma_k^2 + eps)',
    'z_ik = gamma * xhat^k_i / sqrt(lambda_k) + beta',
    'xhat^k_i = (x_i - mu_k - beta) / sqrt(max(gamma * sigma_k^2, 0) + eps)',
    'z_ik = xhat^k_i / sqrt(lambda_k)', 'y_i = sum_k nu_ik * z_ik',
    'y_i = sum_k nu_ik * ReLU(z_ik)', 'with nu, hence lambda_k and nuhat_ik, held constant',
    'rounded to float16')


def _rows(x):
    return x if x.ndim == 2 else numpy.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def _unrows(R, shape):
    if len(shape) == 2:
        return R
    return numpy.moveaxis(R.reshape((shape[0],) + tuple(shape[2:]) + (shape[1],)), -1, 1)


def recipe_transform(x, gamma, beta, nu, eps, affine, activation, plant=None):
    """y and (lambda, mu, sigma^2) from the manifest's training_mode (real or complex arrays;
    ReLU and max(., 0) act on the real part, so complex-step derivatives go through them).
    ``plant``: a deliberate error ('eps_outside': sqrt(sigma^2) + eps; 'beta_in_variance':
    Eq. 37's sigma^2 taken about mu + beta)."""
    X = _rows(x)
    m = X.shape[0]
    Y = numpy.zeros_like(X)
    stats = []
    for k in range(nu.shape[1]):
        w = nu[:, k:k + 1]
        n = w.sum()
        if n == 0:
            stats.append((0.0, numpy.zeros(X.shape[1]), numpy.zeros(X.shape[1])))
            continue
        lam = n / m
        nuhat = w / n
        mu = (nuhat * X).sum(axis=0)
        var = (nuhat * (X - mu) ** 2).sum(axis=0)
        stats.append((lam, mu, var))
        if affine == 'statistics':
            if plant == 'beta_in_variance':
                var = (nuhat * (X - mu - beta) ** 2).sum(axis=0)
            gv = gamma * var
            xk = (X - mu - beta) / numpy.sqrt(gv * (gv.real > 0) + eps)
            z = xk / numpy.sqrt(lam)
        else:
            root = numpy.sqrt(var) + eps if plant == 'eps_outside' else numpy.sqrt(var + eps)
            xk = (X - mu) / root
            z = gamma * xk / numpy.sqrt(lam) + beta
        if activation == 'relu':
            z = z * (z.real > 0)
        Y = Y + w * z
    return _unrows(Y, x.shape), stats


def recipe_outputs(case, inputs, plant=None, h=1e-30):
    """Every output of an mn_train case by the recipe, in float64 (gradients by complex step)."""
    o = case['options']
    x, gamma, beta, nu, gy = (inputs[k].astype(numpy.float64)
                              for k in ('x', 'gamma', 'beta', 'nu', 'gy'))

    def loss(*args):
        y, _ = recipe_transform(*args, nu, o['eps'], o['affine'], o['activation'], plant)
        return (y * gy).sum()

    y, stats = recipe_transform(x, gamma, beta, nu, o['eps'], o['affine'], o['activation'],
                                plant)
    out = {'y': y}
    for name, which in (('gx', 0), ('ggamma', 1), ('gbeta', 2)):
        args = [a.astype(complex) for a in (x, gamma, beta)]
        grad = numpy.empty(args[which].shape)
        for idx in numpy.ndindex(grad.shape):
            args[which][idx] += 1j * h
            grad[idx] = loss(*args).imag / h
            args[which][idx] -= 1j * h
        out[name] = grad
    out.update(zip(('weights', 'means', 'variances'),
                   (numpy.array(s, dtype=numpy.float64) for s in zip(*stats))))
    return out


def recipe_errors(golden, plant=None):
    """{(case, output): (relative error, tolerance)} of the recipe on every mn_train case."""
    manifest, arrays = crosscheck.load(golden)
    result = {}
    for case in manifest['cases']:
        if case['kind'] != 'mn_train':
            continue
        got = recipe_outputs(case, crosscheck.case_inputs(case, arrays), plant)
        for key in list(case['outputs']) + list(case['optional_outputs']):
            expected = arrays[f"{case['name']}/{key}"]
            value = got[key]
            if expected.dtype == numpy.float16:      # computed in float32, rounded to float16
                value = value.astype(numpy.float16)
            result[case['name'], key] = (rel_err(value, expected), RECIPE_TOL[str(expected.dtype)])
    return result


def test_manifest_states_the_training_transform(golden):
    manifest, _ = crosscheck.load(golden)
    assert manifest['training_mode'] == list(crosscheck.TRAINING_MODE)
    text = ' '.join(manifest['training_mode'])
    for formula in RECIPE_FORMULAS:
        assert formula in text, formula
    for eq in ('Eq. 31', 'Eq. 34', 'Eq. 35', 'Eq. 36', 'Eq. 37', 'Eq. 40', 'Section 3.2'):
        assert eq in text, eq
    for option in ('eps', 'min_weight', 'reg_covar', 'kmeans_iters', 'em_iters'):
        assert option in text, option
    # the docs quote it entry by entry
    with open(os.path.join(DOCS, 'crosscheck.md')) as f:
        docs = ' '.join(f.read().split())
    for entry in manifest['training_mode']:
        assert ' '.join(entry.split()) in docs, entry[:60]


def test_training_mode_recipe_reproduces_the_golden_outputs(golden):
    errors = recipe_errors(golden)
    assert len({c for c, _ in errors}) == 11
    bad = {k: v for k, v in errors.items() if not v[0] <= v[1]}
    assert not bad, bad


def test_a_planted_error_in_the_recipe_fails(golden):
    # eps outside the square root: ~1e-5 relative, far beyond the float64 tolerance (2e-13)
    errors = recipe_errors(golden, plant='eps_outside')
    for (case, key), (err, tol) in errors.items():
        if case.endswith(('_f64', '_f64_relu')):
            if key in ('y', 'gx', 'ggamma'):
                assert err > 100 * tol, (case, key, err)
    # Eq. 37's variance taken about mu + beta instead of mu: every 'statistics' output fails
    errors = recipe_errors(golden, plant='beta_in_variance')
    stats_cases = {c for c, _ in errors if '_stats' in c}
    assert stats_cases == {'mn_train_4d_f64_stats', 'mn_train_4d_f64_stats_relu'}
    for case in stats_cases:
        for key in ('y', 'gx', 'ggamma', 'gbeta'):
            assert errors[case, key][0] > errors[case, key][1], (case, key)


# -- mn_group: Mixture Group Normalization (the deterministic set fit and the transform) ----
#
# The torch reference's fit_set_mixture / mixture_group_normalization are written from the
# manifest's group_mode (mean centring, strided subset, quantile seeds, Lloyd k-means, hard
# M-step, EM, pruning; Eq. 34-37, 40 per set) and fit every set themselves: no nu is given.
# Measured against the golden outputs (torch 2.13 CPU, numpy 1.26), every output of the case,
# the fitted mixtures included: float64 <= 6.5e-15 (mn_group_4d_gC_k3_f64 ggamma), float32
# <= 8.8e-7 (mn_group_4d_gC_k2_f32_relu y), float16 0 (both sides round the same float32
# values; the fit outputs are float32, <= 1.9e-7).

#: ~10x the measured errors; float16: one float16 ulp of the largest entry (2^-10), what one
#: rounding flip of a float32 result costs.
GROUP_TOL = {'float64': 6e-14, 'float32': 9e-6, 'float16': 2.0 ** -10}


def group_cases(golden):
    manifest, arrays = crosscheck.load(golden)
    return [c for c in manifest['cases'] if c['kind'] == 'mn_group'], arrays


def group_errors(golden):
    """{(case, output): (relative error, tolerance)} of the torch reference on every mn_group
    case, required and optional outputs."""
    from mixnorm_chainer.reproduce import torch_reference as tr
    cases, arrays = group_cases(golden)
    result = {}
    for case in cases:
        got = tr.crosscheck_impl(case, crosscheck.case_inputs(case, arrays))
        for key in list(case['outputs']) + list(case['optional_outputs']):
            expected = arrays[f"{case['name']}/{key}"]
            result[case['name'], key] = (rel_err(got[key], expected),
                                         GROUP_TOL[str(expected.dtype)])
    return result


def test_group_cases_cover_sets_components_and_degenerate_inputs(golden):
    cases, arrays = group_cases(golden)
    assert len(cases) == 16
    opts = [c['options'] for c in cases]
    channels = {c['name']: c['shape'][1] for c in cases}
    assert {o['groups'] for o in opts} == {1, 2, 4}
    assert any(c['options']['groups'] == channels[c['name']] for c in cases)   # G = C
    assert {o['n_components'] for o in opts} == {1, 2, 3}
    assert {c['dtype'] for c in cases} == {'float64', 'float32', 'float16'}
    assert {c['layout'] for c in cases} == {'NCHW', 'NC'}
    assert any(c['shape'][0] == 1 for c in cases)                              # batch of one
    assert {(o['affine'], o['activation']) for o in opts} == {
        ('output', None), ('output', 'relu'), ('statistics', None)}
    assert any(o['sample_fraction'] < 1 and o['kmeans_iters'] == o['em_iters'] == 2
               for o in opts)
    specials = {kind for c in cases for kind in c['special_sets'].values()}
    assert specials == {'constant', 'zeros', 'mostly_zero'}
    # pruning: empty components of the degenerate sets, and real ones (min_weight 0.2)
    pruned = {c['name'] for c in cases if min(c['kept_components']) < c['options']['n_components']}
    assert pruned == {'mn_group_4d_g2_k3_f64_degenerate', 'mn_group_4d_g2_k2_f64_degenerate_relu',
                      'mn_group_4d_g2_k3_f64_pruned'}
    for case in cases:
        o = case['options']
        x = arrays[case['name'] + '/x']
        S = x.shape[0] * o['groups']
        assert case['modes'] == ['train', 'test']
        assert case['optional_outputs']['responsibilities']['shape'] == [
            S, o['n_components'], x.size // S]
        assert o['layer_em_iters'] == o['kmeans_iters'] + o['em_iters']
        weights_ = arrays[case['name'] + '/fit_weights']
        assert list((weights_ > 0).sum(axis=1)) == case['kept_components']
        # training mode = test mode: the link in test mode gives the golden y bit for bit
        link = mn.MixtureGroupNormalization(
            o['groups'], x.shape[1], n_components=o['n_components'], eps=o['eps'],
            em_iters=o['layer_em_iters'], kmeans_iters=o['kmeans_iters'],
            min_weight=o['min_weight'], reg_covar=o['reg_covar'],
            sample_fraction=o['sample_fraction'], activation=o['activation'],
            affine=o['affine'], dtype=x.dtype)
        link.gamma.array[...] = arrays[case['name'] + '/gamma']
        link.beta.array[...] = arrays[case['name'] + '/beta']
        with chainer.using_config('train', False):
            numpy.testing.assert_array_equal(link(x).array, arrays[case['name'] + '/y'])
        assert numpy.isfinite(arrays[case['name'] + '/gx']).all()


def test_torch_reference_reproduces_the_group_cases(torch, golden):
    errors = group_errors(golden)
    assert len({c for c, _ in errors}) == 16 and len(errors) == 16 * 8
    bad = {k: v for k, v in errors.items() if not v[0] <= v[1]}
    assert not bad, bad


def test_group_k1_cases_are_torch_group_norm(torch, golden):
    cases, arrays = group_cases(golden)
    k1 = [c for c in cases if c['options']['n_components'] == 1]
    assert len(k1) == 2
    for case in k1:
        o = case['options']
        assert case['torch_equivalent'].startswith('torch.nn.functional.group_norm(x, ')
        inp = {k: torch.tensor(v, requires_grad=True)
               for k, v in crosscheck.case_inputs(case, arrays).items() if k != 'gy'}
        y = torch.nn.functional.group_norm(inp['x'], o['groups'], inp['gamma'], inp['beta'],
                                           eps=o['eps'])
        y.backward(torch.as_tensor(arrays[case['name'] + '/gy']))
        got = {'y': y, 'gx': inp['x'].grad, 'ggamma': inp['gamma'].grad,
               'gbeta': inp['beta'].grad}
        for key, value in got.items():
            expected = arrays[f"{case['name']}/{key}"]
            # measured <= 6.4e-16 (float64), 1.2e-7 (float32): tolerances ~10x
            tol = {'float64': 6e-15, 'float32': 1.2e-6}[str(expected.dtype)]
            assert rel_err(value.detach().numpy(), expected) <= tol, (case['name'], key)


def test_group_float32_fits_are_far_from_ties(torch, golden):
    """The float32 cases' mixtures, fitted again in float64, give the same responsibilities
    (every discrete decision of the fit has a margin): measured 1.2e-6, so a float64
    implementation can check its fit on them too."""
    from mixnorm_chainer.reproduce import torch_reference as tr
    cases, arrays = group_cases(golden)
    for case in cases:
        if case['dtype'] == 'float64':
            continue
        o = case['options']
        x = torch.as_tensor(arrays[case['name'] + '/x'].astype(numpy.float64))
        *_, nu = tr.fit_group_mixtures(x, o['groups'], o['n_components'],
                                       kmeans_iters=o['kmeans_iters'], em_iters=o['em_iters'],
                                       sample_fraction=o['sample_fraction'],
                                       min_weight=o['min_weight'], reg_covar=o['reg_covar'])
        assert rel_err(nu.numpy(), arrays[case['name'] + '/responsibilities']) < 1.2e-5


def _strided_groups(x, groups):
    """(N, C, *S) -> (N, C/G, G, *S) -> (N, G, C/G, *S): group g holds channels g, g + G, ..."""
    N, C = x.shape[:2]
    return x.reshape((N, C // groups, groups) + tuple(x.shape[2:])).transpose(1, 2)


def _group_plant(name):
    """[(attribute of torch_reference, replacement)] of a deliberate error."""
    from mixnorm_chainer.reproduce import torch_reference as tr
    if name == 'seed_k_over_K':          # seeds at the k/K quantile instead of (k + 1/2)/K
        return [('seed_rank', lambda k, n, K: k * n // K)]
    if name == 'ties_to_higher_k':       # k-means ties go to the higher component
        lower = tr._nearest

        def nearest(values, centres, live):
            label = lower(values, centres[::-1], live[::-1])
            return len(centres) - 1 - label
        return [('_nearest', nearest)]
    if name == 'strided_groups':         # group g = channels g, g + G, g + 2G, ... instead of
        def group_sets(x, groups):       # g*C/G..(g+1)*C/G-1 (the same for G = 1 and G = C)
            return _strided_groups(x, groups).reshape(x.shape[0] * groups, -1)

        def ungroup_sets(sets, shape, groups):
            N, C = shape[:2]
            blocks = sets.reshape((N, groups, C // groups) + tuple(shape[2:]))
            return blocks.transpose(1, 2).reshape(shape)
        return [('group_sets', group_sets), ('ungroup_sets', ungroup_sets)]
    raise ValueError(name)


#: which cases each planted error fails (measured: 14 cases / 102 of 128 outputs, 11 / 78,
#: 2 / 8): every case with K > 1 (K = 1 has one centre, which one Lloyd step moves to the mean
#: wherever it starts); every case with 1 < G < C (for G = 1 and G = C the two groupings are
#: the same); the two cases whose degenerate sets put tied values on duplicate seeds (there
#: only the fitted mixtures' component order changes, so only the fit outputs fail).
GROUP_PLANTS = {
    'seed_k_over_K': lambda case: case['options']['n_components'] > 1,
    'strided_groups': lambda case: 1 < case['options']['groups'] < case['shape'][1],
    'ties_to_higher_k': lambda case: case['name'].endswith(('_degenerate', '_degenerate_relu')),
}


@pytest.mark.parametrize('plant', sorted(GROUP_PLANTS))
def test_a_planted_error_in_the_torch_reference_fails_the_group_cases(torch, golden, plant,
                                                                      monkeypatch, capsys):
    from mixnorm_chainer.reproduce import torch_reference as tr
    for attribute, replacement in _group_plant(plant):
        monkeypatch.setattr(tr, attribute, replacement)
    code = crosscheck.main(['compare', golden, '--impl',
                            'mixnorm_chainer.reproduce.torch_reference:crosscheck_impl',
                            '--cases', 'mn_group*'])
    lines = capsys.readouterr().out.splitlines()
    failed_rows = [line.split()[:2] for line in lines
                   if line.startswith('mn_group') and line.split()[-1] == 'FAIL']
    cases, _ = group_cases(golden)
    assert code == 1
    assert {c for c, _ in failed_rows} == {c['name'] for c in cases if GROUP_PLANTS[plant](c)}
    failed_y = {c for c, k in failed_rows if k == 'y'}
    if plant == 'ties_to_higher_k':
        # the tie rule decides which component index takes the tied values: the fit outputs
        # (component order) fail, while y and the gradients do not depend on the labelling
        assert not failed_y
        assert {k for _, k in failed_rows} == {'fit_weights', 'fit_means', 'fit_variances',
                                               'responsibilities'}
    else:                                # the layer's output itself fails
        assert failed_y == {c for c, _ in failed_rows}


def test_manifest_states_the_group_contract(golden):
    manifest, _ = crosscheck.load(golden)
    assert manifest['group_mode'] == list(crosscheck.GROUP_MODE)
    text = ' '.join(manifest['group_mode'])
    for phrase in ('set s = n*G + g', 'channels g*C/G..(g+1)*C/G-1', 'in memory order',
                   'row s of x.reshape(N*G, m)', 'c = the mean of the set',
                   'floor(j * m / n)', 'floor((2k + 1) * n / (2K))', 'a tie to the lower k',
                   'centers + sum(assign * (X - centers)) / counts',
                   'n_k = sum_i r_ik + 10 * eps_machine', 'lambda_k < min_weight',
                   'the lowest k among equal maxima', 'nuhat_ik = nu_ik / n_k (Eq. 36)',
                   'z_ik = gamma_c * (x_i - mu_k) / sqrt(sigma_k^2 + eps) / sqrt(lambda_k) + '
                   'beta_c', 'y_i = sum_k nu_ik * ReLU(z_ik)', 'Training mode = test mode',
                   'torch.nn.functional.group_norm'):
        assert phrase in text, phrase
    for eq in ('Eq. 8', 'Eq. 9', 'Eq. 10', 'Eq. 31', 'Eq. 34', 'Eq. 35', 'Eq. 36', 'Eq. 37',
               'Eq. 40', 'Section 3.2', 'Section 5.3'):
        assert eq in text, eq
    with open(os.path.join(DOCS, 'crosscheck.md')) as f:
        docs = ' '.join(f.read().split())
    for entry in manifest['group_mode']:
        assert ' '.join(entry.split()) in docs, entry[:60]


def test_torch_reference_float16_is_computed_in_float32_and_rounded(torch):
    from mixnorm_chainer.reproduce import torch_reference as tr
    x, gamma, beta, nu, gy = make_inputs((4, 3, 5, 6), 3, seed=3)
    half = [torch.tensor(a.astype(numpy.float16), requires_grad=True) for a in (x, gamma, beta)]
    single = [torch.tensor(a.astype(numpy.float16).astype(numpy.float32), requires_grad=True)
              for a in (x, gamma, beta)]
    nu32 = torch.tensor(nu.astype(numpy.float32))
    y16 = tr.mixture_normalization(*half, nu32)
    y32 = tr.mixture_normalization(*single, nu32)
    assert y16.dtype == torch.float16 and y32.dtype == torch.float32
    g16 = torch.tensor(gy.astype(numpy.float16))
    y16.backward(g16)
    y32.backward(g16.float())
    assert torch.equal(y16, y32.detach().half())
    for a, b in zip(half, single):
        assert a.grad.dtype == torch.float16
        assert torch.equal(a.grad, b.grad.half())


def docs_torch_example():
    """The PyTorch example of docs/crosscheck.md section 2 (the block using my_mixture_norm)."""
    with open(os.path.join(DOCS, 'crosscheck.md')) as f:
        text = f.read()
    blocks = [b.split('\n', 1)[1] for b in text.split('```python')[1:]]
    block = next(b for b in blocks if 'my_mixture_norm' in b)
    return block.split('```')[0]


def test_docs_torch_example_runs_and_passes_compare(torch, golden, tmp_path, monkeypatch,
                                                    capsys):
    from mixnorm_chainer.reproduce import torch_reference as tr
    seen = set()

    def my_mixture_norm(x, gamma, beta, nu, eps, affine, activation):
        # a foreign implementation that, like many, has no float16 path of its own
        for t in (x, gamma, beta, nu):
            assert t.dtype != torch.float16, 'the example must compute float16 in float32'
            seen.add(t.dtype)
        return tr.mixture_normalization(x, gamma, beta, nu, eps, affine, activation)

    os.symlink(golden, tmp_path / 'golden')
    monkeypatch.chdir(tmp_path)
    exec(compile(docs_torch_example(), 'docs/crosscheck.md', 'exec'),
         {'my_mixture_norm': my_mixture_norm})
    assert seen == {torch.float32, torch.float64}
    with numpy.load('theirs.npz') as z:
        assert z['mn_train_4d_f16/y'].dtype == numpy.float16
        assert z['mn_train_4d_f16/gx'].dtype == numpy.float16
    assert crosscheck.main(['compare', 'golden', 'theirs.npz', '--cases', '*_train*']) == 0
    assert 'FAIL' not in capsys.readouterr().out


def test_compare_usage_errors(golden, tmp_path):
    with pytest.raises(SystemExit) as e:
        crosscheck.main(['compare', golden])                       # neither npz nor --impl
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        crosscheck.main(['compare', str(tmp_path), 'x.npz'])      # not an export directory
    assert e.value.code == 2
    with pytest.raises(ValueError, match='module:callable'):
        crosscheck.load_callable('no_colon')


def test_errors_flag_shape_and_non_finite_mismatch():
    a = numpy.array([1.0, 2.0, 4.0])
    assert crosscheck.errors(a, a) == (0.0, 0.0)
    assert crosscheck.errors(a[:2], a)[1] == numpy.inf
    assert crosscheck.errors(numpy.array([1.0, numpy.nan, 4.0]), a)[1] == numpy.inf
    max_abs, rel = crosscheck.errors(a + numpy.array([0, 0, 0.04]), a)
    assert max_abs == pytest.approx(0.04) and rel == pytest.approx(0.01)


def test_console_entry_runs_as_a_module(golden):
    proc = subprocess.run([sys.executable, '-m', 'mixnorm_chainer.reproduce.crosscheck', 'compare',
                           golden,
                           '--impl', 'mixnorm_chainer.reproduce.crosscheck:_missing_impl'],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and 'has no attribute' in proc.stderr
    proc = subprocess.run([sys.executable, '-m', 'mixnorm_chainer.reproduce.crosscheck', '--help'],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and 'export' in proc.stdout and 'compare' in proc.stdout


# -- weights: CifarCNN <-> torch-style state dict ------------------------------------------

TORCH_NAMES = [
    ('conv1.weight', (64, 3, 5, 5)), ('conv1_norm.weight', (64,)), ('conv1_norm.bias', (64,)),
    ('conv1_norm.running_mean', (64,)), ('conv1_norm.running_var', (64,)),
    ('conv1_norm.num_batches_tracked', ()),
    ('conv2.weight', (128, 64, 5, 5)), ('conv2_norm.weight', (128,)),
    ('conv2_norm.bias', (128,)), ('conv2_norm.running_mean', (128,)),
    ('conv2_norm.running_var', (128,)), ('conv2_norm.num_batches_tracked', ()),
    ('conv3.weight', (128, 128, 5, 5)), ('conv3_norm.weight', (128,)),
    ('conv3_norm.bias', (128,)), ('conv3_norm.queue_weights', (10, 3)),
    ('conv3_norm.queue_means', (10, 3, 128)), ('conv3_norm.queue_variances', (10, 3, 128)),
    ('conv3_norm.queue_fit_weights', (10, 3)), ('conv3_norm.queue_fit_means', (10, 3, 128)),
    ('conv3_norm.queue_fit_variances', (10, 3, 128)), ('conv3_norm.queue_count', ()),
    ('conv4.weight', (256, 128, 3, 3)), ('conv4_norm.weight', (256,)),
    ('conv4_norm.bias', (256,)), ('conv4_norm.running_mean', (256,)),
    ('conv4_norm.running_var', (256,)), ('conv4_norm.num_batches_tracked', ()),
    ('linear.weight', (10, 256)), ('linear.bias', (10,)),
]


def trained_cnn(dtype=numpy.float32, steps=2, seed=0):
    with chainer.using_config('dtype', dtype):
        model = CifarCNN(mn_layers=('conv3',), seed=seed)
    rng = numpy.random.default_rng(seed)
    opt = chainer.optimizers.SGD(0.01)
    opt.setup(model)
    for _ in range(steps):
        x = rng.normal(size=(8, 3, 16, 16)).astype(dtype)
        loss = F.softmax_cross_entropy(model(x), rng.integers(0, 10, size=8))
        model.cleargrads()
        loss.backward()
        opt.update()
    return model


@pytest.fixture(scope='module')
def cnn_file(tmp_path_factory):
    model = trained_cnn()
    path = str(tmp_path_factory.mktemp('weights') / 'cifar_cnn.npz')
    weights.save_npz(model, path)
    return model, path


def test_state_dict_names_and_layouts_follow_torch(cnn_file):
    model, path = cnn_file
    state, meta = weights.read_npz(path)
    assert [(k, v.shape) for k, v in state.items()] == TORCH_NAMES
    for key in state:
        if key.endswith(('num_batches_tracked', 'queue_count')):
            assert state[key].dtype == numpy.int64
        elif '.queue_' in key:                     # the MN queue is float64 in any model
            assert state[key].dtype == numpy.float64
        else:
            assert state[key].dtype == numpy.float32
    # Chainer's N counts only finetune passes (0 after ordinary training); it maps 1:1.
    assert int(state['conv1_norm.num_batches_tracked']) == model.conv1_norm.N == 0
    assert int(state['conv3_norm.queue_count']) == 2
    numpy.testing.assert_array_equal(state['conv1_norm.running_var'], model.conv1_norm.avg_var)
    numpy.testing.assert_array_equal(state['conv2.weight'], model.conv2.W.array)
    numpy.testing.assert_array_equal(state['conv3_norm.weight'], model.conv3_norm.gamma.array)
    assert meta['mn_layers'] == ['conv3'] and meta['model'] == 'CifarCNN'
    assert meta['mn_options']['conv3_norm']['activation'] == 'relu'
    assert meta['bn_options']['conv1_norm'] == {'eps': 2e-5, 'decay': 0.9}
    with numpy.load(path) as z:                      # the metadata is the one extra key
        assert set(z.files) == set(state) | {weights.METADATA_KEY}


def test_weight_round_trip_gives_identical_outputs(cnn_file):
    model, path = cnn_file
    fresh = CifarCNN(mn_layers=('conv3',), seed=123)
    weights.load_npz(fresh, path)
    state, _ = weights.export_state_dict(fresh)
    saved, _ = weights.read_npz(path)
    for key in saved:
        numpy.testing.assert_array_equal(state[key], saved[key], err_msg=key)
    x = numpy.random.default_rng(9).normal(size=(4, 3, 16, 16)).astype(numpy.float32)
    with chainer.using_config('train', False):
        numpy.testing.assert_array_equal(fresh(x).array, model(x).array)
    # Training mode too: the MN layer's random generator travels in the metadata. (On a copy:
    # a training pass changes the model's queue and BN averages.)
    original = copy.deepcopy(model)
    y_train = fresh(x).array
    numpy.testing.assert_array_equal(y_train, original(x).array)
    assert fresh.conv3_norm.queue.count == 3
    numpy.testing.assert_array_equal(fresh.conv3_norm.queue.means,
                                     original.conv3_norm.queue.means)


def test_import_mismatch_is_a_clear_error(cnn_file):
    _, path = cnn_file
    with pytest.raises(ValueError, match='missing keys.*queue_weights'):
        weights.load_npz(CifarCNN(mn_layers=('conv2',)), path)
    with pytest.raises(ValueError, match=r'linear.weight: expected float \(100, 256\)'):
        weights.load_npz(CifarCNN(n_classes=100, mn_layers=('conv3',)), path)
    state, _ = weights.read_npz(path)
    state['conv1_norm.num_batches_tracked'] = numpy.float32(2)
    with pytest.raises(ValueError, match='integer scalar'):
        weights.import_state_dict(CifarCNN(mn_layers=('conv3',)), state)
    with pytest.raises(ValueError, match=r'queue_weights: expected float \(5, 3\)'):
        weights.load_npz(CifarCNN(mn_layers=('conv3',), queue_length=5), path)


def test_unsupported_link_is_a_clear_error():
    import chainer.links as L
    chain = chainer.Sequential(L.Linear(3, 4), L.LayerNormalization(4))
    with pytest.raises(ValueError, match='LayerNormalization'):
        weights.export_state_dict(chain)


def test_torch_cifar_cnn_from_exported_weights_matches_test_mode(torch, tmp_path):
    from mixnorm_chainer.reproduce import torch_reference as tr
    model = trained_cnn(numpy.float64, steps=2, seed=1)
    path = str(tmp_path / 'w64.npz')
    weights.save_npz(model, path)
    state, meta = weights.read_npz(path)
    torch_model = tr.build_cifar_cnn(state, meta).eval()       # load_state_dict(strict=True)
    assert dict(torch_model.state_dict()).keys() == state.keys()
    x = numpy.random.default_rng(2).normal(size=(4, 3, 16, 16))
    with chainer.using_config('train', False):
        ours = model(x).array
    with torch.no_grad():
        theirs = torch_model(torch.as_tensor(x)).numpy()
    assert rel_err(theirs, ours) < 1e-12


def test_manifest_json_is_plain(golden):
    with open(os.path.join(golden, crosscheck.MANIFEST_FILE)) as f:
        manifest = json.load(f)
    assert manifest['tolerances'] == crosscheck.TOLERANCES
    assert manifest['key_format'] == '<case name>/<array name>'
