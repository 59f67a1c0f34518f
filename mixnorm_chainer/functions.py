"""The Mixture Normalizing Transform (Section 3.2, Eq. 34-37 and 40) as a Chainer FunctionNode.

Notation (Section 3.2): rows ``x_i`` (i = 1..m, all N*H*W positions; D = C channels),
responsibilities ``nu`` (m, K) from the fitted GMM (Eq. 31), and

* ``lambda_k = mean_i nu_ik``                          (mixture weights)
* ``nuhat_ik = nu_ik / sum_j nu_jk``                     (Eq. 36)
* ``mu_k = nuhat_k^T x``, ``sigma_k^2 = nuhat_k^T (x - mu_k)^2``  (Eq. 35)
* ``xhat^k_i = (x_i - mu_k) / sqrt(sigma_k^2 + eps)``     (Eq. 35)
* ``xhat_i = sum_k nu_ik / sqrt(lambda_k) * xhat^k_i``    (Eq. 34)
* ``y_i = gamma * xhat_i + beta``                          (per-channel affine, the default)

Gradients flow through mu and sigma^2 (and lambda's role as a constant scale) but stop at nu
(Section 3.2, "Differentiability"; PAPER-NOTES 3). With K = 1 this is exactly
``F.batch_normalization`` (PAPER-NOTES 4).

Options:

* ``affine='statistics'`` is Eq. 37 as printed: beta shifts every component mean and gamma
  scales every component variance, ``xhat^k = (x - mu_k - beta) / sqrt(gamma sigma_k^2 + eps)``
  (``gamma sigma_k^2`` is clamped at 0), and there is no output affine.
* ``activation='relu'`` is Eq. 40: the ReLU is applied per component before aggregation.
  Writing the output as ``y_i = sum_k nu_ik z_ik`` with ``z_ik = gamma xhat^k_i / sqrt(lambda_k)
  + beta`` (using sum_k nu_ik = 1), the fused form is ``y_i = sum_k nu_ik ReLU(z_ik)``; without
  the output affine that is literally Eq. 40, and for one-hot nu it equals ``ReLU(y_i)`` (Eq. 41).

The same node serves test mode (Eq. 38), where the components are the queue's and the
statistics are fixed: then no gradient flows through the statistics (as in
``F.fixed_batch_normalization``).

Computation: on the CPU (and on the GPU with ``chainer.config.mixnorm_kernels = False``) every
per-row quantity is an (m, K) x (K, C) product, so no (m, K, C) array is formed; the fused-ReLU
path loops over K. Rows far off-centre are shifted by a per-channel constant before the sums of
squares (training: the fit's centre, :func:`~mixnorm_chainer.reduction.centering_shift`; test mode:
the queue's mixture mean), which leaves the transform unchanged and keeps float32 precise, and
components far from that constant compared with their spread are computed centred on their own
mean (:func:`~mixnorm_chainer.gaussian.far_components`). On the GPU the CUDA kernels of
:mod:`mixnorm_chainer.kernels` compute the same on NCHW directly, every component centred.
float16 inputs are computed in float32.
"""
import collections
import math

import chainer
import numpy
from chainer import function_node
from chainer.backend import get_array_module

from mixnorm_chainer import kernels, options
from mixnorm_chainer.gaussian import far_components
from mixnorm_chainer.gmm import component_moments, magnitude_limit
from mixnorm_chainer.reduction import LOCAL, centering_shift

#: Statistics of the components in the training transform: lambda (K,), mu (K, C), sigma^2 (K, C).
ComponentStatistics = collections.namedtuple('ComponentStatistics',
                                             ['weights', 'means', 'variances'])

#: ``shift`` of :func:`batch_statistics`: compute one from the batch
AUTO = 'auto'


def to_rows(x):
    """(N, C, *S) -> (N*prod(S), C): the row order of ``x.transpose(0, 2, 3, 1).reshape(-1, C)``."""
    xp = get_array_module(x)
    if x.ndim == 2:
        return x
    return xp.ascontiguousarray(xp.moveaxis(x, 1, -1)).reshape(-1, x.shape[1])


def from_rows(rows, shape):
    """Inverse of :func:`to_rows` for an array of the given (N, C, *S) shape."""
    xp = get_array_module(rows)
    if len(shape) == 2:
        return rows
    moved = rows.reshape((shape[0],) + tuple(shape[2:]) + (shape[1],))
    return xp.ascontiguousarray(xp.moveaxis(moved, -1, 1))


