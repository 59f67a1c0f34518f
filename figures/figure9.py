"""Figure 9: effective number of mixture components of each MN module over training.

From ``recording.npz`` of one or more MN runs (paper: Inception-V3 MN-4 on CIFAR-10 and
CIFAR-100, the 10 MN modules of inc2/0 and inc3/0, K=5): one panel per run, one curve per MN
module: the number of components the module kept after pruning (lambda_k < 0.01 discarded,
Section 5.3), smoothed by a running mean within ``--window`` recorded iterations (default: 5% of
the recorded iterations), with a +-1 std band of the same (centred) window, clipped to [0, K].
x: fraction of training (iteration / last recorded iteration), or ``--xaxis iteration``. Counts
of -1 (the recorder's "not fitted yet") are left out. A folder of ``mixnorm-exp run --seeds``
gives one panel per seed, or only seed S's with ``--seed S``.

    python figures/figure9.py --run results/inc-c10-MN-4 results/inc-c100-MN-4 \
        [--out figures/figure9.png] [--window W] [--xaxis fraction|iteration] [--seed S]
"""
# isort: off
import mixnorm_chainer  # noqa: F401  (first: chainer on numpy >= 2 needs _compat)
# isort: on
import numpy

from mixnorm_chainer.reproduce import figure_cli, plotting, seeds

PROG = 'figure9'
PREFIX = 'components/'


def module_counts(run):
    """(iterations, {module: counts}) of a run's recording; FigureError if it has none."""
    rec = run.recording
    if rec is None:
        raise plotting.FigureError(
            '{} has no recording.npz: Figure 9 needs MN runs trained with the component '
            'recorder (e.g. inc-c10-MN-4, inc-c100-MN-4)'.format(run.describe()))
    names = sorted((k[len(PREFIX):] for k in rec if k.startswith(PREFIX)),
                   key=plotting.natural_key)
    if 'iterations' not in rec or not names:
        raise plotting.FigureError('{}: recording.npz has no {} (needs "iterations" and '
                                   '"components/<module>")'.format(
                                       run.describe(), 'iterations' if names else
                                       'components/<module> arrays'))
    it = numpy.asarray(rec['iterations'], dtype=numpy.float64).ravel()
    counts = {}
    for name in names:
        c = numpy.asarray(rec[PREFIX + name], dtype=numpy.float64).ravel()
        if c.shape != it.shape:
            raise plotting.FigureError('{}: components/{} has {} entries but iterations has {}'
                                       .format(run.describe(), name, c.size, it.size))
        c[c < 0] = numpy.nan             # the recorder writes -1 before a module's first fit
        if numpy.isfinite(c).any():
            counts[name] = c
    if it.size == 0 or not counts:
        raise plotting.FigureError('{}: recording.npz has no recorded component count yet'
                                   .format(run.describe()))
    return it, counts


def module_colors(n):
    from matplotlib import colormaps
    if n <= 10:
        return [colormaps['tab10'](i) for i in range(n)]
    if n <= 20:
        return [colormaps['tab20'](i) for i in range(n)]
    return [colormaps['viridis'](i / (n - 1)) for i in range(n)]


