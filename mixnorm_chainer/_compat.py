"""The one place that adapts Chainer 7.8.1 to numpy >= 2 and Python >= 3.12.

Chainer 7.8.1 (its last release, 2022) imports and trains unmodified on numpy 1.26.
On newer stacks exactly two things break at ``import chainer`` (checked by reading
chainer 7.8.1's source for every API numpy 2 removed, and by running this suite on
numpy 2.x / Python 3.12 in ``make test-numpy2``):

1. ``numpy.sctypes`` (removed in numpy 2.0) is read by one module,
   ``chainer/functions/array/as_strided.py``: at import time (to build its
   itemsize -> integer type table) and in ``AsStridedGrad.forward``.
   Fix: while chainer is imported, ``numpy.sctypes`` is set to the table numpy 1.x
   had; afterwards it is removed again and that one module alone sees numpy through
   a proxy that also carries ``sctypes``. Nothing else sees a changed numpy.
2. ``chainer/_environment_check.py`` (run at import) imports
   ``numpy.distutils.system_info`` (absent on Python >= 3.12; on numpy 1.26 it fails with
   setuptools >= 74, whose distutils lacks ``msvccompiler``) and ``pkg_resources`` (absent
   with setuptools >= 81); the module only emits version-mismatch warnings.
   Fix: only when one of those imports fails, a no-op module of that name is registered
   before chainer is imported, so chainer skips those warnings.

One more adaptation concerns CuPy rather than numpy: CuPy >= 14 has no cuDNN at all
(``cupy.cuda.cudnn`` is gone), so chainer warns "cuDNN is not enabled" on every run, although
every cuDNN use in chainer is guarded and it runs on its own kernels and cuBLAS.
Fix: when an importable cupy >= 14 lacks ``cupy.cuda.cudnn`` and the user has not set
``CHAINER_CUDNN``, chainer's own switch ``CHAINER_CUDNN=0`` is set before chainer is imported
(``os.environ``, so child processes see it too). Without cupy this costs one
``importlib.util.find_spec('cupy')``; cupy itself is only imported where it is installed (chainer
imports it right afterwards anyway).

On numpy 1.x with both modules present and no cupy, this module does nothing at all.
It must run before the first ``import chainer``; ``mixnorm_chainer/__init__.py``
imports it first. Importing chainer earlier on numpy 2 fails inside chainer with
``AttributeError: np.sctypes was removed``; the fix is to import mixnorm_chainer first.
"""
import importlib
import importlib.util
import os
import sys
import types
import warnings

import numpy

#: ``numpy.sctypes`` as numpy 1.26 defined it (the integer/float tables are what chainer reads).
_SCTYPES = {
    'int': [numpy.int8, numpy.int16, numpy.int32, numpy.int64],
    'uint': [numpy.uint8, numpy.uint16, numpy.uint32, numpy.uint64],
    'float': [numpy.float16, numpy.float32, numpy.float64, numpy.longdouble],
    'complex': [numpy.complex64, numpy.complex128, numpy.clongdouble],
    'others': [bool, object, bytes, str, numpy.void],
}

#: What this module changed, for tests and bug reports.
applied = []


class _NumpyWithSctypes(types.ModuleType):
    """numpy as seen by ``chainer.functions.array.as_strided``: numpy plus ``sctypes``."""

    sctypes = _SCTYPES

    def __getattr__(self, name):
        return getattr(numpy, name)


def _importable(module_name):
    try:
        with warnings.catch_warnings():  # both modules warn that they are deprecated
            warnings.simplefilter('ignore')
            importlib.import_module(module_name)
    except Exception:  # ImportError, or e.g. distutils shims failing inside numpy.distutils
        return False
    return True


def _stub_environment_check():
    if 'chainer._environment_check' in sys.modules:
        return
    if _importable('numpy.distutils.system_info') and _importable('pkg_resources'):
        return
    stub = types.ModuleType('chainer._environment_check')
    stub.check = lambda: None
    stub.__doc__ = ('mixnorm_chainer._compat: no-op stand-in; the original needs '
                    'numpy.distutils and pkg_resources, which this Python lacks.')
    sys.modules['chainer._environment_check'] = stub
    applied.append('chainer._environment_check replaced by a no-op')


def _import_chainer_with_sctypes():
    if hasattr(numpy, 'sctypes') or 'chainer' in sys.modules:
        return
    numpy.sctypes = _SCTYPES
    try:
        importlib.import_module('chainer')
        as_strided = importlib.import_module('chainer.functions.array.as_strided')
    finally:
        del numpy.sctypes
    as_strided.np = _NumpyWithSctypes('numpy')
    applied.append('chainer.functions.array.as_strided sees numpy.sctypes')


def _cupy_without_cudnn():
    """``cupy.__version__`` if an importable cupy >= 14 lacks cuDNN, else None."""
    try:
        if importlib.util.find_spec('cupy') is None:
            return None
        cupy = importlib.import_module('cupy')
        version = str(cupy.__version__)
        if int(version.split('.')[0]) < 14:
            return None
        if importlib.util.find_spec('cupy.cuda.cudnn') is not None:
            return None
    except Exception:  # a broken cupy: chainer reports it (cuda.available is False)
        return None
    return version


def _disable_cudnn_where_cupy_has_none(environ=os.environ):
    if 'CHAINER_CUDNN' in environ:  # the user's choice stands
        return
    version = _cupy_without_cudnn()
    if version is None:
        return
    environ['CHAINER_CUDNN'] = '0'
    applied.append(f'CHAINER_CUDNN=0 set: cupy {version} has no cuDNN '
                   '(chainer uses its own kernels and cuBLAS)')


def apply():
    """Make ``import chainer`` work on this numpy/Python/CuPy; idempotent."""
    if 'chainer' not in sys.modules:  # chainer reads CHAINER_CUDNN once, at import
        _disable_cudnn_where_cupy_has_none()
    _stub_environment_check()
    _import_chainer_with_sctypes()


apply()
