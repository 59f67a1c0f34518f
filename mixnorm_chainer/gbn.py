"""Generalized Batch Normalization (GBN; Yuan, Feng, Norton & Li, AAAI 2019).

BN centres each channel with the mean and scales it with the standard deviation. GBN replaces
that pair with any *statistic / deviation* pair of a risk quadrangle (Rockafellar & Uryasev,
"The fundamental risk quadrangle", 2013). A quadrangle (R, D, V, E) of a random variable X
(read as a loss: the *upper* tail is the "risky" one) has

* error E and deviation ``D(X) = min_C E(X - C)``,
* statistic ``S(X) = argmin_C E(X - C) = argmin_C {C + V(X - C)}``,
* risk ``R(X) = D(X) + EX``.

The per-channel transform, over all N*H*W positions of a channel (as BN), is::

    y = gamma * (x - S(x)) / sqrt(D(x)^2 + eps) + beta                               (GBN)

The denominator is ``sqrt(D^2 + eps)`` (not ``D + eps``) for every deviation, so that with
D = the biased standard deviation it is exactly BN's ``sqrt(var + eps)``. The pairs
(m = N*H*W samples x_1..m of one channel, x_(1) <= ... <= x_(m) sorted):

``'std'``: mean and standard deviation (the L2 quadrangle; E(X) = ||X||_2)
    ``S = mean(x)``, ``D = sqrt(mean((x - S)^2))`` (biased, as BN). This *is* BN: the function
    calls ``F.batch_normalization`` (identical outputs and gradients, eps handling included).

``'mad'``: median and mean absolute deviation (E(X) = E|X|, which is the Koenker-Bassett
error below at alpha = 1/2)
    ``D = min_C mean|x - C| = mean|x - S|``, S = the median. For even m the argmin is the
    interval [x_(m/2), x_(m/2+1)]; we take its midpoint (``numpy.median``), which leaves D
    unchanged. Note ``D = CVaR_1/2(X) - EX``: the mad pair is the quantile quadrangle at
    alpha = 1/2 with the symmetric median as statistic.

``'cvar'``: alpha-quantile and superquantile (CVaR) deviation (the quantile quadrangle;
E(X) = E[alpha/(1-alpha) X_+ + X_-], Koenker-Bassett)
    ``S = q_alpha = x_(k)``, ``k = ceil(alpha m)`` (the lower alpha-quantile, VaR_alpha), and
    ``D = CVaR_alpha(x) - mean(x)`` with ``CVaR_alpha(x) = q_alpha + mean((x - q_alpha)_+) /
    (1 - alpha)`` (Rockafellar-Uryasev), i.e. the mean of the upper (1 - alpha) tail (the atom
    at q_alpha counted with the fraction that completes the tail) minus the mean.
    Tail convention: the **upper** tail. The normalization is followed by ReLU, which passes
    exactly the part of the channel above the centre: centred at q_alpha, ReLU keeps the upper
    (1 - alpha) fraction, and D measures how far that upper tail lies above the mean. alpha
    must satisfy ``(1 - alpha) m >= 1`` (at least one sample in the tail).

Gradients: S and D of 'mad' and 'cvar' are piecewise linear in x: ``S = <a, x>``,
``D = <b, x>`` with weights a, b fixed by the order of the batch (the order statistics
from ``xp.partition``). The graph is ``F.fixed_batch_normalization(x, gamma, beta, S, D^2, eps)``
with S and D these linear forms of x, so gradients flow into the selected order statistics
(a subgradient where samples tie; the gradient where they do not):

* median: weight 1 on x_((m+1)/2) (odd m), 1/2 on x_(m/2) and x_(m/2+1) (even m);
* MAD: ``dD/dx_i = s_i/m - (sum_j s_j / m) a_i`` with ``s_i = sign(x_i - S)``
  (``sum_j s_j = 0`` without ties, so the median's own term vanishes: envelope theorem);
* q_alpha: weight 1 on x_(k);
* CVaR: ``1/((1-alpha)m)`` on x_(k+1..m), ``(k - alpha m)/((1-alpha)m)`` on x_(k) (the
  tail's fractional atom), and D subtracts 1/m from every weight.
"""
import math

import chainer
import chainer.functions as F
import numpy
from chainer.backend import get_array_module

from mixnorm_chainer import options as layer_options
from mixnorm_chainer.functions import check_input, compute_dtype
from mixnorm_chainer.link_state import add_scale_shift, scale_shift, serialize_json

