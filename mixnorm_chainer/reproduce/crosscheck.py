"""Golden vectors for cross-checking other implementations of MN (``mixnorm-crosscheck``).

``mixnorm-crosscheck export DIR`` writes ``DIR/cases.npz`` (every array, keyed
``"<case>/<name>"``) and ``DIR/manifest.json`` (one entry per case: kind, equation, shape,
dtype, layout, options, and which arrays are inputs, outputs and optional outputs).
``mixnorm-crosscheck compare DIR OTHER.npz`` compares another implementation's outputs (same
keys) with the expected ones and prints a per-case table of max absolute and relative errors;
``--impl module:callable`` calls a Python callable ``fn(case, inputs) -> {name: array}`` instead
(e.g. ``mixnorm_chainer.reproduce.torch_reference:crosscheck_impl``). Exit status: 0 when
every compared output is within its dtype's tolerance, 1 otherwise. The cases are built by
:mod:`mixnorm_chainer.reproduce.crosscheck_cases`.

Case kinds (arrays in NCHW / (N, C) layout; "rows" are ``x.transpose(0, 2, 3, 1).reshape(-1, C)``):

* ``mn_train``: Eq. 34-36 with given responsibilities nu (from a GMM fitted to the rows with a
  fixed seed); ``affine='statistics'`` is Eq. 37, ``activation='relu'`` Eq. 40. Inputs
  ``x, gamma, beta, nu, gy``; outputs ``y`` and the gradients ``gx, ggamma, gbeta`` for the
  upstream gradient ``gy`` (nu is a constant); optional outputs the components' statistics
  ``weights`` (lambda), ``means``, ``variances`` (Eq. 35-36). ``bn_*`` cases have K = 1
  (nu = 1), which is batch normalization. The manifest's ``training_mode``
  (:data:`TRAINING_MODE`) spells out the transform step by step, as ``test_mode`` does for
  test mode.
* ``mn_test``: Eq. 38-39 over a queue (``form`` 'consistent' or 'printed'); inputs ``x, gamma,
  beta, queue_weights (T, K), queue_means (T, K, C), queue_variances (T, K, C)`` (the
  transform's statistics, Eq. 35-36), ``queue_fit_weights, queue_fit_means,
  queue_fit_variances`` (same shapes: the fitted mixtures whose densities give the posterior)
  and ``gy``; outputs ``y, gx, ggamma, gbeta`` (the posterior rho and the queue are constants);
  optional ``posterior`` (m, n_present*K), newest n_present entries, oldest first.
* ``mn_group``: Mixture Group Normalization, MN over the per-sample sets of GN (G groups; G = 1
  is mixture layer normalization, G = C mixture instance normalization): every set's
  univariate mixture is fitted deterministically (mean centring, quantile seeds, k-means, EM,
  pruning) and is part of the case, so there is no nu input. Inputs ``x, gamma, beta, gy``;
  outputs ``y, gx, ggamma, gbeta`` (nu constant); optional the fitted mixtures
  ``fit_weights, fit_means, fit_variances`` (N*G, K) (0 where pruned) and ``responsibilities``
  (N*G, K, m). Training and test mode are the same transform. The manifest's ``group_mode``
  (:data:`GROUP_MODE`) states how the sets are formed, the fit and the transform.
* ``gmm_em``: EM iterations from a given initialization (deterministic): inputs ``X,
  init_weights, init_means, init_variances``; outputs the parameters after each iteration
  (stacked on axis 0) and the mean log-likelihood at each E-step.
* ``gmm_fit``: a seeded fit (k-means++ seeding, k-means, EM, pruning). Its draws depend on this
  package's RNG use, so the fitted mixture is an *input*: outputs are what follows from it
  deterministically (``responsibilities``, Eq. 31; per-row ``log_likelihood``, Eq. 26). A
  foreign fit of the same X with the manifest's options can report its own mean log-likelihood
  as the optional ``fit_score``: that is compared with the looser ``loglik`` tolerance.

Tolerances: the relative error of an output is ``max|other - expected| / max|expected|``
(normwise, so entries near zero do not blow it up); see :data:`TOLERANCES`.
"""
import fnmatch
import importlib
import json
import os
import sys

