"""A second-long check of every kernel against the xp path (``mixnorm-doctor``,
``make gpu-check``)."""
import chainer
import numpy
from chainer.backends import cuda

from mixnorm_chainer import functions, gmm, group_gmm, queue, seeding
from mixnorm_chainer.kernels import (
    e_step,
    group,
    kmeans_assign,
    nearest_squared_distances,
    weighted_centred_squares,
    weighted_sums,
)

#: float32 roundoffs of the largest value allowed on top of a float16 entry's own unit
FLOAT16_SLACK = 64


def tolerance(name):
    """The largest error :func:`check` accepts for an entry.

    float32 / float64 entries: 1e-5 relative (normwise), 84 float32 roundoffs (measured on the
    CPU under tests/cuda_kernel_harness.py: at most 7.4 for seed 0, 17 over seeds 0-19).
    ``*_float16`` entries are compared element by element: both paths compute in float32 and
    round once to float16, so each output may differ by one float16 unit in the last place of
    its own value, plus :data:`FLOAT16_SLACK` float32 roundoffs of the largest value (gradients
    that cancel); the error is in those units and the tolerance 1.
    """
    return 1.0 if 'float16' in name else 1e-5


def check(xp, seed=0):
    """Run every kernel once on small random data and compare with the xp reference path.

    Returns ``{kernel name: max relative error}`` (float32 and float64 inputs, worst of
    both; ``*_float16``: float16 activations); compare with :func:`tolerance`.
    Used by ``mixnorm-doctor`` and ``experiments/gpu_check.py`` (a second or so).
    """
    rng = numpy.random.default_rng(seed)
    errors = {}

    def record(name, ours, reference):
        half = cuda.to_cpu(reference).dtype == numpy.float16
        ours, reference = (numpy.asarray(cuda.to_cpu(v), numpy.float64)
                           for v in (ours, reference))
        scale = max(numpy.abs(reference).max(), 1e-30)
        if half:       # per element: its own float16 unit + float32 roundoffs of the largest
            unit = numpy.spacing(numpy.abs(reference).astype(numpy.float16)).astype(numpy.float64)
            unit += FLOAT16_SLACK * float(numpy.finfo(numpy.float32).eps) * scale
            err = float((numpy.abs(ours - reference) / unit).max())
        else:
            err = float(numpy.abs(ours - reference).max() / scale)
        errors[name] = max(errors.get(name, 0.0), err)

    for dtype in (numpy.float32, numpy.float64):
        X = xp.asarray(rng.normal(size=(200, 5)) + rng.integers(0, 3, size=(200, 1)) * 3,
                       dtype)
        centers = X[:3].copy()
        d2 = seeding.squared_distances(X, centers, (X * X).sum(axis=1))
        record('kmeans_assign', kmeans_assign(X, centers), d2.argmin(axis=0))
        closest = xp.asarray(rng.uniform(0, 50, size=200), dtype)
        record('nearest_squared_distances', nearest_squared_distances(X, centers, closest),
               xp.minimum(closest[None, :], d2))
        weights = xp.asarray([0.2, 0.3, 0.5], dtype)
        means = xp.asarray(rng.normal(size=(3, 5)) * 3, dtype)
        variances = xp.asarray(rng.uniform(0.5, 2, size=(3, 5)), dtype)
        with chainer.using_config('mixnorm_kernels', False):
            ref = gmm.e_step(X, weights, means, variances)
        for name, ours, theirs in zip(('e_step', 'e_step_log_likelihood'),
                                      e_step(X, weights, means, variances), ref):
            record(name, ours, theirs)
        resp = xp.exp(ref[0])
        X3, shift = X[:, :, None], X[0]
        record('weighted_sums', weighted_sums(X3, resp, shift), resp @ (X - shift))
        mu = (resp @ (X - shift)) / resp.sum(axis=1)[:, None]
        record('weighted_centred_squares', weighted_centred_squares(X3, resp, mu, shift),
               xp.stack([resp[k] @ (X - shift - mu[k]) ** 2 for k in range(3)]))

        x = xp.asarray(rng.normal(size=(4, 3, 5, 6)) + 2, dtype)
        nu = xp.asarray(rng.dirichlet(numpy.ones(3), size=4 * 5 * 6), dtype)
        gamma = xp.asarray(rng.uniform(0.5, 1.5, size=3), dtype)
        beta = xp.asarray(rng.normal(size=3), dtype)
        gy = xp.asarray(rng.normal(size=x.shape), dtype)
        inputs = [(x, gy, '')]
        if dtype == numpy.float32:     # float16 activations (mixed16); off the origin, where
            # the rows are shifted (the shift in float32) before the per-component terms
            for offset in (0, 28):
                inputs.append(((x + offset).astype(numpy.float16), gy.astype(numpy.float16),
                               '_float16'))
        for activation in (None, 'relu'):
            for x_in, gy_in, suffix in inputs:
                outs = []
                for use in (True, False):
                    with chainer.using_config('mixnorm_kernels', use):
                        v = chainer.Variable(x_in)
                        y = functions.mixture_normalization(v, gamma, beta, nu,
                                                            activation=activation)
                        y.grad = gy_in
                        y.backward()
                        outs.append((y.array, v.grad))
                suffix += '' if activation is None else '_relu'
                record('transform_forward' + suffix, outs[0][0], outs[1][0])
                record('transform_backward' + suffix, outs[0][1], outs[1][1])
        qw = xp.asarray(rng.dirichlet(numpy.ones(3), size=2))
        qm = xp.asarray(rng.normal(size=(2, 3, 3)) + 2)
        qv = xp.asarray(rng.uniform(0.5, 2, size=(2, 3, 3)))
        for x_in in ((x, x.astype(numpy.float16), (x + 28).astype(numpy.float16))
                     if dtype == numpy.float32 else (x,)):
            outs = []
            for use in (True, False):                  # float16 input: computed in float32
                with chainer.using_config('mixnorm_kernels', use):
                    outs.append(queue.queue_normalization(x_in, gamma, beta, qw, qm, qv, 2,
                                                          0.9, 2e-5, fit=(qw, qm, qv + 1e-6)))
            suffix = '_float16' if x_in.dtype == numpy.float16 else ''
            record('queue_coefficients' + suffix, outs[0].array, outs[1].array)
    for dtype in (numpy.float32, numpy.float64):      # a stream of their own: the draws above
        check_group(xp, numpy.random.default_rng([seed, 1]), dtype, record)   # stay the same
    return errors


