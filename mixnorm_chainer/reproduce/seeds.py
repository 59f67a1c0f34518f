"""Runs over several seeds: which runs belong together, the numbers of each run, their median
with a bootstrap interval, and the pairing of MN runs with the BN run of the same seed.

A *variant* is everything that shapes a run's result except its seed: the setting name, the
dataset, the MN options given to the run (``--mn-option``) and the data and length options
(batch size, image size, train/test limits, augmentation, epochs). ``mixnorm-exp run NAME
--seeds 0,1,2`` writes one run folder per seed (``OUT/seedS``); :func:`expand_run_dirs` finds
them under ``OUT``.

Per run (:func:`run_numbers`), from the test evaluations in ``log.json``:

* ``best_acc``, ``final_acc``: maximum and last test accuracy (%);
* ``mean_error``: test error (%) averaged over the evaluations (the area under the error
  curve per evaluation: lower means better over the whole run, not only at its end);
* ``best_step``: the first iteration at which ``best_acc`` was reached.

Per MN run and the baseline run of the same seed (:func:`paired_numbers`), Table 3's measure:

* ``target``: the baseline's best accuracy; ``steps``: the first iteration at which the run
  reaches it (None: never); ``fewer_steps``: ``100 * (1 - steps / baseline best_step)`` (%;
  the paper's "31-47% fewer steps"), ``-inf`` when the run never reaches the target;
* ``error_ratio``: the run's ``mean_error`` over the baseline's.

Over seeds (:func:`median_interval`): the median and a 95% percentile-bootstrap interval of the
median. With up to 6 seeds every one of the n^n resamples is enumerated (exact, no random
draws); with more, 20000 resamples are drawn with a fixed seed. For 2 to 5 seeds the interval
is the range of the seeds (the median of a resample is the smallest value with probability
> 2.5%): it says how far apart the seeds are, not more; one seed has no interval.
:func:`interval_legend` says so for the numbers of seeds a table shows.
"""
import itertools
import os

import numpy

from mixnorm_chainer.reproduce.runfolder import batch_suffix, options_of

#: the log key of the test accuracy (chainer's Evaluator on the ``main`` classifier)
ACC_KEY = 'validation/main/accuracy'

#: options whose values must agree for runs to belong to one variant (besides the setting name
#: and the dataset) and for an MN run to be paired with a baseline run
DATA_OPTIONS = ('batch_size', 'input_size', 'train_limit', 'test_limit', 'no_augment')


def expand_run_dirs(directories):
    """Run folders among ``directories``: a folder with ``setting.json`` is a run; a folder
    without one stands for its ``seedS`` (or any) subfolders that hold a run, in seed order.
    Other folders are passed on unchanged (the caller reports them)."""
    out = []
    for d in directories:
        if os.path.isfile(os.path.join(d, 'setting.json')) or not os.path.isdir(d):
            out.append(d)
            continue
        subs = [os.path.join(d, s) for s in os.listdir(d)
                if os.path.isfile(os.path.join(d, s, 'setting.json'))]
        if not subs:
            out.append(d)
            continue
        out += sorted(subs, key=_seed_order)
    return out


def _seed_order(path):
    name = os.path.basename(path)
    digits = name[4:] if name.startswith('seed') else ''
    return (0, int(digits), '') if digits.isdigit() else (1, 0, name)


#: MN options that change nothing a run logs (the pool is only read by ``mixnorm-exp evaluate``)
NEUTRAL_MN_OPTIONS = ('pool_rows',)


def variant_key(record):
    """What a run's result depends on except the seed (see the module docstring)."""
    options = options_of(record)
    mn = tuple(sorted((k, v) for k, v in (options.get('mn_options') or {}).items()
                      if k not in NEUTRAL_MN_OPTIONS))
    data = tuple(options.get(k) for k in DATA_OPTIONS)
    return (record['setting']['name'], record.get('dataset'), mn, data, record.get('epochs'))