import numpy

from mixnorm_chainer.reproduce.arguments import ArgumentParser, positive_float
from mixnorm_chainer.reproduce.crosscheck_cases import build_cases

FORMAT_VERSION = 2
CASES_FILE = 'cases.npz'
MANIFEST_FILE = 'manifest.json'

#: Max normwise relative error allowed per dtype of the expected output (see the README):
#: float64 ~ 1e4 x its unit roundoff 1.1e-16 (sums over m <= 200 rows, 1/sqrt(var + eps)
#: conditioning, exp of log-densities of size ~10); float32 ~ 1e3 x 6e-8, since a float32
#: implementation's rounding differs from ours at that level (measured <= 2e-6 vs the torch
#: reference); float16 outputs are float32 results rounded to float16, so two correct ones can
#: differ by one float16 ulp (2^-10 relative to the largest entry) plus float32 noise: 2e-3.
#: ``loglik`` is for a foreign seeded GMM fit's mean log-likelihood: on the exported,
#: well-separated clusters any k-means++ seeding finds the same partition (scikit-learn's
#: GaussianMixture, 5 seeds, agreed with ours to 4e-15), so 1e-5 allows a float32 fit.
TOLERANCES = {'float64': 1e-10, 'float32': 1e-4, 'float16': 2e-3, 'loglik': 1e-5}

LAYOUT = ('x is (N, C) or (N, C, H, W) (NCHW); rows are x.transpose(0, 2, 3, 1).reshape(-1, C) '
          '(for (N, C): x itself); nu/posterior/responsibilities are (m, K) in that row order; '
          'mn_group cases: sets are the rows of x.reshape(N*G, m) and their responsibilities '
          '(N*G, K, m)')

