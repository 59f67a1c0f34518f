"""An independent PyTorch implementation of Mixture Normalization, for cross-checks.

Written from the paper's equations with plain torch operations, one component at a time, and
nothing shared with the Chainer implementation (no row shifting, no fused products, no
hand-written backward): gradients come from torch autograd.

* :func:`mixture_normalization`: the training transform, Eq. 34-36 (+ Eq. 37 with
  ``affine='statistics'``, + Eq. 40 with ``activation='relu'``); the responsibilities nu are a
  constant (detached), as Section 3.2 prescribes. With K = 1 (nu = 1) this is batch
  normalization (:func:`torch.nn.functional.batch_norm` in training mode).
* :func:`queue_normalization`: test mode over a parameter queue, Eq. 38 with the decay
  weights of Eq. 39, in the ``'consistent'`` (1/sqrt(lambda)) or ``'printed'``
  (1/sqrt(tau lambda)) form; the posterior rho is a constant (detached), the queue's
  statistics are constants.
* :func:`em_step`, :func:`gmm_log_likelihood`, :func:`gmm_responsibilities`: the diagonal GMM's
  EM iteration and densities (Eq. 26-27, 31).
* :func:`fit_set_mixture` and :func:`mixture_group_normalization`: Mixture Normalization over
  the per-sample sets of group/layer/instance normalization (Section 2.2, Eq. 8-10; Section
  3.2: "simply by constructing B_i accordingly"): the deterministic one-dimensional fit of one
  set (mean centring, strided subset, quantile seeds, Lloyd k-means, hard M-step, EM, pruning)
  written as a plain loop over its components, and Eq. 34-36 (37, 40) per set with per-channel
  gamma, beta; nu detached. With K = 1 this is :func:`torch.nn.functional.group_norm`.
* :func:`crosscheck_impl`: the ``--impl`` callable of ``mixnorm-crosscheck compare``, e.g.
  ``mixnorm-crosscheck compare DIR --impl
  mixnorm_chainer.reproduce.torch_reference:crosscheck_impl``.
* :func:`build_cifar_cnn`: the paper's CIFAR CNN (Table 1) as a ``torch.nn.Module`` whose
  ``load_state_dict`` takes :func:`mixnorm_chainer.reproduce.weights.export_state_dict`'s names
  (MN layers run in test mode only, Eq. 38, from their exported queue).

torch is imported lazily; without it every function raises an ImportError saying how to install
it (``pip install 'mixnorm-chainer[torch]'``). float16 inputs are computed in float32 and the
results (outputs, and through autograd's casts the gradients) rounded to float16, as the
golden-vector contract says.
"""
import math

import numpy


