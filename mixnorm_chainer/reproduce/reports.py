"""The paper's tables from run folders: ``mixnorm-exp summarize`` (Tables 2-6 per run, over
seeds when a variant has several, CSV), ``mixnorm-exp compare`` (Tables 3/5/6 as "paper | here")
and ``mixnorm-exp list`` (the registered settings).

Runs are paired with the baseline run of the same seed (:func:`find_baseline`); over seeds the
numbers are medians with bootstrap intervals (:mod:`mixnorm_chainer.reproduce.seeds`).
"""
import math
import os
import re
import sys
import textwrap

from mixnorm_chainer.reproduce import plotting, registry, runfolder, seeds
from mixnorm_chainer.reproduce.runfolder import format_value
from mixnorm_chainer.reproduce.seeds import ACC_KEY

# -- runs --------------------------------------------------------------------------------------

def load_run(directory):
    """setting.json of a run as a dict, with its evaluated log entries under ``log``."""
    run = plotting.load_run(directory)
    return dict(run.record, log=run.log, dir=run.dir)


def max_accuracy_at(log, epochs, fractions=(0.25, 0.5, 0.75, 1.0)):
    """Maximum test accuracy (%) over the epochs up to each fraction (Tables 2, 4)."""
    out = []
    for frac in fractions:
        limit = int(math.ceil(frac * epochs - 1e-9))
        accs = [e[ACC_KEY] for e in log if e['epoch'] <= limit]
        out.append(100 * max(accs) if accs else None)
    return out


def check_run_dirs(directories, warn=None):
    """The run folders to summarize, each once (repeats are reported and dropped); a folder
    whose setting.json or log.json cannot be read is a one-line :class:`runfolder.RunError`
    naming the file; a folder without log.json yet is reported (its row shows '-')."""
    warn = warn or (lambda text: print(text, file=sys.stderr))
    seen, dirs = {}, []
    for d in directories:
        key = os.path.realpath(d)
        if key in seen:
            warn('mixnorm-exp: warning: {} is given twice (as {}); summarized once'.format(
                d, seen[key]))
            continue
        seen[key] = d
        path = os.path.join(d, 'setting.json')
        if not os.path.isfile(path):
            raise runfolder.RunError('{}: not a run folder (no setting.json; run folders are '
                                     'written by `mixnorm-exp run NAME --out DIR`)'.format(d))
        record = runfolder.read_json(path, 'setting.json')
        setting = record.get('setting') if isinstance(record, dict) else None
        missing = [k for k in ('name', 'table') if not isinstance(setting, dict) or k not in
                   setting]
        if missing or 'dataset' not in record:
            raise runfolder.RunError('{} lacks {}; it was not written by mixnorm-exp run '
                                     '(restore it or rerun)'.format(path, ', '.join(
                                         ['setting.' + k for k in missing] +
                                         ([] if 'dataset' in record else ['dataset']))))
        log_path = os.path.join(d, 'log.json')
        if os.path.isfile(log_path):
            log = runfolder.read_json(log_path, 'log.json')
            if not isinstance(log, list):
                raise runfolder.RunError('{} is not a list of log entries; restore it or '
                                         'rerun'.format(log_path))
        else:
            warn('mixnorm-exp: warning: {} has no log.json yet (no finished epoch or '
                 'evaluation); its numbers show as -'.format(d))
        dirs.append(d)
    return dirs


CSV_FIELDS = ('dir', 'name', 'table', 'dataset', 'seed', 'variant', 'epochs', 'epochs_done',
              'iterations', 'acc_25', 'acc_50', 'acc_75', 'acc_100', 'max_acc', 'final_acc',
              'mean_error', 'baseline', 'baseline_dir', 'target', 'steps_to_baseline',
              'fewer_steps', 'error_ratio', 'best_fid', 'best_fid_update', 'paper_acc_25',
              'paper_acc_50', 'paper_acc_75', 'paper_acc_100', 'paper_max_acc',
              'paper_steps_to_baseline', 'paper_best_fid', 'paper_best_fid_update')


