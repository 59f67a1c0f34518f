"""Run folders lose nothing (issue 15): no overwriting, exact resume (also after SIGKILL and with a
damaged newest snapshot), a finished run stays as it is, changed options are refused."""
import dataclasses
import json
import os
import signal
import subprocess
import sys

import numpy
import pytest

from mixnorm_chainer.reproduce import registry, runfolder, runner, training

from script_loader import load_script

TINY = ['--dataset', 'digits', '--input-size', '8', '--train-limit', '64', '--test-limit', '32',
        '--batch-size', '16', '--no-progress']          # 4 iterations per epoch


class Interrupt(Exception):
    pass


@pytest.fixture
def no_plots(monkeypatch):
    """No loss.png/accuracy.png (half of a tiny run's time); the SIGKILL test keeps them."""
    from chainer.training import extensions
    monkeypatch.setattr(extensions.PlotReport, 'available', staticmethod(lambda: False))


def parse(argv):
    return runner.build_parser().parse_args(argv)


def read_log(out, drop=('elapsed_time',)):
    with open(os.path.join(out, 'log.json')) as f:
        return [{k: v for k, v in e.items() if k not in drop} for e in json.load(f)]


def snapshot_arrays(path):
    """Every array of a snapshot except the wall-clock ones (elapsed time, the log's JSON with
    its elapsed_time entries: compared through log.json)."""
    with numpy.load(path) as z:
        return {k: z[k] for k in z.files
                if 'elapsed_time' not in k and not k.endswith('LogReport/_log')}


