"""Count the GPU kernel launches of the per-set fit (Mixture Group Normalization), on the CPU.

The fit (:func:`mixnorm_chainer.group_gmm.fit_set_mixtures`) runs on numpy twice: on the xp
path, and on the CUDA kernel path (:mod:`mixnorm_chainer.kernels.group`, the kernel strings
compiled with g++ by ``tests/cuda_kernel_harness.py``). Every array operation is counted as
the one CuPy kernel it launches on the GPU: each ufunc call and reduction, ``where``, ``sort``,
``argmin``/``argmax``, ``mean``, a dtype-changing ``astype``, a fancy index or an assignment
into an array, ``arange``/``ones``/``zeros``/``full``, and each ElementwiseKernel /
ReductionKernel call; views (reshape, broadcasting, basic slicing), ``empty`` and ``asarray``
of an array count nothing. It is an estimate of what CuPy would launch, not a measurement:
``sort`` may launch several kernels in CuPy, and nothing here has run on a GPU. The transform
(chainer.functions) is the same on both paths and is not counted.

Usage: ``python experiments/group_launch_count.py [--json out.json]`` (a few seconds; needs g++).
"""
import argparse
import contextlib
import json
import os
import sys

import numpy

# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy >= 2 support)
# isort: on
from chainer.backends import cuda

from mixnorm_chainer import group_gmm, kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_LAUNCHES = {'ndim', 'shape', 'broadcast_to', 'reshape'}
CREATION = ('ones', 'zeros', 'full', 'arange')
_count = {}


def _add(what):
    if what not in NOT_LAUNCHES:
        _count[what] = _count.get(what, 0) + 1


def _plain(a):
    if isinstance(a, Counted):
        return a.view(numpy.ndarray)
    if isinstance(a, (list, tuple)):
        return type(a)(_plain(v) for v in a)
    return a


def _wrap(a):
    if isinstance(a, numpy.ndarray) and not isinstance(a, Counted):
        return a.view(Counted)
    return tuple(_wrap(v) for v in a) if isinstance(a, tuple) else a


def _counted_method(name):
    def method(self, *args, **kwargs):
        _add(name)
        return _wrap(getattr(self.view(numpy.ndarray), name)(*_plain(args), **kwargs))
    return method


class Counted(numpy.ndarray):
    """An ndarray that counts the operations done on it (their results are Counted too)."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _add(f'{ufunc.__name__}.{method}')
        kwargs = {k: _plain(v) for k, v in kwargs.items()}
        return _wrap(getattr(ufunc, method)(*_plain(inputs), **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        _add(func.__name__)
        return _wrap(func(*_plain(args), **{k: _plain(v) for k, v in kwargs.items()}))

    argmin, argmax, mean = (_counted_method('argmin'), _counted_method('argmax'),
                            _counted_method('mean'))

    def astype(self, dtype, copy=True, **kwargs):
        if copy or numpy.dtype(dtype) != self.dtype:
            _add('astype')
        return _wrap(self.view(numpy.ndarray).astype(dtype, copy=copy, **kwargs))

    def __getitem__(self, index):
        if any(isinstance(i, numpy.ndarray) for i in (index if isinstance(index, tuple)
                                                       else (index,))):
            _add('take')
        return _wrap(self.view(numpy.ndarray)[_plain(index)])

    def __setitem__(self, index, value):
        _add('scatter')
        self.view(numpy.ndarray)[_plain(index)] = _plain(value)


class CountingNumpy:
    """numpy as the fit's ``xp``: creation functions count and return Counted arrays."""

    def __getattr__(self, name):
        f = getattr(numpy, name)
        if name in CREATION or name in ('empty', 'asarray'):
            def create(*args, **kwargs):
                if name == 'asarray' and isinstance(args[0], Counted):
                    return args[0]
                if name in CREATION:
                    _add(name)
                return _wrap(f(*_plain(args), **kwargs))
            return create
        return f


