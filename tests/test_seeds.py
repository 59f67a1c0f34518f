"""Runs over several seeds: ``run --seeds``, the per-run and over-seeds numbers of
``summarize``/``compare`` (checked against hand computations), pairing by seed, ``--mn-option``,
and the figures' mean curves over seeds."""
import itertools
import json
import os
import statistics

import numpy
import pytest

from mixnorm_chainer.reproduce import (
    arguments,
    builders,
    plotting,
    registry,
    reports,
    runner,
    seeds,
)

ACC = 'validation/main/accuracy'


def fake_run(root, name, seed, accs, mn_options=None, folder=None, every=10):
    """A run folder as `mixnorm-exp run` writes it, with the given test accuracies per epoch."""
    d = os.path.join(str(root), folder or name, 'seed{}'.format(seed))
    os.makedirs(d)
    s = registry.get(name)
    options = {'name': name, 'dataset': 'digits', 'batch_size': 64, 'input_size': None,
               'train_limit': None, 'test_limit': None, 'no_augment': False, 'seed': seed,
               'mn_options': dict(mn_options or {})}
    with open(os.path.join(d, 'setting.json'), 'w') as f:
        json.dump({'setting': s.to_dict(), 'dataset': 'digits', 'epochs': len(accs),
                   'seed': seed, 'options': options}, f)
    with open(os.path.join(d, 'log.json'), 'w') as f:
        json.dump([{'epoch': i + 1, 'iteration': every * (i + 1), ACC: a,
                    'main/loss': 1.0 / (i + 1)} for i, a in enumerate(accs)], f)
    return d


# -- the numbers of one run and of a pair ------------------------------------------------

def test_run_and_paired_numbers_by_hand():
    log = [{'epoch': e + 1, 'iteration': 10 * (e + 1), ACC: a}
           for e, a in enumerate([0.5, 0.8, 0.7, 0.9, 0.9])]
    base = [{'epoch': e + 1, 'iteration': 10 * (e + 1), ACC: a}
            for e, a in enumerate([0.6, 0.7, 0.8, 0.85, 0.8])]
    own = seeds.run_numbers(log)
    assert own['best_acc'] == pytest.approx(90.0) and own['final_acc'] == pytest.approx(90.0)
    assert own['mean_error'] == pytest.approx((50 + 20 + 30 + 10 + 10) / 5)   # 24
    assert own['best_step'] == 40
    p = seeds.paired_numbers(log, base)
    # the baseline's best is 85% at step 40; the run first reaches 85% at step 40 -> 0% fewer
    assert p['target'] == pytest.approx(85.0) and p['steps'] == 40 and p['baseline_steps'] == 40
    assert p['fewer_steps'] == pytest.approx(0.0)
    assert p['error_ratio'] == pytest.approx(24.0 / ((40 + 30 + 20 + 15 + 20) / 5))
    p = seeds.paired_numbers(base, log)       # the other way round: 90% is never reached
    assert p['steps'] is None and p['fewer_steps'] == -numpy.inf
    early = [dict(e, **{ACC: 0.9}) for e in log]
    assert seeds.paired_numbers(early, base)['fewer_steps'] == pytest.approx(75.0)   # 10 vs 40


# -- median and bootstrap interval -------------------------------------------------------

def test_bootstrap_of_three_seeds_by_hand():
    """n = 3: of the 27 resamples, 7 have the smallest value as median (three draws of it, or
    two and one other: 1 + 3 * 2), 13 the middle one, 7 the largest."""
    medians, p = seeds.bootstrap_medians([5.0, 1.0, 3.0])
    got = {v: p[medians == v].sum() for v in (1.0, 3.0, 5.0)}
    assert got == pytest.approx({1.0: 7 / 27, 3.0: 13 / 27, 5.0: 7 / 27})
    assert seeds.median_interval([5.0, 1.0, 3.0]) == (3.0, 1.0, 5.0, 3)


def test_bootstrap_interval_equals_brute_force_enumeration():
    values = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]
    medians = sorted(statistics.median(c) for c in itertools.product(values, repeat=6))
    n = len(medians)
    low = medians[int(numpy.floor(0.025 * n))]     # P(median < low) <= 2.5%
    high = medians[int(numpy.ceil(0.975 * n)) - 1]
    med, lo, hi, count = seeds.median_interval(values)
    assert (med, lo, hi, count) == (statistics.median(values), low, high, 6)
    assert lo > min(values) and hi < max(values)        # six seeds: tighter than the range