def assert_same_arrays(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k          # bit for bit


def assert_same_runs(out, ref, epochs):
    assert read_log(out) == read_log(ref)                      # every number, exactly
    assert [e['epoch'] for e in read_log(out)] == list(range(1, epochs + 1))
    name = 'snapshot_epoch_{}'.format(epochs)
    assert_same_arrays(snapshot_arrays(os.path.join(out, name)),
                       snapshot_arrays(os.path.join(ref, name)))
    rec = os.path.join(out, 'recording.npz')
    if os.path.exists(os.path.join(ref, 'recording.npz')):
        with numpy.load(rec) as a, numpy.load(os.path.join(ref, 'recording.npz')) as b:
            assert_same_arrays({k: a[k] for k in a.files}, {k: b[k] for k in b.files})


def crash_at(iteration, exc=Interrupt):
    def crash(trainer):
        if trainer.updater.iteration == iteration:
            raise exc()
    return crash


# -- exact resume ----------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    """A process killed with SIGKILL in the middle of epoch 4 (lr drops after epoch 2), resumed
    with --resume: logs, parameters, optimizer state, MN queues and recordings equal the
    uninterrupted run's bit for bit."""
    argv = ['run', 'cnn-c10-MN-2', '--epochs', '4', '--record', 'conv3'] + TINY
    ref = str(tmp_path / 'ref')
    assert runner.main(argv + ['--out', ref]) == 0
    out = str(tmp_path / 'killed')
    script = ('import os, signal, sys\n'
              'from mixnorm_chainer.reproduce import runner, training\n'
              'def kill(trainer):\n'
              '    if trainer.updater.iteration == 14:\n'
              '        os.kill(os.getpid(), signal.SIGKILL)\n'
              'training.run(runner.build_parser().parse_args(sys.argv[1:]), '
              '[(kill, (1, "iteration"))])\n')
    proc = subprocess.run([sys.executable, '-c', script] + argv + ['--out', out],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [e['epoch'] for e in read_log(out)] == [1, 2, 3]
    assert runner.main(argv + ['--out', out, '--resume']) == 0
    assert_same_runs(out, ref, 4)
    with open(os.path.join(out, 'setting.json')) as f:
        record = json.load(f)
    assert [r['from'] for r in record['resumed']] == ['snapshot_epoch_3']


def _setting(monkeypatch, name, **changes):
    setting = dataclasses.replace(registry.get('cnn-c10-MN-2'), name=name, **changes)
    monkeypatch.setitem(registry.SETTINGS, name, setting)
    return setting


SCHEDULES = {
    # the CIFAR CNN's (and Inception-V3's): lr x0.93 every 2 epochs, RMSprop
    'exponential': dict(),
    # DenseNet's and Table 6's first NAG policy (the same): /10 at 50% and 75% of the updates
    'step-nag1': dict(schedule=registry.get('inc-c100-nag1-MN').schedule, optimizer='nesterov',
                      lr=0.1, weight_decay=5e-4),
    # Table 6's second NAG policy: /5 at 30, 60 and 80%
    'nag2': dict(schedule=registry.get('inc-c100-nag2-MN').schedule, optimizer='nesterov',
                 lr=0.1, weight_decay=5e-4),
}
assert SCHEDULES['step-nag1']['schedule'] == registry.get('dense40-c100-MN').schedule


@pytest.mark.slow
@pytest.mark.usefixtures('no_plots')
@pytest.mark.parametrize('kind', sorted(SCHEDULES))
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(kind, tmp_path, monkeypatch):
    """Every learning-rate policy: interrupted after a drop (mid-epoch), resumed: the same lr at
    every epoch and the same numbers, bit for bit (chainer's shifts restart at the initial lr)."""
    name = 'test-' + kind
    _setting(monkeypatch, name, **SCHEDULES[kind])
    argv = ['run', name, '--epochs', '4'] + TINY
    ref = str(tmp_path / 'ref')
    training.run(parse(argv + ['--out', ref]))
    out = str(tmp_path / 'run')
    exc = KeyboardInterrupt if kind == 'exponential' else Interrupt       # Ctrl-C too
    with pytest.raises(exc):
        training.run(parse(argv + ['--out', out]),
                     extra_extensions=[(crash_at(14, exc), (1, 'iteration'))])
    training.run(parse(argv + ['--out', out, '--resume']))
    assert_same_runs(out, ref, 4)
    lrs = [e['lr'] for e in read_log(ref)]
    assert len(set(lrs)) > 1                       # the policy dropped the lr within the run


@pytest.mark.slow
@pytest.mark.usefixtures('no_plots')
def test_a_warm_started_run_resumes_bit_identical(tmp_path, capsys):
    """--mn-option init=previous (warm-started EM, issue 24): interrupted mid-epoch and resumed,
    the run equals the uninterrupted one bit for bit; the snapshot holds the warm start's
    decisions over the 16 steps (measured: 11 warm, 5 reseeded: first, every x2, collapse x2)."""
    argv = ['run', 'cnn-c10-MN-2', '--epochs', '4', '--mn-option', 'init=previous',
            '--mn-option', 'reseed_every=5'] + TINY
    ref = str(tmp_path / 'ref')
    training.run(parse(argv + ['--out', ref]))
    out = str(tmp_path / 'run')
    with pytest.raises(Interrupt):
        training.run(parse(argv + ['--out', out]),
                     extra_extensions=[(crash_at(14), (1, 'iteration'))])
    training.run(parse(argv + ['--out', out, '--resume']))
    assert_same_runs(out, ref, 4)
    with numpy.load(os.path.join(ref, 'snapshot_epoch_4')) as z:
        key, = [k for k in z.files if k.endswith('conv3_norm/mn_init_state')]
        state = json.loads(z[key].tobytes().decode())
    assert state['reseeds']['first'] == 1 and state['reseeds']['every'] >= 2
    assert state['warm'] + sum(state['reseeds'].values()) == 16
    # experiments/seeding_reseeds.py prints the same counts
    assert load_script('experiments/seeding_reseeds.py').main([ref]) == 0
    line, = [row for row in capsys.readouterr().out.splitlines() if 'conv3_norm' in row]
    assert line.split()[-7:] == [str(state['warm']), str(sum(state['reseeds'].values()))] + [
        str(state['reseeds'][r]) for r in ('first', 'every', 'pruned', 'collapse', 'drop')]


@pytest.mark.slow
@pytest.mark.usefixtures('no_plots')
def test_a_damaged_newest_snapshot_falls_back_to_the_previous_one(tmp_path, capsys):
    argv = ['run', 'cnn-c10-MN-2', '--epochs', '3'] + TINY
    ref = str(tmp_path / 'ref')
    training.run(parse(argv + ['--out', ref]))
    out = str(tmp_path / 'run')
    with pytest.raises(Interrupt):
        training.run(parse(argv + ['--out', out]),
                     extra_extensions=[(crash_at(10), (1, 'iteration'))])
    newest = os.path.join(out, 'snapshot_epoch_2')
    with open(newest, 'r+b') as f:                 # truncated (a full disk, a bad copy)
        f.truncate(os.path.getsize(newest) // 2)
    capsys.readouterr()
    assert runner.main(argv + ['--out', out, '--resume']) == 0
    err = capsys.readouterr().err
    assert 'snapshot_epoch_2 is unreadable' in err and 'trying the previous one' in err
    assert_same_runs(out, ref, 3)
    # every snapshot damaged: one line, exit 2, nothing changed
    before = read_log(out)
    for name in ('snapshot_epoch_2', 'snapshot_epoch_3'):
        with open(os.path.join(out, name), 'wb') as f:
            f.write(b'not a snapshot')
    code = runner.main(argv[:2] + ['--epochs', '4', '--out', out, '--resume'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith('mixnorm-exp: error: --resume: no readable snapshot')
    assert read_log(out) == before


@pytest.mark.slow
@pytest.mark.usefixtures('no_plots')
def test_a_snapshot_of_the_previous_version_still_resumes(tmp_path, capsys):
    """Snapshots without the random-generator state (0.2.0) resume with a one-line warning."""
    out = str(tmp_path / 'run')
    argv = ['run', 'cnn-c10-MN-2', '--out', out] + TINY
    assert runner.main(argv + ['--epochs', '1']) == 0
    path = os.path.join(out, 'snapshot_epoch_1')
    with numpy.load(path) as z:
        old = {k: z[k] for k in z.files if 'RandomStates' not in k}
    with open(path, 'wb') as f:
        numpy.savez(f, **old)
    capsys.readouterr()
    assert runner.main(argv + ['--epochs', '2', '--resume']) == 0
    err = capsys.readouterr().err
    assert 'holds no state of the numpy random generator' in err
    assert [e['epoch'] for e in read_log(out)] == [1, 2]


# -- no overwriting -------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.usefixtures('no_plots')
def test_a_folder_holding_a_run_is_refused_unless_resume_or_force(tmp_path, capsys,
                                                                  monkeypatch):
    out = str(tmp_path / 'run')
    argv = ['run', 'cnn-c10-MN-2', '--out', out] + TINY
    assert runner.main(argv + ['--epochs', '2']) == 0
    files = sorted(os.listdir(out))
    log = open(os.path.join(out, 'log.json'), 'rb').read()
    capsys.readouterr()
    assert runner.main(argv + ['--epochs', '1', '--seed', '5']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'already holds a run' in err
    assert '--resume' in err and '--force' in err
    assert sorted(os.listdir(out)) == files and open(os.path.join(out, 'log.json'),
                                                     'rb').read() == log
    # --force replaces the run's files (only those)
    (tmp_path / 'run' / 'notes.txt').write_text('mine')
    assert runner.main(argv + ['--epochs', '1', '--seed', '5', '--force']) == 0
    assert [e['epoch'] for e in read_log(out)] == [1]
    assert not os.path.exists(os.path.join(out, 'snapshot_epoch_2'))
    assert (tmp_path / 'run' / 'notes.txt').read_text() == 'mine'
    # default folders: one per seed
    monkeypatch.chdir(tmp_path)
    assert runner.main(['run', 'cnn-c10-MN-2', '--epochs', '1', '--seed', '5'] + TINY) == 0
    assert os.path.isfile(os.path.join('results', 'cnn-c10-MN-2@digits+batch=16-seed5',
                                       'log.json'))
    s = registry.get('cnn-c10-MN-2')
    assert runfolder.default_out(s, 'cifar10', 0) == os.path.join('results', 'cnn-c10-MN-2')
    assert runfolder.default_out(s, 'cifar10', 1) == os.path.join('results',
                                                                  'cnn-c10-MN-2-seed1')


@pytest.mark.slow
@pytest.mark.usefixtures('no_plots')
def test_resume_of_a_finished_run_changes_nothing_and_more_epochs_extend_it(tmp_path, capsys):
    out = str(tmp_path / 'run')
    argv = ['run', 'cnn-c10-MN-2', '--out', out] + TINY
    assert runner.main(argv + ['--epochs', '2']) == 0
    before = {f: open(os.path.join(out, f), 'rb').read() for f in os.listdir(out)
              if os.path.isfile(os.path.join(out, f))}
    capsys.readouterr()
    assert runner.main(argv + ['--resume']) == 0
    text = capsys.readouterr().out
    assert 'the run is complete (2 of 2 epochs); nothing was changed' in text
    after = {f: open(os.path.join(out, f), 'rb').read() for f in os.listdir(out)
             if os.path.isfile(os.path.join(out, f))}
    assert after == before                         # recording.npz included
    # extending (exponential schedule): continues to 3 epochs, equal to a 3-epoch run
    assert runner.main(argv + ['--epochs', '3', '--resume']) == 0
    ref = str(tmp_path / 'ref')
    assert runner.main(['run', 'cnn-c10-MN-2', '--out', ref, '--epochs', '3'] + TINY) == 0
    assert_same_runs(out, ref, 3)
    # options not given are the run's: a bare --resume of the folder works
    assert runner.main(['run', 'cnn-c10-MN-2', '--out', out, '--resume']) == 0
    assert 'the run is complete (3 of 3 epochs)' in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.usefixtures('no_plots')
def test_resume_with_changed_options_is_refused_before_anything_is_written(tmp_path, capsys,
                                                                         monkeypatch):
    out = str(tmp_path / 'run')
    argv = ['--out', out, '--epochs', '2'] + TINY
    assert runner.main(['run', 'cnn-c10-MN-2'] + argv) == 0
    setting_json = open(os.path.join(out, 'setting.json'), 'rb').read()
    capsys.readouterr()
    for bad, expected in ((['run', 'cnn-c10-MN-2', '--resume'] + argv + ['--batch-size', '32'],
                           '--batch-size 32 (the run has 16)'),
                          (['run', 'cnn-c10-BN-2', '--resume'] + argv,
                           'setting cnn-c10-BN-2 (the run has cnn-c10-MN-2)'),
                          (['run', 'cnn-c10-MN-2', '--resume', '--seed', '3'] + argv,
                           '--seed 3 (the run has 0)')):
        assert runner.main(bad) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and expected in err and 'only --epochs' in err, err
        assert open(os.path.join(out, 'setting.json'), 'rb').read() == setting_json
    # a step schedule's drops depend on the run's epochs: --epochs may not change
    _setting(monkeypatch, 'test-step', schedule=('step', 0.1, (0.5, 0.75)))
    out2 = str(tmp_path / 'step')
    assert runner.main(['run', 'test-step', '--out', out2, '--epochs', '1'] + TINY) == 0
    assert runner.main(['run', 'test-step', '--out', out2, '--epochs', '2', '--resume']) == 2
    assert 'step schedule drops the learning rate' in capsys.readouterr().err


def test_resume_and_force_need_a_run_and_exclude_each_other(tmp_path, capsys):
    out = str(tmp_path / 'none')
    assert runner.main(['run', 'cnn-c10-MN-2', '--out', out, '--resume'] + TINY) == 2
    assert 'holds no run' in capsys.readouterr().err
    assert runner.main(['run', 'cnn-c10-MN-2', '--out', out, '--resume', '--force']) == 2
    assert 'contradict' in capsys.readouterr().err
    assert not os.path.exists(out)


# -- pieces ----------------------------------------------------------------------------------

def test_snapshot_files_and_atomic_json(tmp_path):
    for name in ('snapshot_epoch_2', 'snapshot_epoch_10', 'snapshot_epoch_3_rank1',
                 '.snapshot_epoch_11.tmp', 'snapshot_epoch_x'):
        (tmp_path / name).write_text('')
    assert runfolder.snapshot_files(str(tmp_path)) == [(10, 'snapshot_epoch_10'),
                                                       (2, 'snapshot_epoch_2')]
    assert runfolder.snapshot_files(str(tmp_path), '_rank1') == [(3, 'snapshot_epoch_3_rank1')]
    path = str(tmp_path / 'a.json')
    runfolder.write_json(path, {'x': 1})
    assert json.load(open(path)) == {'x': 1} and not os.path.exists(str(tmp_path / '.a.json.tmp'))


def test_random_states_round_trip_through_a_snapshot(tmp_path):
    import chainer
    rs = numpy.random.RandomState(3)
    rs.normal(size=5)                                  # a cached gaussian half-way
    ext = runfolder.RandomStates({'aug': rs})
    path = str(tmp_path / 's.npz')
    chainer.serializers.save_npz(path, ext)
    expected = rs.normal(size=7)
    rs.seed(99)
    chainer.serializers.load_npz(path, ext)
    numpy.testing.assert_array_equal(rs.normal(size=7), expected)


def test_schedule_state_is_restored_before_the_first_update():
    """chainer's MultistepShift.initialize sets the initial lr even after a drop."""
    import chainer
    setting = registry.get('dense40-c100-MN')
    shift, _ = training.schedule_extension(setting, 4, 10)
    shift._current_step = 1

    class Trainer:
        class updater:
            @staticmethod
            def get_optimizer(name):
                return opt
    opt = chainer.optimizers.NesterovAG(lr=0.1)
    shift.initialize(Trainer)
    assert opt.lr == pytest.approx(0.01)
