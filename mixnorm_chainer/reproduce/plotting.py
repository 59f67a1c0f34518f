"""Shared helpers for the paper's figures (``figures/figure*.py``), drawn from run directories.

A run directory is what ``mixnorm-exp run`` writes: ``setting.json`` (the setting and the actual
dataset, epochs, iterations per epoch, ...), ``log.json`` (one LogReport entry per epoch) and,
for MN runs with the component recorder, ``recording.npz`` (``iterations`` and
``components/<module>``: the number of mixture components each MN module kept after pruning, at
each recorded iteration).

Smoothing (:func:`rolling_mean_std`): the paper shades "one standard deviation computed within a
window of N epochs" (Figures 2, 5) and smooths Figure 9 "using running average". We draw the
running mean of the window as the curve and mean +- one (population, ddof=0) standard deviation
of the same window as the band. The window is **centred** by default (no lag, so curves that
converge at different speeds are not shifted against each other), ``align='trailing'`` uses the
``window`` points ending at each point instead. At the edges, and when the window is longer than
the series, the window is cut to the points that exist, so every output is finite wherever the
series has at least one finite value in the window (NaNs in the input are skipped).

Figures are built on :class:`matplotlib.figure.Figure` (no pyplot state, Agg for PNG), with
``layout='constrained'``. Colors: BN runs are always :data:`BN_COLOR`; MN variants take
:data:`MN_COLORS` in order; when one panel holds several BN/MN groups (Table 6's two drop
policies, DenseNet depths), groups differ by line style.
"""
import dataclasses
import json
import math
import os
import re
import sys

import numpy

from mixnorm_chainer.reproduce import runfolder, seeds

ACC_KEY = seeds.ACC_KEY
BN_COLOR = 'tab:blue'
MN_COLORS = ('tab:red', 'tab:green', 'tab:orange', 'tab:purple', 'tab:brown', 'tab:pink',
             'tab:olive', 'tab:cyan', 'tab:gray')
LINESTYLES = ('-', '--', ':', '-.')
PANEL_SIZE = (4.8, 3.5)          # inches per panel
OPTIMIZER_NAMES = {'rmsprop': 'RMSprop', 'nesterov': 'Nesterov'}


class FigureError(ValueError):
    """A figure cannot be drawn from the given runs (the message says what is needed)."""


# -- smoothing -------------------------------------------------------------------------------

def rolling_mean_std(values, window, align='center'):
    """Running mean and standard deviation (ddof=0) of ``values`` within ``window`` points.

    ``align='center'``: point i uses ``values[i - window // 2 : i + (window - 1) // 2 + 1]``;
    ``align='trailing'``: ``values[i - window + 1 : i + 1]``; both cut to the series, so edges
    and windows longer than the series use the points that exist. NaNs are skipped; a window
    with no finite value gives NaN. Returns two float64 arrays shaped like ``values``.

    O(n) from cumulative sums; the std agrees with a direct computation to about
    ``sqrt(1e-16 * n)`` times the series' spread, and windows holding one repeated value give
    exactly that value and std 0.
    """
    x = numpy.asarray(values, dtype=numpy.float64).ravel()
    window = int(window)
    if window < 1:
        raise ValueError('window must be >= 1; got {}'.format(window))
    if align not in ('center', 'trailing'):
        raise ValueError("align must be 'center' or 'trailing'; got {!r}".format(align))
    n = x.size
    if n == 0:
        return x.copy(), x.copy()
    idx = numpy.arange(n)
    if align == 'center':
        lo, hi = idx - window // 2, idx + (window - 1) // 2 + 1
    else:
        lo, hi = idx - window + 1, idx + 1
    lo, hi = numpy.clip(lo, 0, n), numpy.clip(hi, 0, n)
    finite = numpy.isfinite(x)
    # Cumulative sums of the values less a reference (their mean): no cancellation for long,
    # offset series such as error in % or component counts.
    ref = x[finite].mean() if finite.any() else 0.0
    d = numpy.where(finite, x - ref, 0.0)
    c = numpy.concatenate([[0], numpy.cumsum(finite)])
    s1 = numpy.concatenate([[0.0], numpy.cumsum(d)])
    s2 = numpy.concatenate([[0.0], numpy.cumsum(d * d)])
    count = (c[hi] - c[lo]).astype(numpy.float64)
    with numpy.errstate(invalid='ignore', divide='ignore'):
        m = (s1[hi] - s1[lo]) / count
        var = (s2[hi] - s2[lo]) / count - m * m
    mean = numpy.where(count > 0, m + ref, numpy.nan)
    std = numpy.where(count > 0, numpy.sqrt(numpy.maximum(var, 0.0)), numpy.nan)
    # Windows of one repeated value (component counts sitting at K): exactly that value, std 0.
    changes = numpy.concatenate([[0, 0], numpy.cumsum(x[1:] != x[:-1])])
    const = (count > 0) & (changes[hi] - changes[numpy.minimum(lo + 1, hi)] == 0)
    mean[const], std[const] = x[lo[const]], 0.0
    return mean, std


