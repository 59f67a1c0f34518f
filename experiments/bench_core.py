"""Core speed benchmarks, measured side by side in one run (ratios, not absolute times).

(a) one training-time GMM fit (16384 x 128 float32 rows, K=3, EM iter. 2 = 1 k-means + 1 EM
    iteration after k-means++, then the responsibilities of all rows) vs scikit-learn doing the
    same work: ``KMeans(init='k-means++', n_init=1, max_iter=1)`` (seeding, one Lloyd
    iteration, final labels), the M-step on those labels, then ``GaussianMixture(max_iter=1)``
    from those parameters (one E+M iteration and its closing E-step). Target: >= 5x faster.
(b) MN layer forward+backward vs chainer's ``L.BatchNormalization`` at conv3 size
    (batch 256: 256 x 128 x 8 x 8), training mode, each with its ReLU.
(c) CifarCNN training step (RMSprop) with MN at conv3 vs all-BN. Target: >= 0.95 of BN's
    throughput on CPU (the paper's whole-network figure on a GPU is 0.88).

Timings alternate between the two contenders (A B A B ...); ratios are medians over adjacent
pairs, so the slow drifts of a noisy (virtual) machine hit both alike.
Usage: ``python experiments/bench_core.py [--quick] [--json out.json]``.
"""
import argparse
import functools
import json
import platform
import statistics
import time
import warnings

import numpy

# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy >= 2 support)
# isort: on
import chainer
import chainer.functions as F
import chainer.links as L

from mixnorm_chainer import MixtureNormalization, fit_gmm
from mixnorm_chainer.models import CifarCNN


def alternate(a, b, repeats, warmup=1):
    """Run callables a and b alternately (a b a b ...).

    Returns a dict: ``a_s``, ``b_s`` (median seconds), ``ratio`` (median over adjacent pairs
    of t_b / t_a: slow drifts of a noisy machine cancel) and ``ratio_min`` (min t_b / min t_a:
    the least disturbed run of each, the usual estimate for deterministic CPU-bound work).
    """
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for _ in range(repeats):
        for f, acc in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t0)
    return {'a_s': statistics.median(ta), 'b_s': statistics.median(tb),
            'ratio': statistics.median(y / x for x, y in zip(ta, tb)),
            'ratio_min': min(tb) / min(ta)}


def activation_rows(m, d, seed=0):
    """Rows shaped like conv activations after a ReLU network: skewed, multi-modal."""
    rng = numpy.random.default_rng(seed)
    w = rng.normal(size=(d, d)) / numpy.sqrt(d)
    h = numpy.maximum(rng.normal(size=(m, d)) + rng.choice([-1.0, 0.5, 2.0], size=(m, 1)), 0)
    return (h @ w).astype(numpy.float32)


def sklearn_same_work(X, K, seed):
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture
    km = KMeans(K, init='k-means++', n_init=1, max_iter=1, random_state=seed).fit(X)
    resp = (km.labels_[None, :] == numpy.arange(K)[:, None]).astype(X.dtype)   # the M-step
    nk = resp.sum(1) + 1e-6                                                   # on the k-means
    means = resp @ X / nk[:, None]                                            # labels, in X's
    var = resp @ (X * X) / nk[:, None] - means ** 2 + 1e-6                    # dtype like ours
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return GaussianMixture(K, covariance_type='diag', max_iter=1, tol=0,
                               weights_init=nk / nk.sum(), means_init=means,
                               precisions_init=1 / var).fit(X)


def bench_gmm(m, d, K, repeats):
    X = activation_rows(m, d)
    def ours():   # the fit and the responsibilities the MN layer normalizes with;
        # scikit-learn's fit likewise ends with an E-step on all rows
        return fit_gmm(X, K, kmeans_iters=1, em_iters=1, seed=0).responsibilities(X)

    r = alternate(ours, lambda: sklearn_same_work(X, K, 0), repeats)
    return {'rows': m, 'dim': d, 'K': K, 'ours_s': r['a_s'], 'sklearn_s': r['b_s'],
            'speedup': r['ratio'], 'speedup_min': r['ratio_min']}


