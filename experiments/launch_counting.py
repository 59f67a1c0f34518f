"""Count, on the CPU, the GPU kernel launches and host synchronizations of code written against xp.

The code runs on numpy arrays of a counting subclass (:class:`Counted`) while the modules it
lives in get :class:`CountingNumpy` as their ``xp``: every array operation is counted as the one
CuPy kernel it launches on the GPU: each ufunc call and reduction, ``where``, ``sort``,
``argmin``/``argmax``, ``mean`` (``var``: ``mean`` and ``var``, as CuPy's two kernels), a
dtype-changing ``astype``, ``copy``, ``ascontiguousarray`` of a non-contiguous array, a fancy
index or an assignment into an array, ``arange``/``ones``/``zeros``/``full``, and each
ElementwiseKernel / ReductionKernel call (``chainer.backends.cuda.elementwise`` / ``.reduce``,
run by ``tests/cuda_kernel_harness.py``, which compiles the kernel strings with g++); views
(reshape, transpose, moveaxis, broadcasting, basic slicing), ``empty`` and ``asarray`` of an
array count nothing. ``asarray`` / ``array`` of host data count as uploads (host-to-device
copies, no synchronization), separately.

Host synchronizations are counted separately, by site: ``chainer.backends.cuda.to_cpu`` of a
Counted array, ``float()``, ``int()``, ``bool()``, ``operator.index()``, ``.item()`` and
``.tolist()`` of one, and a boolean-mask index (CuPy must learn the result's size).

It is an estimate of what CuPy would launch, not a measurement: ``sort`` may launch several
kernels in CuPy, a creation from host data may take a kernel besides the copy, and nothing here
has run on a GPU. Used by ``experiments/group_launch_count.py`` and
``experiments/seeding_launch_count.py``::

    with counting(use_kernels, [gmm, functions]) as count:
        fit(counted(X))
    count.launches, count.cuda_kernels, count.n_syncs, dict(count.syncs)
"""
import collections
import contextlib
import os
import sys

import numpy

# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy >= 2 support)
# isort: on
import chainer
from chainer.backends import cuda

from mixnorm_chainer import kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: array functions that are views or metadata (no kernel)
NOT_LAUNCHES = {'ndim', 'shape', 'size', 'broadcast_to', 'broadcast_arrays', 'reshape',
                'moveaxis', 'transpose', 'swapaxes', 'squeeze', 'expand_dims', 'atleast_1d',
                'atleast_2d', 'result_type', 'can_cast', 'may_share_memory', 'shares_memory',
                'iscomplexobj', 'isrealobj', 'empty_like'}
#: xp functions that create arrays with a kernel
CREATION = ('ones', 'zeros', 'full', 'arange')
#: xp functions that create arrays without a kernel (``empty``) or copy host data (uploads)
NO_KERNEL_CREATION = ('empty',)
UPLOADS = ('asarray', 'array', 'asanyarray')
#: frames in these files are not the "site" of an operation
_SKIP = (os.path.dirname(numpy.__file__), os.path.abspath(__file__),
         os.path.join(ROOT, 'tests', 'cuda_kernel_harness.py'))
_current = None


class Counts(dict):
    """Launches per operation (the dict: ``'add.__call__'``, ``'kernel mixnorm_e_step'``, ...),
    plus ``syncs`` (host synchronizations per site), ``origins`` (launches per package that
    issued them: ``mixnorm_chainer``, ``chainer``, ...) and ``uploads`` (host-to-device
    copies)."""

    def __init__(self):
        super().__init__()
        self.syncs = collections.Counter()
        self.origins = collections.Counter()
        self.uploads = 0

    @property
    def launches(self):
        return sum(self.values())

    @property
    def cuda_kernels(self):
        """Launches of the package's CUDA kernels (ElementwiseKernel / ReductionKernel)."""
        return sum(v for k, v in self.items() if k.startswith('kernel '))

    @property
    def kernel_calls(self):
        return {k[7:]: v for k, v in sorted(self.items()) if k.startswith('kernel ')}

    @property
    def n_syncs(self):
        return sum(self.syncs.values())