def write_csv(rows, path):
    """The summary rows (:data:`CSV_FIELDS`) as CSV to ``path`` ('-': stdout). Empty: missing,
    or (``steps_to_baseline``, ``fewer_steps``) the baseline's best never reached while
    ``target`` is given."""
    import csv
    if path == '-':
        f = sys.stdout
    else:
        f = open(path, 'w', newline='')
    try:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction='ignore')
        w.writeheader()
        for row in rows:
            w.writerow({k: '' if row.get(k) is None or (isinstance(row[k], float) and
                                                         math.isinf(row[k])) else row[k]
                        for k in CSV_FIELDS})
    finally:
        if f is not sys.stdout:
            f.close()


def _run_label(r, multi_seed, shown=None):
    """A run's row label: its variant (:func:`seeds.variant_label`, without the dataset; batch
    size as the runs ``shown`` need it) and `` sS`` for a seed when the variant has several or
    the seed is not 0."""
    seed = seeds.seed_of(r)
    return seeds.variant_label(r, with_dataset=False, shown=shown) + (
        ' s{}'.format(seed) if multi_seed or seed else '')


def find_baseline(r, candidates, against=False):
    """The baseline run of ``r`` among ``candidates``: the run of its setting's ``baseline``
    (its own name for a baseline setting) on the same dataset with the same seed, data options
    (:data:`seeds.DATA_OPTIONS`) and epochs; with ``against`` any candidate of the same dataset
    and seed. None when there is none."""
    options = runfolder.options_of(r)
    name = r['setting'].get('baseline') or r['setting']['name']
    for c in candidates:
        other = runfolder.options_of(c)
        if c['dataset'] != r['dataset'] or other.get('seed') != options.get('seed'):
            continue
        if against:
            return c
        if (c['setting']['name'] == name and c.get('epochs') == r.get('epochs') and
                not seeds.variant_key(c)[2] and
                all(other.get(k) == options.get(k) for k in seeds.DATA_OPTIONS)):
            return c
    return None


