"""The numbers of docs/numerics.md: float32 vs float64 MN far from the origin, a tight component
far from the batch mean, test mode vs training, and the cost of the variance forms.

Usage: ``python experiments/numerics_check.py [--timing]`` (~10 s; --timing adds ~20 s).
Every comparison feeds both precisions the same float32-rounded inputs, so the errors are the
layer's own; "normwise" is max|y32 - y64| / max|y64|.
"""
import argparse
import time

import numpy

# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy >= 2 support)
# isort: on
import chainer

from mixnorm_chainer import MixtureNormalization, fit_gmm, mixture_normalization
from mixnorm_chainer.gmm import component_moments

C = 8


def clustered(rng, shape=(8, C, 6, 6)):
    N, _, H, W = shape
    modes = numpy.array([-3.0, 0.0, 3.0])[rng.integers(0, 3, size=(N, 1, H, W))]
    return modes + 0.5 * rng.normal(size=shape)


CASES = [
    ('clustered, near the origin', lambda r: clustered(r)),
    ('clustered + 1e3', lambda r: clustered(r) + 1e3),
    ('clustered + 1e4', lambda r: clustered(r) + 1e4),
    ('clustered + per-channel 1..1e4',
     lambda r: clustered(r) + numpy.logspace(0, 4, C)[:, None, None]),
    ('one constant channel at 100', lambda r: numpy.concatenate(
        [clustered(r, (8, C - 1, 6, 6)), numpy.full((8, 1, 6, 6), 100.0)], axis=1)),
    ('1e4 + N(0, 0.5^2), unimodal', lambda r: 1e4 + 0.5 * r.normal(size=(8, C, 6, 6))),
]


def normwise(a, b):
    return float(numpy.abs(a.astype(numpy.float64) - b).max() / numpy.abs(b).max())


def offsets_table(seeds=3):
    print('float32 vs float64 MN (K=3, 4 training steps, then test mode), worst of '
          f'{seeds} seeds, normwise:')
    print(f'  {"data":34s} {"training":>10s} {"test mode":>10s}')
    for name, make in CASES:
        worst = [0.0, 0.0]
        for seed in range(seeds):
            rng = numpy.random.default_rng(seed)
            links = {dt: MixtureNormalization(C, n_components=3, dtype=dt, seed=seed)
                     for dt in (numpy.float32, numpy.float64)}
            for step in range(5):
                x = make(rng).astype(numpy.float32)
                with chainer.using_config('train', step < 4):
                    out = {dt: link(x.astype(dt)).array for dt, link in links.items()}
                i = 0 if step < 4 else 1
                worst[i] = max(worst[i], normwise(out[numpy.float32], out[numpy.float64]))
        print(f'  {name:34s} {worst[0]:10.1e} {worst[1]:10.1e}')


def tight_component():
    rng = numpy.random.default_rng(0)
    m = 2000
    X = rng.normal(size=(m, 4))
    X[:m // 10, 0] = 50 + 0.01 * rng.normal(size=m // 10)
    X = X.astype(numpy.float32).astype(numpy.float64)
    nu = numpy.zeros((m, 2))
    nu[:m // 10, 0] = 1
    nu[m // 10:, 1] = 1
    fits = {dt: fit_gmm(X.astype(dt), 2, kmeans_iters=1, em_iters=1, seed=0)
            for dt in (numpy.float32, numpy.float64)}
    ys = {dt: mixture_normalization(X.astype(dt), numpy.ones(4, dt), numpy.zeros(4, dt),
                                    nu.astype(dt)).array for dt in (numpy.float32, numpy.float64)}
    print('\na tight component far from the batch mean (10% of 2000 rows at 50 +- 0.01):')
    print('  fit_gmm variance of the tight component: float32 {:.4g}, float64 {:.4g}'.format(
        float(fits[numpy.float32].variances[:, 0].min()),
        float(fits[numpy.float64].variances[:, 0].min())))
    print('  transform, one-hot nu: max|y32 - y64| = {:.2g} (max|y| {:.3g})'.format(
        float(numpy.abs(ys[numpy.float32] - ys[numpy.float64]).max()),
        float(numpy.abs(ys[numpy.float64]).max())))


def test_vs_training():
    print('\ntest mode on the last training batch vs its training output (float64, K=3, '
          'T=10, 15 steps, 3 seeds), relative RMS:')

    def relu_like(rng, shape):
        return numpy.maximum(rng.normal(size=shape) + 0.5, 0)

    for name, make in (('3 separated modes', clustered), ('ReLU-like', relu_like)):
        for n in (16, 128):
            gaps = []
            for T in (1, 10):
                values = []
                for seed in range(3):
                    rng = numpy.random.default_rng(seed)
                    link = MixtureNormalization(C, n_components=3, queue_length=T,
                                                dtype=numpy.float64, seed=seed)
                    for _ in range(15):
                        x = make(rng, (n, C, 6, 6))
                        y = link(x).array
                    with chainer.using_config('train', False):
                        t = link(x).array
                    values.append(numpy.sqrt(((t - y) ** 2).mean() / (y ** 2).mean()))
                gaps.append(numpy.mean(values))
            print(f'  {name:18s} {n * 36:5d} rows: T=1 {gaps[0]:.1e}, T=10 {gaps[1]:.3f}')


def variance_forms(X, X2, resp):
    """The per-component variance forms timed by :func:`timing`."""
    n = resp.sum(axis=1)
    mean = resp @ X / n[:, None]

    def one_pass():
        return resp @ X2 / n[:, None] - mean * mean

    def two_pass():
        return numpy.stack([r @ (X - mu) ** 2 for r, mu in zip(resp, mean)]) / n[:, None]

    def float64():
        X64, r64 = X.astype(numpy.float64), resp.astype(numpy.float64)
        mu = r64 @ X64 / n[:, None]
        return (r64 @ (X64 * X64) / n[:, None] - mu * mu).astype(numpy.float32)

    def adaptive():
        return component_moments(X, resp, X2=X2)

    return one_pass, two_pass, float64, adaptive


def timing(repeats=5):
    print('\nper-component variances, float32, min of 5 (ms): one-pass | two-pass (every '
          'component) | float64 sums (incl. casting the rows)')
    for m, D, K in ((16384, 128, 3), (65536, 64, 5), (4096, 768, 3)):
        rng = numpy.random.default_rng(0)
        X = rng.normal(size=(m, D)).astype(numpy.float32)
        resp = numpy.ascontiguousarray(rng.dirichlet(numpy.ones(K), size=m).T, numpy.float32)
        times = []
        for f in variance_forms(X, X * X, resp):
            f()
            best = []
            for _ in range(repeats):
                start = time.perf_counter()
                f()
                best.append(time.perf_counter() - start)
            times.append(1e3 * min(best))
        print('  m={:6d} D={:4d} K={}: {:6.2f} | {:6.2f} | {:6.2f}   (component_moments, no far '
              'component: {:.2f})'.format(m, D, K, *times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--timing', action='store_true', help='also time the variance forms')
    args = parser.parse_args()
    offsets_table()
    tight_component()
    test_vs_training()
    if args.timing:
        timing()


if __name__ == '__main__':
    main()