def require_torch():
    """Import torch, or raise an ImportError that says how to get it."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ImportError(
            'the PyTorch reference needs torch: pip install "mixnorm-chainer[torch]" '
            '(or pip install torch)') from e
    return torch


def _compute_dtype(torch, dtype):
    return torch.float32 if dtype == torch.float16 else dtype


def to_rows(x):
    """(N, C, *S) -> (N*prod(S), C) in the order of ``x.permute(0, 2, 3, 1).reshape(-1, C)``."""
    if x.dim() == 2:
        return x
    perm = (0,) + tuple(range(2, x.dim())) + (1,)
    return x.permute(*perm).reshape(-1, x.shape[1])


def from_rows(rows, shape):
    """Inverse of :func:`to_rows`."""
    if len(shape) == 2:
        return rows
    moved = rows.reshape((shape[0],) + tuple(shape[2:]) + (shape[1],))
    perm = (0, len(shape) - 1) + tuple(range(1, len(shape) - 1))
    return moved.permute(*perm)


def component_term(torch, X, w, n_k, m, g, b, eps, affine, activation, dim):
    """``z_k`` of component k, the term that Eq. 34 weights by nu_ik: over ``dim`` (the m values
    normalized together) ``lambda_k = n_k / m`` (the mean of nu_ik), ``nuhat = w / n_k`` (Eq. 36),
    the nuhat-weighted mean and biased variance (Eq. 35), then ``gamma xhat / sqrt(lambda_k) +
    beta`` or Eq. 37 as printed, and Eq. 40's ReLU. ``w``: nu_ik; ``n_k``: its sum over ``dim``
    (kept), nonzero."""
    lam = n_k / m                                          # lambda_k = mean_i nu_ik
    nuhat = w / n_k                                        # Eq. 36
    mu = (nuhat * X).sum(dim=dim, keepdim=True)            # Eq. 35
    var = (nuhat * (X - mu) ** 2).sum(dim=dim, keepdim=True)
    if affine == 'statistics':                             # Eq. 37 as printed
        z = (X - mu - b) / torch.sqrt(torch.clamp(g * var, min=0) + eps) / torch.sqrt(lam)
    else:
        z = g * ((X - mu) / torch.sqrt(var + eps)) / torch.sqrt(lam) + b
    if activation == 'relu':                               # Eq. 40
        z = torch.relu(z)
    return z


def mixture_normalization(x, gamma, beta, nu, eps=2e-5, affine='output', activation=None):
    """Eq. 34-36 (Eq. 37 / 40 as options) for torch tensors; differentiable in x, gamma, beta.

    Args:
        x: (N, C) or (N, C, H, W).
        gamma, beta: (C,).
        nu: responsibilities (m, K), rows in :func:`to_rows` order; detached.
        eps: added to each component variance.
        affine: ``'output'`` (``gamma * xhat + beta``) or ``'statistics'`` (Eq. 37 as printed:
            ``xhat^k = (x - mu_k - beta) / sqrt(max(gamma sigma_k^2, 0) + eps)``, no output affine).
        activation: None or ``'relu'`` (Eq. 40: ReLU on each component's term, then the sum).
    """
    torch = require_torch()
    cdt = _compute_dtype(torch, x.dtype)
    X = to_rows(x).to(cdt)
    g, b = gamma.to(cdt), beta.to(cdt)
    nu = torch.as_tensor(nu).detach().to(device=X.device, dtype=cdt)
    out = torch.zeros_like(X)
    for k in range(nu.shape[1]):
        w = nu[:, k:k + 1]
        n_k = w.sum()
        if n_k <= 0:                                       # an empty component takes no part
            continue
        z = component_term(torch, X, w, n_k, X.shape[0], g, b, eps, affine, activation, 0)
        out = out + w * z                                  # Eq. 34
    return from_rows(out, x.shape).to(x.dtype)


def component_statistics(X, nu):
    """Eq. 35-36 per component: ``(lambda (K,), mu (K, C), sigma^2 (K, C))`` of rows X under
    nu; an empty component (sum_i nu_ik = 0) gets mu = sigma^2 = 0."""
    torch = require_torch()
    lam, means, variances = [], [], []
    for k in range(nu.shape[1]):
        w = nu[:, k:k + 1]
        n_k = w.sum()
        lam.append(n_k / X.shape[0])
        if n_k <= 0:
            means.append(torch.zeros_like(X[0]))
            variances.append(torch.zeros_like(X[0]))
            continue
        mu = (w / n_k * X).sum(dim=0)
        means.append(mu)
        variances.append((w / n_k * (X - mu) ** 2).sum(dim=0))
    return torch.stack(lam), torch.stack(means), torch.stack(variances)


def decay_weights(n_present, queue_length, decay):
    """Eq. 39, ``tau^t ∝ zeta^(T - t - 1)``, for the newest n_present of T entries (sum 1)."""
    tau = [decay ** (queue_length - t - 1) for t in range(queue_length - n_present, queue_length)]
    total = math.fsum(tau)
    return [t / total for t in tau]


def queue_posterior(X, weights, means, variances, n_present, decay, eps, fit=None):
    """rho_tk(x) of Eq. 38 (m, n_present*K), entries oldest first.

    The densities are those of the fitted mixtures ``fit = (weights, means, variances)`` when
    given (variances as stored), else of the statistics with sigma^2 + eps; a component whose
    statistics weight is 0 takes no part.
    """
    torch = require_torch()
    T, K = weights.shape
    if fit is None:
        fit = (weights, means, variances + eps)
    fit_w, fit_mu, fit_var = fit
    log_terms = []
    for t, tau in zip(range(T - n_present, T), decay_weights(n_present, T, decay)):
        for k in range(K):
            var = fit_var[t, k]
            log_n = -0.5 * (torch.log(2 * math.pi * var) + (X - fit_mu[t, k]) ** 2 / var).sum(dim=1)
            prior = tau * fit_w[t, k] if weights[t, k] > 0 else torch.zeros_like(fit_w[t, k])
            log_terms.append(torch.log(prior) + log_n)
    return torch.softmax(torch.stack(log_terms, dim=1), dim=1)


def queue_normalization(x, gamma, beta, weights, means, variances, n_present, decay, eps=2e-5,
                        form='consistent', affine='output', activation=None, fit=None):
    """Test-mode MN over a queue (Eq. 38-39); rho and the queue statistics are constants.

    ``xhat = sum_tk rho_tk / sqrt(s_tk) * (x - mu_tk) / sqrt(sigma_tk^2 + eps)`` with
    ``s_tk = lambda_tk`` (``form='consistent'``) or ``tau_t lambda_tk`` (``'printed'``); the
    output affine is ``gamma * xhat + beta`` (each term ``gamma a_tk xhat^tk + rho_tk beta``,
    rectified per term for Eq. 40). Queue arrays: (T, K), (T, K, C), (T, K, C), oldest first;
    ``fit``: the fitted mixtures for the posterior (see :func:`queue_posterior`).
    """
    torch = require_torch()
    cdt = _compute_dtype(torch, x.dtype)
    X = to_rows(x).to(cdt)
    g, b = gamma.to(cdt), beta.to(cdt)
    weights, means, variances = (torch.as_tensor(a).detach().to(device=X.device, dtype=cdt)
                                 for a in (weights, means, variances))
    if fit is not None:
        fit = [torch.as_tensor(a).detach().to(device=X.device, dtype=cdt) for a in fit]
    T, K = weights.shape
    with torch.no_grad():
        rho = queue_posterior(X, weights, means, variances, n_present, decay, eps, fit)
    out = torch.zeros_like(X)
    j = 0
    for t, tau in zip(range(T - n_present, T), decay_weights(n_present, T, decay)):
        for k in range(K):
            lam = weights[t, k]
            r = rho[:, j:j + 1]
            j += 1
            if lam <= 0:
                continue
            s = lam if form == 'consistent' else tau * lam
            if affine == 'statistics':
                xk = (X - means[t, k] - b) / torch.sqrt(torch.clamp(g * variances[t, k], min=0)
                                                        + eps)
                term = r / torch.sqrt(s) * xk
            else:
                xk = (X - means[t, k]) / torch.sqrt(variances[t, k] + eps)
                term = g * (r / torch.sqrt(s)) * xk + r * b
            out = out + (torch.relu(term) if activation == 'relu' else term)
    return from_rows(out, x.shape).to(x.dtype)


def gmm_log_prob(X, weights, means, variances):
    """``log lambda_k + log N(x_i | mu_k, diag sigma_k^2)`` (m, K), Eq. 26-27."""
    torch = require_torch()
    cols = []
    for k in range(weights.shape[0]):
        log_n = -0.5 * (torch.log(2 * math.pi * variances[k])
                        + (X - means[k]) ** 2 / variances[k]).sum(dim=1)
        cols.append(torch.log(weights[k]) + log_n)
    return torch.stack(cols, dim=1)


def gmm_log_likelihood(X, weights, means, variances):
    """log p(x_i) per row (Eq. 26)."""
    torch = require_torch()
    return torch.logsumexp(gmm_log_prob(X, weights, means, variances), dim=1)


def gmm_responsibilities(X, weights, means, variances):
    """nu_k(x_i) (m, K), Eq. 31."""
    torch = require_torch()
    return torch.softmax(gmm_log_prob(X, weights, means, variances), dim=1)


def em_step(X, weights, means, variances, reg_covar):
    """One EM iteration: E-step (Eq. 31), then the M-step with scikit-learn's conventions.

    Returns ``(weights, means, variances, mean log-likelihood before the step)``;
    ``n_k = sum_i nu_ik + 10 * machine epsilon``, ``sigma^2 = E[x^2] - mu^2 (>= 0) + reg_covar``.
    """
    torch = require_torch()
    log_prob = gmm_log_prob(X, weights, means, variances)
    log_norm = torch.logsumexp(log_prob, dim=1)
    resp = torch.exp(log_prob - log_norm[:, None])
    nk = resp.sum(dim=0) + 10 * torch.finfo(X.dtype).eps
    new_means = resp.T @ X / nk[:, None]
    new_vars = torch.clamp(resp.T @ (X * X) / nk[:, None] - new_means ** 2, min=0) + reg_covar
    return nk / nk.sum(), new_means, new_vars, log_norm.mean()


# -- mixture group normalization: MN over the per-sample sets of GN (LN: G = 1, IN: G = C) --

def group_sets(x, groups):
    """(N, C, *S) -> (N*G, m): row ``n*G + g`` is the set B of sample n and group g, the
    ``m = (C/G) * prod(S)`` values of channels ``g*C/G .. (g+1)*C/G - 1`` in memory order."""
    return x.reshape(x.shape[0] * groups, -1)


def ungroup_sets(sets, shape, groups):
    """Inverse of :func:`group_sets`: (N*G, m) -> ``shape`` (N, C, *S)."""
    return sets.reshape(shape)


def _nearest(values, centres, live):
    """Index of the nearest live centre of every value; ties go to the lower index."""
    torch = require_torch()
    label, best = None, None
    for k, (c, alive) in enumerate(zip(centres, live)):
        if not alive:
            continue
        d = (values - c) ** 2
        if label is None:
            label, best = torch.full(values.shape, k, dtype=torch.int64), d
        else:
            closer = d < best                          # strict: a tie stays with the lower k
            label = torch.where(closer, torch.full_like(label, k), label)
            best = torch.where(closer, d, best)
    return label


def _set_m_step(values, resp, live, reg_covar):
    """M-step of one set: ``n_k = sum_i r_ik + 10 eps`` (live k), ``lambda_k = n_k / sum n``,
    ``mu_k = sum_i r_ik x_i / n_k``, ``sigma_k^2 = sum_i r_ik (x_i - mu_k)^2 / n_k + reg_covar``;
    a component that is not live gets weight 0 and the placeholders mu 0, sigma^2 reg_covar."""
    torch = require_torch()
    tiny = 10 * torch.finfo(values.dtype).eps
    zero = torch.zeros((), dtype=values.dtype)
    nk, means, variances = [], [], []
    for r, alive in zip(resp, live):
        if not alive:
            nk.append(zero)
            means.append(zero)
            variances.append(zero + reg_covar)
            continue
        n = r.sum() + tiny
        mu = (r * values).sum() / n
        nk.append(n)
        means.append(mu)
        variances.append((r * (values - mu) ** 2).sum() / n + reg_covar)
    nk = torch.stack(nk)
    return nk / nk.sum(), torch.stack(means), torch.stack(variances)


def _set_e_step(values, weights, means, variances, live):
    """E-step of one set (Eq. 31 over the live components, in the log domain): [nu_k (m,)]."""
    torch = require_torch()
    log_terms = []
    for w, mu, var, alive in zip(weights, means, variances, live):
        if alive:
            log_terms.append(torch.log(w) - 0.5 * (math.log(2 * math.pi) + torch.log(var)
                                                   + (values - mu) ** 2 / var))
        else:
            log_terms.append(torch.full_like(values, -math.inf))
    return list(torch.softmax(torch.stack(log_terms), dim=0))


def seed_rank(k, n, n_components):
    """The 0-based rank, among n sorted values, of component k's initial centre: the
    ``(k + 1/2) / K`` quantile taken from the data, ``floor((2k + 1) n / (2K))``."""
    return (2 * k + 1) * n // (2 * n_components)


def fit_set_mixture(values, n_components, kmeans_iters=1, em_iters=1, sample_fraction=1.0,
                    min_weight=0.01, reg_covar=1e-6):
    """The deterministic univariate GMM of one set (values (m,), in their compute dtype).

    1. centre: ``c = mean(values)``; everything below works on ``x = values - c``;
    2. subset: ``n = min(m, max(K, ceil(sample_fraction * m)))`` values, those at positions
       ``floor(j m / n)``, j = 0..n-1 (all of them when n = m);
    3. seeds: centre k is the value of rank ``floor((2k + 1) n / (2K))`` (0-based) of the sorted
       subset;
    4. ``kmeans_iters`` Lloyd iterations: each value goes to the nearest centre (squared
       distance; a tie to the lower k), ``c_k <- c_k + sum_{i in k} (x_i - c_k) / count_k``
       (an empty cluster keeps its centre);
    5. the hard assignment to the final centres, then the M-step (:func:`_set_m_step`);
    6. ``em_iters`` EM iterations (E-step Eq. 31, M-step);
    7. pruning when min_weight > 0: components with lambda_k < min_weight are dropped, except
       the heaviest (the first on a tie); if any was dropped, one E-step over the rest and one
       M-step;
    8. nu: the E-step of all m values (not only the subset) over the kept components.

    Returns ``(weights (K,), means (K,), variances (K,), live (K,) bool, nu (K, m))``: weights
    0 and means, variances 0 where a component was pruned; means in the values' coordinates.
    """
    torch = require_torch()
    K = n_components
    values = values.detach()
    center = values.mean()
    x = values - center
    m = x.shape[0]
    n = min(m, max(K, math.ceil(sample_fraction * m)))
    sub = x[torch.tensor([j * m // n for j in range(n)], dtype=torch.int64)]
    ordered = torch.sort(sub).values
    centres = [ordered[seed_rank(k, n, K)] for k in range(K)]
    live = [True] * K
    for _ in range(kmeans_iters):
        label = _nearest(sub, centres, live)
        moved = []
        for k, c in enumerate(centres):
            members = sub[label == k]
            moved.append(c + (members - c).sum() / members.numel() if members.numel() else c)
        centres = moved
    label = _nearest(sub, centres, live)
    params = _set_m_step(sub, [(label == k).to(x.dtype) for k in range(K)], live, reg_covar)
    for _ in range(em_iters):
        params = _set_m_step(sub, _set_e_step(sub, *params, live), live, reg_covar)
    if min_weight > 0:
        weights = params[0]
        heaviest = int(torch.argmax(weights))          # the first maximum
        keep = [bool(weights[k] >= min_weight) or k == heaviest for k in range(K)]
        if keep != live:
            live = keep
            params = _set_m_step(sub, _set_e_step(sub, *params, live), live, reg_covar)
    weights, means, variances = params
    nu = torch.stack(_set_e_step(x, weights, means, variances, live))
    mask = torch.tensor(live)
    zero = torch.zeros_like(weights)
    return (torch.where(mask, weights, zero), torch.where(mask, means + center, zero),
            torch.where(mask, variances, zero), mask, nu)


def fit_group_mixtures(x, groups, n_components, **fit_options):
    """:func:`fit_set_mixture` of every set of x (:func:`group_sets`), computed in x's compute
    dtype: ``(weights (S, K), means (S, K), variances (S, K), live (S, K), nu (S, K, m))``."""
    torch = require_torch()
    sets = group_sets(x.detach().to(_compute_dtype(torch, x.dtype)), groups)
    fits = [fit_set_mixture(s, n_components, **fit_options) for s in sets]
    return tuple(torch.stack(parts) for parts in zip(*fits))


def mixture_group_normalization(x, gamma, beta, groups, nu, eps=2e-5, affine='output',
                                activation=None):
    """Eq. 34-36 (Eq. 37 / 40 as options) over the sets of GN; differentiable in x, gamma, beta.

    Args:
        x: (N, C, *S), C divisible by groups.
        gamma, beta: (C,), per channel (each value of a set takes its own channel's).
        groups: G; set ``n*G + g`` is :func:`group_sets`'s row.
        nu: responsibilities (N*G, K, m); detached (the gradient stops at them).
        eps, affine, activation: as :func:`mixture_normalization`, per set: with nu_ik the
            responsibilities of set s, ``lambda_k = mean_i nu_ik``, ``nuhat = nu / sum_i nu_ik``,
            ``mu_k, sigma_k^2`` the nuhat-weighted mean and biased variance of the set, and
            ``y_i = sum_k nu_ik z_ik``.
    """
    torch = require_torch()
    cdt = _compute_dtype(torch, x.dtype)
    X = group_sets(x.to(cdt), groups)
    S, m = X.shape
    spread = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    G = group_sets(gamma.to(cdt).reshape(spread).expand(x.shape), groups)   # gamma_c per value
    B = group_sets(beta.to(cdt).reshape(spread).expand(x.shape), groups)
    nu = torch.as_tensor(nu).detach().to(device=X.device, dtype=cdt)
    out = torch.zeros_like(X)
    for k in range(nu.shape[1]):
        w = nu[:, k, :]                                    # (S, m)
        n_k = w.sum(dim=1, keepdim=True)
        present = n_k > 0                                  # an empty component takes no part
        n_k = torch.where(present, n_k, torch.ones_like(n_k))
        z = component_term(torch, X, w, n_k, m, G, B, eps, affine, activation, 1)
        out = out + torch.where(present, w * z, torch.zeros_like(z))   # Eq. 34
    return ungroup_sets(out, x.shape, groups).to(x.dtype)


# -- the --impl callable ---------------------------------------------------------------------

def _grads(torch, y, gy, leaves):
    y.backward(torch.as_tensor(gy))
    return [leaf.grad for leaf in leaves]


def _queue(torch, inputs, prefix):
    return [torch.as_tensor(inputs[prefix + k]) for k in ('weights', 'means', 'variances')]


def _np(t):
    return t.detach().cpu().numpy()


def crosscheck_impl(case, inputs):
    """``mixnorm-crosscheck compare DIR --impl
    mixnorm_chainer.reproduce.torch_reference:crosscheck_impl``.

    Args:
        case: the case's manifest entry (``kind``, ``options``, ...).
        inputs: the case's input arrays (numpy).

    Returns:
        dict of output arrays (numpy) under the manifest's output names, with the optional
        component statistics (training), posterior (test mode) and the sets' fitted mixtures
        (``mn_group``); the seeded GMM fit's own score (``fit_score``, optional output) is not
        computed.
    """
    torch = require_torch()
    kind, opt = case['kind'], case['options']
    if kind in ('mn_train', 'mn_test'):
        x, gamma, beta = (torch.tensor(inputs[k], requires_grad=True)
                          for k in ('x', 'gamma', 'beta'))
        if kind == 'mn_train':
            y = mixture_normalization(x, gamma, beta, torch.as_tensor(inputs['nu']),
                                      opt['eps'], opt['affine'], opt['activation'])
        else:
            y = queue_normalization(x, gamma, beta, *_queue(torch, inputs, 'queue_'),
                                    opt['n_present'], opt['decay'], opt['eps'], opt['form'],
                                    opt['affine'], opt['activation'],
                                    fit=_queue(torch, inputs, 'queue_fit_'))
        gx, ggamma, gbeta = _grads(torch, y, inputs['gy'], (x, gamma, beta))
        out = {'y': _np(y), 'gx': _np(gx), 'ggamma': _np(ggamma), 'gbeta': _np(gbeta)}
        X = to_rows(x.detach()).to(_compute_dtype(torch, x.dtype))
        if kind == 'mn_train':
            stats = component_statistics(X, torch.as_tensor(inputs['nu']).to(X.dtype))
            out.update(zip(('weights', 'means', 'variances'), map(_np, stats)))
        else:
            queue = [a.to(X.dtype) for a in _queue(torch, inputs, 'queue_')]
            fit = [a.to(X.dtype) for a in _queue(torch, inputs, 'queue_fit_')]
            out['posterior'] = _np(queue_posterior(X, *queue, opt['n_present'], opt['decay'],
                                                   opt['eps'], fit))
        return out
    if kind == 'mn_group':
        x, gamma, beta = (torch.tensor(inputs[k], requires_grad=True)
                          for k in ('x', 'gamma', 'beta'))
        weights, means, variances, _, nu = fit_group_mixtures(
            x, opt['groups'], opt['n_components'], kmeans_iters=opt['kmeans_iters'],
            em_iters=opt['em_iters'], sample_fraction=opt['sample_fraction'],
            min_weight=opt['min_weight'], reg_covar=opt['reg_covar'])
        y = mixture_group_normalization(x, gamma, beta, opt['groups'], nu, opt['eps'],
                                        opt['affine'], opt['activation'])
        gx, ggamma, gbeta = _grads(torch, y, inputs['gy'], (x, gamma, beta))
        return {'y': _np(y), 'gx': _np(gx), 'ggamma': _np(ggamma), 'gbeta': _np(gbeta),
                'fit_weights': _np(weights), 'fit_means': _np(means),
                'fit_variances': _np(variances), 'responsibilities': _np(nu)}
    if kind == 'gmm_em':
        X = torch.as_tensor(inputs['X'])
        params = [torch.as_tensor(inputs[k]) for k in ('init_weights', 'init_means',
                                                       'init_variances')]
        hist = {'weights': [], 'means': [], 'variances': [], 'mean_log_likelihood': []}
        for _ in range(opt['n_iters']):
            *params, ll = em_step(X, *params, opt['reg_covar'])
            for name, value in zip(hist, params + [ll]):
                hist[name].append(_np(value))
        return {name: numpy.stack(values) for name, values in hist.items()}
    if kind == 'gmm_fit':
        X = torch.as_tensor(inputs['X'])
        mix = [torch.as_tensor(inputs[k]) for k in ('weights', 'means', 'variances')]
        return {'responsibilities': _np(gmm_responsibilities(X, *mix)),
                'log_likelihood': _np(gmm_log_likelihood(X, *mix))}
    raise ValueError(f'crosscheck_impl: unknown case kind {kind!r}')


# -- the CIFAR CNN of Table 1 in torch, for checking exported weights -------------------------

def build_cifar_cnn(state_dict, meta):
    """A ``torch.nn.Module`` CIFAR CNN (Table 1) loaded from an exported state dict.

    Args:
        state_dict: ``{name: numpy array}`` as written by
            :func:`mixnorm_chainer.reproduce.weights.export_state_dict` (torch names and layouts).
        meta: its metadata dict (``mn_layers``, the MN layers' options).

    BN layers are ``torch.nn.BatchNorm2d(eps=2e-5, momentum=0.1)`` (Chainer's eps and
    decay=0.9); MN layers hold their queue as buffers and normalize with Eq. 38 in eval mode
    (training-mode MN needs the GMM fit and is not provided). The module takes the dtype of
    ``conv1.weight``. Call ``.eval()`` before use.
    """
    torch = require_torch()
    nn = torch.nn
    F = torch.nn.functional

    class QueueMixtureNorm(nn.Module):
        def __init__(self, size, n_components, queue_length, options):
            super().__init__()
            self.options = options
            self.weight = nn.Parameter(torch.ones(size, dtype=torch.float64))
            self.bias = nn.Parameter(torch.zeros(size, dtype=torch.float64))
            for prefix in ('queue_', 'queue_fit_'):
                self.register_buffer(prefix + 'weights', torch.zeros(queue_length, n_components))
                self.register_buffer(prefix + 'means',
                                     torch.zeros(queue_length, n_components, size))
                self.register_buffer(prefix + 'variances',
                                     torch.ones(queue_length, n_components, size))
            self.register_buffer('queue_count', torch.tensor(0, dtype=torch.int64))

        def forward(self, x):
            if self.training:
                raise NotImplementedError('the torch CIFAR CNN runs MN layers in eval mode only')
            o = self.options
            return queue_normalization(x, self.weight, self.bias, self.queue_weights,
                                       self.queue_means, self.queue_variances,
                                       int(self.queue_count), o['queue_decay'], o['eps'],
                                       o['inference'], o['affine'], o['activation'],
                                       fit=(self.queue_fit_weights, self.queue_fit_means,
                                            self.queue_fit_variances))

    layers = (('conv1', 64, 5, 2), ('conv2', 128, 5, 2), ('conv3', 128, 5, 2),
              ('conv4', 256, 3, 1))

    class CifarCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.fused = {}
            c_in = state_dict['conv1.weight'].shape[1]
            for name, c_out, ksize, pad in layers:
                setattr(self, name, nn.Conv2d(c_in, c_out, ksize, padding=pad, bias=False))
                if name in meta['mn_layers']:
                    o = meta['mn_options'][name + '_norm']
                    norm = QueueMixtureNorm(c_out, o['n_components'], o['queue_length'], o)
                    self.fused[name] = o['activation'] == 'relu'
                else:
                    norm = nn.BatchNorm2d(c_out, eps=2e-5, momentum=0.1)
                    self.fused[name] = False
                setattr(self, name + '_norm', norm)
                c_in = c_out
            n_classes = state_dict['linear.weight'].shape[0]
            self.linear = nn.Linear(c_in, n_classes)

        def forward(self, x):
            h = x
            for name, _, _, _ in layers:
                h = getattr(self, name + '_norm')(getattr(self, name)(h))
                if not self.fused[name]:
                    h = F.relu(h)
                if name != 'conv4':
                    h = F.max_pool2d(h, 3, stride=2, ceil_mode=True)
                else:
                    h = h.mean(dim=(2, 3))
            return self.linear(h)

    tensors = {k: torch.as_tensor(numpy.asarray(v)) for k, v in state_dict.items()}
    model = CifarCNN().to(tensors['conv1.weight'].dtype)
    model.load_state_dict(tensors, strict=True)
    return model