#: The training transform of the ``mn_train`` cases, step by step (the manifest's
#: ``training_mode``; docs/crosscheck.md quotes it, tests/test_crosscheck.py evaluates it in
#: plain numpy against the golden outputs).
TRAINING_MODE = (
    'Inputs: X, the rows (m, C) of x (see layout); gamma, beta (C,); nu (m, K), the '
    'responsibilities of Eq. 31 (stored in the compute dtype; each row sums to 1). nu is an '
    'input, so the transform needs no GMM fit; the fitted mixture that gave nu is not stored '
    '(responsibilities_from records its options; Eq. 31 from a given mixture is checked by the '
    'gmm_fit cases).',
    'Where nu comes from (in the layer; not needed to reproduce the case): nu_ik = '
    'w_k N(x_i | m_k, diag v_k) / sum_j w_j N(x_i | m_j, diag v_j) (Eq. 31, no eps), where '
    'w, m, v are the weights, means and variances of the diagonal GMM fitted to the same rows '
    '(k-means++ seeding, kmeans_iters Lloyd iterations, an M-step on the hard assignment, '
    'em_iters EM iterations, then pruning: components whose fitted weight is < min_weight, '
    'except the largest, are dropped and the rows re-assigned by one E-step and M-step over '
    'the rest). The transform does not use w, m, v: its lambda_k, mu_k, sigma_k^2 below are '
    'recomputed from nu. reg_covar is added to the fitted variances v only: it '
    'changes nu, not the transform. Pruned components are absent from nu (K = nu.shape[1] = '
    'kept_components). With sample_fraction < 1 the fit uses a subset of the rows, but nu is '
    'evaluated on every row.',
    'Per component k = 1..K (Eq. 35-36; sums over all m rows): n_k = sum_i nu_ik; '
    'lambda_k = n_k / m (the mean of column k of nu); nuhat_ik = nu_ik / n_k (Eq. 36); '
    'mu_k = sum_i nuhat_ik x_i; sigma_k^2 = sum_i nuhat_ik (x_i - mu_k)^2 (per channel; the '
    'biased variance, divided by n_k; no eps, no reg_covar). A component with n_k = 0 takes '
    'no part.',
    "affine='output' (the default): xhat^k_i = (x_i - mu_k) / sqrt(sigma_k^2 + eps) (Eq. 35: "
    "eps is added to each channel's variance inside the square root); z_ik = gamma * "
    'xhat^k_i / sqrt(lambda_k) + beta.',
    "affine='statistics' (Eq. 37 as printed: beta shifts every component mean, gamma scales "
    'every component variance): xhat^k_i = (x_i - mu_k - beta) / sqrt(max(gamma * sigma_k^2, '
    '0) + eps), with sigma_k^2 the variance about mu_k as above (beta does not enter it); '
    'z_ik = xhat^k_i / sqrt(lambda_k); there is no output affine.',
    "Output (Eq. 34): y_i = sum_k nu_ik * z_ik; with activation='relu' (Eq. 40): y_i = "
    'sum_k nu_ik * ReLU(z_ik), the ReLU per component before the sum. Without the ReLU and '
    "with affine='output' this is gamma * (sum_k nu_ik / sqrt(lambda_k) * xhat^k_i) + beta, "
    'Eq. 34 followed by the affine, because the rows of nu sum to 1 (beta enters as '
    'sum_k nu_ik * beta).',
    'Gradients: gx, ggamma, gbeta are those of sum(y * gy) through every step above with nu, '
    'hence lambda_k and nuhat_ik, held constant (the stop-gradient of Section 3.2); gx '
    'includes the paths through mu_k and sigma_k^2; where gamma * sigma_k^2 < 0 the max(., 0) '
    'passes no gradient.',
    'Precision and dtypes: the layer subtracts a per-channel constant from the rows before '
    "these sums (the fit's centring shift); nothing above depends on it. float32 cases are "
    'computed in float32; float16 cases: x, gamma, beta, gy are cast to float32 (nu is stored '
    'in float32), the steps above run in float32 and y, gx, ggamma, gbeta are rounded to '
    'float16. The optional outputs weights, means, variances are lambda_k, mu_k, sigma_k^2 '
    '(no eps) in the compute dtype.',
    'K = 1 (bn_* cases, nu = 1): batch normalization with the biased batch variance, '
    'torch.nn.functional.batch_norm(x, None, None, gamma, beta, training=True, eps=eps).',
    'After the transform the layer pushes (lambda, mu, sigma^2), the queue_weights, '
    'queue_means, queue_variances of test mode, and the fitted mixture (weights, means, '
    'variances with the reg_covar floor), the queue_fit_* arrays, onto its queue.',
)


