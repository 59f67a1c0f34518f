"""The offline demo and the benchmark script run end to end (at a tiny size)."""
import json
import os
import subprocess
import sys

import pytest

from mixnorm_chainer.reproduce import demo
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


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    summary = demo.run(['--epochs', '2', '--batch-size', '32', '--size', '8',
                         '--train-limit', '128', '--out', str(tmp_path), '--no-progress'])
    out = capsys.readouterr().out
    assert 'Best BN test accuracy' in out
    with open(tmp_path / 'summary.json') as f:
        saved = json.load(f)
    assert saved['runs'].keys() == {'BN', 'MN'}
    for name in ('BN', 'MN'):
        run = saved['runs'][name]
        assert len(run['accuracy_per_epoch']) == 2 and run['total_steps'] == 8
        assert os.path.exists(tmp_path / name / 'log.json')
    assert saved['runs']['BN']['steps_to_bn_best'] is not None
    assert summary['bn_best_accuracy'] == max(saved['runs']['BN']['accuracy_per_epoch'])


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