def error_percent(accuracy):
    """Error (%) from accuracies in [0, 1]."""
    return 100.0 * (1.0 - numpy.asarray(accuracy, dtype=numpy.float64))


# -- runs ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """One run directory: ``setting`` (the registry setting), ``record`` (all of setting.json),
    ``log`` (LogReport entries with a test accuracy) and ``recording`` (``recording.npz``'s
    ``iterations`` and ``components/*`` arrays, or None)."""
    dir: str
    record: dict
    log: list
    recording: dict = None
    #: runs of several seeds merged by :func:`merge_seeds`: each seed's log (``log`` is then
    #: their mean at the epochs all of them have)
    seed_logs: list = None

    @property
    def setting(self):
        return self.record['setting']

    @property
    def name(self):
        return self.setting['name']

    @property
    def n_seeds(self):
        return len(self.seed_logs) if self.seed_logs else 1

    @property
    def label(self):
        label = self.setting.get('label') or self.name
        options = runfolder.options_of(self.record).get('mn_options') or {}
        label += ''.join(' {}={}'.format(k, options[k]) for k in sorted(options)
                         if k not in seeds.NEUTRAL_MN_OPTIONS)
        return label + (' ({} seeds)'.format(self.n_seeds) if self.seed_logs else '')

    def seed_std(self, key, by='epoch'):
        """(``by`` values, standard deviation (ddof=0) over the seeds of ``key``) of a merged
        run; zeros for a run of one seed."""
        if not self.seed_logs:
            x, v = self.series(key, by)
            return x, numpy.zeros_like(v)
        x, _, std, _ = seeds.mean_curve(self.seed_logs, key, by)
        return x, std

    @property
    def baseline(self):
        return self.setting.get('baseline')

    @property
    def dataset(self):
        """The dataset actually trained on (a run may override the setting's)."""
        return self.record.get('dataset') or self.setting['dataset']

    @property
    def model(self):
        return self.setting['model']

    @property
    def is_mn(self):
        return bool(self.setting.get('mn_layers'))

    def series(self, key, by='epoch'):
        """(``by`` values, values) of one log key (``by``: 'epoch' or 'iteration'); entries
        without the key are left out."""
        rows = [(e[by], e[key]) for e in self.log if e.get(key) is not None]
        if not rows:
            return numpy.zeros(0), numpy.zeros(0)
        ep, v = zip(*rows)
        return numpy.asarray(ep, dtype=numpy.float64), numpy.asarray(v, dtype=numpy.float64)

    def describe(self):
        return '{} on {} ({})'.format(self.name, self.dataset, self.dir)


def load_run(directory):
    """Read ``setting.json``, ``log.json`` and, when present, ``recording.npz`` of a run."""
    path = os.path.join(directory, 'setting.json')
    if not os.path.isfile(path):
        raise FileNotFoundError('{}: not a run directory (no setting.json; run directories are '
                                'written by `mixnorm-exp run NAME --out DIR`)'.format(directory))
    with open(path) as f:
        record = json.load(f)
    log = []
    log_path = os.path.join(directory, 'log.json')
    if os.path.isfile(log_path):
        with open(log_path) as f:
            log = json.load(f)
    log = [e for e in log if ACC_KEY in e]
    recording = None
    rec_path = os.path.join(directory, 'recording.npz')
    if os.path.isfile(rec_path):
        with numpy.load(rec_path, allow_pickle=False) as z:
            recording = {k: numpy.asarray(z[k]) for k in z.files
                         if k == 'iterations' or k.startswith('components/')}
    return Run(dir=directory, record=record, log=log, recording=recording)


def load_runs(directories, merge=True):
    """The runs in ``directories`` (a folder of ``mixnorm-exp run --seeds`` stands for its seed
    folders); with ``merge`` the seeds of one variant become one run (:func:`merge_seeds`)."""
    runs = [load_run(d) for d in seeds.expand_run_dirs(directories)]
    if not runs:
        raise FigureError('no run directories given (--run DIR [DIR ...])')
    return merge_seeds(runs) if merge else runs


def seed_run(directory, seed=None):
    """The run folder of seed ``seed`` in ``directory``: ``directory`` itself when it is a run
    folder, else the seed folder of a ``mixnorm-exp run --seeds`` folder (found as
    :func:`load_runs` finds them, :func:`seeds.expand_run_dirs`; the seed read from each
    folder's setting.json). ``seed`` None: a run folder whatever its seed, or seed 0 of a
    ``--seeds`` folder. A seed that is not there is a one-line :class:`FigureError` naming the
    seed folders that are; a missing folder is passed on (the caller reports it)."""
    found = seeds.expand_run_dirs([directory])
    if found == [directory] and not os.path.isfile(os.path.join(directory, 'setting.json')):
        return directory                                  # no run in it: the caller says why
    by_seed = {}
    for d in found:
        by_seed.setdefault(seeds.seed_of(runfolder.read_json(
            os.path.join(d, 'setting.json'), 'setting.json')), []).append(d)
    if found == [directory]:                              # a run folder
        if seed is None or seed in by_seed:
            return directory
        raise FigureError('{} is the run of seed {}, not seed {} (--seed selects a seed folder '
                          'of a `mixnorm-exp run --seeds` folder)'.format(
                              directory, next(iter(by_seed)), seed))
    want = 0 if seed is None else seed
    if want not in by_seed:
        raise FigureError('{} has no run of seed {}{}; its seed folders: {} (seeds {}); pick '
                          'one with --seed S'.format(
                              directory, want, ' (the default)' if seed is None else '',
                              ', '.join(os.path.basename(d) for d in found),
                              ', '.join(str(s) for s in sorted(by_seed))))
    if len(by_seed[want]) > 1:
        raise FigureError('{} holds several runs of seed {}: {}; give one of them'.format(
            directory, want, ', '.join(by_seed[want])))
    return by_seed[want][0]

def merge_seeds(runs):
    """Runs of one variant (:func:`seeds.variant_key`: same setting, dataset, MN and data
    options, epochs) with several seeds become one :class:`Run` whose log is the mean over the
    seeds at the epochs all of them have (every numeric key), with ``seed_logs`` kept for the
    bands; its ``recording`` is the first seed's. Other runs are returned as they are."""
    groups = {}
    for run in runs:
        groups.setdefault(seeds.variant_key(run.record), []).append(run)
    out = []
    for members in groups.values():
        if len(members) == 1:
            out.append(members[0])
            continue
        members.sort(key=lambda r: seeds.seed_of(r.record))
        logs = [m.log for m in members]
        epochs = sorted(set.intersection(*({e['epoch'] for e in log} for log in logs)))
        by_epoch = [{e['epoch']: e for e in log} for log in logs]
        mean_log = []
        for ep in epochs:
            entries = [b[ep] for b in by_epoch]
            keys = [k for k in entries[0] if all(isinstance(e.get(k), (int, float))
                                                 for e in entries)]
            mean_log.append({k: float(numpy.mean([e[k] for e in entries])) for k in keys})
            mean_log[-1]['epoch'] = ep
        first = members[0]
        out.append(Run(dir=os.path.dirname(first.dir.rstrip(os.sep)) or first.dir,
                       record=first.record, log=mean_log, recording=first.recording,
                       seed_logs=logs))
    return out


def pair_with_baselines(runs):
    """``[(mn_run, baseline_run)]`` for every MN run among ``runs``, in their order.

    The baseline is the run whose setting name is the MN setting's ``baseline`` and which was
    trained on the same (actual) dataset. A missing or ambiguous baseline is a
    :class:`FigureError` naming the setting and dataset to run.
    """
    pairs = []
    for run in runs:
        if not run.is_mn:
            continue
        if not run.baseline:
            raise FigureError('MN run {} has no baseline in its setting'.format(run.describe()))
        same_name = [r for r in runs if r.name == run.baseline]
        found = [r for r in same_name if r.dataset == run.dataset]
        if not found:
            also = ('; given only on {}'.format(', '.join(sorted({r.dataset for r in same_name})))
                    if same_name else '')
            raise FigureError(
                'MN run {} needs its BN baseline {} trained on {}{}: run `mixnorm-exp run {}'
                '{}` and pass its directory with --run'.format(
                    run.describe(), run.baseline, run.dataset, also, run.baseline,
                    '' if run.dataset == run.setting['dataset']
                    else ' --dataset {}'.format(run.dataset)))
        if len(found) > 1:
            raise FigureError('MN run {}: several baselines {} on {}: {}; pass one'.format(
                run.describe(), run.baseline, run.dataset, ', '.join(r.dir for r in found)))
        pairs.append((run, found[0]))
    return pairs


def group_panels(runs, key, order=None):
    """Panels of BN/MN groups: ``{panel key: [(baseline, [mn runs])]}`` sorted by
    ``order(key)`` (default: the key itself, strings in natural order).

    Each MN run goes to the panel ``key(mn_run)`` together with its baseline; BN runs no MN run
    refers to get a group of their own in their panel (``key(bn_run)``).
    """
    pairs = pair_with_baselines(runs)
    panels = {}
    for mn, base in pairs:
        groups = panels.setdefault(key(mn), [])
        for b, members in groups:
            if b is base:
                members.append(mn)
                break
        else:
            groups.append((base, [mn]))
    used = {id(b) for _, b in pairs}
    for run in runs:
        if not run.is_mn and id(run) not in used:
            panels.setdefault(key(run), []).append((run, []))
    return {k: panels[k] for k in sorted(panels, key=lambda k: sort_key(
        k if order is None else order(k)))}


def sort_key(value):
    """Sort key for tuples of strings/numbers/None (strings naturally: conv2 < conv10)."""
    if isinstance(value, tuple):
        return tuple(sort_key(v) for v in value)
    if value is None:
        return (0, ())
    if isinstance(value, (int, float)):
        return (1, (value,))
    return (2, natural_key(str(value)))


def natural_key(text):
    """'inc2/0/10' sorts after 'inc2/0/9'."""
    return tuple((0, int(p), '') if p.isdigit() else (1, 0, p)
                 for p in re.split(r'(\d+)', text) if p)


def schedule_text(schedule):
    """Short description of a learning-rate policy from setting.json."""
    if not schedule:
        return ''
    if schedule[0] == 'step':
        _, factor, fractions = schedule
        return 'lr /{:g} at {}'.format(1 / factor, '/'.join(
            '{:g}%'.format(100 * f) for f in fractions))
    if schedule[0] == 'exponential':
        _, rate, every = schedule
        return 'lr x{:g} every {} epochs'.format(rate, every)
    return str(schedule)


def dataset_text(run):
    """'cifar10', or 'digits (cifar10 setting)' when the run overrode the dataset."""
    if run.dataset == run.setting['dataset']:
        return run.dataset
    return '{} ({} setting)'.format(run.dataset, run.setting['dataset'])


def select_runs(runs, model_ok, prog, what, example):
    """The runs whose model passes ``model_ok``; the others are named on stderr and left out.
    None left is a :class:`FigureError` saying which runs the figure needs."""
    chosen = [r for r in runs if model_ok(r.model)]
    for r in runs:
        if not model_ok(r.model):
            print('{}: ignoring {} (model {}; this figure is {})'.format(
                prog, r.describe(), r.model, what), file=sys.stderr)
    if not chosen:
        raise FigureError('{} needs runs of {}, e.g. {}'.format(prog, what, example))
    return chosen


def check_logs(runs):
    empty = [r for r in runs if not r.log]
    if empty:
        raise FigureError('no finished epoch in log.json of {} (wait for the first epoch)'.format(
            ', '.join(r.describe() for r in empty)))


# -- drawing ---------------------------------------------------------------------------------

def new_figure(n_panels, ncols=None, panel_size=PANEL_SIZE, extra_width=0.0):
    """A constrained-layout figure with ``n_panels`` axes (a grid of up to ``ncols`` columns,
    default: n up to 3, 2 for 4, 3 for 5-6, else 4); figure size proportional to the grid.
    Returns (figure, [axes])."""
    from matplotlib.figure import Figure
    ncols = ncols or (n_panels if n_panels <= 3 else 2 if n_panels == 4
                      else 3 if n_panels <= 6 else 4)
    nrows = int(math.ceil(n_panels / ncols))
    fig = Figure(figsize=(panel_size[0] * ncols + extra_width, panel_size[1] * nrows),
                 layout='constrained', dpi=110)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def plot_run(ax, run, key, window, align='center', color=None, label=None, linestyle='-',
             band='seeds'):
    """Draw ``key`` of ``run`` (accuracies as error %): for a run merged over seeds with
    ``band='seeds'`` the mean over seeds and +-1 std over seeds (the curve is not smoothed);
    otherwise (one seed, or ``band='window'``) :func:`plot_band`'s running mean and +-1 std
    within ``window`` epochs. Returns (mean, std)."""
    x, y = run.series(key)
    scale = 100.0 if key.endswith('accuracy') else 1.0
    if key.endswith('accuracy'):
        y = error_percent(y)
    if run.n_seeds > 1 and band == 'seeds':
        _, std = run.seed_std(key)
        std = scale * std
        ax.plot(x, y, color=color, label=label, linestyle=linestyle, linewidth=1.5)
        ax.fill_between(x, y - std, y + std, color=color, alpha=0.2, linewidth=0)
        return y, std
    return plot_band(ax, x, y, window, align, color, label, linestyle)


def band_text(runs, window, band='seeds'):
    """How a figure's bands are drawn, for its title."""
    n = max((r.n_seeds for r in runs), default=1)
    if n > 1 and band == 'seeds':
        return 'mean and 1 std over {} seeds'.format(n)
    return 'mean and 1 std within {} epochs'.format(window)


def plot_band(ax, x, y, window, align='center', color=None, label=None, linestyle='-',
              alpha=0.2):
    """Draw the running mean of ``y`` and a +-1 std band; returns (mean, std)."""
    mean, std = rolling_mean_std(y, window, align)
    ax.plot(x, mean, color=color, label=label, linestyle=linestyle, linewidth=1.5)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=alpha, linewidth=0)
    return mean, std


def group_styles(groups):
    """``[(run, color, linestyle, legend label)]`` for the groups of one panel: BN in
    :data:`BN_COLOR`, the MN runs of a group in :data:`MN_COLORS`, groups by line style.
    Legend labels are the run labels, made unique with the policy or setting name."""
    items = []
    for g, (base, members) in enumerate(groups):
        ls = LINESTYLES[g % len(LINESTYLES)]
        items.append((base, BN_COLOR, ls))
        mns = sorted(members, key=lambda r: natural_key(r.label))
        for i, run in enumerate(mns):
            items.append((run, MN_COLORS[i % len(MN_COLORS)], ls))

    def text(run, level):
        extra = schedule_text(run.setting.get('schedule'))
        return (run.label, '{} ({})'.format(run.label, extra) if extra else run.name,
                run.name)[level]

    out = []
    for run, color, ls in items:
        for level in range(3):     # the label, then with the lr policy, then the setting name
            same = [r for r, _, _ in items if text(r, level) == text(run, level)]
            if len(same) == 1:
                break
        out.append((run, color, ls, text(run, level)))
    return out


def curve_summary(run, key, window, align='center'):
    """Numbers for a figure's summary: best and last error (%), mean rolling std."""
    ep, v = run.series(key)
    if key.endswith('accuracy'):
        v = error_percent(v)
    mean, std = rolling_mean_std(v, window, align)
    return {'epochs': int(ep.size), 'best': float(numpy.nanmin(v)), 'last': float(v[-1]),
            'best_epoch': int(ep[int(numpy.nanargmin(v))]),
            'mean_rolling_std': float(numpy.nanmean(std))}


def draw_test_error_panels(panels, title, window, align='center', ylim=None, band='seeds'):
    """Figures 2 and 4: one panel per key of ``panels`` (from :func:`group_panels`) with the
    test error (%) of its runs (:func:`plot_run`: mean and +-1 std over seeds, or running mean
    and +-1 std within ``window`` epochs). ``title(key, groups)`` gives each panel's title.
    Returns (figure, summary)."""
    fig, axes = new_figure(len(panels))
    summary = {}
    for ax, (key, groups) in zip(axes, panels.items()):
        for run, color, ls, label in group_styles(groups):
            _, std = plot_run(ax, run, ACC_KEY, window, align, color, label, ls, band)
            row = summary.setdefault(run.dir, dict(
                name=run.name, label=run.label, dataset=run.dataset, seeds=run.n_seeds,
                **curve_summary(run, ACC_KEY, window, align)))
            row['mean_rolling_std'] = float(numpy.nanmean(std)) if std.size else float('nan')
        ax.set_title(title(key, groups), fontsize='medium')
        finish_axes(ax, 'epoch', 'test error (%)', ylim=ylim)
    return fig, summary


def finish_axes(ax, xlabel, ylabel, ylim=None, legend=True, legend_loc='upper right'):
    if xlabel == 'epoch':
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if ylim is not None:
        ax.set_ylim(*ylim)
    elif ax.get_yscale() == 'linear':
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(lo, 0.0), min(hi, 100.0) if '%' in ylabel else hi)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(loc=legend_loc, fontsize='small', framealpha=0.8)


def format_curve_rows(summary, what='test error (%)'):
    lines = ['{:<24} {:<22} {:>6} {:>9} {:>6} {:>9} {:>9}'.format(
        'run', 'dataset', 'epochs', 'best', '@epoch', 'last', 'mean std')]
    for s in summary.values():
        lines.append('{:<24} {:<22} {:>6} {:>9.2f} {:>6} {:>9.2f} {:>9.2f}'.format(
            s['name'], s['dataset'], s['epochs'], s['best'], s['best_epoch'], s['last'],
            s['mean_rolling_std']))
    lines[0] += ('   ({}; of the mean over seeds for runs of several seeds; std: the band\'s '
                 'half-width averaged over epochs)'.format(what))
    return lines