def bench_layer(batch, channels, hw, repeats):
    x = activation_rows(batch * hw * hw, channels).reshape(batch, hw, hw, channels)
    x = numpy.ascontiguousarray(x.transpose(0, 3, 1, 2))
    gy = numpy.random.default_rng(1).normal(size=x.shape).astype(numpy.float32)
    results = {}
    def step(link, relu):
        v = chainer.Variable(x)
        y = link(v)
        if relu:
            y = F.relu(y)
        y.grad = gy
        y.backward()

    for fused in (False, True):
        mn = MixtureNormalization(channels, n_components=3, em_iters=2, seed=0,
                                  activation='relu' if fused else None)
        bn = L.BatchNormalization(channels)
        r = alternate(functools.partial(step, mn, not fused), functools.partial(step, bn, True),
                      repeats)
        results['fused_relu' if fused else 'plain'] = {
            'mn_s': r['a_s'], 'bn_s': r['b_s'], 'mn_over_bn': 1 / r['ratio'],
            'mn_over_bn_min': 1 / r['ratio_min']}
    return {'shape': list(x.shape), **results}


def bench_network(batch, size, repeats):
    rng = numpy.random.default_rng(0)
    x = rng.normal(size=(batch, 3, size, size)).astype(numpy.float32)
    t = rng.integers(0, 10, size=batch).astype(numpy.int32)

    def trainer(mn_layers):
        numpy.random.seed(0)
        model = L.Classifier(CifarCNN(10, mn_layers=mn_layers, seed=0))
        opt = chainer.optimizers.RMSprop(lr=0.01, alpha=0.9)
        opt.setup(model)
        return lambda: opt.update(model, x, t)

    r = alternate(trainer(('conv3',)), trainer(()), repeats)
    return {'batch': batch, 'input': size, 'mn_s': r['a_s'], 'bn_s': r['b_s'],
            'mn_throughput_vs_bn': r['ratio'], 'mn_throughput_vs_bn_min': r['ratio_min']}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true', help='tiny sizes (checks the script runs)')
    p.add_argument('--json', help='also write the results here')
    args = p.parse_args(argv)
    if args.quick:
        cfg = dict(gmm=(512, 16, 3, 2), layer=(8, 16, 4, 2), net=(4, 16, 2))
    else:
        cfg = dict(gmm=(16384, 128, 3, 21), layer=(256, 128, 8, 15), net=(64, 32, 15))
    info = {'python': platform.python_version(), 'numpy': numpy.__version__,
            'chainer': chainer.__version__, 'machine': platform.machine(),
            'cpu_count': __import__('os').cpu_count()}
    print('bench_core:', info)
    res = {'info': info}
    res['gmm'] = g = bench_gmm(*cfg['gmm'])
    print('(a) GMM fit {}x{} K={} EM iter. 2: ours {:.1f} ms, scikit-learn {:.1f} ms -> '
          '{:.1f}x faster (paired median; {:.1f}x by minima) (target >= 5x)'.format(
              g['rows'], g['dim'], g['K'], 1e3 * g['ours_s'], 1e3 * g['sklearn_s'],
              g['speedup'], g['speedup_min']))
    res['layer'] = lay = bench_layer(*cfg['layer'])
    for kind in ('plain', 'fused_relu'):
        r = lay[kind]
        print('(b) layer fwd+bwd {} [{}]: MN {:.1f} ms, BN+ReLU {:.1f} ms -> MN/BN = {:.2f}x '
              '({:.2f}x by minima)'.format(
                  lay['shape'], 'MN then ReLU' if kind == 'plain' else 'MN with Eq. 40 ReLU',
                  1e3 * r['mn_s'], 1e3 * r['bn_s'], r['mn_over_bn'], r['mn_over_bn_min']))
    res['network'] = n = bench_network(*cfg['net'])
    print('(c) CifarCNN train step batch {} at {}x{}: MN(conv3) {:.0f} ms, BN {:.0f} ms -> '
          'MN throughput = {:.3f} of BN (paired median; {:.3f} by minima) (target >= 0.95)'
          .format(n['batch'], n['input'], n['input'], 1e3 * n['mn_s'], 1e3 * n['bn_s'],
                  n['mn_throughput_vs_bn'], n['mn_throughput_vs_bn_min']))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == '__main__':
    main()
