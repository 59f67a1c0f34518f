"""mixnorm-exp: list, run (digits and a generated CIFAR archive), resume, summarize, cost."""
import json
import os

import chainer
import pytest

from mixnorm_chainer.reproduce import (
    builders,
    cost,
    registry,
    reports,
    runner,
    seeds,
    training,
)
from mixnorm_chainer.reproduce.datasets import write_cifar_archive

TINY = ['--dataset', 'digits', '--input-size', '8', '--train-limit', '64', '--test-limit', '64',
        '--batch-size', '32', '--no-progress']


def run_cli(args, capsys=None):
    code = runner.main(args)
    out = capsys.readouterr() if capsys else None
    return code, out


def read_log(directory):
    with open(os.path.join(directory, 'log.json')) as f:
        return json.load(f)


def test_list_shows_every_setting(capsys):
    code, out = run_cli(['list'], capsys)
    assert code == 0
    for name in registry.SETTINGS:
        assert name in out.out
    code, out = run_cli(['list', '--table', 'Table 6'], capsys)
    rows = [line for line in out.out.splitlines() if line.startswith('inc-c100-nag')]
    assert len([line for line in rows if ': ' not in line]) == 4      # and 4 notes


def test_list_notes_the_assumed_choices(capsys):
    """docs/experiments.md: Table 6's assumed K, EM iter. and weight decay are noted in the
    setting; `list` prints every setting's notes (Table 6, DenseNet, DCGAN, GBN)."""
    code, out = run_cli(['list'], capsys)
    notes = {line.split(': ', 1)[0]: line.split(': ', 1)[1] for line in out.out.splitlines()
             if ': ' in line and line.split(': ', 1)[0] in registry.SETTINGS}
    assert set(notes) == {s.name for s in registry.SETTINGS.values() if s.notes}
    for policy in ('nag1', 'nag2'):
        assert 'assumed 5, 2' in notes['inc-c100-{}-MN'.format(policy)]
        assert 'weight decay' in notes['inc-c100-{}-MN'.format(policy)]
        assert 'assumed 5e-4' in notes['inc-c100-{}-BN'.format(policy)]
    assert 'initial_gamma=1/sqrt(K)' in notes['dense40-c100-MN']
    assert 'batch size 64' in notes['dcgan-c10-BN']
    code, out = run_cli(['list', '--table', 'Table 6'], capsys)
    assert out.out.count('not in the paper: assumed') == 4 and 'dense40' not in out.out
    assert max(len(line) for line in out.out.splitlines()) <= 130


def test_unknown_setting_is_a_clear_error(capsys):
    code, out = run_cli(['run', 'nope'], capsys)
    assert code == 2 and 'unknown setting' in out.err
    # issue 22: the most similar name first, whatever the model family
    for typo, first in (('cnn-c100-BN-3x', 'cnn-c100-BN-3'), ('inc-c100-MN-44', 'inc-c100-MN-4'),
                        ('dense100-c100-MNx', 'dense100-c100-MN'),
                        ('dcgan-c10-BNN', 'dcgan-c10-BN')):
        code, out = run_cli(['run', typo], capsys)
        lines = out.err.strip().splitlines()
        assert code == 2 and len(lines) == 1
        assert lines[0].split('did you mean ')[1].startswith(first + ','), lines[0]


@pytest.mark.slow
def test_run_writes_logs_plots_snapshot_and_setting(tmp_path, capsys):
    out = str(tmp_path / 'run')
    code, _ = run_cli(['run', 'cnn-c10-MN-2', '--epochs', '2', '--out', out] + TINY, capsys)
    assert code == 0
    log = read_log(out)
    assert [e['epoch'] for e in log] == [1, 2] and [e['iteration'] for e in log] == [2, 4]
    assert all('validation/main/accuracy' in e and 'lr' in e for e in log)
    with open(os.path.join(out, 'setting.json')) as f:
        record = json.load(f)
    assert record['setting']['name'] == 'cnn-c10-MN-2' and record['epochs'] == 2
    assert record['dataset'] == 'digits'
    # the two newest snapshots are kept (the previous one is the fallback of a damaged newest)
    assert sorted(f for f in os.listdir(out) if f.startswith('snapshot')) == [
        'snapshot_epoch_1', 'snapshot_epoch_2']
    assert os.path.exists(os.path.join(out, 'loss.png'))


def test_learning_rate_policies(tmp_path):
    """Exponential x0.93 every 2 epochs (CIFAR CNN) and step drops at fractions (DenseNet)."""
    exp = registry.get('cnn-c10-BN-2')
    ext, trigger = training.schedule_extension(exp, 10, 5)
    assert trigger == (2, 'epoch') and ext._rate == 0.93
    step = registry.get('dense40-c100-BN')
    ext, trigger = training.schedule_extension(step, 20, 10)
    assert trigger == (1, 'iteration') and ext._step_value == [100, 150] and ext._gamma == 0.1
    nag2 = registry.get('inc-c100-nag2-MN')
    ext, _ = training.schedule_extension(nag2, 10, 10)
    assert ext._step_value == [30, 60, 80] and ext._gamma == 0.2
    assert training.run_epochs(exp, scale=0.1) == 10 and training.run_epochs(exp, epochs=3) == 3
    with pytest.raises(ValueError):
        training.run_epochs(exp, epochs=3, scale=0.5)