def test_median_interval_never_reached_and_many_seeds():
    assert seeds.median_interval([10, numpy.inf, numpy.inf]) == (numpy.inf, 10, numpy.inf, 3)
    assert seeds.median_interval([None, None]) == (None, None, None, 0)
    assert seeds.median_interval([None, 4.0]) == (4.0, 4.0, 4.0, 1)
    med, lo, hi, n = seeds.median_interval(list(range(40)))   # random draws, seeded
    assert (med, n) == (19.5, 40) and 12 < lo < 19.5 < hi < 27
    assert seeds.median_interval(list(range(40))) == (med, lo, hi, n)


# -- summarize / compare over seeds ------------------------------------------------------

BN = {0: [0.5, 0.7, 0.8, 0.8], 1: [0.6, 0.9, 0.85, 0.9], 2: [0.4, 0.6, 0.7, 0.75]}
MN = {0: [0.6, 0.8, 0.8, 0.82], 1: [0.7, 0.8, 0.85, 0.88], 2: [0.75, 0.7, 0.8, 0.8]}


def seed_folders(tmp_path):
    for s in BN:
        fake_run(tmp_path, 'cnn-c10-BN-2', s, BN[s], folder='bn')
        fake_run(tmp_path, 'cnn-c10-MN-2', s, MN[s], folder='mn')
    return str(tmp_path / 'bn'), str(tmp_path / 'mn')


def test_summarize_pairs_by_seed_and_aggregates(tmp_path, capsys):
    bn, mn = seed_folders(tmp_path)
    assert runner.main(['summarize', bn, mn, '--csv', str(tmp_path / 'runs.csv')]) == 0
    text = capsys.readouterr().out
    # per seed, by hand: BN best 80 (step 30) / 90 (20) / 75 (40);
    # MN reaches 80 at 20, never reaches 90, reaches 75 at 10
    rows = {line.split()[1]: line for line in text.splitlines()
            if line.startswith('cnn-c10-MN-2 s') and 'cnn-c10-BN-2' in line}
    assert rows['s0'].split()[4:6] == ['80.00', '20']
    assert rows['s1'].split()[4:6] == ['90.00', '-']
    assert rows['s2'].split()[4:6] == ['75.00', '10']
    table = reports.seed_table([reports.load_run(d) for d in seeds.expand_run_dirs([bn, mn])])
    mn_row = [row for row in table if row[0].startswith('cnn-c10-MN-2')][0]
    v = mn_row[2]
    assert v['steps'] == [20, numpy.inf, 10]
    assert v['fewer_steps'] == pytest.approx([100 * (1 - 20 / 30), -numpy.inf, 75.0])
    assert v['best_acc'] == pytest.approx([82.0, 88.0, 80.0])
    mean_err = [numpy.mean([100 - 100 * a for a in MN[s]]) for s in MN]
    base_err = [numpy.mean([100 - 100 * a for a in BN[s]]) for s in BN]
    assert v['mean_error'] == pytest.approx(mean_err)
    assert v['error_ratio'] == pytest.approx([m / b for m, b in zip(mean_err, base_err)])
    # over seeds: median [range] of the three seeds, own numbers then those paired by seed
    own, paired = [ln for ln in text.splitlines() if ln.startswith('cnn-c10-MN-2@digits')]
    assert own.split()[1] == '3' and '82.00 [80.00, 88.00]' in own
    assert paired.split()[2] == '3' and '20 [10, never]' in paired and '33 [never, 75]' in paired
    import csv
    rows = list(csv.DictReader(open(str(tmp_path / 'runs.csv'))))
    mn1 = [r for r in rows if r['name'] == 'cnn-c10-MN-2' and r['seed'] == '1'][0]
    assert (mn1['target'], mn1['steps_to_baseline'], mn1['fewer_steps']) == ('90.0', '', '')
    mn2 = [r for r in rows if r['name'] == 'cnn-c10-MN-2' and r['seed'] == '2'][0]
    assert float(mn2['fewer_steps']) == pytest.approx(75.0)


