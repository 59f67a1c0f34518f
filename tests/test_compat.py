"""mixnorm_chainer._compat: chainer 7.8.1 on numpy >= 2 / Python 3.12, narrowly."""
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