def body(args):
    dirs = args.run if args.seed is None else [plotting.seed_run(d, args.seed) for d in args.run]
    runs = plotting.load_runs(dirs, merge=False)   # one panel per seed
    data = [(run, *module_counts(run)) for run in runs]
    n_max = max(len(c) for _, _, c in data)
    shared = all(list(c) == list(data[0][2]) for _, _, c in data)   # one legend for all
    legend_outside = n_max > 4 or (shared and len(data) > 1)
    fig, axes = plotting.new_figure(len(data), ncols=min(len(data), 2), panel_size=(5.4, 4.2),
                                    extra_width=1.2 if legend_outside and shared else
                                    1.9 * min(len(data), 2) if legend_outside else 0.0)
    fontsize = 'x-small' if n_max > 8 else 'small'
    alpha = 0.15 if n_max <= 4 else 0.07
    summary = {}
    for ax, (run, it, counts) in zip(axes, data):
        K = int(run.setting['n_components'])
        window = args.window or max(1, int(round(0.05 * it.size)))
        x = it / it[-1] if args.xaxis == 'fraction' and it[-1] > 0 else it
        colors = module_colors(len(counts))
        rows = {}
        for color, (name, c) in zip(colors, counts.items()):
            mean, std = plotting.rolling_mean_std(c, window, args.align)
            ax.plot(x, mean, color=color, label=name, linewidth=1.4)
            ax.fill_between(x, numpy.clip(mean - std, 0, K), numpy.clip(mean + std, 0, K),
                            color=color, alpha=alpha, linewidth=0)
            valid = c[numpy.isfinite(c)]
            tail = valid[int(0.9 * valid.size):]
            rows[name] = {'mean': float(valid.mean()), 'last_10pct_mean': float(tail.mean()),
                          'frac_at_K': float(numpy.mean(valid == K)), 'min': int(valid.min())}
        ax.set_ylim(0, K + 0.4)
        ax.set_yticks(range(K + 1))
        if args.xaxis == 'fraction':
            ax.set_xlim(min(0.0, x[0]), 1.0)
            ax.set_xlabel('fraction of training (iteration / {:d})'.format(int(it[-1])))
        else:
            ax.set_xlabel('iteration')
        ax.set_ylabel('effective number of components')
        ax.set_title('{} ({}), {}, K={}, seed {}\nrunning mean of {} iteration(s)'.format(
            run.label, run.name, plotting.dataset_text(run), K, seeds.seed_of(run.record),
            window), fontsize='medium')
        ax.grid(True, alpha=0.3)
        legend = dict(fontsize=fontsize, ncol=1 if n_max <= 16 else 2, title='MN module',
                      title_fontsize='small')
        if not legend_outside:
            ax.legend(loc='lower left', **legend)
        elif not shared:
            ax.legend(loc='upper left', bbox_to_anchor=(1.02, 1.0), borderaxespad=0, **legend)
        elif ax is axes[0]:
            fig.legend(*ax.get_legend_handles_labels(), loc='outside right upper', **legend)
        summary[run.dir] = {'name': run.name, 'dataset': run.dataset, 'K': K,
                            'iterations': int(it.size), 'window': window, 'modules': rows}
    fig.suptitle('Effective number of mixture components per MN module')
    figure_cli.save_figure(fig, args.out)
    lines = ['{}: {} run(s) -> {}'.format(PROG, len(data), args.out)]
    for s in summary.values():
        lines.append('{} on {} (K={}, {} iterations, window {}):'.format(
            s['name'], s['dataset'], s['K'], s['iterations'], s['window']))
        lines.append('  {:<16} {:>6} {:>13} {:>9} {:>4}'.format(
            'module', 'mean', 'last 10% mean', 'at K (%)', 'min'))
        for name, r in s['modules'].items():
            lines.append('  {:<16} {:>6.2f} {:>13.2f} {:>9.1f} {:>4d}'.format(
                name, r['mean'], r['last_10pct_mean'], 100 * r['frac_at_K'], r['min']))
    return summary, lines


def parser():
    p = figure_cli.figure_parser(PROG, __doc__.split('\n')[0], 'figures/figure9.png', None,
                               'running mean/std window in recorded iterations (default: 5%% '
                               'of them)',
                               seed_help='draw only seed S of a `mixnorm-exp run --seeds` folder '
                               '(default: one panel per seed)')
    p.add_argument('--xaxis', choices=('fraction', 'iteration'), default='fraction',
                   help='x axis: fraction of training or iteration (default %(default)s)')
    return p


def main(argv=None):
    return figure_cli.run_main(PROG, body, argv, parser())


if __name__ == '__main__':
    main()