def variant_label(record, with_dataset=True, shown=None):
    """``cnn-c10-MN-2@digits+batch=8+affine=statistics``: name, dataset when it is not the
    setting's, batch size when it is not the setting's (as in the run's default folder,
    :func:`~mixnorm_chainer.reproduce.runfolder.default_out`), and the run's MN options.

    ``shown``: the records a table shows with this one; the batch size is then given only when
    they hold this setting and dataset at another batch size too (so a batch-2 study's tables
    stay narrow, and runs at batch 2 and 8 still get labels of their own)."""
    setting = record['setting']
    label = setting['name']
    if with_dataset and record.get('dataset') and record['dataset'] != setting.get('dataset'):
        label += '@' + record['dataset']
    batch = options_of(record).get('batch_size')
    if shown is None or any(
            r['setting']['name'] == setting['name'] and r.get('dataset') == record.get('dataset')
            and options_of(r).get('batch_size') != batch for r in shown):
        label += batch_suffix(setting.get('batch_size'), batch)
    for key, value in sorted((options_of(record).get('mn_options') or {}).items()):
        if key not in NEUTRAL_MN_OPTIONS:
            label += '+{}={}'.format(key, value)
    return label


def seed_of(record):
    return options_of(record).get('seed') or 0


def group_variants(records):
    """``{variant key: [records in seed order]}``, variants in first-seen order; two runs of
    one variant with the same seed are a ValueError naming both folders."""
    groups = {}
    for r in records:
        groups.setdefault(variant_key(r), []).append(r)
    for members in groups.values():
        members.sort(key=seed_of)
        seen = {}
        for r in members:
            s = seed_of(r)
            if s in seen:
                raise ValueError('{} and {} are runs of the same variant with the same seed {} '
                                 '(pool_rows does not make another variant: it changes nothing '
                                 'a run logs); give one of them'.format(seen[s], r.get('dir'), s))
            seen[s] = r.get('dir')
    return groups


# -- numbers of one run ------------------------------------------------------------------

def evaluations(log):
    """(iterations, test accuracies (%)) of the log entries with a test accuracy."""
    rows = [(e['iteration'], 100.0 * e[ACC_KEY]) for e in log if e.get(ACC_KEY) is not None]
    if not rows:
        return numpy.zeros(0, numpy.int64), numpy.zeros(0)
    it, acc = zip(*rows)
    return numpy.asarray(it), numpy.asarray(acc, dtype=numpy.float64)


def first_reach(log, target):
    """First iteration whose test accuracy (%) is >= target (to 1e-9), or None."""
    it, acc = evaluations(log)
    hit = numpy.nonzero(acc >= target - 1e-9)[0]
    return int(it[hit[0]]) if hit.size else None


def run_numbers(log):
    """best_acc, final_acc, mean_error (%), best_step and evaluations of one run's log."""
    it, acc = evaluations(log)
    if not acc.size:
        return {'evaluations': 0, 'best_acc': None, 'final_acc': None, 'mean_error': None,
                'best_step': None}
    best = float(acc.max())
    return {'evaluations': int(acc.size), 'best_acc': best, 'final_acc': float(acc[-1]),
            'mean_error': float(numpy.mean(100.0 - acc)), 'best_step': first_reach(log, best)}


def paired_numbers(log, baseline_log):
    """Table 3's measure of a run against the baseline run of the same seed (module docstring)."""
    base = run_numbers(baseline_log)
    own = run_numbers(log)
    if base['best_acc'] is None or own['best_acc'] is None:
        return {'target': base['best_acc'], 'steps': None, 'baseline_steps': base['best_step'],
                'fewer_steps': None, 'error_ratio': None}
    steps = first_reach(log, base['best_acc'])
    fewer = (-numpy.inf if steps is None else
             100.0 * (1.0 - steps / float(base['best_step'])))
    return {'target': base['best_acc'], 'steps': steps, 'baseline_steps': base['best_step'],
            'fewer_steps': float(fewer),
            'error_ratio': own['mean_error'] / base['mean_error'] if base['mean_error'] else None}


# -- over seeds ----------------------------------------------------------------------------

#: up to this many values every bootstrap resample is enumerated (exact); above, DRAWS are drawn
EXACT_UP_TO = 6
DRAWS = 20000
#: from 2 up to this many values the 95% interval of the median is the values' range
RANGE_UP_TO = 5