def test_unfinished_runs_are_left_out_of_the_numbers_over_seeds(tmp_path, capsys):
    bn, mn = seed_folders(tmp_path)
    short = fake_run(tmp_path, 'cnn-c10-MN-2', 3, [0.1], folder='mn')      # 1 of 4 epochs
    with open(os.path.join(short, 'setting.json')) as f:
        record = json.load(f)
    record['epochs'] = 4
    with open(os.path.join(short, 'setting.json'), 'w') as f:
        json.dump(record, f)
    empty = fake_run(tmp_path, 'cnn-c10-MN-2', 4, [], folder='mn')        # no evaluation yet
    assert runner.main(['summarize', bn, mn]) == 0
    out = capsys.readouterr()
    assert 'incomplete: 1 of 4 epochs' in out.err and 'no evaluation yet' in out.err
    own, paired = [ln for ln in out.out.splitlines() if ln.startswith('cnn-c10-MN-2@digits')]
    assert own.split()[1] == '3' and '82.00 [80.00, 88.00]' in own
    assert paired.split()[2] == '3' and '20 [10, never]' in paired
    assert os.path.basename(empty) == 'seed4'


def test_pairing_ignores_other_seeds_and_other_data_options(tmp_path):
    bn, mn = seed_folders(tmp_path)
    # a BN run with another batch size and seed 0 must not be taken as seed 0's baseline
    other = fake_run(tmp_path, 'cnn-c10-BN-2', 0, [0.99, 0.99, 0.99, 0.99], folder='bn128')
    with open(os.path.join(other, 'setting.json')) as f:
        record = json.load(f)
    record['options']['batch_size'] = 128
    with open(os.path.join(other, 'setting.json'), 'w') as f:
        json.dump(record, f)
    runs = [reports.load_run(d) for d in seeds.expand_run_dirs([other, bn, mn])]
    mn0 = [r for r in runs if r['setting']['name'] == 'cnn-c10-MN-2' and r['seed'] == 0][0]
    base = reports.find_baseline(mn0, runs)
    assert base['dir'].endswith(os.path.join('bn', 'seed0'))
    # --against: the runs of the same seed among the given ones, whatever their setting
    base = reports.find_baseline(mn0, [r for r in runs if 'mn' in r['dir']], against=True)
    assert base is mn0


def compare_blocks(text):
    """``{variant: (paper line, here line)}`` of `compare`'s output, in its order."""
    lines = text.splitlines()
    return {line.split(' (baseline: ')[0]: (lines[i + 1].strip(), lines[i + 2].strip())
            for i, line in enumerate(lines) if ' (baseline: ' in line}


def test_variants_separate_mn_options_and_refuse_duplicate_seeds(tmp_path, capsys):
    bn, mn = seed_folders(tmp_path)
    for s in (0, 1):
        fake_run(tmp_path, 'cnn-c10-MN-2', s, [0.5, 0.5, 0.6, 0.6], {'affine': 'statistics'},
                 folder='mn-stat')
    assert runner.main(['compare', bn, mn, str(tmp_path / 'mn-stat')]) == 0
    text = capsys.readouterr().out
    blocks = compare_blocks(text)
    assert list(blocks) == [
        'cnn-c10-BN-2@digits', 'cnn-c10-MN-2@digits', 'cnn-c10-MN-2@digits+affine=statistics']
    paper, here = blocks['cnn-c10-MN-2@digits']
    assert paper.split()[:5] == ['paper', '(Table', '3)', '1.34e+04', '31']
    assert here.startswith('here (3 seeds)')
    paper, here = blocks['cnn-c10-MN-2@digits+affine=statistics']
    assert here.startswith('here (2 seeds)') and 'never [never, never]' in here
    fake_run(tmp_path, 'cnn-c10-MN-2', 0, [0.1] * 4, folder='again')
    code = runner.main(['summarize', mn, str(tmp_path / 'again')])
    err = capsys.readouterr().err
    assert code == 2 and 'same seed 0' in err and len(err.strip().splitlines()) == 1


# -- the over-seeds tables: width and legend (issue 22) ------------------------------------

