"""Figure 4: test error (%) vs epoch of Inception-V3 (Tables 4 and 6), BN vs MN.

One panel per (dataset, lr, optimizer) among the given runs, as in the paper: 4a CIFAR-10 and
4b CIFAR-100 at lr 0.001 (RMSprop), 4c CIFAR-100 at lr 0.005, 4d Table 6's Nesterov runs (two
drop policies, told apart by line style). Each MN run is drawn with its BN baseline. Curves:
running mean of the test error within ``--window`` epochs (default 10, as Figure 2), shaded +-1
std of the same (centred) window. Runs of other models are ignored.

    python figures/figure4.py --run results/inc-c10-BN-1 results/inc-c10-MN-4 ... \
        [--out figures/figure4.png] [--window 10] [--ylim LO HI]
"""
# isort: off
import mixnorm_chainer  # noqa: F401  (first: chainer on numpy >= 2 needs _compat)
# isort: on
from mixnorm_chainer.reproduce import figure_cli, plotting

PROG = 'figure4'


def title(key, groups):
    dataset, lr, optimizer = key
    run = groups[0][0]
    name = plotting.OPTIMIZER_NAMES.get(optimizer, optimizer)
    tables = sorted({r.setting['table'] for b, ms in groups for r in [b] + ms})
    return '{}, lr {:g}, {} ({})'.format(plotting.dataset_text(run), lr, name, ', '.join(tables))


def body(args):
    runs = plotting.select_runs(plotting.load_runs(args.run), lambda m: m == 'inception_v3',
                                PROG, 'Inception-V3 (Tables 4, 6)',
                                'inc-c10-BN-1 and inc-c10-MN-4')
    plotting.check_logs(runs)
    panels = plotting.group_panels(
        runs, lambda r: (r.dataset, r.setting['lr'], r.setting['optimizer']))
    fig, summary = plotting.draw_test_error_panels(panels, title, args.window, args.align,
                                                   args.ylim, args.band)
    fig.suptitle('Inception-V3: test error, {}'.format(
        plotting.band_text(runs, args.window, args.band)))
    figure_cli.save_figure(fig, args.out)
    lines = ['{}: {} panel(s) -> {}'.format(PROG, len(panels), args.out)]
    return summary, lines + plotting.format_curve_rows(summary)


def parser():
    p = figure_cli.figure_parser(PROG, __doc__.split('\n')[0], 'figures/figure4.png', 10)
    figure_cli.add_ylim(p, 'test error (%%)')  # %% for argparse's help
    return p


def main(argv=None):
    return figure_cli.run_main(PROG, body, argv, parser())


if __name__ == '__main__':
    main()