def _site():
    """The innermost frame outside numpy, this module and the kernel harness: ``(path relative
    to the repository, line, qualified function name)``."""
    f = sys._getframe(2)
    while f is not None and f.f_code.co_filename.startswith(_SKIP):
        f = f.f_back
    if f is None:
        return '?', 0, '?'
    code = f.f_code
    path = code.co_filename
    for prefix in (os.path.dirname(os.path.dirname(chainer.__file__)) + os.sep, ROOT + os.sep):
        if path.startswith(prefix):
            path = path[len(prefix):]
            break
    return path, f.f_lineno, getattr(code, 'co_qualname', code.co_name)


def _origin(path):
    if path.startswith('mixnorm_chainer'):
        return 'mixnorm_chainer'
    if path.startswith('chainer'):
        return 'chainer'
    return 'other'


def _add(what):
    if _current is not None and what not in NOT_LAUNCHES:
        _current[what] = _current.get(what, 0) + 1
        _current.origins[_origin(_site()[0])] += 1


def _sync(kind):
    if _current is not None:
        path, line, name = _site()
        module = os.path.splitext(path)[0].replace(os.sep, '.').replace('mixnorm_chainer.', '')
        _current.syncs[f'{kind} {module}.{name}:{line}'] += 1


def _upload():
    if _current is not None:
        _current.uploads += 1


def _plain(a):
    if isinstance(a, Counted):
        return a.view(numpy.ndarray)
    if isinstance(a, (list, tuple)):
        return type(a)(_plain(v) for v in a)
    return a


def _wrap(a):
    """Arrays (and numpy scalars: CuPy returns 0-d arrays) as Counted ones."""
    if isinstance(a, numpy.ndarray) and not isinstance(a, Counted):
        return a.view(Counted)
    if isinstance(a, numpy.generic):
        return numpy.asarray(a).view(Counted)
    return tuple(_wrap(v) for v in a) if isinstance(a, tuple) else a


def _has_counted(args):
    return any(isinstance(a, Counted) or (isinstance(a, (list, tuple)) and _has_counted(a))
               for a in args)


def _counted_method(name, *extra):
    def method(self, *args, **kwargs):
        _add(name)
        for what in extra:
            _add(what)
        return _wrap(getattr(self.view(numpy.ndarray), name)(*_plain(args), **kwargs))
    return method


def _sync_method(name, kind):
    def method(self, *args, **kwargs):
        _sync(kind)
        return getattr(self.view(numpy.ndarray), name)(*args, **kwargs)
    return method


def _is_mask(i):
    return isinstance(i, numpy.ndarray) and i.dtype == bool


