"""figures/group_norm_study.py (the small-batch study's figure) on fabricated run folders."""
import json
import os

import pytest

from mixnorm_chainer.reproduce import seeds

from figure_scripts import check_png, make_run
from script_loader import load_script

ROWS = ('cnn-c10-BN-2', 'cnn-c10-MN-2', 'cnn-c10-GN-2', 'cnn-c10-MGN1-2', 'cnn-c10-MGN-2')


def load_study_script():
    return load_script('figures/group_norm_study.py')


def make_study_run(root, name, batch, seed, epochs=3, error=20.0):
    out = make_run(root, name, dataset='digits', epochs=epochs, final_error=error, seed=seed,
                   out=os.path.join(str(root), 'batch{}'.format(batch), name,
                                    'seed{}'.format(seed)))
    path = os.path.join(out, 'setting.json')
    with open(path) as f:
        record = json.load(f)
    record['batch_size'] = batch
    with open(path, 'w') as f:
        json.dump(record, f)
    return out


def test_group_norm_study_figure(tmp_path, capsys):
    for batch in (2, 8):
        for i, name in enumerate(ROWS):
            for seed in (0, 1, 2):
                make_study_run(tmp_path, name, batch, seed, error=10.0 + 5 * i + batch)
    unfinished = make_study_run(tmp_path, 'cnn-c10-MGN-2', 64, 0)
    with open(os.path.join(unfinished, 'setting.json')) as f:
        record = json.load(f)
    record['epochs'] = 5                  # started for 5 epochs, logged 3: left out
    with open(os.path.join(unfinished, 'setting.json'), 'w') as f:
        json.dump(record, f)
    dirs = [str(tmp_path / 'batch{}'.format(b) / name) for b in (2, 8, 64) for name in ROWS
            if b != 64 or name == 'cnn-c10-MGN-2']
    out = str(tmp_path / 'study.png')
    summary = load_study_script().main(['--run', *dirs, '--out', out])
    check_png(out)
    assert list(summary) == ['BN-2', 'MN-2', 'GN-2', 'MGN1-2', 'MGN-2']
    assert set(summary['MGN-2']) == {2, 8}
    cell = summary['GN-2'][8]
    assert cell['seeds'] == [0, 1, 2]
    errors = [seeds.run_numbers(json.load(open(os.path.join(
        tmp_path, 'batch8', 'cnn-c10-GN-2', 'seed{}'.format(s), 'log.json'))))['mean_error']
        for s in (0, 1, 2)]
    assert cell['mean_error'] == pytest.approx(seeds.median_interval(errors))
    printed = capsys.readouterr().out
    assert 'left out (not finished): ' + unfinished in printed
    assert "3 seeds: the seeds' [min, max]" in printed
    with pytest.raises(SystemExit):
        load_study_script().main(['--run', str(tmp_path / 'batch64'), '--out', out])
