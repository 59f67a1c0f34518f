"""Mixture Group Normalization: Mixture Normalization over the per-sample sets of GN/LN/IN.

Section 2.2 writes BN, LN, IN and GN as one normalization (Eq. 6) over different sets
``B_i``; Section 3.2's Mixture Normalizing Transform "can be applied to all the variations
... simply by constructing B_i accordingly". Here ``B_i`` is Group Normalization's (Eq. 10):
for sample n and group g, the ``m = (C/G) * prod(spatial)`` activations of sample n's
channels ``g C/G .. (g+1) C/G - 1``. ``groups=1`` is mixture *layer* normalization (Eq. 8),
``groups=C`` mixture *instance* normalization (Eq. 9).

For each of the S = N*G sets a univariate Gaussian mixture is fitted
(:func:`mixnorm_chainer.group_gmm.fit_set_mixtures`) and every activation is normalized with
its own set's mixture (Eq. 34-36), per set and component k, with nu the responsibilities:

* ``lambda_k = mean_i nu_ik``, ``nuhat_ik = nu_ik / sum_j nu_jk``          (Eq. 36)
* ``mu_k = sum_i nuhat_ik x_i``, ``sigma_k^2 = sum_i nuhat_ik (x_i - mu_k)^2``  (Eq. 35)
* ``xhat_i = sum_k nu_ik / sqrt(lambda_k) * (x_i - mu_k) / sqrt(sigma_k^2 + eps)``  (Eq. 34)
* ``y = gamma_c xhat + beta_c`` per channel c (``affine='output'``), or Eq. 37 as printed
  (``affine='statistics'``), and Eq. 40's per-component ReLU with ``activation='relu'`` --
  the semantics of :func:`mixnorm_chainer.mixture_normalization`.

The transform is composed of ``chainer.functions`` on Variables, so backward and double
backward come from chainer's autograd; the gradient flows through mu_k and sigma_k^2 and stops
at the responsibilities (Section 3.2, "Differentiability"). With K = 1 it is
``F.group_normalization``. The mixture of a set depends on that set's values only (quantile
seeding, no random draws), so training and test mode are the same transform: no queue, no
running statistics, and a sample's output does not depend on the rest of its batch.
float16 inputs are computed in float32.
"""
import chainer
import chainer.functions as F
import numpy
from chainer import initializers
from chainer.backend import get_array_module

from mixnorm_chainer import options
from mixnorm_chainer.functions import compute_dtype, inv_sqrt_weights
from mixnorm_chainer.group_gmm import fit_set_mixtures, set_centers, sets_problem


def _array(v):
    return v.array if isinstance(v, chainer.Variable) else v


def check_groups(x, groups, who):
    """``(S, m)`` of x (N, C, ...) split into ``groups`` channel groups, or a one-line
    ValueError (wrong ndim or dtype, C not divisible by groups, no activations)."""
    if x.ndim < 2:
        raise ValueError(f'{who}: x must have shape (N, C) or (N, C, H, W); got shape {x.shape}')
    if x.dtype.kind != 'f':
        raise ValueError(f'{who}: x must be floating point; got dtype {x.dtype}')
    C = x.shape[1]
    if C % groups:
        raise ValueError(f'{who}: the number of channels {C} is not divisible by '
                         f"'groups' argument {groups}")
    S, m = x.shape[0] * groups, x.size // max(x.shape[0] * groups, 1)
    if S == 0 or m == 0:
        raise ValueError(f'{who}: x has no activations to normalize; shape {x.shape}')
    return S, m