class Counted(numpy.ndarray):
    """An ndarray that counts the operations done on it (their results are Counted too)."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _add(f'{ufunc.__name__}.{method}')
        kwargs = {k: _plain(v) for k, v in kwargs.items()}
        return _wrap(getattr(ufunc, method)(*_plain(inputs), **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        if func.__name__ != 'ascontiguousarray' or not (
                isinstance(args[0], numpy.ndarray) and args[0].flags.c_contiguous):
            _add(func.__name__)
        return _wrap(func(*_plain(args), **{k: _plain(v) for k, v in kwargs.items()}))

    argmin, argmax, mean = (_counted_method('argmin'), _counted_method('argmax'),
                            _counted_method('mean'))
    var = _counted_method('mean', 'var')
    copy, take, dot, argsort, flatten, repeat = (
        _counted_method(n) for n in ('copy', 'take', 'dot', 'argsort', 'flatten', 'repeat'))
    sort, fill = _counted_method('sort'), _counted_method('fill')
    __float__ = _sync_method('__float__', 'float()')
    __int__ = _sync_method('__int__', 'int()')
    __bool__ = _sync_method('__bool__', 'bool()')
    __index__ = _sync_method('__index__', 'index()')
    item = _sync_method('item', 'item()')
    tolist = _sync_method('tolist', 'tolist()')

    def astype(self, dtype, copy=True, **kwargs):
        if copy or numpy.dtype(dtype) != self.dtype:
            _add('astype')
        return _wrap(self.view(numpy.ndarray).astype(dtype, copy=copy, **kwargs))

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        if any(isinstance(i, numpy.ndarray) for i in index):
            _add('take')
        if any(_is_mask(i) for i in index):
            _sync('boolean index')
        return _wrap(self.view(numpy.ndarray)[_plain(index)])

    def __setitem__(self, index, value):
        _add('scatter')
        if any(_is_mask(i) for i in (index if isinstance(index, tuple) else (index,))):
            _sync('boolean-mask assignment')
        self.view(numpy.ndarray)[_plain(index)] = _plain(value)


class CountingNumpy:
    """numpy as the counted code's ``xp``: array functions return Counted arrays; creation
    functions count (``ones``, ``zeros``, ...) or count an upload (``asarray`` of host data)."""

    def __getattr__(self, name):
        f = getattr(numpy, name)
        if name in CREATION or name in NO_KERNEL_CREATION or name in UPLOADS:
            def create(*args, **kwargs):
                if name in UPLOADS and isinstance(args[0], Counted):
                    a = args[0]
                    dtype = kwargs.get('dtype', args[1] if len(args) > 1 else None)
                    dtype = a.dtype if dtype is None else dtype
                    return a.astype(dtype, copy=name == 'array')
                if name in CREATION:
                    _add(name)
                elif name in UPLOADS:
                    _upload()
                return _wrap(f(*_plain(args), **kwargs))
            return create
        if callable(f) and not isinstance(f, (type, numpy.ufunc)):
            def call(*args, **kwargs):
                result = f(*args, **kwargs)
                if isinstance(result, (numpy.ndarray, numpy.generic)) and \
                        not _has_counted(args) and not _has_counted(kwargs.values()):
                    _upload()           # an array built from host data only
                return _wrap(result)
            return call
        return f


def _counting(build):
    def counted_build(*args, **kwargs):
        kernel = build(*args, **kwargs)

        def call(*a, **kw):
            _add('kernel ' + kernel.name)
            return _wrap(kernel(*_plain(a), **{k: _plain(v) for k, v in kw.items()}))
        return call
    return counted_build


def _to_cpu(to_cpu):
    def counted_to_cpu(array, *args, **kwargs):
        if isinstance(array, Counted):
            _sync('to_cpu')
            return numpy.array(array.view(numpy.ndarray))
        if isinstance(array, (list, tuple)) and _has_counted(array):
            return type(array)(counted_to_cpu(a) for a in array)
        return to_cpu(array, *args, **kwargs)
    return counted_to_cpu


def harness():
    """tests/cuda_kernel_harness.py (imported from there; fails without a C++ compiler)."""
    sys.path.insert(0, os.path.join(ROOT, 'tests'))
    try:
        import cuda_kernel_harness
    finally:
        sys.path.remove(os.path.join(ROOT, 'tests'))
    cuda_kernel_harness.require_cxx()
    return cuda_kernel_harness


@contextlib.contextmanager
def counting(use_kernels, modules=()):
    """Count the operations of code on Counted arrays: the CUDA kernels (run by the CPU
    harness) with ``use_kernels``, else the xp path. ``modules``: the modules whose
    ``get_array_module`` (imported from ``chainer.backend``) is patched to return
    :class:`CountingNumpy` for Counted arrays (``chainer.backends.cuda.get_array_module``
    always is); ``cuda.to_cpu`` and ``kernels.enabled`` are patched too. Yields the
    :class:`Counts` of what runs inside."""
    global _current
    cxx = harness()
    counting_numpy = CountingNumpy()

    def get_array_module(*arrays):
        arrays = [a.array if isinstance(a, chainer.Variable) else a for a in arrays]
        return counting_numpy if _has_counted(arrays) else numpy

    patches = [(m, 'get_array_module', get_array_module) for m in modules]
    patches += [(cuda, 'get_array_module', get_array_module),
                (cuda, 'elementwise', _counting(cxx.elementwise)),
                (cuda, 'reduce', _counting(cxx.reduce)),
                (cuda, 'to_cpu', _to_cpu(cuda.to_cpu)),
                (kernels, 'enabled',
                 lambda *arrays: bool(use_kernels) and _has_counted(arrays))]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    outer, _current = _current, Counts()
    try:
        yield _current
    finally:
        _current = outer
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def counted(a):
    """``a`` (a numpy array) as a Counted one (a view)."""
    return numpy.asarray(a).view(Counted)