def test_optimizers_follow_the_paper():
    model = chainer.links.Linear(3, 2)
    opt = builders.build_optimizer(registry.get('cnn-c10-BN-1'), model)
    assert isinstance(opt, chainer.optimizers.RMSprop) and opt.alpha == 0.9 and opt.lr == 0.01
    opt = builders.build_optimizer(registry.get('dense40-c100-MN'), model)
    assert isinstance(opt, chainer.optimizers.NesterovAG) and opt.momentum == 0.9


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_interrupted_run_resumes_without_lost_or_duplicated_entries(tmp_path, capsys):
    out = str(tmp_path / 'run')
    args = runner.build_parser().parse_args(
        ['run', 'cnn-c10-MN-2', '--epochs', '3', '--out', out] + TINY)

    def crash(trainer):                     # dies in the middle of epoch 3 (iteration 5)
        if trainer.updater.iteration == 5:
            raise Interrupt()

    with pytest.raises(Interrupt):
        training.run(args, extra_extensions=[(crash, (1, 'iteration'))])
    assert [e['epoch'] for e in read_log(out)] == [1, 2]
    args.resume = True
    training.run(args)
    log = read_log(out)
    assert [e['epoch'] for e in log] == [1, 2, 3]
    assert [e['iteration'] for e in log] == [2, 4, 6]


@pytest.mark.slow
def test_generated_cifar_archive_run_and_summarize(tmp_path, capsys):
    data = tmp_path / 'data'
    write_cifar_archive(str(data), 'cifar10', n_train=64, n_test=32, seed=0)
    dirs = []
    for name in ('cnn-c10-BN-2', 'cnn-c10-MN-2'):
        out = str(tmp_path / name)
        code, _ = run_cli(['run', name, '--data-dir', str(data), '--epochs', '2',
                           '--batch-size', '32', '--out', out, '--no-progress'], capsys)
        assert code == 0
        dirs.append(out)
    code, out = run_cli(['summarize'] + dirs, capsys)
    assert code == 0
    text = out.out
    assert 'Table 2 on cifar10' in text and '84.11' in text and '88.47' in text
    assert 'steps to reach' in text and 'cnn-c10-BN-2' in text


def test_summary_numbers_from_logs(tmp_path):
    """max accuracy after 25/50/75/100% and steps to the baseline's best, from fake logs."""
    def fake(name, accs):
        d = tmp_path / name
        d.mkdir()
        s = registry.get(name)
        (d / 'setting.json').write_text(json.dumps({'setting': s.to_dict(), 'dataset': s.dataset,
                                                    'epochs': len(accs)}))
        (d / 'log.json').write_text(json.dumps([
            {'epoch': i + 1, 'iteration': 10 * (i + 1), 'validation/main/accuracy': a}
            for i, a in enumerate(accs)]))
        return str(d)

    bn = fake('cnn-c10-BN-2', [0.5, 0.6, 0.55, 0.7, 0.65, 0.7, 0.68, 0.69])
    mn = fake('cnn-c10-MN-2', [0.6, 0.72, 0.7, 0.71, 0.7, 0.74, 0.7, 0.7])
    runs = {r['setting']['name']: r
            for r in reports.summarize([bn, mn], out=open(os.devnull, 'w'))}
    assert reports.max_accuracy_at(runs['cnn-c10-BN-2']['log'], 8) == pytest.approx(
        [60.0, 70.0, 70.0, 70.0])
    assert seeds.first_reach(runs['cnn-c10-MN-2']['log'], 70.0) == 20
    assert seeds.first_reach(runs['cnn-c10-BN-2']['log'], 70.0) == 40
    assert seeds.first_reach(runs['cnn-c10-BN-2']['log'], 99.0) is None


def test_missing_cifar_is_a_clear_error(tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError('network unreachable')
    monkeypatch.setattr(chainer.datasets, 'get_cifar10', offline)
    code, out = run_cli(['run', 'cnn-c10-BN-2', '--data-dir', str(tmp_path), '--epochs', '1',
                         '--out', str(tmp_path / 'o'), '--no-progress'], capsys)
    assert code == 2 and 'cifar-10-python.tar.gz' in out.err


@pytest.mark.slow
def test_cost_table7_runs(capsys):
    code, out = run_cli(['cost', '--depth', '7', '--input-size', '8', '--iters', '1',
                         '--warmup', '0', '--batch-sizes', '64', '--components', '1', '2'],
                        capsys)
    assert code == 0
    lines = [line for line in out.out.splitlines() if line.startswith(('BN', 'MN'))]
    assert len(lines) == 2                     # batch 64 x (BN, MN K=2) of DenseNet-7
    # DenseNet-7 has 16 + 3 * 12 = 52 channels at its final BN, not the paper's 196 / 448,
    # and the paper's numbers (for DenseNet-20/40) are not put next to it
    assert all(line.split()[3] == '52' and line.split()[5] == '-' for line in lines)
    assert '16.40' not in out.out and 'not shown' in out.out
    assert all(float(line.split()[4]) > 0 for line in lines)
    assert cost.densenet_final_channels(20) == 196 and cost.densenet_final_channels(40) == 448


@pytest.mark.slow
def test_models_for_every_setting_build():
    """Every registered setting builds its network (MN layers where the paper says)."""
    seen = set()
    for s in registry.SETTINGS.values():
        key = (s.model, s.mn_layers)
        if key in seen or s.model in ('densenet100', 'dcgan'):   # dcgan: test_dcgan.py
            continue
        seen.add(key)
        model = builders.build_model(s, 10, seed=0)
        mn = [name for name, link in model.predictor.norm_layers().items()
              if type(link).__name__ == 'MixtureNormalization']
        assert bool(mn) == s.is_mn
