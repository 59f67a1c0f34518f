"""ChainerMN: the synchronized MN layer on 2 and 3 MPI ranks equals one process on the
concatenated batch (tests/mpi/check_multi_node.py), and a 2-rank `mixnorm-exp run`.

The mpiexec tests need an MPI runtime and mpi4py. They are skipped without them, except when
``MIXNORM_REQUIRE_MPI=1`` (set by CI, which installs openmpi), where a missing MPI fails. The
same layer checks also run without MPI, with the ranks as threads of this process exchanging
through a barrier (``ThreadComm``).
"""
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy
import pytest

from mixnorm_chainer import multi_node
from mixnorm_chainer.reproduce import data_parallel

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _mpi_available():
    if shutil.which('mpiexec') is None:
        return 'no mpiexec on PATH (Debian: apt-get install openmpi-bin libopenmpi-dev)'
    probe = subprocess.run([sys.executable, '-c', 'from mpi4py import MPI'],
                           capture_output=True, text=True)
    if probe.returncode:
        return 'mpi4py does not import: ' + probe.stderr.strip().splitlines()[-1]
    return None


MISSING = _mpi_available()
if MISSING and os.environ.get('MIXNORM_REQUIRE_MPI') == '1':
    raise RuntimeError('MIXNORM_REQUIRE_MPI=1 but ' + MISSING)
needs_mpi = pytest.mark.skipif(MISSING is not None, reason=MISSING or '')