DEVIATIONS = ('std', 'mad', 'cvar')


def check_deviation(deviation, alpha):
    """Validate the (deviation, alpha) pair; returns alpha as float (or None)."""
    if deviation not in DEVIATIONS:
        raise ValueError(f'deviation must be one of {DEVIATIONS}; got {deviation!r}')
    if deviation != 'cvar':
        if alpha is not None:
            raise ValueError(f"alpha is the level of the 'cvar' deviation only; got "
                             f'alpha={alpha!r} with deviation={deviation!r}')
        return None
    if alpha is None:
        raise ValueError("deviation 'cvar' needs alpha in (0, 1), the quantile level "
                         '(the upper 1 - alpha tail is averaged)')
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f'alpha must be a number in (0, 1); got {alpha!r}') from None
    if not 0 < alpha < 1:
        raise ValueError(f'alpha must be in (0, 1); got {alpha!r}')
    return alpha


def quantile_index(alpha, m):
    """k = ceil(alpha m) (1-based) of the lower alpha-quantile x_(k), robust to rounding."""
    return max(1, int(math.ceil(round(alpha * m, 9))))


def check_tail(alpha, m):
    """The superquantile needs at least one sample in its upper (1 - alpha) tail."""
    if (1 - alpha) * m < 1 - 1e-9:
        raise ValueError(
            f"deviation 'cvar' at alpha={alpha} needs (1 - alpha) * m >= 1 samples in the upper "
            f'tail; the batch has only m={m} positions per channel (N*H*W), so the tail holds '
            f'{(1 - alpha) * m:.3g}: use a larger batch or a smaller alpha')


def _order_statistics(x, ranks):
    """Per channel, the values x_(r) (0-based ranks r, sorted ascending) of x (N, C, ...):
    a (len(ranks), C) array, by ``xp.partition`` over a contiguous (C, m) copy."""
    xp = get_array_module(x)
    cols = xp.ascontiguousarray(xp.moveaxis(x, 1, 0)).reshape(x.shape[1], -1)
    part = xp.partition(cols, list(ranks), axis=1)
    return part[:, list(ranks)].T


def _indicator_weights(x, value, shape):
    """``[x == value] / #{x == value}`` per channel: weight 1 on the order statistic, spread
    evenly over samples tied with it (a convex combination: still a subgradient)."""
    eq = (x == value.reshape(shape)).astype(x.dtype)
    axes = (0,) + tuple(range(2, x.ndim))
    return eq / eq.sum(axis=axes).reshape(shape)