#: The ``mn_group`` cases (Mixture Group Normalization), step by step: how the sets are formed,
#: the deterministic fit and the transform (the manifest's ``group_mode``; docs/crosscheck.md
#: quotes it, the torch reference implements it from this text).
GROUP_MODE = (
    'Inputs: x (N, C) or (N, C, H, W), gamma, beta (C,), gy; options groups G (C divisible by '
    'G), n_components K, kmeans_iters, em_iters, sample_fraction, min_weight, reg_covar, eps, '
    'affine, activation. There is no nu input: each set\'s mixture is a deterministic function '
    'of that set (no random draws), computed below.',
    'Sets: for every sample n and group g, the set s = n*G + g holds the m = (C/G)*H*W values '
    'of channels g*C/G..(g+1)*C/G-1 of sample n (m = C/G for (N, C) input), in memory order: '
    'set s is row s of x.reshape(N*G, m) (C order: channel, then row, then column). G = 1 is '
    'mixture layer normalization (Eq. 8), G = C mixture instance normalization (Eq. 9), other '
    'G mixture group normalization (Eq. 10). Each set is fitted and normalized on its own, so '
    "a sample's output does not depend on the rest of the batch. The order within a set "
    'matters only to the subset of sample_fraction < 1.',
    'The fit runs in the compute dtype (float64 for float64 x, float32 for float32 and '
    'float16 x), one set at a time: c = the mean of the set, x_i <- x_i - c (fitted means are '
    'reported as mu_k + c); n = min(m, max(K, ceil(sample_fraction * m))) values, those at '
    'positions floor(j * m / n), j = 0..n-1 (all m when n = m), are the fit\'s subset.',
    'Seeding (deterministic, in place of k-means++): the initial centre of component k = '
    '0..K-1 is the value of 0-based rank floor((2k + 1) * n / (2K)) among the n sorted subset '
    'values, the (k + 1/2)/K quantile taken from the data (no interpolation); equal values '
    'give equal (duplicate) centres.',
    'k-means: kmeans_iters Lloyd iterations; each value goes to the nearest centre by (x_i - '
    'c_k)^2, a tie to the lower k; then every centre moves by the mean offset of its values, '
    'centers + sum(assign * (X - centers)) / counts, i.e. c_k <- c_k + sum_{i in k} (x_i - c_k) '
    '/ count_k; a centre that got no value keeps its place.',
    'Initial mixture: each value\'s hard assignment r_ik (1 for the nearest of the final '
    'centres, a tie to the lower k) and the M-step: n_k = sum_i r_ik + 10 * eps_machine (of '
    'the compute dtype: 2.2e-16 or 1.19e-7), lambda_k = n_k / sum_j n_j, mu_k = sum_i r_ik x_i '
    '/ n_k, sigma_k^2 = sum_i r_ik (x_i - mu_k)^2 / n_k + reg_covar (two-pass, about mu_k). An '
    'empty component gets mu_k = 0 (the set mean), sigma_k^2 = reg_covar and a weight of '
    '~10 eps_machine / n.',
    'EM: em_iters iterations of the E-step nu_ik = lambda_k N(x_i | mu_k, sigma_k^2) / sum_j '
    'lambda_j N(x_i | mu_j, sigma_j^2) (Eq. 31, log domain, over the live components, no eps) '
    'and the M-step above with r = nu.',
    'Pruning (Section 5.3), when min_weight > 0: components with lambda_k < min_weight are '
    'dropped, except the heaviest (the lowest k among equal maxima); a set that dropped any '
    'runs one E-step over its remaining components and one M-step (n_k, lambda_k over those '
    'only). Sets that drop none keep their mixture. kept_components records how many each '
    'set kept.',
    'Responsibilities: nu (N*G, K, m) is the E-step of all m values of the set (not only the '
    'subset) under the final mixture; 0 for a pruned component. Optional outputs: '
    'fit_weights (lambda, 0 if pruned), fit_means (mu_k + c, 0 if pruned), fit_variances '
    '(sigma_k^2 including reg_covar, 0 if pruned), each (N*G, K), and responsibilities.',
    'Transform, per set and per component k with n_k = sum_i nu_ik > 0 (sums over the m '
    'values of the set; a component with n_k = 0 takes no part): lambda_k = n_k / m; nuhat_ik '
    '= nu_ik / n_k (Eq. 36); mu_k = sum_i nuhat_ik x_i; sigma_k^2 = sum_i nuhat_ik (x_i - '
    "mu_k)^2 (Eq. 35; recomputed from nu, not the fit's: biased, no eps, no reg_covar).",
    "affine='output': z_ik = gamma_c * (x_i - mu_k) / sqrt(sigma_k^2 + eps) / sqrt(lambda_k) "
    "+ beta_c, with c the channel of value i (per-channel gamma, beta, as in GN); "
    "affine='statistics' (Eq. 37 as printed): z_ik = (x_i - mu_k - beta_c) / sqrt(max(gamma_c "
    '* sigma_k^2, 0) + eps) / sqrt(lambda_k).',
    "Output: y_i = sum_k nu_ik * z_ik (Eq. 34); activation='relu': y_i = sum_k nu_ik * "
    'ReLU(z_ik) (Eq. 40, per component before the sum); y has the shape of x (the inverse of '
    'the reshape into sets).',
    'Gradients: gx, ggamma, gbeta of sum(y * gy) with nu, hence lambda_k, nuhat_ik and the '
    'whole fit (c included), held constant (the stop-gradient of Section 3.2); gx includes the '
    'paths through mu_k and sigma_k^2.',
    'Training mode = test mode: the layer (MixtureGroupNormalization) keeps no queue and no '
    'running statistics and draws no random numbers, so each case holds the output of both '
    'modes (the generator checks that they are bit-identical; the case\'s modes field says '
    'so). '
    'K = 1 is group normalization, torch.nn.functional.group_norm(x, G, gamma, beta, eps) '
    '(torch_equivalent).',
    'Precision and dtypes: the layer subtracts c from the values before the transform too; '
    'nothing above depends on it beyond rounding. float16 x, gamma, beta, gy are cast to '
    'float32, everything runs in float32, and y, gx, ggamma, gbeta are rounded to float16 '
    '(the fit outputs stay float32). Degenerate sets (special_sets: a constant set, all '
    'zeros, a ReLU map of ~85% zeros) give exactly equal values, so their seeds and '
    'assignments are decided by the tie rules above (they decide which component index takes '
    'the tied values, hence the order of the fit outputs; y and the gradients do not depend '
    'on the labelling); every other decision of the cases is far from a tie (the float32 '
    'cases fitted in float64 agree to 1.2e-6).',
)


