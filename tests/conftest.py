# isort: off
import mixnorm_chainer  # noqa: F401  (first: chainer on numpy >= 2 needs _compat)
# isort: on
import importlib
import importlib.util
import os

import pytest

#: errors that mean "this machine has no GPU or no NVIDIA driver" (a plain skip), as opposed
#: to a cupy that is installed but broken (a failure of every GPU test)
NO_GPU_SIGNS = ('cudaErrorNoDevice', 'no CUDA-capable device', 'cudaErrorInsufficientDriver',
                'CUDA driver version is insufficient', 'libcuda.so')


def _one_line(e):
    text = str(e).strip().splitlines()
    return '{}: {}'.format(type(e).__name__, text[0] if text else '')


def gpu_status():
    """``(state, reason)`` of the GPU tests' environment.

    ``state``: ``'usable'`` (cupy imports, chainer can use it, a device is there; reason None),
    ``'absent'`` (no cupy installed, no GPU device, or no NVIDIA driver: the GPU tests skip) or
    ``'broken'`` (cupy is installed but does not import, chainer cannot use it, or the device
    query fails otherwise: the GPU tests fail, naming the error).
    """
    try:
        installed = importlib.util.find_spec('cupy') is not None
    except (ImportError, ValueError) as e:
        return 'broken', 'cupy cannot be found: ' + _one_line(e)
    if not installed:
        return 'absent', 'cupy is not installed'
    try:
        cupy = importlib.import_module('cupy')
    except Exception as e:  # noqa: BLE001
        return 'broken', 'cupy is installed but does not import: ' + _one_line(e)
    from chainer.backends import cuda
    if not cuda.available:
        error = getattr(cuda, '_resolution_error', None)
        reason = _one_line(error) if error is not None else 'no error recorded'
        if any(sign in reason for sign in NO_GPU_SIGNS):
            return 'absent', 'no NVIDIA driver: ' + reason
        return 'broken', 'cupy imports but chainer cannot use CUDA: ' + reason
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001
        reason = _one_line(e)
        if any(sign in reason for sign in NO_GPU_SIGNS):
            return 'absent', 'no GPU device or driver: ' + reason
        return 'broken', 'the CUDA device query failed: ' + reason
    if n < 1:
        return 'absent', 'no CUDA device'
    return 'usable', None


_status = None


def _gpu_status_once():
    global _status
    if _status is None:
        _status = gpu_status()
    return _status


def pytest_report_header(config):
    state, reason = _gpu_status_once()
    return 'GPU tests: {}{}'.format(state, '' if reason is None else ' (' + reason + ')')


def pytest_collection_modifyitems(config, items):
    state, reason = _gpu_status_once()
    if state != 'absent' or os.environ.get('MIXNORM_REQUIRE_GPU') == '1':
        return                                   # pytest_runtest_setup decides
    skip = pytest.mark.skip(reason='needs a CUDA GPU with cupy: ' + reason)
    for item in items:
        if 'gpu' in item.keywords:
            item.add_marker(skip)


def pytest_runtest_setup(item):
    """A GPU test runs only with a usable GPU: a broken cupy (or no GPU while
    MIXNORM_REQUIRE_GPU=1) fails it, so it never counts as passed or as a plain skip."""
    if 'gpu' not in item.keywords:
        return
    state, reason = _gpu_status_once()
    if state == 'broken':
        pytest.fail('GPU test, but ' + reason, pytrace=False)
    if state != 'usable':
        pytest.fail('GPU test without a GPU ({}) but MIXNORM_REQUIRE_GPU=1'.format(reason)
                    if os.environ.get('MIXNORM_REQUIRE_GPU') == '1'
                    else 'GPU test reached setup without a GPU: ' + reason, pytrace=False)