def compute_dtype(dtype):
    """float16 activations are normalized in float32 (like chainer's batch normalization)."""
    return numpy.dtype(numpy.float32) if dtype == numpy.float16 else numpy.dtype(dtype)


def column_sums(A):
    """``A.sum(axis=0)`` of an (m, C) array as a BLAS product (numpy sums columns slowly)."""
    xp = get_array_module(A)
    return xp.ones(A.shape[0], A.dtype) @ A


def component_statistics(X, nu, reduction=LOCAL, shift=None):
    """Eq. 35-36: ``(lambda, nuhat, mu, sigma^2)`` of rows X (m, C) under responsibilities nu.

    From the sums over the batch's rows of :func:`~mixnorm_chainer.gmm.component_moments`
    (all-reduced across ranks by a distributed ``reduction``); sigma^2 is the centred
    ``nuhat_k^T (x - mu_k)^2``, precise in float32 also for a tight component far from the
    batch mean. A component with no mass (sum_i nu_ik = 0) gets nuhat = 0, mu = 0, sigma^2 = 0.
    With ``shift`` (C,) mu is that of ``x - shift``; on the GPU X may be the (N, C, S) view of
    the rows (:mod:`mixnorm_chainer.kernels`).
    """
    xp = get_array_module(nu)
    n, mu, var = component_moments(X, nu.T, reduction, shift=shift)
    nuhat = nu / xp.where(n > 0, n, 1)[None, :]
    return n / reduction.total(nu.shape[0]), nuhat, mu, var


def batch_statistics(X, nu, reduction=LOCAL, shift=AUTO):
    """The statistics a training step normalizes with: Eq. 35-36 of the rows X under nu,
    computed on the rows shifted by a per-channel centring constant (float32 precision far
    from the origin; the statistics do not depend on it otherwise).

    Args:
        X: rows (m, C) in the compute dtype, or on the GPU the kernels' (N, C, S) view.
        nu: responsibilities (m, K), in X's dtype.
        reduction: :data:`~mixnorm_chainer.reduction.LOCAL` or a distributed reduction.
        shift: :data:`AUTO` (:func:`~mixnorm_chainer.reduction.centering_shift` of X), None (no
            shift) or a (C,) array (the fit's :attr:`~mixnorm_chainer.GaussianMixture.center`).

    Returns:
        ``(lambda, nuhat, mu - shift, sigma^2, shift, Xs)``: ``shift`` as an array (zeros for
        None), ``Xs`` the shifted rows (None for the (N, C, S) view, which the kernels shift
        as they read it).
    """
    xp = get_array_module(nu)
    if _is_auto(shift):
        shift = centering_shift(X)
    shifted = shift is not None
    shift = (xp.asarray(shift).astype(nu.dtype, copy=False) if shifted
             else xp.zeros(X.shape[1], nu.dtype))
    if X.ndim == 3:                   # the kernels' (N, C, S) view: shifted as it is read
        return (*component_statistics(X, nu, reduction, shift=shift), shift, None)
    Xs = X - shift if shifted else X
    return (*component_statistics(Xs, nu, reduction), shift, Xs)


def inv_sqrt_weights(lam):
    """``1 / sqrt(lambda_k)``, and 0 for an empty component (its nu column is 0 anyway)."""
    xp = get_array_module(lam)
    return xp.where(lam > 0, 1 / xp.sqrt(xp.where(lam > 0, lam, 1)), 0)