# -- export -------------------------------------------------------------------------------

def _describe(arrays):
    return {k: {'shape': list(numpy.shape(v)), 'dtype': str(numpy.asarray(v).dtype)}
            for k, v in arrays.items()}


def export(directory):
    """Write ``cases.npz`` and ``manifest.json`` into ``directory``; returns the manifest."""
    os.makedirs(directory, exist_ok=True)
    arrays = {}
    entries = []
    for case in build_cases():
        entry = {k: v for k, v in case.items()
                 if k not in ('inputs', 'outputs', 'optional_outputs')}
        if 'x' in case['inputs']:
            x = case['inputs']['x']
            entry.update(shape=list(x.shape), dtype=str(x.dtype),
                         layout='NCHW' if x.ndim == 4 else 'NC')
        else:
            X = case['inputs']['X']
            entry.update(shape=list(X.shape), dtype=str(X.dtype), layout='rows (m, D)')
        for role in ('inputs', 'outputs', 'optional_outputs'):
            entry[role] = _describe(case[role])
            for k, v in case[role].items():
                arrays[f"{case['name']}/{k}"] = numpy.asarray(v)
        entries.append(entry)
    manifest = {
        'format_version': FORMAT_VERSION,
        'generator': 'mixnorm_chainer.reproduce.crosscheck (Chainer implementation)',
        'arrays_file': CASES_FILE,
        'key_format': '<case name>/<array name>',
        'layout': LAYOUT,
        'gradients': ('gx, ggamma, gbeta are d<y, gy>/d(x, gamma, beta); nu (training, and '
                      'the fitted sets of mn_group) and the posterior rho and queue statistics '
                      '(test mode) are constants'),
        'compute_dtype': 'float16 inputs are computed in float32 and the results rounded to '
                         'float16 (x, gamma, beta, gy cast to float32; y and the gradients '
                         'rounded back)',
        'training_mode': list(TRAINING_MODE),
        'test_mode': ('queue arrays are oldest entry first; only the newest n_present entries '
                      'take part, with tau of Eq. 39 renormalized over them; a component with '
                      'weight 0 (pruned, or an empty slot) takes no part; the posterior rho_tk '
                      'is tau_t queue_fit_weights_tk N(x | queue_fit_means_tk, '
                      'queue_fit_variances_tk) normalized over (t, k) (no eps: the fitted '
                      'variances already include the fit\'s floor); the normalizing factors use '
                      'queue_means and queue_variances + eps; form consistent scales term tk by '
                      '1/sqrt(lambda_tk), '
                      'printed by 1/sqrt(tau_t lambda_tk); output affine: each term is '
                      'gamma * rho_tk/sqrt(s_tk) * xhat^tk + rho_tk * beta (Eq. 40: each term '
                      'rectified)'),
        'group_mode': list(GROUP_MODE),
        'relative_error': 'max|other - expected| / max|expected| per output array',
        'tolerances': TOLERANCES,
        'cases': entries,
    }
    numpy.savez(os.path.join(directory, CASES_FILE), **arrays)
    with open(os.path.join(directory, MANIFEST_FILE), 'w') as f:
        json.dump(manifest, f, indent=1, sort_keys=False, default=_json_default)
        f.write('\n')
    return manifest


