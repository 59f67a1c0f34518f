"""Figure 1: activations are skewed and multi-modal; a mixture fits them, one Gaussian does not.

For a random subset of channels of one layer's input (CIFAR CNN ``conv2``: the convolution's
output) captured mid-training by
:class:`~mixnorm_chainer.reproduce.recorder.ActivationRecorder`, draws
the histogram of each channel with the fitted density p(x) (solid) and its components (dashed,
one colour per component) for K = 1 (BN), 2 and 3 (MN:2, MN:3), and below them the normalized
activations of BN vs MN:3. The GMM is the layer's joint diagonal mixture over all channels,
fitted as MN does (k-means++, "EM iter." 2); each panel shows its channel marginal
(PAPER-NOTES 1).

Printed alongside: per-channel log-likelihood gain of K = 2, 3 over K = 1 (mean log-density of
the channel's values under the channel marginal), and the skewness of BN- vs MN-normalized
activations (the paper: MN-normalized ones are closer to normal, less skewed).

``--run`` is a run folder or the folder of a ``mixnorm-exp run --seeds`` run, of which seed 0's
run is drawn, or seed S's with ``--seed S``. ``--draw-seed`` picks the channels shown and seeds
the fits' k-means++.

    python figures/figure1.py --run results/figures/cnn-c10-BN-2 [--seed S] [--channels 8] \
        [--all-channels]
"""
import argparse
import json
import os

import numpy
import scipy.stats

# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy >= 2 support)
# isort: on
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from mixnorm_chainer import fit_gmm, mixture_normalization  # noqa: E402
from mixnorm_chainer.reproduce import figure_cli, plotting  # noqa: E402
from mixnorm_chainer.reproduce.recorder import load_run_recording  # noqa: E402

COLORS = ('tab:orange', 'tab:purple', 'tab:green', 'tab:red', 'tab:brown')
DENSITY = 'teal'


def pick_capture(recording, layer, fraction):
    caps = [c for c in recording['captures'] if c['layer'] == layer]
    if not caps:
        layers = sorted({c['layer'] for c in recording['captures']})
        raise ValueError('the run recorded no capture of layer {!r} (it has {}); rerun with '
                         '`mixnorm-exp run ... --record {}`'.format(layer, layers, layer))
    return min(caps, key=lambda c: (abs(c['fraction'] - fraction), -c['fraction']))


def channel_marginal(gmm, c, grid):
    """Per-component densities lambda_k N(x; mu_kc, sigma_kc^2) on ``grid``, shape (K, G)."""
    sd = numpy.sqrt(gmm.variances[:, c])
    return gmm.weights[:, None] * scipy.stats.norm.pdf(grid[None, :], gmm.means[:, c, None],
                                                       sd[:, None])


def marginal_log_likelihood(gmm, X):
    """Mean log p_c(x) of each channel c under its channel marginal, shape (C,)."""
    comp = (numpy.log(gmm.weights)[:, None, None]
            + scipy.stats.norm.logpdf(X[None], gmm.means[:, None, :],
                                      numpy.sqrt(gmm.variances)[:, None, :]))
    return scipy.special.logsumexp(comp, axis=0).mean(axis=0)


def analyse(X, components=(1, 2, 3), em_iters=2, seed=0):
    """Fit the joint mixtures, normalize, and compute the printed numbers."""
    gmms = {K: fit_gmm(X, K, kmeans_iters=em_iters // 2, em_iters=em_iters - em_iters // 2,
                       seed=seed, min_weight=0) for K in components}
    ones, zeros = numpy.ones(X.shape[1]), numpy.zeros(X.shape[1])
    normalized = {K: mixture_normalization(X, ones, zeros, gmms[K].responsibilities(X)).array
                  for K in components}
    base = marginal_log_likelihood(gmms[1], X)
    gains = {K: marginal_log_likelihood(gmms[K], X) - base for K in components if K > 1}
    skew = {K: scipy.stats.skew(normalized[K], axis=0) for K in components}
    return gmms, normalized, gains, skew


def summary_numbers(gains, skew, X):
    out = {'rows': int(X.shape[0]), 'channels': int(X.shape[1]),
           'skewness_raw_mean_abs': float(numpy.mean(numpy.abs(scipy.stats.skew(X, axis=0))))}
    for K, g in gains.items():
        out['loglik_gain_K{}'.format(K)] = {
            'mean': float(g.mean()), 'median': float(numpy.median(g)),
            'fraction_of_channels_positive': float((g > 0).mean())}
    for K, s in skew.items():
        out['skewness_K{}_mean_abs'.format(K)] = float(numpy.mean(numpy.abs(s)))
    Kmax = max(skew)
    out['fraction_of_channels_less_skewed_with_MN{}'.format(Kmax)] = float(
        (numpy.abs(skew[Kmax]) < numpy.abs(skew[1])).mean())
    return out