@pytest.mark.parametrize('n', [2, 3, 4, 5, 6, 7])
def test_the_legend_says_what_the_interval_is(n):
    """2-5 seeds: the interval is the seeds' range, and the legend says so; 6 and more: a
    bootstrap interval inside the range; 1: no interval."""
    values = list(numpy.random.default_rng(n).normal(size=n))
    med, low, high, count = seeds.median_interval(values)
    legend = seeds.interval_legend([n])
    assert legend.startswith('interval with {} seeds: '.format(n))
    if n <= seeds.RANGE_UP_TO:
        assert (low, high) == (min(values), max(values)) and "[min, max]" in legend
    else:
        assert min(values) < low < med < high < max(values)
        assert 'bootstrap interval of the median' in legend and '[min, max]' not in legend
        assert ('exact' in legend) == (n <= seeds.EXACT_UP_TO)
    assert seeds.interval_legend([1]) == 'interval with 1 seed: none (the value alone).'
    assert seeds.interval_cell([2.5]) == '2.50' and seeds.interval_cell([None]) == '-'
    assert seeds.interval_cell([1, None, 3], '{:.0f}', n=3) == '2 [1, 3] (2)'


def realistic_runs(root, bn_seeds, mn_seeds, mn_options=None, epochs=100, every=196):
    """CIFAR-scale fake runs (196 steps per epoch: five-digit step counts)."""
    def accs(seed, gain):
        rng = numpy.random.default_rng(seed)
        e = numpy.arange(1, epochs + 1)
        return list(0.3 + gain * (1 - numpy.exp(-e / 20)) + rng.normal(0, 0.01, epochs))
    for s in bn_seeds:
        fake_run(root, 'cnn-c100-BN-2', s, accs(s, 0.3), folder='bn', every=every)
    for s in mn_seeds:
        fake_run(root, 'cnn-c100-MN-2', s, accs(100 + s, 0.31), mn_options, folder='mn',
                 every=every)
    return str(root / 'bn'), str(root / 'mn')


def over_seeds_text(text):
    return text[text.index('\nover seeds'):]


def test_over_seeds_tables_fit_in_120_columns(tmp_path, capsys):
    """Five seeds at CIFAR scale with the longest label the tooling writes (dataset and MN
    option): the tables were ~200-260 columns wide."""
    bn, mn = realistic_runs(tmp_path, range(5), range(5), {'affine': 'statistics'})
    for command in ('summarize', 'compare'):
        assert runner.main([command, bn, mn]) == 0
        text = capsys.readouterr().out
        width = max(len(line) for line in text.splitlines())
        assert width <= 120, (command, width, text)
        assert 'cnn-c100-MN-2@digits+affine=statistics' in text
        assert 'interval with 5 seeds: ' in text and '3-5 seeds' not in text
    # every number is still there: median and interval of each
    runs = [reports.load_run(d) for d in seeds.expand_run_dirs([bn, mn])]
    row = [r for r in reports.seed_table(runs) if r[0].startswith('cnn-c100-MN-2')][0]
    for key in ('best_acc', 'steps', 'fewer_steps', 'error_ratio'):
        med, low, high, n = seeds.median_interval(row[2][key])
        assert n == 5
    assert seeds.interval_cell(row[2]['steps'], '{:.0f}', 5) in text


def test_the_legend_follows_the_seeds_shown(tmp_path, capsys):
    """Two seeds: the interval is [min, max], one seed: no interval, and the legend says what
    the tables show, not what 3-5 seeds would give."""
    bn, mn = realistic_runs(tmp_path, range(2), range(1), epochs=8, every=10)
    assert runner.main(['summarize', bn, mn]) == 0
    text = over_seeds_text(capsys.readouterr().out)
    assert "interval with 1 seed: none (the value alone); with 2 seeds: the seeds' [min, max]" \
        in ' '.join(text.split())
    bn_row = [ln for ln in text.splitlines() if ln.startswith('cnn-c100-BN-2@digits')][0]
    mn_row = [ln for ln in text.splitlines() if ln.startswith('cnn-c100-MN-2@digits')][0]
    assert bn_row.split()[1] == '2' and bn_row.count('[') == 3          # n, three intervals
    assert mn_row.split()[1] == '1' and '[' not in mn_row                # one seed: values
    assert runner.main(['compare', bn]) == 0
    text = capsys.readouterr().out
    assert 'here (2 seeds)' in text and 'with 2 seeds:' in text and '1 seed' not in text


