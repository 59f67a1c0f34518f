"""Figure 3: effect of EM iterations (left) and of the MN layer(s) (right) on test error.

From CIFAR CNN runs (Table 2). Left, "effect of EM iterations": the MN runs that differ only
in ``em_iters`` (same dataset, lr, weight decay, layers, K and baseline; paper: MN-2/5/6 on
CIFAR-100, EM iter. 2/4/8) with their BN baseline (BN-2). Right, "effect of layer": the MN runs
that differ only in ``mn_layers`` (paper: MN-2 conv3, MN-7 conv2, MN-8 conv2+conv3) with their
baseline. Where several such groups exist, the one with the most variants is drawn; one row per
dataset. Curves: running mean of the test error within ``--window`` epochs (default 10) with a
+-1 std band (centred window).

    python figures/figure3.py --run results/cnn-c100-{BN-2,MN-2,MN-5,MN-6,MN-7,MN-8} \
        [--out figures/figure3.png] [--window 10] [--partial]
"""
# isort: off
import mixnorm_chainer  # noqa: F401  (first: chainer on numpy >= 2 needs _compat)
# isort: on
import numpy

from mixnorm_chainer.reproduce import figure_cli, plotting

PROG = 'figure3'
KINDS = {
    'em_iters': ('effect of EM iterations', 'MN runs differing only in EM iterations, e.g. '
                 'cnn-c100-MN-2, cnn-c100-MN-5, cnn-c100-MN-6 with their baseline cnn-c100-BN-2'),
    'mn_layers': ('effect of layer', 'MN runs differing only in their MN layers, e.g. '
                  'cnn-c100-MN-2, cnn-c100-MN-7, cnn-c100-MN-8 with their baseline '
                  'cnn-c100-BN-2'),
}
FIELDS = ('lr', 'weight_decay', 'mn_layers', 'n_components', 'em_iters', 'baseline')


def curve_label(run, kind):
    if kind == 'em_iters':
        return 'EM iter. {}'.format(run.setting['em_iters'])
    return '+'.join(run.setting['mn_layers'])


def best_group(pairs, dataset, kind):
    """(baseline, [mn runs]) of the largest set of MN runs on ``dataset`` that agree in every
    field but ``kind`` and take >= 2 values of it; None if there is none."""
    groups = {}
    for mn, base in pairs:
        if mn.dataset != dataset:
            continue
        key = tuple(_hashable(mn.setting[f]) for f in FIELDS if f != kind)
        groups.setdefault(key, (base, {}))[1].setdefault(_hashable(mn.setting[kind]), mn)
    best = None
    for key in sorted(groups, key=plotting.sort_key):
        base, variants = groups[key]
        if len(variants) >= 2 and (best is None or len(variants) > len(best[1])):
            ordered = [variants[v] for v in sorted(variants, key=plotting.sort_key)]
            best = (base, ordered)
    return best


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def body(args):
    runs = plotting.select_runs(plotting.load_runs(args.run), lambda m: m == 'cifar_cnn', PROG,
                                'the CIFAR CNN (Table 2)', KINDS['em_iters'][1])
    plotting.check_logs(runs)
    pairs = plotting.pair_with_baselines(runs)
    datasets = sorted({mn.dataset for mn, _ in pairs})
    rows = {d: {k: best_group(pairs, d, k) for k in KINDS} for d in datasets}
    for kind, (what, needed) in KINDS.items():
        if not any(r[kind] for r in rows.values()) and not args.partial:
            raise plotting.FigureError('{} ({}) needs {} (or pass --partial to draw only the '
                                       'other panel)'.format(PROG, what, needed))
    rows = {d: r for d, r in rows.items() if any(r.values())}
    if not rows:
        raise plotting.FigureError('{} needs {}, or {}'.format(
            PROG, KINDS['em_iters'][1], KINDS['mn_layers'][1]))
    fig, axes = plotting.new_figure(2 * len(rows), ncols=2)
    summary = {}
    for r, groups in enumerate(rows.values()):
        for c, kind in enumerate(KINDS):
            ax = axes[2 * r + c]
            what, needed = KINDS[kind]
            if groups[kind] is None:
                ax.axis('off')
                ax.text(0.5, 0.5, '{}:\nno {}'.format(what, needed.split(', e.g.')[0]),
                        ha='center', va='center', wrap=True, transform=ax.transAxes)
                continue
            base, members = groups[kind]
            curves = [(base, plotting.BN_COLOR, base.label)] + [
                (m, plotting.MN_COLORS[i % len(plotting.MN_COLORS)], curve_label(m, kind))
                for i, m in enumerate(members)]
            for run, color, label in curves:
                _, std = plotting.plot_run(
                    ax, run, plotting.ACC_KEY, args.window, args.align, color,
                    '{}: {}'.format(label, run.label) if run.is_mn else label, band=args.band)
                row = summary.setdefault(run.dir, dict(
                    name=run.name, label=run.label, dataset=run.dataset,
                    **plotting.curve_summary(run, plotting.ACC_KEY, args.window, args.align)))
                row['mean_rolling_std'] = float(numpy.nanmean(std)) if std.size else float('nan')
            s = members[0].setting
            ax.set_title('{}: {}\nlr {:g}, wd {:g}, K={}{}'.format(
                plotting.dataset_text(base), what, s['lr'], s['weight_decay'],
                s['n_components'], ', layer ' + '+'.join(s['mn_layers']) if kind == 'em_iters'
                else ', EM iter. {}'.format(s['em_iters'])), fontsize='medium')
            plotting.finish_axes(ax, 'epoch', 'test error (%)', ylim=args.ylim)
    fig.suptitle('CIFAR CNN: test error, {}'.format(plotting.band_text(runs, args.window,
                                                                        args.band)))
    figure_cli.save_figure(fig, args.out)
    lines = ['{}: {} row(s) ({}) -> {}'.format(PROG, len(rows), ', '.join(rows), args.out)]
    return summary, lines + plotting.format_curve_rows(summary)


def parser():
    p = figure_cli.figure_parser(PROG, __doc__.split('\n')[0], 'figures/figure3.png', 10)
    figure_cli.add_ylim(p, 'test error (%%)')  # %% for argparse's help
    p.add_argument('--partial', action='store_true',
                   help='draw what the runs allow when one of the two panels has no runs')
    return p


def main(argv=None):
    return figure_cli.run_main(PROG, body, argv, parser())


if __name__ == '__main__':
    main()