def check_group(xp, rng, dtype, record):
    """The per-set fit's kernels (:mod:`mixnorm_chainer.kernels.group`) against the xp path of
    :mod:`mixnorm_chainer.group_gmm`, on 6 sets of 50 values with pruned components."""
    S, K, m = 6, 3, 50
    X = xp.asarray(rng.normal(size=(S, m)) + rng.integers(0, 3, size=(S, m)) * 3, dtype)
    centers = xp.asarray(rng.normal(size=(S, K)) * 3, dtype)
    live = xp.asarray(rng.random((S, K)) < 0.7)
    live[:, 0] = True
    with chainer.using_config('mixnorm_kernels', False):
        labels = group_gmm.kmeans_assign(X, centers, live)
        step = group_gmm.kmeans_step(X, centers, live)
        weights = xp.where(live, xp.asarray(rng.dirichlet(numpy.ones(K), size=S), dtype), 0)
        weights /= weights.sum(axis=1, keepdims=True)
        variances = xp.asarray(rng.uniform(0.5, 2, size=(S, K)), dtype)
        resp = group_gmm.e_step(X, weights, centers, variances, live)
        params = group_gmm.m_step(X, resp, live, 1e-6)
    record('set_assign', group.kmeans_assign(X, centers, live), labels)
    record('set_label_sums', group.kmeans_step(X, centers, live), step)
    record('set_e_step', group.e_step(X, weights, centers, variances, live), resp)
    record('set_moments', xp.stack(group.m_step(X, resp, live, 1e-6)), xp.stack(params))
