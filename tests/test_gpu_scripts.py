"""The GPU check and the GPU benchmark, run as their CI dry run (@numpy, tiny sizes), so the
scripts cannot rot between the rare sessions that have a GPU."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(name, tmp_path):
    report = str(tmp_path / f'{name}.json')
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', f'{name}.py'),
                           '--device', '@numpy', '--quick', '--json', report],
                          capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(report) as f:
        return proc.stdout, json.load(f)


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    out, report = run_script('gpu_check', tmp_path)
    assert report['ok'], [r for r in report['checks'] if not r['ok']]
    names = ' '.join(r['check'] for r in report['checks'])
    for part in ('doctor', 'MN 4x8x4x4', 'EM from one init', 'seeded fit_gmm', 'CifarCNN',
                 'GBN', 'mixnorm-exp run --epochs 2 --resume'):
        assert part in names
    assert 'check' in out and 'FAIL' not in out


@pytest.mark.slow
def test_bench_gpu_dry_run(tmp_path):
    out, report = run_script('bench_gpu', tmp_path)
    assert len(report['layers']) == 4 and report['em']['ms'] > 0
    assert [r['init'] for r in report['inits']] == ['kmeans++', 'afkmc2', 'previous']
    assert report['table7']['mn_over_bn']


def test_gpu_scripts_refuse_an_unusable_device(tmp_path):
    for name in ('gpu_check', 'bench_gpu'):
        proc = subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', f'{name}.py'),
                               '--device', '@cupy:0', '--json', str(tmp_path / 'r.json')],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        assert '--device @cupy:0: CuPy/CUDA is not available' in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_gpu_session_dry_run(tmp_path):
    """experiments/gpu_session.sh runs both scripts, each under its own limit, and keeps their
    logs and reports; here as its documented dry run (chainer already importable)."""
    env = dict(os.environ, GPU_PYTHON=sys.executable,
               GPU_SESSION_ARGS='--device @numpy --quick')
    proc = subprocess.run([os.path.join(ROOT, 'experiments', 'gpu_session.sh'), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ('gpu_check', 'bench_gpu'):
        assert f'== {name}: exit 0 after' in proc.stdout
        with open(tmp_path / f'{name}.json') as f:
            assert json.load(f)
        assert (tmp_path / f'{name}.log').stat().st_size > 0
    assert (tmp_path / 'nvidia-smi.txt').exists()


def test_gpu_session_reports_a_failed_part(tmp_path):
    env = dict(os.environ, GPU_PYTHON=sys.executable, GPU_SESSION_ARGS='--no-such-option')
    proc = subprocess.run([os.path.join(ROOT, 'experiments', 'gpu_session.sh'), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 1
    assert '== gpu_check: exit 2 after' in proc.stdout
    assert '== bench_gpu: exit 2 after' in proc.stdout
