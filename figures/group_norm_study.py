"""Small-batch study: median test error with its interval vs batch size, one line per variant.

From run folders (or folders of ``mixnorm-exp run --seeds``) of the CIFAR CNN rows at several
batch sizes (``experiments/group_norm_study.sh``): the runs are grouped by setting and batch
size, and per group the median over seeds and the interval of ``mixnorm-exp summarize``'s
over-seeds tables (``seeds.median_interval``: for 2-5 seeds the seeds' [min, max]) are drawn
for (a) the test error averaged over all evaluations and (b) the final test error. Runs with
fewer evaluations than their epochs are left out (named in the printed lines). The lines of one
batch size are spread a little along x so the intervals do not hide each other.

    python figures/group_norm_study.py --run results/group-norm-study/batch*/* \
        [--out figures/group_norm_study.png]
"""
# isort: off
import mixnorm_chainer  # noqa: F401  (first: chainer on numpy >= 2 needs _compat)
# isort: on
import numpy

from mixnorm_chainer.reproduce import figure_cli, plotting, runfolder, seeds

PROG = 'group_norm_study'
PANELS = (('mean_error', '(a) test error, mean over the evaluations'),
          ('final_error', '(b) final test error'))
COLORS = {'BN-2': 'tab:blue', 'MN-2': 'tab:red', 'GN-2': 'tab:green', 'MGN1-2': 'tab:orange',
          'MGN-2': 'tab:purple'}


def batch_of(run):
    return int(runfolder.options_of(run.record).get('batch_size') or run.setting['batch_size'])


def variant_of(run):
    return run.setting.get('label') or run.name


def collect(runs):
    """``{variant: {batch: {'mean_error': [...], 'final_error': [...], 'seeds': [...]}}}`` of
    the finished runs (variants: BN-2, MN-2, GN-2, MGN1-2, MGN-2, then others as first seen)
    and the folders left out."""
    table, left_out = {}, []
    for run in runs:
        numbers = seeds.run_numbers(run.log)
        if numbers['evaluations'] == 0 or numbers['evaluations'] < int(run.record.get(
                'epochs') or 0):
            left_out.append(run.dir)
            continue
        cell = table.setdefault(variant_of(run), {}).setdefault(
            batch_of(run), {'mean_error': [], 'final_error': [], 'seeds': []})
        cell['mean_error'].append(numbers['mean_error'])
        cell['final_error'].append(100.0 - numbers['final_acc'])
        cell['seeds'].append(seeds.seed_of(run.record))
    if not table:
        raise plotting.FigureError('no finished run among the folders given (every run has '
                                   'fewer evaluations than epochs): {}'.format(
                                       ', '.join(left_out)))
    order = list(COLORS)                  # the study's rows in a fixed order, others after
    ranked = sorted(table, key=lambda v: order.index(v) if v in order else len(order))
    return {v: table[v] for v in ranked}, left_out


def body(args):
    runs = plotting.load_runs(args.run, merge=False)
    table, left_out = collect(runs)
    batches = sorted({b for cells in table.values() for b in cells})
    fig, axes = plotting.new_figure(len(PANELS), panel_size=(5.2, 4.2))
    n = len(table)
    summary = {}
    for ax, (key, title) in zip(axes, PANELS):
        for i, (variant, cells) in enumerate(table.items()):
            bs = sorted(cells)
            stats = [seeds.median_interval(cells[b][key]) for b in bs]
            med = numpy.array([s[0] for s in stats])
            low = numpy.array([s[1] for s in stats])
            high = numpy.array([s[2] for s in stats])
            x = numpy.array(bs, dtype=numpy.float64) * 1.07 ** (i - (n - 1) / 2)
            ax.errorbar(x, med, yerr=[med - low, high - med], marker='o', capsize=3,
                        color=COLORS.get(variant), label=variant, linewidth=1.4)
            for b, s in zip(bs, stats):
                summary.setdefault(variant, {}).setdefault(b, {})[key] = s
                summary[variant][b]['seeds'] = cells[b]['seeds']
        ax.set_xscale('log', base=2)
        ax.set_xticks(batches)
        ax.set_xticklabels([str(b) for b in batches])
        ax.minorticks_off()
        ax.set_title(title, fontsize='medium')
        plotting.finish_axes(ax, 'batch size', 'test error (%)', ylim=args.ylim,
                             legend=ax is axes[0], legend_loc='lower right')
    counts = sorted({len(c['seeds']) for cells in table.values() for c in cells.values()})
    fig.suptitle('Median over seeds, with the interval ({} seeds)'.format(
        '/'.join(map(str, counts))))
    figure_cli.save_figure(fig, args.out)
    lines = ['{}: {} run(s), {} variant(s) x {} batch size(s) -> {}'.format(
        PROG, len(runs) - len(left_out), n, len(batches), args.out)]
    lines.append('{:<10} {:>5} {:>6} {:>26} {:>26}'.format(
        'variant', 'batch', 'seeds', 'mean test error (%)', 'final test error (%)'))
    for variant, cells in summary.items():
        for b in sorted(cells):
            lines.append('{:<10} {:>5} {:>6} {:>26} {:>26}'.format(
                variant, b, len(cells[b]['seeds']),
                *('{:.2f} [{:.2f}, {:.2f}]'.format(*cells[b][k][:3]) for k, _ in PANELS)))
    lines.append(seeds.interval_legend(counts))
    if left_out:
        lines.append('left out (not finished): ' + ', '.join(left_out))
    return summary, lines


def parser():
    p = figure_cli.figure_parser(PROG, __doc__.split('\n')[0], 'figures/group_norm_study.png',
                                 None, 'unused (no curves are smoothed)')
    figure_cli.add_ylim(p)
    return p


def main(argv=None):
    return figure_cli.run_main(PROG, body, argv, parser())


if __name__ == '__main__':
    main()