def statistic_weights(x, deviation, alpha=None):
    """Weights a, b of x's shape with ``S = sum a x`` and ``D = sum b x`` over each channel.

    x: (N, C) or (N, C, H, W) (any (N, C, ...)) samples; the statistics are per channel over
    all other axes. Only for 'mad' and 'cvar' (piecewise linear S and D); the weights are
    constants of the batch's order (see the module docstring). The order statistics come from
    ``xp.partition`` (no full sort); samples tied with a selected order statistic share its
    weight equally.
    """
    xp = get_array_module(x)
    C = x.shape[1]
    m = x.size // C
    shape = (1, C) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim))
    if deviation == 'mad':
        if m % 2:
            a = _indicator_weights(x, _order_statistics(x, [(m - 1) // 2])[0], shape)
        else:
            lo, hi = _order_statistics(x, [m // 2 - 1, m // 2])
            a = (_indicator_weights(x, lo, shape) + _indicator_weights(x, hi, shape)) / 2
        center = (a * x).sum(axis=axes)
        s = xp.sign(x - center.reshape(shape))
        b = s / m - (s.sum(axis=axes) / m).reshape(shape) * a
        return a, b
    if deviation == 'cvar':
        alpha = check_deviation('cvar', alpha)
        check_tail(alpha, m)
        k = quantile_index(alpha, m)
        tail = (1 - alpha) * m
        q = _order_statistics(x, [k - 1])[0]
        a = _indicator_weights(x, q, shape)
        above = (x > q.reshape(shape)).astype(x.dtype)
        # CVaR = q + sum (x - q)_+ / tail = sum_{x > q} x / tail + q (1 - n_above / tail)
        atom = 1 - above.sum(axis=axes) / tail
        w = above / tail + atom.reshape(shape) * a
        return a, w - x.dtype.type(1) / m
    raise ValueError(f"statistic_weights is for 'mad' and 'cvar'; got {deviation!r}")


def _check(xa, gamma, beta):
    size = gamma.shape[0] if gamma.ndim == 1 else None
    if gamma.shape != beta.shape or gamma.ndim != 1:
        raise ValueError(f'gamma and beta must both have shape (C,); got {gamma.shape} and '
                         f'{beta.shape}')
    return check_input(xa, size)


def _array(v):
    return v.array if isinstance(v, chainer.Variable) else v


def generalized_batch_normalization(x, gamma, beta, deviation='std', alpha=None, eps=2e-5,
                                    return_statistics=False):
    """GBN in training mode: ``gamma * (x - S(x)) / sqrt(D(x)^2 + eps) + beta`` per channel.

    Args:
        x: (N, C) or (N, C, H, W) (any (N, C, ...)), float16/32/64; statistics over all axes
            but 1, as BN. float16 is computed in float32.
        gamma, beta: (C,) scale and shift (Variables or arrays).
        deviation: ``'std'`` (mean / standard deviation = ``F.batch_normalization``),
            ``'mad'`` (median / mean absolute deviation) or ``'cvar'`` (alpha-quantile /
            superquantile deviation ``CVaR_alpha(X) - EX``, upper tail); see the module
            docstring for the quadrangle each comes from.
        alpha: the level of ``'cvar'`` (required there, rejected otherwise).
        eps: added to D^2 under the square root (BN's eps).
        return_statistics: also return ``(S, D)`` as (C,) arrays (no graph).

    Raises ValueError on a wrong shape/dtype, non-finite input (no statistic exists), or a
    'cvar' tail with fewer than one sample.
    """
    alpha = check_deviation(deviation, alpha)
    xa = _array(x)
    m = _check(xa, _array(gamma), _array(beta))
    xp = get_array_module(xa)
    if not bool(xp.isfinite(xa).all()):
        raise ValueError(f'generalized_batch_normalization got non-finite input (NaN or inf), '
                         f'shape {xa.shape}: the batch statistics do not exist')
    if deviation == 'cvar':
        check_tail(alpha, m)
    axes = (0,) + tuple(range(2, xa.ndim))
    if deviation == 'std':
        y = F.batch_normalization(x, gamma, beta, eps=eps)
        if not return_statistics:
            return y
        xc = xa.astype(compute_dtype(xa.dtype), copy=False)
        mean = xc.mean(axis=axes)
        shape = (1, -1) + (1,) * (xa.ndim - 2)
        std = xp.sqrt(((xc - mean.reshape(shape)) ** 2).mean(axis=axes))
        return y, (mean, std)

    cdt = compute_dtype(xa.dtype)
    xc, g, b = (F.cast(v, cdt) if _array(v).dtype != cdt else v for v in (x, gamma, beta))
    a, bw = statistic_weights(xa.astype(cdt, copy=False), deviation, alpha)
    center = F.sum(xc * a, axis=axes)
    dev = F.sum(xc * bw, axis=axes)
    y = F.fixed_batch_normalization(xc, g, b, center, dev * dev, eps=eps)
    if y.dtype != xa.dtype:
        y = F.cast(y, xa.dtype)
    if return_statistics:
        return y, (center.array, dev.array)
    return y


def fixed_generalized_batch_normalization(x, gamma, beta, center, deviation, eps=2e-5):
    """Test mode: ``gamma * (x - center) / sqrt(deviation^2 + eps) + beta`` with fixed (C,)
    statistics (the link's running estimates); = ``F.fixed_batch_normalization`` with
    ``mean=center, var=deviation^2``. Elementwise, so a non-finite entry stays local."""
    xa = _array(x)
    _check(xa, _array(gamma), _array(beta))
    cdt = compute_dtype(xa.dtype)
    xc, g, b = (F.cast(v, cdt) if _array(v).dtype != cdt else v for v in (x, gamma, beta))
    c = _array(center).astype(cdt, copy=False)
    d = _array(deviation).astype(cdt, copy=False)
    y = F.fixed_batch_normalization(xc, g, b, c, d * d, eps=eps)
    return F.cast(y, xa.dtype) if y.dtype != xa.dtype else y


class GeneralizedBatchNormalization(chainer.Link):
    """GBN layer (Yuan et al. 2019): BN with a quadrangle's statistic / deviation pair.

    Training mode: :func:`generalized_batch_normalization` with the batch's S and D (see the
    module docstring for the formulas), and running estimates updated as BN's::

        avg_center    <- decay * avg_center    + (1 - decay) * S(x)
        avg_deviation <- decay * avg_deviation + (1 - decay) * D(x)

    Test mode: ``gamma * (x - avg_center) / sqrt(avg_deviation^2 + eps) + beta``.
    The running deviation is the average of the batch D itself (for 'std': the biased batch
    standard deviation; BN's ``L.BatchNormalization`` instead averages the unbiased variance),
    so that after many identical batches test mode reproduces the training transform.

    Args:
        size: channels C (axis 1).
        deviation: ``'std'`` (= BN), ``'mad'`` (median / mean absolute deviation) or
            ``'cvar'`` (alpha-quantile / superquantile deviation, upper tail).
        alpha: level of ``'cvar'`` (required there; rejected for the others).
        decay: running-average decay (BN's default 0.9).
        eps: added to D^2 under the square root (BN's default 2e-5).
        dtype, use_gamma, use_beta, initial_gamma, initial_beta: as ``L.BatchNormalization``.

    Bad input (as :class:`~mixnorm_chainer.MixtureNormalization`): wrong channel count, dtype
    or shape, non-finite input in training mode (the running estimates are left unchanged), a
    'cvar' tail with < 1 sample, and test mode before any training step all raise ValueError.
    Options and running estimates round-trip through ``chainer.serializers``.
    """

    _option_names = ('size', 'deviation', 'alpha', 'decay', 'eps')

    def __init__(self, size, deviation='std', alpha=None, decay=0.9, eps=2e-5, dtype=None,
                 use_gamma=True, use_beta=True, initial_gamma=None, initial_beta=None):
        super().__init__()
        self.size = layer_options.check('size', size)
        self._set_options(dict(deviation=deviation, alpha=alpha, decay=decay, eps=eps))
        dtype = chainer.get_dtype(dtype)
        self._dtype = dtype
        self.avg_center = numpy.zeros(self.size, dtype=dtype)
        self.avg_deviation = numpy.ones(self.size, dtype=dtype)
        self.n_updates = 0
        for name in ('avg_center', 'avg_deviation', 'n_updates'):
            self.register_persistent(name)
        add_scale_shift(self, dtype, use_gamma, use_beta, initial_gamma, initial_beta)
        self.last_statistics = None

    def _set_options(self, options):
        self.alpha = check_deviation(options['deviation'], options['alpha'])
        self.deviation = options['deviation']
        if not 0 <= options['decay'] < 1:
            raise ValueError(f"decay must be in [0, 1); got {options['decay']!r}")
        self.decay = float(options['decay'])
        self.eps = layer_options.check('eps', options['eps'])

    def options(self):
        """The layer's options as a dict (what ``serialize`` saves)."""
        return {name: getattr(self, name) for name in self._option_names}

    def serialize(self, serializer):
        options = serialize_json(serializer, 'gbn_options', self.options())
        if options is not None:
            if options['size'] != self.size:
                raise ValueError(
                    f"cannot load a GeneralizedBatchNormalization saved with size="
                    f"{options['size']} into one with size={self.size}")
            self._set_options(options)
        super().serialize(serializer)
        self.n_updates = int(self.n_updates)

    def forward(self, x):
        xa = _array(x)
        check_input(xa, self.size)
        gamma, beta = scale_shift(self)
        if not chainer.config.train:
            if self.n_updates == 0:
                raise ValueError(
                    'GeneralizedBatchNormalization is in test mode (chainer.config.train is '
                    'False) but has no running estimates yet: run at least one training-mode '
                    'forward pass (or load a trained model) before inference')
            return fixed_generalized_batch_normalization(
                x, gamma, beta, self.avg_center, self.avg_deviation, self.eps)
        y, (center, dev) = generalized_batch_normalization(
            x, gamma, beta, self.deviation, self.alpha, self.eps, return_statistics=True)
        if chainer.config.in_recomputing:   # F.forget's second call: updated by the first
            return y
        d = self.decay
        self.avg_center *= d
        self.avg_center += (1 - d) * center.astype(self._dtype, copy=False)
        self.avg_deviation *= d
        self.avg_deviation += (1 - d) * dev.astype(self._dtype, copy=False)
        self.n_updates += 1
        self.last_statistics = (center, dev)
        return y