def _json_default(v):
    if isinstance(v, numpy.generic):
        return v.item()
    raise TypeError(f'cannot write {type(v)} to JSON')


def load(directory):
    """``(manifest, arrays)`` of an exported directory (arrays: ``{key: ndarray}``)."""
    path = os.path.join(directory, MANIFEST_FILE)
    if not os.path.exists(path):
        raise ValueError(f'{directory!r} has no {MANIFEST_FILE}: run `mixnorm-crosscheck export '
                         f'{directory}` first')
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get('format_version') != FORMAT_VERSION:
        raise ValueError(f'{path}: format_version {manifest.get("format_version")!r}, '
                         f'expected {FORMAT_VERSION}')
    with numpy.load(os.path.join(directory, manifest['arrays_file']), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return manifest, arrays


def case_inputs(case, arrays):
    """The input arrays of a manifest case, by their short names."""
    return {k: arrays[f"{case['name']}/{k}"] for k in case['inputs']}


# -- compare ------------------------------------------------------------------------------

def errors(other, expected):
    """``(max abs error, normwise relative error)``; inf if shapes or non-finite entries differ."""
    other = numpy.asarray(other, dtype=numpy.float64)
    expected = numpy.asarray(expected, dtype=numpy.float64)
    if other.shape != expected.shape:
        return numpy.inf, numpy.inf
    fin = numpy.isfinite(expected)
    if not numpy.array_equal(fin, numpy.isfinite(other)):
        return numpy.inf, numpy.inf
    if not fin.any():
        return 0.0, 0.0
    diff = numpy.abs(other[fin] - expected[fin])
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(numpy.abs(expected[fin]).max()) if diff.size else 0.0
    return max_abs, (max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else numpy.inf))


def compare(manifest, arrays, other, cases='*', allow_missing=False, tol_scale=1.0):
    """Rows ``(case, output, dtype, max_abs, rel, tol, status)`` for every compared output.

    ``other(case) -> {name: array} or None`` supplies the other implementation's outputs.
    status is 'ok', 'FAIL', 'MISSING' (a failure unless ``allow_missing``) or 'skipped'
    (an optional output that was not supplied).
    """
    rows = []
    for case in manifest['cases']:
        if not fnmatch.fnmatch(case['name'], cases):
            continue
        got = other(case) or {}
        optional_tol = case.get('optional_tolerance', {})
        for role in ('outputs', 'optional_outputs'):
            for key, desc in case[role].items():
                expected = arrays[f"{case['name']}/{key}"]
                tol_name = optional_tol.get(key, desc['dtype'])
                tol = TOLERANCES[tol_name] * tol_scale
                if key not in got or got[key] is None:
                    status = ('skipped' if role == 'optional_outputs'
                              else 'missing' if allow_missing else 'MISSING')
                    rows.append((case['name'], key, tol_name, None, None, tol, status))
                    continue
                max_abs, rel = errors(got[key], expected)
                rows.append((case['name'], key, tol_name, max_abs, rel, tol,
                             'ok' if rel <= tol else 'FAIL'))
    return rows


