"""The GPU marker of tests/conftest.py: no cupy or no GPU skips the GPU tests, a broken cupy
fails them (naming the error), MIXNORM_REQUIRE_GPU=1 fails them without a GPU. Checked with
fake cupy modules, as tests/test_doctor.py does."""
import importlib.abc
import importlib.machinery
import sys
import types

import chainer.backends.cuda as cuda
import conftest
import pytest


def install_cupy(monkeypatch, device_count):
    """A cupy that imports and that chainer can use; ``device_count``: what
    cupy.cuda.runtime.getDeviceCount returns, or an exception it raises."""
    def get_device_count():
        if isinstance(device_count, Exception):
            raise device_count
        return device_count
    cupy = types.ModuleType('cupy')
    cupy.__spec__ = importlib.machinery.ModuleSpec('cupy', None)
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=get_device_count))
    monkeypatch.setitem(sys.modules, 'cupy', cupy)
    monkeypatch.setattr(cuda, 'available', True)
    return cupy


class _FailingCupyFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an installed 'cupy' whose import fails (a missing CUDA library)."""

    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name == 'cupy' else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError('libcudart.so.12: cannot open shared object file: No such file or '
                          'directory')


def test_no_cupy_installed_is_a_plain_skip(monkeypatch):
    monkeypatch.setitem(sys.modules, 'cupy', None)          # find_spec('cupy') -> None
    assert conftest.gpu_status() == ('absent', 'cupy is not installed')


def test_cupy_that_does_not_import_is_broken(monkeypatch):
    monkeypatch.delitem(sys.modules, 'cupy', raising=False)
    monkeypatch.setattr(sys, 'meta_path', [_FailingCupyFinder()] + sys.meta_path)
    state, reason = conftest.gpu_status()
    assert state == 'broken'
    assert reason == ('cupy is installed but does not import: ImportError: libcudart.so.12: '
                      'cannot open shared object file: No such file or directory')


@pytest.mark.parametrize('error, state', [
    (ImportError('Failure finding "libcublasLt.so.13": No such file'), 'broken'),
    (ImportError('libcuda.so.1: cannot open shared object file'), 'absent'),   # no driver
])
def test_chainer_without_cuda(monkeypatch, error, state):
    install_cupy(monkeypatch, 1)
    monkeypatch.setattr(cuda, 'available', False)
    monkeypatch.setattr(cuda, '_resolution_error', error, raising=False)
    got, reason = conftest.gpu_status()
    assert got == state and str(error) in reason


@pytest.mark.parametrize('count, state, words', [
    (1, 'usable', None),
    (0, 'absent', 'no CUDA device'),
    (RuntimeError('cudaErrorNoDevice: no CUDA-capable device is detected'), 'absent',
     'no GPU device or driver: RuntimeError: cudaErrorNoDevice'),
    (RuntimeError('cudaErrorInsufficientDriver: CUDA driver version is insufficient'),
     'absent', 'cudaErrorInsufficientDriver'),
    (RuntimeError('cudaErrorIllegalAddress: an illegal memory access\nmore'), 'broken',
     'the CUDA device query failed: RuntimeError: cudaErrorIllegalAddress: an illegal memory '
     'access'),
])
def test_device_query(monkeypatch, count, state, words):
    install_cupy(monkeypatch, count)
    got, reason = conftest.gpu_status()
    assert got == state
    assert reason is None if words is None else words in reason


class FakeItem:
    def __init__(self, gpu):
        self.keywords = {'gpu': True} if gpu else {}
        self.markers = []

    def add_marker(self, marker):
        self.markers.append(marker)


def collect_and_set_up(monkeypatch, status, require=None):
    """The conftest hooks on a GPU item and a CPU item: ``(skip reasons added to each,
    setup outcome of the GPU item: None (runs) or the exception)``."""
    monkeypatch.setattr(conftest, '_status', status)
    if require is None:
        monkeypatch.delenv('MIXNORM_REQUIRE_GPU', raising=False)
    else:
        monkeypatch.setenv('MIXNORM_REQUIRE_GPU', require)
    gpu, cpu = FakeItem(True), FakeItem(False)
    conftest.pytest_collection_modifyitems(None, [gpu, cpu])
    conftest.pytest_runtest_setup(cpu)                       # never affected
    skips = [[m.kwargs['reason'] for m in item.markers if m.name == 'skip']
             for item in (gpu, cpu)]
    if skips[0]:
        return skips, None                                   # pytest skips before setup
    try:
        conftest.pytest_runtest_setup(gpu)
    except pytest.fail.Exception as e:
        return skips, e
    return skips, None


def test_hooks_skip_without_a_gpu(monkeypatch):
    skips, outcome = collect_and_set_up(monkeypatch, ('absent', 'cupy is not installed'))
    assert skips == [['needs a CUDA GPU with cupy: cupy is not installed'], []]


def test_hooks_fail_a_gpu_test_with_a_broken_cupy(monkeypatch):
    status = ('broken', 'cupy is installed but does not import: ImportError: libcudart.so.12')
    skips, outcome = collect_and_set_up(monkeypatch, status)
    assert skips == [[], []] and outcome is not None
    assert str(outcome) == ('GPU test, but cupy is installed but does not import: ImportError: '
                            'libcudart.so.12')


def test_hooks_fail_without_a_gpu_when_one_is_required(monkeypatch):
    skips, outcome = collect_and_set_up(monkeypatch, ('absent', 'no CUDA device'), require='1')
    assert skips == [[], []] and outcome is not None
    assert 'no CUDA device' in str(outcome) and 'MIXNORM_REQUIRE_GPU=1' in str(outcome)


def test_hooks_run_a_gpu_test_with_a_gpu(monkeypatch):
    assert collect_and_set_up(monkeypatch, ('usable', None)) == ([[], []], None)
    assert collect_and_set_up(monkeypatch, ('usable', None), require='1') == ([[], []], None)


def test_a_gpu_test_that_lost_its_skip_does_not_run(monkeypatch):
    monkeypatch.setattr(conftest, '_status', ('absent', 'no CUDA device'))
    monkeypatch.delenv('MIXNORM_REQUIRE_GPU', raising=False)
    with pytest.raises(pytest.fail.Exception, match='reached setup without a GPU'):
        conftest.pytest_runtest_setup(FakeItem(True))


def test_the_header_names_the_state(monkeypatch):
    monkeypatch.setattr(conftest, '_status', ('broken', 'cupy imports but chainer cannot use '
                                                        'CUDA: ImportError: x'))
    assert conftest.pytest_report_header(None) == (
        'GPU tests: broken (cupy imports but chainer cannot use CUDA: ImportError: x)')
