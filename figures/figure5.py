"""Figure 5: DenseNet on CIFAR-100 (Section 4.4): training error, training loss, test error and
test loss vs epoch, BN vs MN for each depth found.

Each MN run is drawn with its BN baseline (same depth, same dataset); BN is blue and MN red, and
depths differ by line style. Curves: running mean within ``--window`` epochs (paper: 3) with a
+-1 std band of the same (centred) window. Training error/loss are LogReport's averages over
each epoch. A loss axis spanning more than a factor of 20 is drawn on a log scale.

    python figures/figure5.py --run results/dense40-c100-BN results/dense40-c100-MN ... \
        [--out figures/figure5.png] [--window 3]
"""
# isort: off
import mixnorm_chainer  # noqa: F401  (first: chainer on numpy >= 2 needs _compat)
# isort: on
import numpy

from mixnorm_chainer.reproduce import figure_cli, plotting

PROG = 'figure5'
PANELS = (('main/accuracy', '(a) training error', 'training error (%)'),
          ('main/loss', '(b) training loss', 'training loss (cross entropy)'),
          ('validation/main/accuracy', '(c) test error', 'test error (%)'),
          ('validation/main/loss', '(d) test loss', 'test loss (cross entropy)'))


def depth(run):
    return int(run.model[len('densenet'):])


def body(args):
    runs = plotting.select_runs(plotting.load_runs(args.run),
                                lambda m: m.startswith('densenet'), PROG,
                                'DenseNet (Section 4.4)', 'dense40-c100-BN and dense40-c100-MN')
    plotting.check_logs(runs)
    panels = plotting.group_panels(runs, lambda r: r.dataset)
    curves = []           # (run, color, linestyle, label)
    groups = [g for gs in panels.values() for g in sorted(gs, key=lambda g: depth(g[0]))]
    for g, (base, members) in enumerate(groups):
        ls = plotting.LINESTYLES[g % len(plotting.LINESTYLES)]
        prefix = 'DenseNet-{}'.format(depth(base))
        if len(panels) > 1:
            prefix = '{} {}'.format(plotting.dataset_text(base), prefix)
        curves.append((base, plotting.BN_COLOR, ls, '{} {}'.format(prefix, base.label)))
        for i, m in enumerate(sorted(members, key=lambda r: plotting.natural_key(r.label))):
            curves.append((m, plotting.MN_COLORS[i % len(plotting.MN_COLORS)], ls,
                           '{} {}'.format(prefix, m.label)))
    fig, axes = plotting.new_figure(len(PANELS), ncols=2)
    for ax, (key, title, ylabel) in zip(axes, PANELS):
        for run, color, ls, label in curves:
            plotting.plot_run(ax, run, key, args.window, args.align, color, label, ls, args.band)
        ax.set_title(title, fontsize='medium')
        if key.endswith('loss'):
            positive = numpy.concatenate([run.series(key)[1] for run, *_ in curves])
            positive = positive[positive > 0]
            if positive.size and positive.max() > 20 * positive.min():
                ax.set_yscale('log')
        plotting.finish_axes(ax, 'epoch', ylabel, legend=ax is axes[0], legend_loc='center right')
    fig.suptitle('DenseNet: {}'.format(plotting.band_text(runs, args.window, args.band)))
    figure_cli.save_figure(fig, args.out)

    summary = {}
    for run, *_ in curves:
        row = dict(name=run.name, label=run.label, dataset=run.dataset)
        for key, short in (('validation/main/accuracy', 'test_error'),
                           ('main/accuracy', 'train_error')):
            s = plotting.curve_summary(run, key, args.window, args.align)
            row['best_' + short], row['last_' + short] = s['best'], s['last']
            row['epochs'] = s['epochs']
        for key, short in (('main/loss', 'train_loss'), ('validation/main/loss', 'test_loss')):
            v = run.series(key)[1]
            row['last_' + short] = float(v[-1]) if v.size else float('nan')
        summary[run.dir] = row
    lines = ['{}: {} run(s) -> {}'.format(PROG, len(curves), args.out),
             '{:<22} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10}'.format(
                 'run', 'epochs', 'best test', 'last test', 'last train', 'train loss',
                 'test loss')]
    for s in summary.values():
        lines.append('{:<22} {:>6} {:>10.2f} {:>10.2f} {:>10.2f} {:>10.4f} {:>10.4f}'.format(
            s['name'], s['epochs'], s['best_test_error'], s['last_test_error'],
            s['last_train_error'], s['last_train_loss'], s['last_test_loss']))
    lines[1] += '   (errors in %, losses: last epoch)'
    return summary, lines


def parser():
    return figure_cli.figure_parser(PROG, __doc__.split('\n')[0], 'figures/figure5.png', 3)


def main(argv=None):
    return figure_cli.run_main(PROG, body, argv, parser())


if __name__ == '__main__':
    main()
