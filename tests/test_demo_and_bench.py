"""The offline demo and the benchmark script run end to end (at a tiny size)."""
import json
import os
import subprocess
import sys
import types

import pytest
from chainer.training import extensions

from mixnorm_chainer.reproduce import demo, runfolder
from mixnorm_chainer.reproduce.datasets import get_digits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_digits_dataset():
    train, test = get_digits(size=16, seed=0)
    assert len(train) == 1438 and len(test) == 359
    x, t = train[0]
    assert x.shape == (3, 16, 16) and x.dtype.name == 'float32'
    assert 0 <= t < 10
    with pytest.raises(ValueError, match='size'):
        get_digits(size=4)


def test_steps_to_reach():
    log = [{'iteration': 10, 'validation/main/accuracy': 0.5},
           {'iteration': 20, 'validation/main/accuracy': 0.9},
           {'iteration': 30, 'validation/main/accuracy': 0.8}]
    assert demo.steps_to_reach(log, 0.9) == 20
    assert demo.steps_to_reach(log, 0.95) is None


class FakeTrainer:
    """Records the extensions; hands PrintReport a LogReport with two epochs logged."""

    def __init__(self):
        self.extensions = []
        self.log = types.SimpleNamespace(log=[
            {'epoch': 1, 'iteration': 4, 'main/loss': 2.0, 'validation/main/accuracy': 0.5},
            {'epoch': 2, 'iteration': 8, 'main/loss': 1.0, 'validation/main/accuracy': 0.75}])

    def extend(self, extension, **kwargs):
        self.extensions.append(extension)

    def get_extension(self, name):
        assert name == 'LogReport'
        return self.log


def test_off_a_terminal_the_demo_prints_plain_lines(capsys):
    trainer = FakeTrainer()
    demo.add_printing(trainer, no_progress=False, interactive=False)
    assert not any(isinstance(e, extensions.ProgressBar) for e in trainer.extensions)
    for extension in trainer.extensions:
        extension(trainer)
    out = capsys.readouterr().out
    assert '\x1b' not in out
    assert out.splitlines()[0].split()[:2] == ['epoch', 'iteration']
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [['1', '4'], ['2', '8']]


def test_off_a_terminal_is_what_mixnorm_exp_run_uses(monkeypatch):
    monkeypatch.setattr(runfolder, 'interactive', lambda: False)
    trainer = FakeTrainer()
    demo.add_printing(trainer)
    assert [type(e) for e in trainer.extensions] == [extensions.PrintReport]
    monkeypatch.setattr(runfolder, 'interactive', lambda: True)
    for no_progress, kinds in ((False, [extensions.PrintReport, extensions.ProgressBar]),
                               (True, [extensions.PrintReport])):
        trainer = FakeTrainer()
        demo.add_printing(trainer, no_progress=no_progress)
        assert [type(e) for e in trainer.extensions] == kinds


def fake_summary(bn_steps, mn_steps, total=200, seed=0):
    run = {'accuracy_per_epoch': [0.9, 0.95], 'best_accuracy': 0.95, 'total_steps': total,
           'elapsed_time': 3.0}
    return {'bn_best_accuracy': 0.95, 'config': {'seed': seed},
            'runs': {'BN': dict(run, steps_to_bn_best=bn_steps),
                     'MN': dict(run, steps_to_bn_best=mn_steps)},
            'mn_step_reduction': None if mn_steps is None else 1 - mn_steps / bn_steps}


@pytest.mark.parametrize('bn, mn, expected', [
    (100, 78, "This run (seed 0): MN needed 22% fewer steps than BN to reach BN's best "
              'accuracy (78 vs 100).'),
    (100, 184, "This run (seed 0): MN needed 84% more steps than BN to reach BN's best "
               'accuracy (184 vs 100).'),
    (30, 30, "This run (seed 0): MN and BN first reached BN's best accuracy at the same step, "
             '30.'),
    (30, None, "This run (seed 0): MN never reached BN's best accuracy in 200 steps; BN "
               'reached it at step 30.'),
])
def test_the_step_comparison_reads_as_a_person_would_say_it(bn, mn, expected, capsys):
    summary = fake_summary(bn, mn)
    assert demo.comparison_text(summary) == expected
    demo.print_summary(summary)
    out = capsys.readouterr().out
    assert expected in out
    assert '-' not in out.split('Best BN test accuracy')[1].split('The paper')[0]  # no "-84%"
    assert 'never of' not in out  # was "steps to reach BN best: never of 45"
    if mn is None:
        assert "MN: best 0.9500; never reached BN's best in 200 steps" in out