def draw(X, gmms, normalized, channels, title, bins=60):
    Ks = sorted(gmms)
    rows_per_block = len(Ks) + 1
    per_row = min(8, len(channels))
    blocks = [channels[i:i + per_row] for i in range(0, len(channels), per_row)]
    fig, axes = plt.subplots(rows_per_block * len(blocks), per_row,
                             figsize=(2.1 * per_row, 1.7 * rows_per_block * len(blocks)),
                             squeeze=False, constrained_layout=True)
    for b, block in enumerate(blocks):
        for j in range(per_row):
            col = axes[b * rows_per_block:(b + 1) * rows_per_block, j]
            if j >= len(block):
                for ax in col:
                    ax.axis('off')
                continue
            c = block[j]
            lo, hi = numpy.percentile(X[:, c], [0.2, 99.8])
            pad = 0.05 * (hi - lo + 1e-6)
            grid = numpy.linspace(lo - pad, hi + pad, 300)
            for r, K in enumerate(Ks):
                ax = col[r]
                ax.hist(X[:, c], bins=bins, range=(grid[0], grid[-1]), density=True,
                        color='0.8')
                comps = channel_marginal(gmms[K], c, grid)
                ax.plot(grid, comps.sum(axis=0), color=DENSITY, lw=1.6)
                if K > 1:
                    for rank, k in enumerate(numpy.argsort(-gmms[K].weights)):
                        ax.plot(grid, comps[k], ls='--', lw=1, color=COLORS[rank % len(COLORS)])
                ax.set_yticks([])
                ax.tick_params(labelsize=6)
                if j == 0:
                    ax.set_ylabel('BN' if K == 1 else 'MN:{}'.format(K), fontsize=8)
                if r == 0:
                    ax.set_title('channel {}'.format(c), fontsize=8)
            ax = col[-1]
            K = Ks[-1]
            lo2 = min(normalized[1][:, c].min(), normalized[K][:, c].min())
            hi2 = max(normalized[1][:, c].max(), normalized[K][:, c].max())
            ax.hist(normalized[1][:, c], bins=bins, range=(lo2, hi2), density=True,
                    histtype='step', color='tab:blue', label='BN')
            ax.hist(normalized[K][:, c], bins=bins, range=(lo2, hi2), density=True,
                    histtype='step', color='tab:red', label='MN:{}'.format(K))
            ax.set_yticks([])
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel('normalized', fontsize=8)
                ax.legend(fontsize=6, loc='upper right', frameon=False)
    fig.suptitle(title, fontsize=9)
    return fig


def run_name(given, run):
    """``cnn-c10-BN-2``, or ``cnn-c10-BN-2/seed0`` for a seed folder of the given folder."""
    return os.path.relpath(os.path.normpath(run), os.path.dirname(os.path.normpath(given)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--run', required=True,
                   help='run folder with recording.npz, or a folder of `mixnorm-exp run --seeds`')
    p.add_argument('--seed', type=int, metavar='S',
                   help='the seed to draw from a --seeds folder (default 0)')
    p.add_argument('--layer', default='conv2')
    p.add_argument('--fraction', type=float, default=0.5,
                   help='use the capture closest to this fraction of training (paper: midway)')
    p.add_argument('--channels', type=int, default=8, help='random channels shown')
    p.add_argument('--all-channels', action='store_true')
    p.add_argument('--em-iters', type=int, default=2, help='"EM iter." of the fits (as MN)')
    p.add_argument('--draw-seed', type=int, default=0,
                   help='seed of the channels shown and of the fits (default %(default)s)')
    p.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'figure1.png'),
                   help='output image; a missing folder is created (default %(default)s)')
    args = p.parse_args(argv)

    try:
        figure_cli.prepare_out(args.out)              # before any work
        run = plotting.seed_run(args.run, args.seed)
        recording = load_run_recording(run, 'conv2')
        cap = pick_capture(recording, args.layer, args.fraction)
    except (ValueError, KeyError) as e:             # no recording or capture; damaged file
        p.exit(2, 'figure1: error: {}\n'.format(' '.join(str(e).split())))
    X = cap['x'].astype(numpy.float64)
    gmms, normalized, gains, skew = analyse(X, em_iters=args.em_iters, seed=args.draw_seed)
    C = X.shape[1]
    rng = numpy.random.RandomState(args.draw_seed)
    channels = list(range(C)) if args.all_channels else sorted(
        rng.choice(C, min(args.channels, C), replace=False).tolist())
    numbers = summary_numbers(gains, skew, X)
    numbers.update({'run': run, 'layer': args.layer, 'fraction': cap['fraction'],
                    'iteration': cap['iteration'], 'channels_shown': channels})
    title = ('{}: input of {} at {:.0%} of training (iteration {}), {} rows; '
             'solid: p(x), dashed: components'.format(
                 run_name(args.run, run), args.layer, cap['fraction'],
                 cap['iteration'], X.shape[0]))
    fig = draw(X, gmms, normalized, channels, title)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    print(json.dumps(numbers, indent=1))
    print('wrote', args.out)
    return numbers


if __name__ == '__main__':
    main()