def format_table(rows, show_skipped=False):
    """The per-output table; optional outputs the other side did not supply are left out
    unless ``show_skipped``."""
    rows = [r for r in rows if show_skipped or r[-1] != 'skipped']
    head = ('case', 'output', 'tol. of', 'max abs err', 'max rel err', 'tolerance', 'status')
    body = [(c, k, d, '-' if a is None else f'{a:.3e}', '-' if r is None else f'{r:.3e}',
             f'{t:.0e}', s) for c, k, d, a, r, t, s in rows]
    widths = [max(len(str(line[i])) for line in [head] + body) for i in range(len(head))]
    lines = ['  '.join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip()
             for line in [head] + body]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def failed(rows):
    return [r for r in rows if r[-1] in ('FAIL', 'MISSING')]


def load_callable(spec):
    """``'package.module:callable'`` -> the callable."""
    module_name, sep, attr = spec.partition(':')
    if not sep or not module_name or not attr:
        raise ValueError(f'--impl must look like module:callable; got {spec!r}')
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f'--impl {spec!r}: cannot import {module_name!r}: {e}') from e
    for part in attr.split('.'):
        if not hasattr(obj, part):
            raise ValueError(f'--impl {spec!r}: {module_name!r} has no attribute {attr!r}')
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f'--impl {spec!r} is not callable')
    return obj