def test_the_demo_claims_nothing_about_the_method_from_one_seed(capsys):
    demo.print_summary(fake_summary(100, 78))
    out = capsys.readouterr().out
    assert 'MN needs' not in out and 'MN needed 31% fewer' in out  # only the paper's number
    assert 'does not say whether MN trains faster' in out
    assert '--seeds 0-4' in out and 'mixnorm-exp summarize' in out
    assert 'docs/training-speed.md' in out


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capfd):
    # no --no-progress: off a terminal (pytest's capture) the demo must print plain lines; capfd
    # also sees what chainer's extensions write to the sys.stdout bound at their import
    summary = demo.run(['--epochs', '2', '--batch-size', '32', '--size', '8',
                         '--train-limit', '128', '--out', str(tmp_path)])
    out = capfd.readouterr().out
    assert 'Best BN test accuracy' in out
    assert '\x1b' not in out, 'ANSI escape codes off a terminal'
    assert 'validation/main/accuracy' in out and out.count('\n2 ') >= 2  # both runs' rows
    with open(tmp_path / 'summary.json') as f:
        saved = json.load(f)
    assert saved['runs'].keys() == {'BN', 'MN'}
    for name in ('BN', 'MN'):
        run = saved['runs'][name]
        assert len(run['accuracy_per_epoch']) == 2 and run['total_steps'] == 8
        assert os.path.exists(tmp_path / name / 'log.json')
    assert saved['runs']['BN']['steps_to_bn_best'] is not None
    assert summary['bn_best_accuracy'] == max(saved['runs']['BN']['accuracy_per_epoch'])


def test_the_demo_is_mixnorm_exp_run_of_bn2_and_mn2_with_the_same_seed(tmp_path):
    """The demo's two runs are `mixnorm-exp run cnn-c10-BN-2` / `cnn-c10-MN-2` on digits with
    the same seed (same initialization, batch order and MN draws), so `--seeds 0-4` extends the
    demo's seed 0 instead of drawing a different run."""
    from mixnorm_chainer.reproduce import runner
    small = ['--epochs', '2', '--batch-size', '32', '--train-limit', '96', '--seed', '1']
    demo.run(small + ['--size', '8', '--out', str(tmp_path / 'demo'), '--no-progress'])
    for name, setting in (('BN', 'cnn-c10-BN-2'), ('MN', 'cnn-c10-MN-2')):
        out = tmp_path / setting
        assert runner.main(['run', setting, '--dataset', 'digits', '--input-size', '8',
                            '--out', str(out), '--no-progress'] + small) in (0, None)
        with open(tmp_path / 'demo' / name / 'log.json') as f:
            demo_log = json.load(f)
        with open(out / 'log.json') as f:
            run_log = json.load(f)
        for key in ('main/loss', 'validation/main/loss', 'validation/main/accuracy'):
            assert [e[key] for e in demo_log] == pytest.approx(
                [e[key] for e in run_log], rel=1e-9), (name, key)


@pytest.mark.slow
def test_demo_console_script_exits_zero(tmp_path):
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'mixnorm-demo'),
                             '--epochs', '1', '--batch-size', '32', '--size', '8',
                             '--train-limit', '64', '--out', str(tmp_path), '--no-progress'],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / 'summary.json').exists()


@pytest.mark.slow
def test_bench_core_quick(tmp_path):
    out = tmp_path / 'bench.json'
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', 'bench_core.py'),
                             '--quick', '--json', str(out)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    res = json.loads(out.read_text())
    assert res['gmm']['speedup'] > 0 and res['network']['mn_throughput_vs_bn'] > 0
    assert '(a) GMM fit' in result.stdout and '(c) CifarCNN' in result.stdout
