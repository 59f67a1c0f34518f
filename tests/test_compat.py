"""mixnorm_chainer._compat: chainer 7.8.1 on numpy >= 2 / Python 3.12, narrowly."""
import os
import subprocess
import sys

import chainer
import chainer.functions as F
import numpy
import pytest

from mixnorm_chainer import _compat

NUMPY2 = int(numpy.__version__.split('.')[0]) >= 2


def run_python(code):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)


def test_chainer_imports_and_as_strided_works_in_both_directions():
    x = chainer.Variable(numpy.arange(4.0))
    y = F.as_strided(x, (3, 2), (1, 1), 0)          # the one module that reads np.sctypes
    numpy.testing.assert_array_equal(y.array, [[0, 1], [1, 2], [2, 3]])
    F.sum(y).backward()
    numpy.testing.assert_array_equal(x.grad, [1, 2, 2, 1])


def test_numpy_namespace_is_left_as_it_was():
    assert hasattr(numpy, 'sctypes') == (not NUMPY2)


def test_adaptations_applied_only_where_needed():
    if NUMPY2:
        assert 'chainer.functions.array.as_strided sees numpy.sctypes' in _compat.applied
    else:
        assert _compat.applied == []          # numpy 1.26 + setuptools < 74: chainer unmodified


@pytest.mark.skipif(not NUMPY2, reason='on numpy 1.x chainer imports by itself')
def test_plain_chainer_import_fails_on_numpy2_without_the_shim():
    """Shows the shim is what makes it work (and documents the import order rule)."""
    result = run_python('import chainer')
    assert result.returncode != 0
    assert 'sctypes' in result.stderr or 'distutils' in result.stderr


def test_import_order_rule_in_a_fresh_interpreter():
    result = run_python('import mixnorm_chainer, chainer, numpy, chainer.links as L\n'
                        'y = L.BatchNormalization(3)(numpy.ones((4, 3), "f"))\n'
                        'print(y.shape)')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '(4, 3)'


# -- CuPy >= 14 has no cuDNN: CHAINER_CUDNN=0 before chainer is imported ----------------------

def write_fake_cupy(root, version, with_cudnn=False):
    """A package named cupy (version, optional cupy.cuda.cudnn) under ``root``."""
    pkg = root / 'cupy'
    (pkg / 'cuda').mkdir(parents=True)
    (pkg / '__init__.py').write_text(f'__version__ = {version!r}\nfrom cupy import cuda\n')
    (pkg / 'cuda' / '__init__.py').write_text('')
    if with_cudnn:
        (pkg / 'cuda' / 'cudnn.py').write_text('')
    return root


@pytest.fixture
def fresh_cupy_modules(monkeypatch):
    """Removes the fake cupy modules a test imported (and restores _compat.applied)."""
    before = {k: v for k, v in sys.modules.items() if k == 'cupy' or k.startswith('cupy.')}
    monkeypatch.setattr(_compat, 'applied', [])
    yield
    for k in [k for k in sys.modules if k == 'cupy' or k.startswith('cupy.')]:
        del sys.modules[k]
    sys.modules.update(before)


@pytest.mark.parametrize('version, with_cudnn, user, expected', [
    ('14.2.0', False, None, '0'),        # cupy 14: no cuDNN -> chainer's switch set
    ('14.2.0', False, '1', '1'),         # the user's choice stands
    ('14.2.0', True, None, None),        # a cupy 14 with cuDNN: nothing to do
    ('13.6.0', False, None, None),       # cupy 13 (cuDNN is a separate wheel there): untouched
])
def test_cudnn_switch_where_cupy_has_no_cudnn(tmp_path, monkeypatch, fresh_cupy_modules,
                                              version, with_cudnn, user, expected):
    for k in [k for k in sys.modules if k == 'cupy' or k.startswith('cupy.')]:
        monkeypatch.delitem(sys.modules, k)
    monkeypatch.syspath_prepend(str(write_fake_cupy(tmp_path, version, with_cudnn)))
    environ = {} if user is None else {'CHAINER_CUDNN': user}
    _compat._disable_cudnn_where_cupy_has_none(environ)
    assert environ.get('CHAINER_CUDNN') == expected
    adapted = [a for a in _compat.applied if a.startswith('CHAINER_CUDNN=0')]
    assert adapted == ([f'CHAINER_CUDNN=0 set: cupy {version} has no cuDNN (chainer uses its '
                        'own kernels and cuBLAS)'] if expected == '0' else [])


def test_no_cupy_costs_one_find_spec(monkeypatch):
    monkeypatch.setattr(_compat.importlib.util, 'find_spec', lambda name: None)
    imported = []
    monkeypatch.setattr(_compat.importlib, 'import_module', imported.append)
    environ = {}
    _compat._disable_cudnn_where_cupy_has_none(environ)
    assert environ == {} and imported == []


def test_cudnn_switch_at_import_in_a_fresh_interpreter(tmp_path):
    """End to end: a cupy 14 without cuDNN on the path; chainer sees CHAINER_CUDNN=0."""
    write_fake_cupy(tmp_path, '14.2.0')
    env = {k: v for k, v in os.environ.items() if k != 'CHAINER_CUDNN'}
    env['PYTHONPATH'] = os.pathsep.join([str(tmp_path)] + sys.path)
    result = subprocess.run(
        [sys.executable, '-c', 'import os, mixnorm_chainer\n'
         'from mixnorm_chainer import _compat\n'
         'print(os.environ["CHAINER_CUDNN"], _compat.applied[0].split(":")[0])'],
        capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['0', 'CHAINER_CUDNN=0', 'set']