@pytest.mark.slow
def test_over_seeds_tables_of_real_seeds_runs(tmp_path, capsys):
    """`run --seeds 0,1` for BN and MN, then summarize and compare, as docs/experiments.md
    shows them: narrow tables, and a legend for the two seeds they show."""
    bn, mn = str(tmp_path / 'bn'), str(tmp_path / 'mn')
    for name, out in (('cnn-c10-BN-2', bn), ('cnn-c10-MN-2', mn)):
        assert runner.main(['run', name, '--out', out, '--epochs', '2', '--seeds', '0,1']
                           + TINY) == 0
    capsys.readouterr()
    for command in ('summarize', 'compare'):
        assert runner.main([command, bn, mn]) == 0
        text = capsys.readouterr().out
        assert max(len(line) for line in text.splitlines()) <= 120, text
        assert "interval with 2 seeds: the seeds' [min, max]" in ' '.join(text.split())
        assert '3-5 seeds' not in text and '(2)' not in text and '1 seed' not in text
    paper, here = compare_blocks(text)['cnn-c10-MN-2@digits']
    assert paper.startswith('paper (Table 3)') and here.startswith('here (2 seeds)')
    assert here.count('[') == 3


# -- figures: mean over seeds with a band --------------------------------------------------

def test_figures_merge_seeds_into_mean_and_std(tmp_path):
    bn, mn = seed_folders(tmp_path)
    runs = plotting.load_runs([bn, mn])
    assert len(runs) == 2 and all(r.n_seeds == 3 for r in runs)
    merged = [r for r in runs if r.name == 'cnn-c10-MN-2'][0]
    ep, acc = merged.series(ACC)
    table = numpy.array([MN[s] for s in sorted(MN)])
    assert acc == pytest.approx(table.mean(0)) and list(ep) == [1, 2, 3, 4]
    assert merged.seed_std(ACC)[1] == pytest.approx(table.std(0))
    assert merged.label == 'MN-2 (3 seeds)'
    assert len(plotting.load_runs([bn, mn], merge=False)) == 6
    from tests.figure_scripts import load_script
    summary = load_script(2).main(['--run', bn, mn, '--out', str(tmp_path / 'f.png')])
    assert os.path.getsize(str(tmp_path / 'f.png')) > 0 and len(summary) == 2


# -- run --seeds, --mn-option --------------------------------------------------------------

TINY = ['--dataset', 'digits', '--input-size', '8', '--train-limit', '64', '--test-limit', '64',
        '--batch-size', '32', '--no-progress']


@pytest.mark.slow
def test_run_seeds_one_folder_per_seed_resumable_per_seed(tmp_path, capsys):
    out = str(tmp_path / 'mn')
    args = ['run', 'cnn-c10-MN-2', '--out', out, '--mn-option', 'kmeans_iters=0'] + TINY
    assert runner.main(args + ['--epochs', '1', '--seeds', '0,1']) == 0
    assert sorted(os.listdir(out)) == ['seed0', 'seed1']
    # --resume: seeds 0 and 1 continue to 2 epochs, seed 2 starts with their options
    assert runner.main(['run', 'cnn-c10-MN-2', '--out', out, '--resume', '--epochs', '2',
                        '--seeds', '0-2', '--no-progress']) == 0
    text = capsys.readouterr().out
    assert 'seed0, resumed' in text and 'seed2 ==' in text
    logs = {}
    for s in (0, 1, 2):
        with open(os.path.join(out, 'seed{}'.format(s), 'setting.json')) as f:
            record = json.load(f)
        assert record['options']['seed'] == s and record['options']['batch_size'] == 32
        assert record['options']['mn_options'] == {'kmeans_iters': 0}
        with open(os.path.join(out, 'seed{}'.format(s), 'log.json')) as f:
            logs[s] = json.load(f)
        assert [e['epoch'] for e in logs[s]] == [1, 2]
    # each seed's run is the run of that seed alone
    single = str(tmp_path / 'single')
    assert runner.main(['run', 'cnn-c10-MN-2', '--out', single, '--seed', '2', '--epochs', '2',
                        '--mn-option', 'kmeans_iters=0'] + TINY) == 0
    with open(os.path.join(single, 'log.json')) as f:
        alone = json.load(f)
    assert [e[ACC] for e in alone] == [e[ACC] for e in logs[2]]
    assert [e['main/loss'] for e in alone] == [e['main/loss'] for e in logs[2]]
    assert logs[0][-1]['main/loss'] != logs[2][-1]['main/loss']      # seeds differ
    # a second start without --resume refuses before training any seed
    code = runner.main(args + ['--epochs', '1', '--seeds', '3,1'])
    assert code == 2 and not os.path.exists(os.path.join(out, 'seed3'))