def _from_npz(path, manifest):
    with numpy.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    names = {c['name'] for c in manifest['cases']}
    unknown = sorted({k.split('/')[0] for k in data} - names)
    if unknown:
        print(f'note: {path} has arrays for cases not in the manifest: {unknown}',
              file=sys.stderr)

    def other(case):
        prefix = case['name'] + '/'
        return {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
    return other


def _from_impl(fn, arrays, save=None):
    def other(case):
        out = fn(case, case_inputs(case, arrays))
        if out is not None and save is not None:
            save.update({f"{case['name']}/{k}": numpy.asarray(v) for k, v in out.items()})
        return out
    return other


def _checked_outputs(other, arrays, source, shape_notes):
    """``other`` whose outputs must be numeric arrays (else a one-line ValueError naming the
    array); outputs whose shape differs from the expected one are noted in ``shape_notes``."""
    def checked(case):
        got = other(case)
        if got is None:
            return None
        for key, value in got.items():
            if value is None:
                continue
            name = f"{case['name']}/{key}"
            try:
                arr = numpy.asarray(value)
            except Exception as e:          # ragged lists and the like
                raise ValueError(f'{source}: {name} is not an array ({e})') from None
            if arr.dtype.kind not in 'biuf':
                raise ValueError(f'{source}: {name} has dtype {arr.dtype}; outputs must be '
                                 'numeric (float or integer) arrays')
            if name in arrays and arr.shape != arrays[name].shape:
                shape_notes.append(f'{name}: shape {arr.shape}, expected '
                                   f'{arrays[name].shape}')
        return got
    return checked


def main(argv=None):
    import zipfile
    parser = ArgumentParser(
        prog='mixnorm-crosscheck',
        description='Golden vectors of Mixture Normalization and a comparison against another '
                    'implementation (e.g. PyTorch).')
    sub = parser.add_subparsers(dest='command', required=True)
    p_exp = sub.add_parser('export', help='write DIR/cases.npz and DIR/manifest.json')
    p_exp.add_argument('directory')
    p_cmp = sub.add_parser('compare', help="compare another implementation's outputs")
    p_cmp.add_argument('directory', help='a directory written by export')
    p_cmp.add_argument('other', nargs='?', help='.npz of outputs keyed "<case>/<output>"')
    p_cmp.add_argument('--impl', help='module:callable, called as fn(case, inputs) -> outputs')
    p_cmp.add_argument('--cases', default='*', help='only cases matching this glob')
    p_cmp.add_argument('--allow-missing', action='store_true',
                       help='cases/outputs the other side lacks are not failures')
    p_cmp.add_argument('--tol-scale', type=positive_float, default=1.0,
                       help='multiply every tolerance by this factor (> 0)')
    p_cmp.add_argument('--save', help='with --impl: write its outputs to this .npz')
    p_cmp.add_argument('--verbose', action='store_true',
                       help='also list optional outputs the other side did not supply')
    args = parser.parse_args(argv)

    if args.command == 'export':
        if os.path.exists(args.directory) and not os.path.isdir(args.directory):
            parser.error(f'export: {args.directory!r} is a file; give a directory (it is '
                         'created if needed)')
        try:
            manifest = export(args.directory)
        except OSError as e:
            parser.error(f'export: cannot write to {args.directory!r} ({e.strerror or e})')
        n = len(manifest['cases'])
        print(f'wrote {n} cases to {os.path.join(args.directory, CASES_FILE)} and '
              f'{os.path.join(args.directory, MANIFEST_FILE)}')
        return 0

    if (args.other is None) == (args.impl is None):
        parser.error('compare needs exactly one of OTHER.npz or --impl module:callable')
    if args.save and not args.impl:
        parser.error('--save goes with --impl')
    try:
        manifest, arrays = load(args.directory)
    except ValueError as e:
        parser.error(str(e))
    except (OSError, KeyError) as e:
        parser.error(f'{args.directory!r} is not a readable export directory ({e}); run '
                     f'`mixnorm-crosscheck export {args.directory}` again')
    saved = {} if args.save else None
    if args.impl:
        try:
            fn = load_callable(args.impl)
        except ValueError as e:
            parser.error(str(e))
        other = _from_impl(fn, arrays, saved)
        source = args.impl
    else:
        if not os.path.exists(args.other):
            parser.error(f'{args.other!r} does not exist')
        if not zipfile.is_zipfile(args.other):
            parser.error(f'{args.other!r} is not an .npz file (numpy.savez writes one: keys '
                         '"<case>/<output>")')
        try:
            other = _from_npz(args.other, manifest)
        except Exception as e:          # not a zip, pickled objects, damaged file, a folder
            parser.error(f'{args.other!r} is not a readable .npz of outputs '
                         f'({type(e).__name__}: {" ".join(str(e).split())})')
        source = args.other
    shape_notes = []
    try:
        rows = compare(manifest, arrays, _checked_outputs(other, arrays, source, shape_notes),
                       args.cases, args.allow_missing, args.tol_scale)
    except ValueError as e:
        print(f'mixnorm-crosscheck: error: {e}', file=sys.stderr)
        return 2
    if not rows:
        parser.error(f'no case matches --cases {args.cases!r}')
    print(format_table(rows, args.verbose))
    for note in shape_notes:
        print(f'shape mismatch: {note} (reported as inf above)')
    if saved is not None:
        try:
            numpy.savez(args.save, **saved)
        except OSError as e:
            print(f'mixnorm-crosscheck: error: --save {args.save}: cannot write '
                  f'({e.strerror or e})', file=sys.stderr)
            return 2
        print(f'wrote the outputs of {args.impl} to {args.save}')
    bad = failed(rows)
    compared = [r for r in rows if r[-1] in ('ok', 'FAIL')]
    n_cases = len({r[0] for r in compared})
    not_supplied = sum(r[-1] in ('skipped', 'missing') for r in rows)
    note = f'; {not_supplied} optional/allowed-missing outputs not supplied' \
        if not_supplied else ''
    if bad:
        shapes = f'; {len(shape_notes)} of wrong shape' if shape_notes else ''
        print(f'FAILED: {len(bad)} of {len(compared) + sum(r[-1] == "MISSING" for r in rows)} '
              f'outputs ({len({r[0] for r in bad})} cases) beyond tolerance or missing'
              f'{shapes}{note}')
        return 1
    print(f'OK: {len(compared)} outputs of {n_cases} cases within tolerance '
          f'(float64 {TOLERANCES["float64"]:.0e}, float32 {TOLERANCES["float32"]:.0e}, '
          f'float16 {TOLERANCES["float16"]:.0e}, relative){note}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
