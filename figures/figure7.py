"""Figure 7: samples of DCGAN-BN and DCGAN-MN at their lowest evaluated FID (Section 4.5).

For each run, the sample grid saved at its best FID evaluation (``samples/iter_N.npz``: the
same fixed z at every evaluation, the generator in test mode), the first ``--n`` images. Of a
folder of ``mixnorm-exp run --seeds``, seed 0's run is drawn, or seed S's with ``--seed S``.

    python figures/figure7.py --run results/dcgan-c10-BN results/dcgan-c10-MN \
        [--out figures/figure7.png] [--n 64] [--seed S]
"""
# isort: off
import mixnorm_chainer  # noqa: F401  (first: chainer on numpy >= 2 needs _compat)
# isort: on
import math
import os

import numpy

from mixnorm_chainer.reproduce import figure_cli, gan, plotting

PROG = 'figure7'


def load_grid(run, iteration):
    path = gan.sample_path(run.dir, iteration, 'npz')
    if not os.path.isfile(path):
        raise FileNotFoundError('{}: no sample grid {} for the best FID at update {}'.format(
            run.describe(), path, iteration))
    with numpy.load(path) as z:
        return numpy.asarray(z['images'])


def body(args):
    dirs = [plotting.seed_run(d, args.seed) for d in args.run]     # one seed of each
    runs = plotting.select_runs([gan.load_run(d) for d in dirs], lambda m: m == 'dcgan',
                                PROG, 'the DCGAN (Section 4.5)', 'dcgan-c10-BN and dcgan-c10-MN')
    runs.sort(key=lambda r: (r.dataset, r.is_mn, plotting.natural_key(r.label)))
    fig, axes = plotting.new_figure(len(runs), panel_size=(4.0, 4.3))
    summary, lines = {}, ['{}: {} panel(s) -> {}'.format(PROG, len(runs), args.out)]
    for ax, run in zip(axes, runs):
        best, at = gan.best_fid(run)
        if best is None:
            raise plotting.FigureError('no FID evaluation in log.json of ' + run.describe())
        images = load_grid(run, at)[:args.n]
        ax.imshow(gan.image_grid(images, cols=int(math.ceil(math.sqrt(len(images)))), pad=1,
                                 fill=128),
                  interpolation='nearest')
        ax.set_axis_off()
        ax.set_title('{} on {}\nbest FID {:.2f} at update {}'.format(
            run.label, run.dataset, best, at), fontsize='medium')
        summary[run.dir] = dict(name=run.name, best=best, best_update=at, n=len(images))
        lines.append('{:<16} best FID {:.2f} at update {} ({} samples shown; {})'.format(
            run.name, best, at, len(images), gan.extractor_text(run)))
    fig.suptitle('DCGAN samples at the lowest evaluated FID', fontsize='medium')
    figure_cli.save_figure(fig, args.out)
    return summary, lines


def parser():
    p = figure_cli.figure_parser(PROG, __doc__.split('\n')[0], 'figures/figure7.png', 1,
                               window_help='unused (uniform interface)',
                               seed_help='the seed to draw from a `mixnorm-exp run --seeds` '
                               'folder (default 0)')
    p.add_argument('--n', type=int, default=64, help='samples per panel (default %(default)s)')
    return p


def main(argv=None):
    return figure_cli.run_main(PROG, body, argv, parser())


if __name__ == '__main__':
    main()
