"""Figure 6: FID vs generator updates of DCGAN-BN and DCGAN-MN (Section 4.5).

One panel per dataset; each DCGAN-MN run is drawn with its BN baseline (the setting's
``baseline`` on the same dataset). Curves: running mean of the FID within ``--window``
adjacent evaluations (paper: 3, i.e. 30K updates at its 10K interval), shaded +-1 standard
deviation of the same window (centred; ``--align trailing`` for a trailing window); the
evaluated FIDs are drawn as dots. A dotted line marks the BN run's best FID and a star the
first MN evaluation at or below it (the paper's "steps to reach 37.56"). The title names the
FID feature extractor; FIDs of the offline 'small' extractor are not comparable to the paper's.
Of a folder of ``mixnorm-exp run --seeds``, seed 0's run is drawn, or seed S's with ``--seed S``.

    python figures/figure6.py --run results/dcgan-c10-BN results/dcgan-c10-MN \
        [--out figures/figure6.png] [--window 3] [--align center] [--ylim LO HI] [--seed S]
"""
# isort: off
import mixnorm_chainer  # noqa: F401  (first: chainer on numpy >= 2 needs _compat)
# isort: on
from mixnorm_chainer.reproduce import figure_cli, gan, plotting

PROG = 'figure6'
SEED_HELP = 'the seed to draw from a `mixnorm-exp run --seeds` folder (default 0)'


def body(args):
    dirs = [plotting.seed_run(d, args.seed) for d in args.run]     # one seed of each
    runs = plotting.select_runs([gan.load_run(d) for d in dirs], lambda m: m == 'dcgan',
                                PROG, 'the DCGAN (Section 4.5)', 'dcgan-c10-BN and dcgan-c10-MN')
    empty = [r for r in runs if not gan.fid_series(r)[0].size]
    if empty:
        raise plotting.FigureError('no FID evaluation in log.json of {} (wait for the first '
                                   '--fid-interval)'.format(', '.join(r.describe() for r in empty)))
    panels = plotting.group_panels(runs, lambda r: r.dataset)
    fig, axes = plotting.new_figure(len(panels))
    summary, extractors = {}, set()
    for ax, groups in zip(axes, panels.values()):
        styles = plotting.group_styles(groups)
        for run, color, ls, label in styles:
            it, fid = gan.fid_series(run)
            plotting.plot_band(ax, it, fid, args.window, args.align, color, label, ls)
            ax.plot(it, fid, '.', color=color, markersize=4, alpha=0.7)
            best, at = gan.best_fid(run)
            mean, std = plotting.rolling_mean_std(fid, args.window, args.align)
            summary[run.dir] = dict(name=run.name, label=run.label, dataset=run.dataset,
                                    evaluations=int(it.size), best=best, best_update=at,
                                    last=float(fid[-1]), mean_rolling_std=float(std.mean()),
                                    extractor=gan.extractor_text(run))
            extractors.add(gan.extractor_text(run))
        for base, members in groups:
            target, base_at = gan.best_fid(base)
            ax.axhline(target, color=plotting.BN_COLOR, linestyle=':', linewidth=1)
            for run, color, _, _ in styles:
                if any(run is m for m in members):
                    steps = gan.steps_to_fid(run, target)
                    summary[run.dir].update(baseline=base.name, target=target,
                                            baseline_update=base_at, steps_to_baseline=steps)
                    if steps is not None:
                        it, fid = gan.fid_series(run)
                        ax.plot([steps], [fid[list(it).index(steps)]], '*', color=color,
                                markersize=11, markeredgecolor='k')
        ax.set_title(plotting.dataset_text(groups[0][0]), fontsize='medium')
        plotting.finish_axes(ax, 'generator updates', 'FID', ylim=args.ylim)
    fig.suptitle('DCGAN: FID, mean and 1 std within {} evaluations\nfeatures: {}'.format(
        args.window, '; '.join(sorted(extractors))), fontsize='medium')
    figure_cli.save_figure(fig, args.out)
    lines = ['{}: {} panel(s) -> {}'.format(PROG, len(panels), args.out),
             '{:<16} {:<10} {:>5} {:>9} {:>8} {:>9} {:>9} {:>14}'.format(
                 'run', 'dataset', 'evals', 'best FID', '@update', 'last', 'mean std',
                 "to BN's best")]
    for s in summary.values():
        lines.append('{:<16} {:<10} {:>5} {:>9.2f} {:>8} {:>9.2f} {:>9.2f} {:>14}'.format(
            s['name'], s['dataset'], s['evaluations'], s['best'], s['best_update'], s['last'],
            s['mean_rolling_std'], '-' if s.get('steps_to_baseline') is None
            else s['steps_to_baseline']))
    return summary, lines


def parser():
    p = figure_cli.figure_parser(PROG, __doc__.split('\n')[0], 'figures/figure6.png', 3,
                               window_help='running mean/std window in FID evaluations '
                               '(default %(default)s, the paper\'s 30K updates)',
                               seed_help=SEED_HELP)
    figure_cli.add_ylim(p, 'FID')
    return p


def main(argv=None):
    return figure_cli.run_main(PROG, body, argv, parser())


if __name__ == '__main__':
    main()
