"""Figure 8: evolution of one MN layer's mixture components over training.

From the captures of an MN layer at 20/40/60/80/100% of training
(:class:`~mixnorm_chainer.reproduce.recorder.ActivationRecorder`), draws for a random subset of
channels
the component densities lambda_k N(x; mu_kc, sigma_kc^2) of the fitted mixture (channel
marginals; colours index components sorted by weight, largest first) over the histogram of
the captured batch, one column per fraction of training, and in the last row the mixture
weights as bars. Rows share their x axis, so a narrowing range is visible (the paper, Section
5.2: the range shrinks and one component comes to dominate).

``--run`` is a run folder or the folder of a ``mixnorm-exp run --seeds`` run, of which seed 0's
run is drawn, or seed S's with ``--seed S``. ``--draw-seed`` picks the channels shown.

    python figures/figure8.py --run results/figures/inc-c10-MN-4 --layer inc2/0/2/4 [--seed S]
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

from mixnorm_chainer.reproduce import figure_cli, plotting  # noqa: E402
from mixnorm_chainer.reproduce.recorder import load_run_recording  # noqa: E402

COLORS = ('tab:olive', 'tab:blue', 'tab:orange', 'tab:purple', 'tab:red', 'tab:green',
          'tab:brown', 'tab:pink')


def mn_captures(recording, layer=None):
    """The MN captures of ``layer`` (or of the first MN layer recorded), by fraction."""
    caps = [c for c in recording['captures'] if c['is_mn'] and (layer is None
                                                                or c['layer'] == layer)]
    if not caps:
        layers = sorted({c['layer'] for c in recording['captures'] if c['is_mn']})
        raise ValueError('no MN captures of layer {!r} in this run (MN layers recorded: {}); '
                         'rerun an MN setting with `mixnorm-exp run ... --record LAYER`'.format(
                             layer, layers))
    layer = caps[0]['layer']
    return layer, sorted((c for c in caps if c['layer'] == layer), key=lambda c: c['iteration'])


def spread(cap):
    """The mixture's standard deviation per channel (total variance of the marginal)."""
    w, mu, var = cap['weights'], cap['means'], cap['variances']
    mean = (w[:, None] * mu).sum(axis=0)
    return numpy.sqrt((w[:, None] * (var + (mu - mean) ** 2)).sum(axis=0))


def draw(layer, caps, channels, title, bins=40):
    n = len(caps)
    fig, axes = plt.subplots(len(channels) + 1, n, figsize=(2.3 * n, 1.45 * (len(channels) + 1)),
                             squeeze=False, constrained_layout=True)
    kmax = max(len(c['weights']) for c in caps)
    for r, ch in enumerate(channels):
        lo = min(numpy.percentile(c['x'][:, ch].astype(numpy.float64), 0.5) for c in caps)
        hi = max(numpy.percentile(c['x'][:, ch].astype(numpy.float64), 99.5) for c in caps)
        pad = 0.05 * (hi - lo + 1e-6)
        grid = numpy.linspace(lo - pad, hi + pad, 300)
        for j, cap in enumerate(caps):
            ax = axes[r, j]
            ax.hist(cap['x'][:, ch].astype(numpy.float64), bins=bins, range=(grid[0], grid[-1]),
                    density=True, color='0.85')
            order = numpy.argsort(-cap['weights'])
            for rank, k in enumerate(order):
                dens = cap['weights'][k] * scipy.stats.norm.pdf(
                    grid, cap['means'][k, ch], numpy.sqrt(cap['variances'][k, ch]))
                ax.plot(grid, dens, color=COLORS[rank % len(COLORS)], lw=1.2)
            ax.set_xlim(grid[0], grid[-1])
            ax.set_yticks([])
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel('ch. {}'.format(ch), fontsize=8)
            if r == 0:
                ax.set_title('{:.0%} (it. {})'.format(cap['fraction'], cap['iteration']),
                             fontsize=8)
    for j, cap in enumerate(caps):
        ax = axes[-1, j]
        w = numpy.sort(cap['weights'])[::-1]
        ax.bar(numpy.arange(len(w)), w, color=[COLORS[i % len(COLORS)] for i in range(len(w))])
        ax.set_ylim(0, 1)
        ax.set_xticks(range(kmax))
        ax.set_xticklabels([str(i + 1) for i in range(kmax)], fontsize=6)
        ax.tick_params(labelsize=6)
        if j == 0:
            ax.set_ylabel('weights', fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--run', required=True, help='MN run folder with recording.npz, or a folder '
                   'of `mixnorm-exp run --seeds`')
    p.add_argument('--seed', type=int, metavar='S',
                   help='the seed to draw from a --seeds folder (default 0)')
    p.add_argument('--layer', default=None, help='MN layer name (default: the first recorded)')
    p.add_argument('--channels', type=int, default=6)
    p.add_argument('--draw-seed', type=int, default=0,
                   help='seed of the channels shown (default %(default)s)')
    p.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'figure8.png'),
                   help='output image; a missing folder is created (default %(default)s)')
    args = p.parse_args(argv)

    try:
        figure_cli.prepare_out(args.out)              # before any work
        run = plotting.seed_run(args.run, args.seed)
        recording = load_run_recording(run, 'LAYER (an MN layer)')
        layer, caps = mn_captures(recording, args.layer)
    except (ValueError, KeyError) as e:             # no recording or capture; damaged file
        p.exit(2, 'figure8: error: {}\n'.format(' '.join(str(e).split())))
    C = caps[0]['means'].shape[1]
    rng = numpy.random.RandomState(args.draw_seed)
    channels = sorted(rng.choice(C, min(args.channels, C), replace=False).tolist())
    numbers = {'run': run, 'layer': layer, 'channels_shown': channels, 'by_fraction': [
        {'fraction': c['fraction'], 'iteration': c['iteration'],
         'weights_sorted': [round(float(v), 4) for v in numpy.sort(c['weights'])[::-1]],
         'mean_channel_spread': float(spread(c).mean())} for c in caps]}
    title = ('{}: mixture of {} over training; colours = components by weight (largest '
             'first)'.format(os.path.relpath(os.path.normpath(run), os.path.dirname(
                 os.path.normpath(args.run))), layer))
    fig = draw(layer, caps, channels, title)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    print(json.dumps(numbers, indent=1))
    print('wrote', args.out)
    return numbers


if __name__ == '__main__':
    main()