def mpiexec(n, *args, timeout=300):
    cmd = ['mpiexec', '--oversubscribe', '-n', str(n)]
    if os.geteuid() == 0:
        cmd.insert(1, '--allow-run-as-root')
    # this checkout's package, also for scripts run by path (tests/mpi/*.py)
    path = os.pathsep.join([ROOT] + ([os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH')
                                     else []))
    env = dict(os.environ, OMPI_MCA_rmaps_base_oversubscribe='1', PYTHONUNBUFFERED='1',
               PYTHONPATH=path)
    return subprocess.run(cmd + [sys.executable] + list(args), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize('ranks', [2, 3])
def test_synchronized_layer_equals_single_process(tmp_path, ranks):
    report_path = tmp_path / 'report.json'
    proc = mpiexec(ranks, os.path.join(HERE, 'mpi', 'check_multi_node.py'), str(report_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report['size'] == ranks
    assert report['failures'] == []
    assert len(report['cases']) == 8
    for name, case in report['cases'].items():
        assert case['max_error'] <= 1e-9, name
        assert len(case['rows_per_rank']) == ranks and min(case['rows_per_rank']) >= 1
        # The check can fail: each rank fitting its own rows gives a clearly different output.
        assert case['unsynchronized_y_error'] > 0.1, name
        assert case['communication']['collectives'] > 0
    # bad input on the last rank raised the same error on every rank, naming that rank
    for message in report['bad_input'].values():
        assert f'rank {ranks - 1}:' in message
    assert all(report['conversion'].values())


@pytest.mark.slow
@needs_mpi
def test_mixture_group_normalization_needs_no_communication(tmp_path):
    """MGN's sets are per sample: on 2 ranks the plain layer equals the single process on each
    rank's share (output and x-gradient bit for bit), and data-parallel training steps with a
    ChainerMN multi-node optimizer equal one process on the whole batch
    (tests/mpi/check_group_normalization.py); BN per rank, for contrast, does not."""
    report_path = tmp_path / 'report.json'
    proc = mpiexec(2, os.path.join(HERE, 'mpi', 'check_group_normalization.py'),
                   str(report_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report['size'] == 2 and report['failures'] == []
    assert len(report['layers']) == 3
    for name, errs in report['layers'].items():
        assert errs['y'] == errs['gx'] == errs['test_mode_y'] == 0, name
        assert errs['ggamma'] <= 1e-12 and errs['gbeta'] <= 1e-12, name
    assert report['model']['links_unchanged']
    assert report['model']['train'] <= 1e-12 and report['model']['test'] <= 1e-12
    training = report['training']
    for kind in ('sgd', 'rmsprop'):
        case = training['mgn ' + kind]
        assert case['links'] == ['MixtureGroupNormalization']
        assert case['max_error'] <= 1e-9 and case['moved'] > 1e-3, kind
    # the check can fail: per-rank BN trains another model; synchronized BN does not
    assert training['bn per rank sgd']['max_error'] > 1e-3
    assert training['bn per rank sgd']['links'] == ['BatchNormalization']
    assert training['bn synchronized sgd']['max_error'] <= 1e-9
    assert training['bn synchronized sgd']['links'] == ['MultiNodeBatchNormalization']


@pytest.mark.slow
@needs_mpi
def test_two_rank_run_of_a_mixture_group_normalization_row(tmp_path):
    """`mixnorm-exp run cnn-c10-MGN-2 --communicator naive` on 2 ranks trains and logs."""
    out = tmp_path / 'run'
    proc = mpiexec(2, '-m', 'mixnorm_chainer.reproduce.runner', 'run', 'cnn-c10-MGN-2',
                   '--dataset', 'digits', '--input-size', '8', '--train-limit', '32',
                   '--test-limit', '32', '--batch-size', '8', '--epochs', '1',
                   '--communicator', 'naive', '--no-progress', '--out', str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = json.loads((out / 'log.json').read_text())
    assert [e['iteration'] for e in log] == [4]          # 32 images / 2 ranks / 4 per rank
    setting = json.loads((out / 'setting.json').read_text())
    assert setting['setting']['norms']['conv1'] == 'mgn'
    assert setting['communicator'] == {'name': 'naive', 'size': 2, 'sync_norm': True}


@pytest.mark.slow
@needs_mpi
def test_two_rank_training_run_and_resume(tmp_path):
    """`mixnorm-exp run --communicator naive` on 2 ranks: trains, logs on rank 0, resumes."""
    out = tmp_path / 'run'
    args = ['-m', 'mixnorm_chainer.reproduce.runner', 'run', 'cnn-c10-MN-2', '--dataset', 'digits',
            '--input-size', '8', '--train-limit', '256', '--test-limit', '64',
            '--batch-size', '64', '--epochs', '1', '--communicator', 'naive', '--no-progress',
            '--out', str(out)]
    proc = mpiexec(2, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = json.loads((out / 'log.json').read_text())
    assert [e['epoch'] for e in log] == [1]
    # 256 images scattered over 2 ranks, batch 32 per rank: 4 iterations per epoch
    assert log[0]['iteration'] == 4
    setting = json.loads((out / 'setting.json').read_text())
    assert setting['communicator'] == {'name': 'naive', 'size': 2, 'sync_norm': True}
    assert sorted(p.name for p in out.glob('snapshot_*')) == [
        'snapshot_epoch_1_rank0', 'snapshot_epoch_1_rank1']

    proc = mpiexec(2, *(args[:args.index('--epochs') + 1] + ['2'] +
                        args[args.index('--epochs') + 2:] + ['--resume']))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = json.loads((out / 'log.json').read_text())
    assert [e['epoch'] for e in log] == [1, 2]
    assert [e['iteration'] for e in log] == [4, 8]


class _FakeComm:
    def __init__(self, rank, size, intra_rank=0):
        self.rank, self.size, self.intra_rank = rank, size, intra_rank


def test_helpers_without_mpi():
    assert data_parallel.per_rank_batch(256, None) == 256
    assert data_parallel.per_rank_batch(256, _FakeComm(0, 4)) == 64
    with pytest.raises(ValueError, match='not divisible by the 3 ranks'):
        data_parallel.per_rank_batch(256, _FakeComm(0, 3))
    assert data_parallel.rank_device('@cupy:0', _FakeComm(5, 8, intra_rank=1)) == '@cupy:1'
    assert data_parallel.rank_device('@numpy', _FakeComm(5, 8, intra_rank=1)) == '@numpy'
    assert data_parallel.rank_device('@cupy:0', None) == '@cupy:0'
    with pytest.raises(ValueError, match='unknown communicator'):
        data_parallel.create_communicator('carrier-pigeon')


def test_allreduce_row_bookkeeping():
    """Global row ownership and the Section 5.1 subset split, on a 3-rank layout."""
    reduction = multi_node.AllReduce(_FakeComm(1, 3), [4, 0, 6])
    assert reduction.total(0) == 10 and reduction.offset == 4
    assert [reduction._owner(i) for i in (0, 3, 4, 9)] == [(0, 0), (0, 3), (2, 0), (2, 5)]
    part, sub = reduction.subset(numpy.zeros((0, 1)), numpy.array([1, 3, 5, 8]))
    assert part.shape == (0, 1)
    assert sub.counts.tolist() == [2, 0, 2] and sub.total(0) == 4


# -- the same checks without MPI: ranks as threads exchanging through a barrier -------------

class ThreadComm:
    """A stand-in ChainerMN communicator for ranks running as threads of one process (the
    collectives the synchronized layer uses: allreduce, allgather, bcast), for CI machines
    without MPI. Sums run in rank order, as the MPI tests check at 1e-9 anyway."""

    def __init__(self, rank, shared):
        self.rank, self.size, self.intra_rank = rank, shared['size'], rank
        self.shared = shared
        self.mpi_comm = self

    def _exchange(self, value):
        self.shared['slots'][self.rank] = value
        self.shared['barrier'].wait()
        values = list(self.shared['slots'])
        self.shared['barrier'].wait()
        return values

    def allreduce(self, x):
        return sum(numpy.asarray(v) for v in self._exchange(numpy.array(x, copy=True)))

    def allgather(self, obj):
        return self._exchange(obj)

    def bcast(self, obj, root=0):
        return self._exchange(obj)[root]


def run_threads(size, fn):
    shared = {'size': size, 'slots': [None] * size,
              'barrier': threading.Barrier(size, timeout=120)}
    results, errors = [None] * size, []

    def target(rank):
        try:
            results[rank] = fn(ThreadComm(rank, shared))
        except Exception as e:                       # reported by the test
            errors.append((rank, e))
            shared['barrier'].abort()

    threads = [threading.Thread(target=target, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def _check_module():
    sys.path.insert(0, os.path.join(HERE, 'mpi'))
    try:
        import check_multi_node
    finally:
        sys.path.pop(0)
    return check_multi_node


@pytest.mark.parametrize('ranks', [2, 3])
def test_synchronized_layer_equals_single_process_threads(ranks):
    check = _check_module()
    for i, case in enumerate(check.CASES):
        results, errors = run_threads(
            ranks, lambda comm, case=case, seed=10 + i: check.run_case(comm, case, seed))
        assert not errors, errors
        for errs, unsynced, comms, sizes in results:
            assert max(errs.values()) <= 1e-9, (case['name'], errs)
            assert max(unsynced.values()) > 0.1
            assert comms['collectives'] > 0 and len(sizes) == ranks


def test_bad_input_on_one_rank_fails_every_rank_threads():
    check = _check_module()
    results, errors = run_threads(2, check.check_bad_input)
    assert not errors, errors
    for per_rank in results:
        assert set(per_rank) == {'nan', 'channels'}
        assert all('rank 1:' in message for message in per_rank.values())