def print_columns(header, rows, out):
    """``header`` and ``rows`` (tuples of cells) as left-aligned columns two spaces apart."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header,) + tuple(rows):
        print('  '.join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip(), file=out)


def print_blocks(header, blocks, out, indent='  '):
    """``blocks`` (``[(heading, rows)]``) as a heading line each and its ``rows`` indented, in
    columns aligned across all blocks under ``header``."""
    rows = [row for _, block in blocks for row in block]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(row):
        return (indent + '  '.join(str(x).ljust(w) for x, w in zip(row, widths))).rstrip()
    print(line(header), file=out)
    for heading, block in blocks:
        print(heading, file=out)
        for row in block:
            print(line(row), file=out)


#: the width the legends under the over-seeds tables are wrapped to
LEGEND_WIDTH = 100


def print_legend(sentences, out):
    """``sentences`` (empty ones left out) as one paragraph wrapped to :data:`LEGEND_WIDTH`."""
    print(textwrap.fill(' '.join(s for s in sentences if s), LEGEND_WIDTH), file=out)


class _Cells:
    """``median [interval]`` cells (:func:`seeds.interval_cell`) that remember their numbers
    of values, for the legend."""

    def __init__(self):
        self.counts, self.partial = set(), False

    def __call__(self, values, n, fmt='{:.2f}'):
        k = sum(v is not None for v in values)
        self.counts.add(k)
        self.partial = self.partial or 0 < k < n
        return seeds.interval_cell(values, fmt, n)

    def legend(self):
        return seeds.interval_legend(self.counts)


#: what the paired numbers over seeds are (the legends of summarize and compare)
PAIRED_LEGEND = ('steps to base best: the first step at which a run reaches the best test '
                 'accuracy of the baseline run of the same seed (never: not reached); fewer '
                 "steps: 100 * (1 - steps / the baseline's steps to its own best).")


def incomplete(r):
    """Why run ``r`` cannot count over seeds ('no evaluation yet', 'incomplete: 1 of 3
    epochs'), or None."""
    if not seeds.run_numbers(r['log'])['evaluations']:
        return 'no evaluation yet'
    done = max(e['epoch'] for e in r['log'])
    if r.get('epochs') and done < r['epochs']:
        return 'incomplete: {} of {} epochs'.format(done, r['epochs'])
    return None


def seed_table(runs, against_runs=None, warn=None):
    """Over seeds: ``[(variant label, baseline label, {number: [per-seed values]}, runs)]``
    for every variant among ``runs``, each run paired with the baseline run of its seed. Runs
    without evaluations or with fewer epochs than they were started for are left out (and
    reported through ``warn``)."""
    warn = warn or (lambda text: print(text, file=sys.stderr))
    candidates = against_runs if against_runs is not None else runs
    shown = list(runs) + list(against_runs or [])
    kept = []
    for r in runs:
        why = incomplete(r)
        if why:
            warn('mixnorm-exp: warning: {} is left out of the over-seeds numbers ({})'.format(
                r['dir'], why))
        else:
            kept.append(r)
    table = []
    for members in seeds.group_variants(kept).values():
        values = {k: [] for k in ('best_acc', 'final_acc', 'mean_error', 'steps',
                                  'fewer_steps', 'error_ratio')}
        bases = set()
        for r in members:
            own = seeds.run_numbers(r['log'])
            for k in ('best_acc', 'final_acc', 'mean_error'):
                values[k].append(own[k])
            base = find_baseline(r, candidates, against=against_runs is not None)
            base = None if base is None or incomplete(base) else base
            paired = seeds.paired_numbers(r['log'], base['log']) if base else {}
            steps = paired.get('steps')
            values['steps'].append(math.inf if base and steps is None and
                                   paired.get('target') is not None else steps)
            for k in ('fewer_steps', 'error_ratio'):
                values[k].append(paired.get(k))
            if base:
                bases.add(seeds.variant_label(base, with_dataset=False, shown=shown))
        table.append((seeds.variant_label(members[0], shown=shown),
                      ', '.join(sorted(bases)) or '-', values, members))
    return table


def print_seed_table(table, out):
    """The over-seeds tables of :func:`summarize`: per variant the median [95% bootstrap
    interval of the median] over its n seeds of the runs' own numbers, then of the numbers
    paired with the baseline run of the same seed; a legend under them says what the interval
    is for the numbers of seeds shown (:func:`seeds.interval_legend`)."""
    cell = _Cells()
    own, paired = [], []
    for label, base, v, members in table:
        n = len(members)
        own.append((label, n, cell(v['best_acc'], n), cell(v['final_acc'], n),
                    cell(v['mean_error'], n)))
        paired.append((label, base, n, cell(v['steps'], n, '{:.0f}'),
                       cell(v['fewer_steps'], n, '{:.0f}'), cell(v['error_ratio'], n, '{:.3f}')))
    print('\nover seeds: median [95% bootstrap interval of the median] over the n seeds of each '
          'variant', file=out)
    print_columns(('variant', 'n', 'best acc (%)', 'final acc (%)', 'mean error (%)'), own, out)
    print('\npaired with the baseline run of the same seed', file=out)
    print_columns(('variant', 'baseline', 'n', 'steps to base best', 'fewer steps (%)',
                   'error / base'), paired, out)
    print_legend([cell.legend(), 'mean error: the test error averaged over all evaluations of '
                  "a run; error / base: a run's mean error over its baseline's.", PAIRED_LEGEND,
                  '(k) after a number: only k of the n seeds have a baseline run to pair with.'
                  if cell.partial else ''], out)


def _load_runs(directories):
    directories = check_run_dirs(seeds.expand_run_dirs(directories))
    return [load_run(d) for d in directories]


def summarize(directories, out=None, csv_path=None, against=None):
    """Print Tables 2/4 and 3/5/6 from run directories (a folder of ``--seeds`` runs stands for
    its seed folders), next to the paper's numbers; when a variant has several seeds also the
    over-seeds table (:func:`seed_table`). Runs are compared with the baseline run of the same
    seed (:func:`find_baseline`), or with the runs in ``against``. With ``csv_path`` also one
    CSV row per run (:data:`CSV_FIELDS`)."""
    out = out or sys.stdout
    runs = _load_runs(directories)
    against_runs = _load_runs(against) if against else None
    csv_rows = []
    runs = _summarize_gan_runs(runs, out, csv_rows)
    variants = seeds.group_variants(runs)
    multi = {id(r) for members in variants.values() if len(members) > 1 for r in members}
    shown = list(runs) + list(against_runs or [])
    labels = {id(r): _run_label(r, id(r) in multi, shown) for r in runs}
    width = max([22] + [len(v) + 1 for v in labels.values()])
    groups = {}
    for r in runs:
        groups.setdefault((r['setting']['table'], r['dataset']), []).append(r)
    for (table, dataset), members in sorted(groups.items()):
        rows = _print_accuracy_table(table, dataset, members, labels, width, out)
        csv_rows += rows
        # baselines may sit in another table's group (GBN rows -> Table 2's BN-2)
        _print_steps_table(members, rows, runs if against_runs is None else against_runs,
                           against_runs is not None, multi, labels, width, out, shown)
    if multi:
        print_seed_table(seed_table(runs, against_runs), out)
    if csv_path:
        write_csv(csv_rows, csv_path)
    return runs


def _summarize_gan_runs(runs, out, csv_rows):
    """Section 4.5's summary of the DCGAN runs among ``runs`` (FID instead of accuracy; their
    CSV rows join ``csv_rows``); returns the other runs."""
    gan_dirs = [r['dir'] for r in runs if r['setting']['model'] == 'dcgan']
    if not gan_dirs:
        return runs
    from mixnorm_chainer.reproduce import gan
    csv_rows += gan.csv_rows(gan.summarize(gan_dirs, out=out))
    return [r for r in runs if r['setting']['model'] != 'dcgan']


def _print_accuracy_table(table, dataset, members, labels, width, out):
    """Table 2/4 of the runs ``members`` (maximum test accuracy after 25/50/75/100% of the
    epochs, ours | paper); returns their CSV rows."""
    print('\n{} on {}: maximum test accuracy (%) after 25/50/75/100% of the epochs'
          ' (ours | paper)'.format(table, dataset), file=out)
    print('{:<{w}} {:>6} {:>31} | {}'.format('run', 'epochs', 'ours', 'paper', w=width),
          file=out)
    rows = []
    for r in members:
        epochs = r.get('epochs') or len(r['log'])
        ours = max_accuracy_at(r['log'], epochs)
        paper = r['setting'].get('paper', {}).get('acc_at')
        print('{:<{w}} {:>6} {:>31} | {}'.format(
            labels[id(r)], len(r['log']),
            ' '.join('{:>7}'.format(format_value(v, '{:7.2f}')) for v in ours),
            ' '.join(format_value(v, '{:7.2f}') for v in paper) if paper else '-', w=width),
            file=out)
        rows.append(_csv_row(r, table, dataset, ours, paper))
    return rows


def _csv_row(r, table, dataset, ours, paper):
    """A run's CSV row (:data:`CSV_FIELDS`) without the baseline's numbers."""
    p = r['setting'].get('paper', {})
    own = seeds.run_numbers(r['log'])
    row = {'dir': r['dir'], 'name': r['setting']['name'], 'table': table,
           'dataset': dataset, 'seed': seeds.seed_of(r),
           'variant': seeds.variant_label(r), 'epochs': r.get('epochs'),
           'epochs_done': len(r['log']),
           'iterations': r['log'][-1]['iteration'] if r['log'] else None,
           'max_acc': own['best_acc'], 'final_acc': own['final_acc'],
           'mean_error': own['mean_error'],
           'paper_max_acc': p.get('max_acc'),
           'paper_steps_to_baseline': p.get('steps_to_baseline')}
    for frac, v, pv in zip((25, 50, 75, 100), ours, paper or [None] * 4):
        row['acc_{}'.format(frac)], row['paper_acc_{}'.format(frac)] = v, pv
    return row


def _print_steps_table(members, csv_rows, candidates, against, multi, labels, width, out,
                       shown=None):
    """Table 3/5/6 of the runs ``members``: the steps each needs to reach its baseline's (among
    ``candidates``; :func:`find_baseline`) maximum accuracy, ours | paper. Adds the baseline's
    numbers to the runs' ``csv_rows``."""
    rows = []
    for r, row in zip(members, csv_rows):
        base = find_baseline(r, candidates, against=against)
        if base is None or not base['log']:
            continue
        paired = seeds.paired_numbers(r['log'], base['log'])
        base_label = _run_label(base, id(base) in multi or against, shown)
        rows.append((labels[id(r)], base_label, paired['target'], paired['steps'],
                     row['max_acc'], r['setting'].get('paper', {})))
        row.update(baseline=base['setting']['name'], baseline_dir=base['dir'],
                   target=paired['target'], steps_to_baseline=paired['steps'],
                   fewer_steps=paired['fewer_steps'], error_ratio=paired['error_ratio'])
    if not rows:
        return
    bw = max([22] + [len(row[1]) for row in rows])
    print('\nsteps to reach the baseline\'s maximum accuracy (ours | paper)', file=out)
    print('{:<{w}} {:<{bw}} {:>8} {:>8} {:>8} | {:>8} {:>8}'.format(
        'run', 'baseline', 'target', 'steps', 'max acc', 'steps', 'max acc', w=width,
        bw=bw), file=out)
    for name, base, target, steps, best, paper in rows:
        print('{:<{w}} {:<{bw}} {:>8} {:>8} {:>8} | {:>8} {:>8}'.format(
            name, base, format_value(target), format_value(steps, '{:d}'), format_value(best),
            format_value(paper.get('steps_to_baseline'), '{:.3g}'),
            format_value(paper.get('max_acc')), w=width, bw=bw), file=out)


#: the table that prints the steps to the baseline of a setting's table (Table 2's rows are
#: in Table 3, Table 4's in Table 5)
STEPS_TABLE = {'Table 2': 'Table 3', 'Table 4': 'Table 5'}


def compare(directories, against=None, out=None):
    """The paper's Tables 3/5/6 rows as "paper | here": for every variant among the runs, the
    steps to its baseline's best test accuracy, the fraction of steps saved and the best
    accuracy, on a ``paper (Table N)`` line as the paper prints them and under it on a ``here (n
    seeds)`` line as the median [95% bootstrap interval] of the runs here (each paired with the
    baseline run of its seed, or with the runs in ``against``), with a legend
    (:func:`print_seed_table`'s). Returns :func:`seed_table`'s rows."""
    out = out or sys.stdout
    runs = [r for r in _load_runs(directories) if r['setting']['model'] != 'dcgan']
    against_runs = _load_runs(against) if against else None
    table = seed_table(runs, against_runs)
    print("paper | here: the paper's numbers, and the median [95% bootstrap interval of the "
          'median] over the seeds here', file=out)
    cell = _Cells()
    blocks = []
    table.sort(key=lambda row: (bool(row[3][0]['setting'].get('mn_layers')), row[0]))
    for label, base, v, members in table:
        setting = members[0]['setting']
        paper = setting.get('paper', {})
        steps = paper.get('steps_to_baseline')
        base_setting = registry.SETTINGS.get(setting.get('baseline') or setting['name'])
        base_steps = base_setting.paper.get('steps_to_baseline') if base_setting else None
        fewer = (None if steps is None or not base_steps else
                 100.0 * (1.0 - steps / base_steps))
        where = STEPS_TABLE.get(setting.get('table'), setting.get('table', '-'))
        n = len(members)
        blocks.append(('{} (baseline: {})'.format(label, base), [
            ('paper ({})'.format(where),
             format_value(steps, '{:.3g}') if steps is not None else
             ('never' if 'steps_to_baseline' in paper else '-'),
             format_value(fewer, '{:.0f}'), format_value(paper.get('max_acc'))),
            ('here ({} seed{})'.format(n, '' if n == 1 else 's'),
             cell(v['steps'], n, '{:.0f}'), cell(v['fewer_steps'], n, '{:.0f}'),
             cell(v['best_acc'], n))]))
    print_blocks(('', 'steps to base best', 'fewer steps (%)', 'best test acc (%)'), blocks, out)
    print_legend([cell.legend(), PAIRED_LEGEND,
                  '(k) after a number: only k of the seeds have a baseline run to pair with.'
                  if cell.partial else ''], out)
    if any(m['dataset'] != m['setting']['dataset'] for _, _, _, ms in table for m in ms):
        print('(runs on another dataset than the paper\'s: compare the direction and size of '
              'the effect, not the numbers)', file=out)
    return table



# -- mixnorm-exp list -------------------------------------------------------------------

def _layers_text(names):
    """``conv1,conv2,conv3,conv4`` -> ``conv1-4`` (runs of one prefix with consecutive numbers)."""
    parts = []
    for name in names:
        m = re.fullmatch(r'(.*?)(\d+)', name)
        last = parts[-1] if parts else None
        if m and last and last[0] == m.group(1) and last[2] + 1 == int(m.group(2)):
            last[2] += 1
        else:
            parts.append([m.group(1), int(m.group(2)), int(m.group(2))] if m else [name, None,
                                                                                    None])
    return ','.join(p if lo is None else '{}{}'.format(p, lo) if lo == hi else
                    '{}{}-{}'.format(p, lo, hi) for p, lo, hi in parts)


def _other_layers(s):
    """The layer column of a setting without MN layers: 'GBN cvar(0.75): conv3', 'MGN G=32:
    conv1-4', '-' for the all-BN ones."""
    if s.norms:
        kinds = {}
        for name, kind in s.norms:
            kinds.setdefault(kind, []).append(name)
        return ' '.join('{} G={}: {}'.format(kind.upper(), 32 if s.groups is None else s.groups,
                                             _layers_text(names))
                        for kind, names in kinds.items())
    if not s.gbn_layers:
        return '-'
    alpha = '' if s.gbn_alpha is None else '({:g})'.format(s.gbn_alpha)
    return 'GBN {}{}: {}'.format(s.gbn_deviation, alpha, ','.join(s.gbn_layers))


def list_settings(table=None, out=None):
    out = out or sys.stdout
    rows = [s for s in registry.SETTINGS.values() if table is None or s.table == table]
    if not rows:
        tables = sorted({s.table for s in registry.SETTINGS.values()}, key=plotting.natural_key)
        close = registry.close_names(table, tables, n=2)
        raise runfolder.RunError('--table {!r}: no such table; {}the tables are {}'.format(
            table, 'did you mean {}? '.format(' or '.join(repr(t) for t in close)) if close
            else '', ', '.join(repr(t) for t in tables)))
    print('{:<22} {:<12} {:<9} {:<13} {:<26} {:>2} {:>2} {:<9} {:>6} {:>7} {:>5} {:>4}'
          .format('name', 'table', 'data', 'model', 'MN or other layers', 'K', 'EM', 'optim', 'lr',
                  'wd', 'batch', 'ep'), file=out)
    for s in rows:
        print('{:<22} {:<12} {:<9} {:<13} {:<26} {:>2} {:>2} {:<9} {:>6g} {:>7g} {:>5} {:>4}'
              .format(s.name, s.table, s.dataset, s.model,
                      ','.join(s.mn_layers) or _other_layers(s),
                      s.n_components if s.has_mixture else '-',
                      s.em_iters if s.has_mixture else '-',
                      s.optimizer, s.lr, s.weight_decay, s.batch_size,
                      s.epochs if s.iterations is None else '{:g}K'.format(s.iterations / 1e3)),
              file=out)
    noted = [s for s in rows if s.notes or s.mn_options]
    if noted:
        print("\nnotes: choices the paper does not give (assumed) or that are not the paper's",
              file=out)
    for s in noted:
        print('{}: {}'.format(s.name, s.notes or 'MN option{} {} (not in the paper)'.format(
            's' if len(s.mn_options) > 1 else '',
            ' '.join('{}={}'.format(k, v) for k, v in s.mn_options))), file=out)
    return rows