def bootstrap_medians(values, draws=DRAWS, seed=0):
    """Medians of the bootstrap resamples of ``values`` with their probabilities:
    every resample (n^n, exact) for n <= :data:`EXACT_UP_TO`, else ``draws`` random ones."""
    x = numpy.asarray(values, dtype=numpy.float64)
    n = x.size
    if n <= EXACT_UP_TO:
        index = numpy.array(list(itertools.product(range(n), repeat=n)))
    else:
        index = numpy.random.default_rng(seed).integers(0, n, (draws, n))
    samples = numpy.sort(x[index], axis=1)
    lo, hi = samples[:, (n - 1) // 2], samples[:, n // 2]
    medians = numpy.where(lo == hi, lo, (lo + hi) / 2)     # inf stays inf (no inf - inf)
    return medians, numpy.full(medians.size, 1.0 / medians.size)


def median_interval(values, level=0.95):
    """``(median, low, high, n)`` of the values that are not None (inf counts: "never
    reached"); the interval is the percentile bootstrap of the median at ``level``
    (``low``: the largest m with P(median < m) <= (1 - level) / 2, ``high`` alike).
    No values: all None and n = 0."""
    x = [float(v) for v in values if v is not None]
    if not x:
        return None, None, None, 0
    medians, p = bootstrap_medians(x)
    order = numpy.argsort(medians, kind='stable')
    m, cdf = medians[order], numpy.cumsum(p[order])
    tail = (1.0 - level) / 2
    low = m[numpy.searchsorted(cdf, tail, side='right')]
    high = m[numpy.searchsorted(cdf, 1.0 - tail - 1e-12, side='left')]
    return float(numpy.median(x)), float(low), float(high), len(x)


def interval_text(values, fmt='{:.2f}'):
    """``median [low, high] (n)`` of :func:`median_interval` (inf: ``never``; no values: ``-``)."""
    med, low, high, n = median_interval(values)
    if n == 0:
        return '-'

    def one(v):
        return 'never' if numpy.isinf(v) else fmt.format(v)
    return '{} [{}, {}] ({})'.format(one(med), one(low), one(high), n)


def interval_cell(values, fmt='{:.2f}', n=None):
    """A table cell: ``median [low, high]`` of :func:`median_interval`, the value alone for
    one value, ``-`` for none; `` (k)`` appended when only k of ``n`` values are given."""
    med, low, high, k = median_interval(values)
    if k == 0:
        return '-'

    def one(v):
        return 'never' if numpy.isinf(v) else fmt.format(v)
    text = one(med) if k == 1 else '{} [{}, {}]'.format(one(med), one(low), one(high))
    return text + (' ({})'.format(k) if n is not None and k != n else '')


def interval_legend(counts):
    """What the interval of ``median [interval]`` is for these numbers of seeds (those a table
    shows), as one sentence: none for 1, the range for 2 to :data:`RANGE_UP_TO`, the bootstrap
    interval beyond."""
    counts = sorted({int(c) for c in counts if c})

    def some(ns):
        return ', '.join(map(str, ns[:-1])) + (' or ' if len(ns) > 1 else '') + str(ns[-1])
    parts = []
    if 1 in counts:
        parts.append('1 seed: none (the value alone)')
    ranged = [c for c in counts if 2 <= c <= RANGE_UP_TO]
    if ranged:
        parts.append("{} seeds: the seeds' [min, max] (for 2-{} seeds that is what the 95% "
                     'bootstrap interval of the median is; it says how far apart the seeds are, '
                     'no more)'.format(some(ranged), RANGE_UP_TO))
    exact = [c for c in counts if RANGE_UP_TO < c <= EXACT_UP_TO]
    if exact:
        parts.append('{} seeds: the 95% percentile-bootstrap interval of the median over all '
                     'n^n resamples (exact)'.format(some(exact)))
    drawn = [c for c in counts if c > EXACT_UP_TO]
    if drawn:
        parts.append('{} seeds: the 95% percentile-bootstrap interval of the median from {} '
                     'resamples drawn with a fixed seed'.format(some(drawn), DRAWS))
    return 'interval with ' + '; with '.join(parts) + '.' if parts else ''


def mean_curve(logs, key=ACC_KEY, by='epoch'):
    """``(x, mean, std, n)`` of ``key`` over several runs' logs at the ``by`` values all of them
    have (the seeds' common length); std over seeds (ddof=0)."""
    series = []
    for log in logs:
        series.append({e[by]: e[key] for e in log if e.get(key) is not None})
    common = sorted(set.intersection(*(set(s) for s in series))) if series else []
    values = numpy.array([[s[x] for x in common] for s in series], dtype=numpy.float64)
    if not common:
        empty = numpy.zeros(0)
        return empty, empty, empty, len(series)
    return (numpy.asarray(common, dtype=numpy.float64), values.mean(axis=0),
            values.std(axis=0), len(series))