@pytest.mark.slow
def test_a_seed_added_to_a_bn_run_with_resume_takes_its_options(tmp_path, capsys):
    out = str(tmp_path / 'bn')
    assert runner.main(['run', 'cnn-c10-BN-2', '--out', out, '--epochs', '1', '--seeds', '0']
                       + TINY) == 0
    assert runner.main(['run', 'cnn-c10-BN-2', '--out', out, '--seeds', '0-1', '--resume',
                        '--no-progress']) == 0
    with open(os.path.join(out, 'seed1', 'setting.json')) as f:
        options = json.load(f)['options']
    assert (options['seed'], options['batch_size'], options['mn_options']) == (1, 32, {})


def test_run_option_errors(tmp_path, capsys):
    from tests.test_cli_errors import one_line_error
    one_line_error(runner.main, ['run', 'cnn-c10-MN-2', '--mn-option', 'affine=foo'], capsys,
                   'affine must be one of output, statistics')
    one_line_error(runner.main, ['run', 'cnn-c10-MN-2', '--mn-option', 'gamma=1'], capsys,
                   'give KEY=VALUE with KEY one of affine')
    one_line_error(runner.main, ['run', 'cnn-c10-MN-2', '--seeds', '1,x'], capsys,
                   'not a list of seeds')
    one_line_error(runner.main, ['run', 'cnn-c10-BN-2', '--mn-option', 'affine=statistics',
                                 '--out', str(tmp_path / 'x')], capsys, 'has no MN layers')
    one_line_error(runner.main, ['run', 'cnn-c10-MN-2', '--seed', '1', '--seeds', '1,2',
                                 '--out', str(tmp_path / 'y')], capsys, 'not both')
    single = fake_run(tmp_path, 'cnn-c10-MN-2', 0, [0.5])
    one_line_error(runner.main, ['run', 'cnn-c10-MN-2', '--seeds', '1,2', '--out',
                                 single], capsys, 'holds a run of one seed')
    assert arguments.seed_list('0-2,7,1') == (0, 1, 2, 7)
    assert builders.parse_mn_option('initial_gamma=1/sqrt(K)') == ('initial_gamma', '1/sqrt(K)')
    assert builders.parse_mn_option('initial-gamma=0.5') == ('initial_gamma', 0.5)
    assert builders.model_keywords({'relu': 'after', 'affine': 'statistics'}) == {
        'fused_relu': False, 'affine': 'statistics'}


def test_mn_options_reach_the_layers():
    setting = registry.get('cnn-c10-MN-2')
    model = builders.build_model(setting, 10, seed=0, mn_options={
        'affine': 'statistics', 'relu': 'after', 'kmeans_iters': 0, 'initial_gamma': '1/sqrt(K)',
        'inference': 'printed'})
    link = model.predictor.conv3_norm
    assert (link.affine, link.activation, link.kmeans_iters, link.gmm_em_iters,
            link.inference) == ('statistics', None, 0, 2, 'printed')
    assert link.gamma.array == pytest.approx(numpy.full(link.size, 3 ** -0.5))
    default = builders.build_model(setting, 10, seed=0).predictor.conv3_norm
    assert (default.affine, default.activation, default.kmeans_iters) == ('output', 'relu', 1)
    assert default.gamma.array == pytest.approx(numpy.ones(default.size))


@pytest.mark.parametrize('mn_option', [[], ['--mn-option', 'kmeans_iters=0']])
def test_run_seeds_without_out_uses_the_default_folder(tmp_path, monkeypatch, mn_option):
    # every documented --seeds example passes --out; without it the default folder is used
    monkeypatch.chdir(tmp_path)
    assert runner.main(['run', 'cnn-c10-MN-2', '--epochs', '1', '--seeds', '0,1'] + mn_option
                       + TINY) == 0
    # TINY's --batch-size 32 is not the setting's 256: the folder says so (+batch=32)
    folder = 'cnn-c10-MN-2@digits+batch=32' + ('+kmeans_iters=0' if mn_option else '')
    assert sorted(os.listdir(os.path.join('results', folder))) == ['seed0', 'seed1']