def _counting(build):
    def counted_build(*args, **kwargs):
        kernel = build(*args, **kwargs)

        def call(*a, **kw):
            _add('kernel ' + kernel.name)
            return _wrap(kernel(*_plain(a), **{k: _plain(v) for k, v in kw.items()}))
        return call
    return counted_build


@contextlib.contextmanager
def counting(use_kernels):
    """Count the operations of the fit; the kernels (run by the CPU harness) or the xp path."""
    sys.path.insert(0, os.path.join(ROOT, 'tests'))
    import cuda_kernel_harness as harness
    sys.path.remove(os.path.join(ROOT, 'tests'))
    harness.require_cxx()
    saved = (group_gmm.get_array_module, cuda.get_array_module, cuda.elementwise, cuda.reduce,
             kernels.enabled)
    group_gmm.get_array_module = cuda.get_array_module = lambda *a: CountingNumpy()
    cuda.elementwise, cuda.reduce = _counting(harness.elementwise), _counting(harness.reduce)
    kernels.enabled = lambda *arrays: use_kernels
    _count.clear()
    try:
        yield _count
    finally:
        (group_gmm.get_array_module, cuda.get_array_module, cuda.elementwise, cuda.reduce,
         kernels.enabled) = saved


def counted(a):
    return a.view(Counted)


def sets(S, m, constant=0, seed=0):
    """S sets of m float32 values (two modes each); the first ``constant`` sets constant (their
    duplicate components get pruned)."""
    rng = numpy.random.default_rng(seed)
    X = rng.normal(size=(S, m)) + 4 * (rng.random((S, m)) < 0.3)
    X[:constant] = 1.5
    return X.astype(numpy.float32)


def parts(S=64, m=512, K=3):
    """``{part: callable}``: one k-means iteration, one EM iteration, and the layer's fit at its
    defaults (EM iter. 2 = 1 k-means + 1 EM, min_weight 0.01) without and with pruning."""
    X = sets(S, m)
    centers = X[:, :K].copy()
    live = numpy.ones((S, K), bool)
    w = numpy.full((S, K), 1 / K, numpy.float32)
    mu, var = numpy.sort(centers, axis=1), numpy.ones((S, K), numpy.float32)

    def em_iteration(Xc):
        group_gmm.m_step(Xc, group_gmm.e_step(Xc, counted(w), counted(mu), counted(var),
                                              counted(live)), counted(live), 1e-6)
    return {
        'one k-means iteration': lambda: group_gmm.kmeans_step(
            counted(X), counted(centers), counted(live)),
        'one EM iteration (E-step + M-step)': lambda: em_iteration(counted(X)),
        'the fit, no set pruned': lambda: group_gmm.fit_set_mixtures(
            counted(X), K, check_finite=False),
        'the fit, 1/8 of the sets constant (pruned)': lambda: group_gmm.fit_set_mixtures(
            counted(sets(S, m, constant=max(1, S // 8))), K, check_finite=False),
    }


def count_all(**sizes):
    """``{part: {'xp': n, 'kernels': n, 'of which CUDA kernels': n, ...}}``."""
    table = {}
    for part, run in parts(**sizes).items():
        row = {}
        for use, label in ((False, 'xp'), (True, 'kernels')):
            with counting(use) as count:
                run()
                row[label] = sum(count.values())
                if use:
                    row['of which CUDA kernels'] = sum(
                        v for k, v in count.items() if k.startswith('kernel '))
                    row['kernel calls'] = {k[7:]: v for k, v in sorted(count.items())
                                           if k.startswith('kernel ')}
        table[part] = row
    return table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--json', help='write the counts here')
    args = p.parse_args(argv)
    table = count_all()
    print(f'{"part (S=64 sets of m=512, K=3)":<44} {"xp":>5} {"kernels":>8}  CUDA kernels')
    for part, row in table.items():
        print(f'{part:<44} {row["xp"]:>5} {row["kernels"]:>8}  {row["of which CUDA kernels"]} '
              f'{row["kernel calls"]}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(table, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