def _per_channel(p, x_shape, groups, dtype):
    """gamma or beta (C,) broadcast to the (S, 1, m) layout of the sets."""
    N, C = x_shape[:2]
    L = int(numpy.prod(x_shape[2:], dtype=numpy.int64))
    p = F.reshape(F.cast(p, dtype), (1, groups, C // groups, 1))
    p = F.broadcast_to(p, (N, groups, C // groups, L))
    return F.reshape(p, (N * groups, 1, -1))


def transform(x, gamma, beta, groups, responsibilities, center, eps, affine, activation):
    """Eq. 34-36 (37, 40 as options) of x over its sets, built from chainer.functions.

    ``responsibilities`` (S, K, m) and ``center`` (S,) (a per-set constant subtracted first,
    which leaves the transform unchanged and keeps float32 precise far from the origin) are
    constants: no gradient reaches them. Returns y in x's shape and dtype.
    """
    xa = _array(x)
    xp = get_array_module(xa)
    dtype = compute_dtype(xa.dtype)
    S = responsibilities.shape[0]
    nu = xp.asarray(responsibilities).astype(dtype, copy=False)
    n = nu.sum(axis=2, keepdims=True)                      # sum_i nu_ik, (S, K, 1)
    nuhat = nu / xp.where(n > 0, n, 1)                     # Eq. 36
    lam = n / nu.shape[2]                                  # lambda_k = mean_i nu_ik
    coef = nu * inv_sqrt_weights(lam)                      # nu_ik / sqrt(lambda_k)
    xc = F.reshape(F.cast(x, dtype), (S, 1, -1)) - \
        xp.asarray(center).astype(dtype, copy=False).reshape(S, 1, 1)
    mu = F.sum(nuhat * xc, axis=2, keepdims=True)          # Eq. 35: E[nuhat x]
    v = xc - mu                                            # v^k, (S, K, m)
    var = F.sum(nuhat * v * v, axis=2, keepdims=True)      # E[nuhat (v^k)^2]
    g = _per_channel(gamma, xa.shape, groups, dtype)
    b = _per_channel(beta, xa.shape, groups, dtype)
    if affine == 'statistics':                             # Eq. 37 as printed
        z = (v - b) * F.rsqrt(F.relu(g * var) + eps)
    else:                                                  # z^k = gamma xhat^k + sqrt(lambda) beta
        z = g * (v * F.rsqrt(var + eps)) + xp.sqrt(lam) * b
    if activation == 'relu':                               # Eq. 40
        z = F.relu(z)
    y = F.sum(coef * z, axis=1)                            # Eq. 34: sum_k nu / sqrt(lambda) ...
    return F.cast(F.reshape(y, xa.shape), xa.dtype)


def _normalize(x, gamma, beta, groups, responsibilities, n_components, eps, em_iters,
               kmeans_iters, min_weight, reg_covar, sample_fraction, activation, affine, who):
    """The function and the link: ``(y, fit)`` (fit None when responsibilities are given)."""
    groups = options.check('size', groups, 'groups')
    n_components, eps, min_weight, reg_covar, sample_fraction, activation, affine = \
        options.check_all(n_components=n_components, eps=eps, min_weight=min_weight,
                          reg_covar=reg_covar, sample_fraction=sample_fraction,
                          activation=activation, affine=affine).values()
    kmeans_iters, gmm_em_iters = options.split_em_iters(em_iters, kmeans_iters)
    xa = _array(x)
    S, m = check_groups(xa, groups, who)
    C = xa.shape[1]
    for name, p in (('gamma', gamma), ('beta', beta)):
        if _array(p).shape != (C,):
            raise ValueError(f'{who}: {name} must have shape ({C},); got {_array(p).shape}')
    sets = xa.reshape(S, m).astype(compute_dtype(xa.dtype), copy=False)
    problem = sets_problem(sets, reg_covar)
    if problem is not None:
        raise ValueError(f'{who} (input shape {xa.shape}): {problem}; the mixtures cannot be '
                         'fitted')
    fit = None
    if responsibilities is None:
        fit = fit_set_mixtures(sets, n_components, kmeans_iters=kmeans_iters,
                               em_iters=gmm_em_iters, sample_fraction=sample_fraction,
                               min_weight=min_weight, reg_covar=reg_covar, check_finite=False)
        nu, center = fit.responsibilities, fit.center
    else:
        nu = _array(responsibilities)
        if nu.ndim != 3 or nu.shape[0] != S or nu.shape[2] != m:
            raise ValueError(f'{who}: responsibilities must have shape (S, K, m) = ({S}, K, '
                             f'{m}) for x of shape {xa.shape} and groups={groups}; got '
                             f'{nu.shape}')
        center = set_centers(sets)
    y = transform(x, gamma, beta, groups, nu, center, eps, affine, activation)
    return y, fit


def mixture_group_normalization(x, gamma, beta, groups, responsibilities=None, n_components=3,
                                eps=2e-5, em_iters=2, kmeans_iters=None, min_weight=0.01,
                                reg_covar=1e-6, sample_fraction=1.0, activation=None,
                                affine='output'):
    """Mixture normalization over the per-sample channel groups of GN (Eq. 10, Eq. 34-36).

    ``groups=1`` is mixture layer normalization (Eq. 8), ``groups=C`` mixture instance
    normalization (Eq. 9). With ``n_components=1`` it equals
    ``F.group_normalization(x, groups, gamma, beta, eps)``.

    Args:
        x: (N, C) or (N, C, H, W) (any (N, C, ...)), float16/32/64; C divisible by groups.
        gamma, beta: (C,) per-channel scale and shift.
        groups: G; the set of sample n and group g (Eq. 10) holds the ``m = (C/G) *
            prod(spatial)`` values of ``x.reshape(N, G, m)[n, g]``.
        responsibilities: None (fit a mixture to every set: quantile seeding, k-means, EM,
            pruning; :func:`~mixnorm_chainer.group_gmm.fit_set_mixtures`), or nu of shape
            (N*G, K, m) in the order of ``x.reshape(N*G, m)``. No gradient either way.
        n_components: K before pruning.
        eps: added to each component variance (Eq. 35); 2e-5 as the MN layer (chainer's
            ``F.group_normalization`` defaults to 1e-5: pass ``eps=1e-5`` to match it).
        em_iters: the paper's "EM iter.": k-means plus EM iterations, split equally unless
            ``kmeans_iters`` (0..em_iters) says how many are k-means iterations.
        min_weight: per-set pruning threshold on lambda_k (Section 5.3); 0 disables it.
        reg_covar: the fit's variance floor.
        sample_fraction: fit on an evenly strided ``sample_fraction`` of each set (Section 5.1).
        activation: None or ``'relu'`` (Eq. 40: ReLU per component, then aggregate).
        affine: ``'output'`` (``gamma * xhat + beta`` after Eq. 34) or ``'statistics'``
            (Eq. 37 as printed: beta shifts and gamma scales each component's statistics).

    Returns:
        chainer.Variable of x's shape and dtype. Raises a one-line ValueError for C not
        divisible by groups, x of ndim < 2, NaN/inf in x, or a bad option.
    """
    y, _ = _normalize(x, gamma, beta, groups, responsibilities, n_components, eps, em_iters,
                      kmeans_iters, min_weight, reg_covar, sample_fraction, activation, affine,
                      'mixture_group_normalization')
    return y


class MixtureGroupNormalization(chainer.Link):
    """Mixture Group Normalization layer: :func:`mixture_group_normalization` with per-channel
    ``gamma`` and ``beta`` parameters, shaped like ``L.GroupNormalization``.

    ``groups=1``: mixture layer normalization (Eq. 8); ``groups=C``: mixture instance
    normalization (Eq. 9). Training and test mode are the same transform (each sample's
    mixtures are fitted to its own sets, deterministically): there is no queue.

    Args:
        groups: G, a divisor of the number of channels.
        size: C; None initializes gamma and beta at the first call (as ``L.GroupNormalization``).
        n_components, eps, em_iters, kmeans_iters, min_weight, reg_covar, sample_fraction,
        activation, affine: as :func:`mixture_group_normalization`.
        dtype: dtype of gamma and beta (default ``chainer.config.dtype``; float32 under
            ``chainer.mixed16``).
        initial_gamma, initial_beta: initializers or values (default 1 and 0);
            ``initial_gamma='1/sqrt(K)'`` as in :class:`~mixnorm_chainer.MixtureNormalization`.

    After each call ``last_fit`` is the :class:`~mixnorm_chainer.group_gmm.SetMixtures` fitted
    to the input's N*G sets (weights, means, variances, live components, responsibilities).
    """

    def __init__(self, groups, size=None, n_components=3, eps=2e-5, em_iters=2,
                 kmeans_iters=None, min_weight=0.01, reg_covar=1e-6, sample_fraction=1.0,
                 dtype=None, initial_gamma=None, initial_beta=None, activation=None,
                 affine='output'):
        super().__init__()
        self.groups = options.check('size', groups, 'groups')
        self.n_components, self.eps, self.min_weight, self.reg_covar, self.sample_fraction, \
            self.activation, self.affine = options.check_all(
                n_components=n_components, eps=eps, min_weight=min_weight,
                reg_covar=reg_covar, sample_fraction=sample_fraction, activation=activation,
                affine=affine).values()
        options.split_em_iters(em_iters, kmeans_iters)
        self.em_iters, self.kmeans_iters = em_iters, kmeans_iters
        self._dtype = chainer.get_dtype(dtype, map_mixed16=numpy.float32)
        initial_gamma = options.initial_gamma_value(initial_gamma, self.n_components)
        with self.init_scope():
            for name, initial, default in (('gamma', initial_gamma, 1), ('beta', initial_beta, 0)):
                init = initializers._get_initializer(default if initial is None else initial)
                init.dtype = self._dtype
                setattr(self, name, chainer.Parameter(init))
        self.size = None
        if size is not None:
            self._initialize_params(options.check('size', size))
        self.last_fit = None

    def _initialize_params(self, size):
        if size % self.groups:
            raise ValueError(f'MixtureGroupNormalization: the number of channels {size} is not '
                             f"divisible by 'groups' argument {self.groups}")
        self.size = size
        self.gamma.initialize((size,))
        self.beta.initialize((size,))

    def forward(self, x):
        """Normalize x of shape (N, C) or (N, C, H, W) (any (N, C, ...))."""
        xa = _array(x)
        who = 'MixtureGroupNormalization'
        if xa.ndim < 2:
            raise ValueError(f'{who}: x must have shape (N, C) or (N, C, H, W); got shape '
                             f'{xa.shape}')
        if self.size is None:
            self._initialize_params(xa.shape[1])
        if xa.shape[1] != self.size:
            raise ValueError(f'{who}: x has {xa.shape[1]} channels (axis 1) but the layer was '
                             f'built for {self.size}; shape {xa.shape}')
        y, self.last_fit = _normalize(
            x, self.gamma, self.beta, self.groups, None, self.n_components, self.eps,
            self.em_iters, self.kmeans_iters, self.min_weight, self.reg_covar,
            self.sample_fraction, self.activation, self.affine, who)
        return y
