"""Figure 2: test error (%) vs epoch of the CIFAR CNN (Table 2), BN vs MN.

One panel per (dataset, lr, weight decay) among the given runs, in the order of Table 2's
regimes 1-4; each MN run is drawn with its BN baseline (the setting's ``baseline``, trained on
the same dataset). Curves: running mean of the test error within ``--window`` epochs (paper:
10), shaded +-1 standard deviation of the same window (centred; ``--align trailing`` for a
trailing window). Runs of other models are ignored.

    python figures/figure2.py --run results/cnn-c10-BN-2 results/cnn-c10-MN-2 ... \
        [--out figures/figure2.png] [--window 10] [--align center] [--ylim LO HI]
"""
# isort: off
import mixnorm_chainer  # noqa: F401  (first: chainer on numpy >= 2 needs _compat)
# isort: on
from mixnorm_chainer.reproduce import figure_cli, plotting

PROG = 'figure2'


def title(key, groups):
    run = groups[0][0]
    return '{}, lr {:g}, wd {:g}'.format(plotting.dataset_text(run), key[1], key[2])


def body(args):
    runs = plotting.select_runs(plotting.load_runs(args.run), lambda m: m == 'cifar_cnn', PROG,
                                'the CIFAR CNN (Table 2)', 'cnn-c10-BN-2 and cnn-c10-MN-2')
    plotting.check_logs(runs)
    # Paper order of the regimes (BN-1..4): lr ascending, then weight decay descending.
    panels = plotting.group_panels(
        runs, lambda r: (r.dataset, r.setting['lr'], r.setting['weight_decay']),
        order=lambda k: (k[0], k[1], -k[2]))
    fig, summary = plotting.draw_test_error_panels(panels, title, args.window, args.align,
                                                   args.ylim, args.band)
    fig.suptitle('CIFAR CNN: test error, {}'.format(
        plotting.band_text(runs, args.window, args.band)))
    figure_cli.save_figure(fig, args.out)
    lines = ['{}: {} panel(s) -> {}'.format(PROG, len(panels), args.out)]
    return summary, lines + plotting.format_curve_rows(summary)


def parser():
    p = figure_cli.figure_parser(PROG, __doc__.split('\n')[0], 'figures/figure2.png', 10)
    figure_cli.add_ylim(p, 'test error (%%)')  # %% for argparse's help
    return p


def main(argv=None):
    return figure_cli.run_main(PROG, body, argv, parser())


if __name__ == '__main__':
    main()