class _Saved:
    """What the forward pass leaves for the backward pass (rows, component terms, options)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class MixtureNormalizationFunction(function_node.FunctionNode):
    """Mixture normalization of ``x`` given responsibilities (Eq. 34-37, 40).

    Inputs are ``(x, gamma, beta)``; the responsibilities are a constant of the node.

    Internally the output is ``y_i = sum_k coef_ik z^k_i`` with ``coef_ik = nu_ik / sqrt(lambda_k)``
    and ``z^k = gamma xhat^k + sqrt(lambda_k) beta`` (= Eq. 34 + affine, since sum_k nu_ik = 1),
    or ``sum_k coef_ik ReLU(z^k)`` for Eq. 40 (coef >= 0 commutes with ReLU). The forward pass
    has two jobs: the components' statistics (:meth:`_batch_statistics` in training, Eq.
    35-36; the queue's, given, in test mode) and the transform with them
    (:func:`component_terms`, :func:`transform`).

    Args:
        responsibilities: nu (m, K) (training mode; ignored when ``fixed`` is given).
        eps: added to the component variances (Eq. 35).
        affine: ``'output'`` (gamma xhat + beta) or ``'statistics'`` (Eq. 37 as printed).
        activation: None or ``'relu'`` (Eq. 40, fused per-component ReLU).
        fixed: None for training (statistics from the batch, Eq. 35-36), or for test mode a
            tuple ``(coef (m, J), scale (J,), centred_means (J, C), variances (J, C),
            shift (C,))``: the per-row weight of each queue component in Eq. 38, the factor
            with ``posterior = coef * scale``, and the queue's statistics (constants), the means
            given as ``mu - shift`` (rows are shifted by ``shift``).
        rows: optional ``to_rows(x)`` in the compute dtype, if the caller already has it.
        shift: the per-channel centring constant (C,) of training mode: :data:`AUTO`
            (:func:`~mixnorm_chainer.reduction.centering_shift` of the rows), None (no shift) or an
            array. The link passes its fit's :attr:`~mixnorm_chainer.GaussianMixture.center`.
            The transform does not depend on it, but ranks sharing statistics must use the
            same one.
        reduction: :data:`~mixnorm_chainer.reduction.LOCAL`, or a distributed reduction
            (:class:`mixnorm_chainer.multi_node.AllReduce`): the statistics of Eq. 35-36 are
            then those of the global batch, and so are the sums of the backward pass; the
            gamma/beta gradients stay this rank's contribution (their sum over ranks is the
            gradient of the summed loss).

    After a training-mode forward, ``statistics`` holds the :class:`ComponentStatistics` the
    transform used, and ``center`` / ``centred_means`` the shift and ``mu - shift``.
    """

    def __init__(self, responsibilities, eps=2e-5, affine='output', activation=None,
                 fixed=None, rows=None, shift=AUTO, reduction=LOCAL):
        self.responsibilities = responsibilities
        self.eps = eps
        self.affine = affine
        self.activation = activation
        self.fixed = fixed
        self.rows = rows
        self.shift = shift
        self.reduction = reduction
        self.statistics = None
        self.center = self.centred_means = None

    def forward(self, inputs):
        self.retain_inputs(())
        x, gamma, beta = inputs
        dtype = compute_dtype(x.dtype)
        if kernels.enabled(x):            # the kernels read NCHW x directly: no rows
            X = None
        else:
            X = to_rows(x).astype(dtype, copy=False) if self.rows is None else self.rows
        self.rows = None
        if self.fixed is None:
            sv = self._batch_statistics(x, X, dtype)
        else:
            coef, scale, mu_s, var, shift = (get_array_module(x).asarray(a).astype(
                dtype, copy=False) for a in self.fixed)
            sv = _Saved(coef=coef, scale=scale, mu_s=mu_s, var=var, shift=shift, nuhat=None,
                        Xs=None if X is None else X - shift)
        self.responsibilities = None
        g = gamma.astype(dtype, copy=False)
        sv.__dict__.update(component_terms(sv.scale, sv.mu_s, sv.var, g,
                                           beta.astype(dtype, copy=False), self.eps,
                                           self.affine))
        sv.__dict__.update(x=x if X is None else None, g=g, x_shape=x.shape, x_dtype=x.dtype,
                           g_dtype=gamma.dtype, b_dtype=beta.dtype)
        self.saved = sv
        return transform(x, sv, self.activation == 'relu'),

    def _batch_statistics(self, x, X, dtype):
        """Training: :func:`batch_statistics` of the rows (or of the kernels' (N, C, S) view of
        x) under nu, and ``coef = nu / sqrt(lambda)``."""
        xp = get_array_module(x)
        nu = xp.asarray(self.responsibilities).astype(dtype, copy=False)
        rows = X if X is not None else x.reshape(x.shape[0], x.shape[1], -1)
        lam, nuhat, mu_s, var, shift, Xs = batch_statistics(rows, nu, self.reduction, self.shift)
        self.statistics = ComponentStatistics(lam, mu_s + shift, var)
        self.center, self.centred_means = shift, mu_s
        return _Saved(coef=nu * inv_sqrt_weights(lam)[None, :], scale=xp.sqrt(lam), mu_s=mu_s,
                      var=var, shift=shift, nuhat=nuhat, Xs=Xs)

    def backward(self, indexes, grad_outputs):
        gy, = grad_outputs
        return MixtureNormalizationGrad(self).apply((gy,))


class MixtureNormalizationGrad(function_node.FunctionNode):
    """Gradients of :class:`MixtureNormalizationFunction` w.r.t. (x, gamma, beta).

    For one component with weights nuhat (summing to 1), ``xhat = (x - c) t`` with
    ``c = mu + b`` and ``t = (a sigma^2 + eps)^(-1/2)`` (a = 1, b = 0 unless affine='statistics'),
    and upstream gradient G^k on xhat^k, the derivative (Eq. 35-36 differentiated, nu fixed) is

        dL/dx_j = t G^k_j - t nuhat_j S1 - nuhat_j (x_j - mu) a t^2 S2,
        dL/db = -t S1,   dL/da = -1/2 t^2 sigma^2 S2,

    with ``S1 = sum_i G^k_i`` and ``S2 = sum_i G^k_i xhat^k_i``; summed over components. In test
    mode (fixed statistics) only the first term of dL/dx remains. Double backprop is not
    supported.
    """

    def __init__(self, forward_node):
        self.f = forward_node

    def forward(self, inputs):
        gy, = inputs
        f, sv = self.f, self.f.saved
        xp = get_array_module(gy)
        coef, s, c, a = sv.coef, sv.s, sv.c, sv.a
        relu = f.activation == 'relu'
        output_affine = f.affine == 'output'
        g_out = sv.g if output_affine else xp.ones_like(sv.g)

        # P_k = sum_i dL/dz^k_i, Q_k = sum_i dL/dz^k_i (x_i - c_k), gX = the direct term.
        if sv.x is not None:
            P, Q = kernels.transform_gradient_sums(sv.x, gy, coef, a, c, sv.e, sv.shift, relu)
        else:
            G = to_rows(gy).astype(sv.Xs.dtype, copy=False)
            P, Q, gX = _gradient_sums(G, sv, relu)
        # S1_k = sum_i dL/dxhat^k_i, S2_k = sum_i dL/dxhat^k_i xhat^k_i  (per channel)
        xhat_moment = s * Q
        S1 = g_out * P
        S2 = g_out * xhat_moment

        if output_affine:
            dg = xhat_moment.sum(axis=0)
            db = (sv.scale[:, None] * P).sum(axis=0)
        else:
            dg = -0.5 * (s * s * sv.var * sv.var_active * S2).sum(axis=0)
            db = -(s * S1).sum(axis=0)
        if sv.nuhat is not None:
            # Gradient through the batch statistics mu_k, sigma_k^2 (training mode): their
            # sums run over the whole batch (all ranks when distributed).
            if f.reduction is not LOCAL:
                P, Q = f.reduction.sum(P, Q)
                S1 = g_out * P
                S2 = g_out * (s * Q)
            var_scale = sv.g[None, :] * sv.var_active if f.affine == 'statistics' else 1
            r = var_scale * s * s * S2
        if sv.x is not None:
            if sv.nuhat is None:
                gx = kernels.transform_backward(sv.x, gy, coef, a, c, sv.e, sv.shift, relu)
            else:
                gx = kernels.transform_backward(sv.x, gy, coef, a, c, sv.e, sv.shift, relu,
                                                sv.nuhat, s * S1, r, sv.mu_s)
        else:
            if sv.nuhat is not None:
                _statistics_term(gX, sv, s * S1, r)
            gx = from_rows(gX, sv.x_shape)
        gx = gx.astype(sv.x_dtype, copy=False)
        return gx, dg.astype(sv.g_dtype, copy=False), db.astype(sv.b_dtype, copy=False)

    def backward(self, indexes, grad_outputs):
        raise NotImplementedError(
            'double backpropagation (a gradient of a gradient, e.g. a gradient penalty) through '
            'mixture normalization is not supported; keep MN out of the layers it differentiates '
            '(e.g. use it in the generator only), see docs/numerics.md')


def component_terms(scale, mu_s, var, g, b, eps, affine):
    """The per-component terms of the transform, ``z^k = a_k (x - c_k) + e_k`` per channel
    (Eq. 34-35 with the output affine; Eq. 37 with ``affine='statistics'``): ``a = g_out s``,
    ``e = sqrt(lambda) b_out`` and ``s = (sigma^2 + eps)^(-1/2)`` (or ``(gamma sigma^2 +
    eps)^(-1/2)``, ``gamma sigma^2`` clamped at 0, where ``var_active`` says it was not)."""
    xp = get_array_module(var)
    if affine == 'statistics':                    # Eq. 37 as printed
        scaled_var = g[None, :] * var
        var_active = scaled_var > 0
        s = 1 / xp.sqrt(xp.where(var_active, scaled_var, 0) + eps)
        c = mu_s + b[None, :]
        g_out, b_out = xp.ones_like(g), xp.zeros_like(b)
    else:
        var_active = None
        s = 1 / xp.sqrt(var + eps)
        c = mu_s
        g_out, b_out = g, b
    return dict(s=s, c=c, a=g_out[None, :] * s, e=scale[:, None] * b_out[None, :],
                var_active=var_active)


def transform(x, sv, relu):
    """``y_i = sum_k coef_ik f(z^k_i)`` (f: identity, or ReLU for Eq. 40) on the kernels' NCHW
    x or the xp path's shifted rows ``sv.Xs``; y in x's shape and dtype."""
    if sv.Xs is None:
        return kernels.transform_forward(x, sv.coef, sv.a, sv.c, sv.e, sv.shift, relu)
    xp = get_array_module(sv.Xs)
    Xs, coef, a, c, e = sv.Xs, sv.coef, sv.a, sv.c, sv.e
    # Components far from the centring shift (compared with their spread) are computed as
    # written, centred on c_k; the rest by (m, K) x (K, C) products (gaussian.far_components)
    far = sv.far = far_components(c, 1 / (sv.s * sv.s), linear=True)
    if relu:
        Y = xp.zeros_like(Xs)
        for k in range(coef.shape[1]):
            z, _ = _component_input(Xs, a, c, e, far, k)
            xp.maximum(z, 0, out=z)
            z *= coef[:, k:k + 1]
            Y += z
    else:
        near = numpy.flatnonzero(~far)
        if near.size:
            cn, an = _columns(coef, near), a[near]
            Y = Xs * (cn @ an)
            Y -= cn @ (an * c[near] - e[near])
        else:
            Y = xp.zeros_like(Xs)
        for k in numpy.flatnonzero(far):
            z = Xs - c[k]
            z *= a[k]
            z += e[k]
            z *= coef[:, k:k + 1]
            Y += z
    return from_rows(Y, x.shape).astype(x.dtype, copy=False)


def _is_auto(shift):
    return isinstance(shift, str) and shift == AUTO


def _gradient_sums(G, sv, relu):
    """The xp path of the backward sums: ``(P, Q, gX)`` for upstream gradient rows G (see
    :class:`MixtureNormalizationGrad`); far components are summed centred on c_k."""
    xp = get_array_module(G)
    Xs, coef, c, a = sv.Xs, sv.coef, sv.c, sv.a
    if relu:
        P = xp.empty_like(c)
        Q = xp.empty_like(c)
        gX = xp.zeros_like(Xs)
        for k in range(coef.shape[1]):
            z, xc = _component_input(Xs, a, c, sv.e, sv.far, k)
            Gz = G * coef[:, k:k + 1]
            Gz *= z > 0
            P[k] = column_sums(Gz)
            Q[k] = column_sums(Gz * xc)
            if xc is Xs:
                Q[k] -= c[k] * P[k]
            Gz *= a[k]
            gX += Gz
    else:
        P = coef.T @ G
        Q = _centred_sums(coef, G, Xs, c, P, sv.far)
        gX = G * (coef @ a)
    return P, Q, gX


def _statistics_term(gX, sv, s_s1, r):
    """``dL/dx_i -= sum_k nuhat_ik (s_s1_k + r_k (x_i - mu_k))`` (in place, xp path)."""
    Xs, mu_s = sv.Xs, sv.mu_s
    far = far_components(mu_s, 1 / (sv.s * sv.s), linear=True)
    near = numpy.flatnonzero(~far)
    if near.size:
        nh, rn = _columns(sv.nuhat, near), r[near]
        gX -= nh @ (s_s1[near] - rn * mu_s[near])
        gX -= Xs * (nh @ rn)
    for k in numpy.flatnonzero(far):
        t = Xs - mu_s[k]
        t *= r[k]
        t += s_s1[k]
        t *= sv.nuhat[:, k:k + 1]
        gX -= t


def _columns(a, ids):
    """``a[:, ids]`` for host indices ``ids`` (a itself when they are all columns)."""
    if ids.size == a.shape[1]:
        return a
    return a[:, get_array_module(a).asarray(ids)]


def _component_input(Xs, a, c, e, far, k):
    """``z^k = a_k (x - c_k) + e_k`` of every row, and the rows it was computed from: ``x - c_k``
    for a far component (precise), else x (``a_k x - (a_k c_k - e_k)``, one pass fewer)."""
    if far[k]:
        xc = Xs - c[k]
        z = xc * a[k]
        z += e[k]
        return z, xc
    z = Xs * a[k]
    z -= a[k] * c[k] - e[k]
    return z, Xs


def _centred_sums(coef, G, Xs, c, P, far):
    """``Q_k = sum_i coef_ik G_i (x_i - c_k)`` (K, C): as ``coef^T (G x) - c P`` for the near
    components, summed as written for the far ones (precise when |c_k| >> the spread)."""
    if far.all():
        Q = get_array_module(G).empty_like(P)
    else:
        Q = coef.T @ (G * Xs)
        Q -= c * P
    for k in numpy.flatnonzero(far):
        Q[k] = column_sums(G * (Xs - c[k]) * coef[:, k:k + 1])
    return Q


def _array(v):
    return v.array if isinstance(v, chainer.Variable) else v


def check_input(x, size, name='x'):
    """The shape checks shared by the function and the link: (N, C, ...) with C = size."""
    if x.ndim < 2:
        raise ValueError(f'{name} must have shape (N, C) or (N, C, H, W); got shape {x.shape}')
    if x.dtype.kind != 'f':
        raise ValueError(f'{name} must be floating point; got dtype {x.dtype}')
    if size is not None and x.shape[1] != size:
        raise ValueError(f'{name} has {x.shape[1]} channels (axis 1) but the normalization was '
                         f'built for {size}; shape {x.shape}')
    rows = x.shape[0] * int(numpy.prod(x.shape[2:], dtype=numpy.int64))
    if rows == 0:
        raise ValueError(f'{name} has no rows to normalize; shape {x.shape}')
    return rows


def mixture_normalization(x, gamma, beta, responsibilities, eps=2e-5, affine='output',
                          activation=None):
    """Mixture normalization with given responsibilities (Eq. 34-36; Eq. 37, 40 as options).

    Args:
        x: (N, C) or (N, C, H, W) (any (N, C, ...)), float16/32/64.
        gamma, beta: (C,) per-channel scale and shift.
        responsibilities: nu (m, K) with m = N*H*W, in the row order of
            ``x.transpose(0, 2, 3, 1).reshape(-1, C)`` (for (N, C): (N, K)). No gradient.
        eps: added to each component variance.
        affine: ``'output'`` (default, ``gamma * xhat + beta`` after Eq. 34) or
            ``'statistics'`` (Eq. 37 as printed).
        activation: None or ``'relu'`` (Eq. 40: ReLU per component, then aggregate).

    Returns:
        chainer.Variable of x's shape and dtype.
    """
    eps, affine, activation = options.check_all(eps=eps, affine=affine,
                                                activation=activation).values()
    xa = _array(x)
    m = check_input(xa, None)
    C = xa.shape[1]
    for name, p in (('gamma', gamma), ('beta', beta)):
        if _array(p).shape != (C,):
            raise ValueError(f'{name} must have shape ({C},); got {_array(p).shape}')
    nu = _array(responsibilities)
    if nu.ndim != 2 or nu.shape[0] != m:
        raise ValueError(f'responsibilities must have shape (m, K) = ({m}, K) for x of shape '
                         f'{xa.shape}; got {nu.shape}')
    largest = float(get_array_module(xa).abs(xa).max())      # one host sync
    limit = magnitude_limit(compute_dtype(xa.dtype), m, C)
    if math.isfinite(largest) and largest > limit:   # NaN/inf propagate, as in F.batch_norm
        raise ValueError(f'mixture_normalization: x has entries of magnitude {largest:.3g}, '
                         f'beyond {limit:.3g}, where sums of their squares overflow '
                         f'{compute_dtype(xa.dtype)}; normalize in float64')
    y, = MixtureNormalizationFunction(nu, eps, affine, activation).apply((x, gamma, beta))
    return y
