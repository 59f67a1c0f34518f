"""experiments/seeding_cost.py as its CPU dry run (``--quick --device @numpy``), so the script
cannot rot before its real (CPU or GPU) measurement."""
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INITS = ('kmeans++', 'afkmc2', 'previous')


def positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_seeding_cost_dry_run(tmp_path):
    report_path = tmp_path / 'seeding_cost.json'
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', 'seeding_cost.py'),
                           '--quick', '--device', '@numpy', '--seeds', '0,1',
                           '--json', str(report_path)],
                          capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(report_path) as f:
        report = json.load(f)
    assert report['inits'] == list(INITS)
    assert set(report['nets']) == {'cnn', 'dense'}
    for key, net in report['nets'].items():
        assert set(net['per_seed']) == {'0', '1'}
        for seed, result in net['per_seed'].items():
            for name in ('fit_ms', 'layer_ms'):
                assert set(result[name]) == set(INITS)
                assert all(positive(result[name][i]) for i in INITS), (key, seed, name, result)
            assert all(math.isfinite(result['score'][i]) for i in INITS)
            rows = result['iterations']['rows']
            assert {r['init'] for r in rows} == set(INITS)
            assert all(positive(r['ms']) and math.isfinite(r['score']) for r in rows)
        for name in ('fit_ms', 'layer_ms'):
            for init in INITS:
                cell = net['summary'][name][init]
                assert positive(cell['min']) and cell['min'] <= cell['median'] <= cell['max']
    step = report['training_step']
    for init in INITS:
        assert positive(step['summary']['ms'][init]['median'])
        assert all(positive(step['per_seed'][s]['ms'][init]) for s in ('0', '1'))
    for part in ('fit_gmm ms/step', 'layer fwd+bwd ms/step', 'score vs iterations',
                 'training step'):
        assert part in proc.stdout


def test_seeding_cost_refuses_bad_arguments(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', 'seeding_cost.py'),
                           '--quick', '--nets', 'resnet'], capture_output=True, text=True,
                          timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert '--nets: give cnn, dense or cnn,dense' in proc.stderr
