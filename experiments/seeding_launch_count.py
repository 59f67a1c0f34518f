"""Count the GPU kernel launches and host synchronizations of Mixture Normalization's seedings.

Per training step of :class:`mixnorm_chainer.MixtureNormalization` at a conv3-like size
(default x of shape (64, 128, 8, 8) float32: m = 4096 rows of D = 128 channels, K = 3,
``em_iters=2``), on the xp path and on the CUDA kernel path (:mod:`mixnorm_chainer.kernels`, the
kernel strings compiled with g++ by ``tests/cuda_kernel_harness.py``), both on the CPU:

* the fit alone, as the layer calls :func:`~mixnorm_chainer.gmm.fit_gmm` in a training step
  (no input check; k-means++ or AFK-MC² seeding, 1 k-means + 1 EM iteration, pruning test), and
  the warm start from the previous batch's fit (2 EM iterations from it);
* the whole layer step, forward and backward (a ``chainer.Variable`` input, ``y.grad = ones;
  y.backward()``) for ``init='kmeans++'``, ``'afkmc2'`` and ``'previous'``: a warm step (the
  second step; the first seeds), a reseeding step (``reseed_every=1``: the second step reseeds
  with k-means++ and aligns the components to the previous mixture), and a step whose warm fit
  is discarded (the third step, on a batch shifted far from the previous mixture: the warm
  fit's first EM iteration runs, then the 'drop' or 'collapse' decision stops it and the layer
  reseeds). The earlier steps of a link are made with the same
  counting, uncounted, so the queue is not empty in the step counted.

Counting (``launch_counting.py``, next to this script; its docstring lists what counts as a
launch): the code runs on numpy arrays of a counting subclass, with the ``get_array_module``
of :mod:`~mixnorm_chainer.gmm`, :mod:`~mixnorm_chainer.seeding`,
:mod:`~mixnorm_chainer.reduction`, :mod:`~mixnorm_chainer.gaussian`,
:mod:`~mixnorm_chainer.functions`, :mod:`~mixnorm_chainer.queue` and
:mod:`~mixnorm_chainer.warm_start` patched (the kernels and the row pool take
``chainer.backends.cuda.get_array_module``, patched too). Each array operation is counted as
one CuPy launch; host synchronizations (``cuda.to_cpu``, ``float()``/``int()``/``bool()`` of a
device array) are counted separately, by site; uploads (``xp.asarray`` of host data:
host-to-device copies without a synchronization) separately again. The layer's link is made
device-resident by hand: its parameters, queue and pool arrays are counted arrays, as they are
cupy arrays after ``to_gpu``. The xp path counted is the GPU's (``mixnorm_kernels`` off):
``xp`` is not numpy there, so the centring shift is always applied and every component is
computed centred (as on cupy), unlike numpy's CPU path. links.py itself takes no ``xp`` in a
step (only ``F.forget``'s bookkeeping and ``use_gamma=False`` do, neither counted here).
Launches are an estimate of what CuPy would launch, not a measurement (nothing here ran on a
GPU).

What is not counted cleanly: chainer's own bookkeeping (``FunctionNode.apply``, ``backward``)
runs on the counted arrays too and would be counted, but it makes no array operation here
(the launches issued from chainer's code are counted apart and printed: 0); chainer's
``Link.xp`` is numpy (the link is not really on a GPU), which only the ``use_gamma=False``
path would use. The gradient buffers are cleared before each step (``cleargrads``), so no
accumulation is counted. The optimizer update is not part of the step counted.

Usage: ``python experiments/seeding_launch_count.py [--shape N C H W] [--json out.json]``
(several seconds at the default size; needs g++).
"""
import argparse
import functools
import json
import os
import sys

import numpy

# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy >= 2 support)
# isort: on
import chainer

from mixnorm_chainer import (
    MixtureNormalization,
    functions,
    gaussian,
    gmm,
    queue,
    reduction,
    seeding,
    warm_start,
)
from mixnorm_chainer.functions import to_rows
from mixnorm_chainer.pool import RowPool
from mixnorm_chainer.queue import ParameterQueue

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also when loaded by a test
from launch_counting import Counted, counted, counting  # noqa: E402

#: the modules whose ``get_array_module`` returns the counting xp
MODULES = (gmm, seeding, reduction, gaussian, functions, queue, warm_start)
SHAPE = (64, 128, 8, 8)
PATHS = (('xp', False), ('kernels', True))


def batch(shape, seed, K=3, shift=0.0):
    """An NCHW float32 batch whose rows come from a K-mode mixture (fixed modes, fresh noise
    per ``seed``), shifted by ``shift`` in every channel."""
    N, C = shape[:2]
    m = N * int(numpy.prod(shape[2:], dtype=numpy.int64))
    modes = numpy.random.default_rng(12345).normal(0, 1.5, (K, C))
    rng = numpy.random.default_rng(seed)
    rows = modes[rng.choice(K, m, p=[0.5, 0.3, 0.2][:K] if K == 3 else None)]
    rows = rows + rng.normal(0, 1, (m, C)) + shift
    return functions.from_rows(rows.astype(numpy.float32), shape)


def device_resident(link):
    """The link's parameters, queue and pool as counted arrays (what ``to_gpu`` makes cupy)."""
    for param in link.params():
        param.array = counted(param.array)
    for name in ParameterQueue.ARRAYS:
        setattr(link.queue, name, counted(getattr(link.queue, name)))
    for name in ('rows', 'sizes'):
        if isinstance(getattr(link.pool, name, None), numpy.ndarray):
            setattr(link.pool, name, counted(getattr(link.pool, name)))
    assert isinstance(link.pool, RowPool)
    return link


def layer_step(link, x):
    """One training step of the layer: forward, ``y.grad = ones``, backward."""
    link.cleargrads()
    gy = counted(numpy.ones(x.shape, x.dtype))
    x = chainer.Variable(counted(x))
    y = link(x)
    y.grad = gy
    y.backward()
    # every result stayed on the "device": nothing leaked out of the counting
    assert all(isinstance(a, Counted) for a in (y.array, x.grad, *(p.grad for p in
                                                                  link.params())))
    return y


def fit_parts(shape, K=3, em_iters=2):
    """``{part: run}``: the fit alone as the layer calls it, on the second batch's rows."""
    rows = to_rows(batch(shape, 2, K))
    kmeans_iters, gmm_em_iters = mixnorm_chainer.options.split_em_iters(em_iters)
    previous = gmm.fit_gmm(to_rows(batch(shape, 1, K)), K, kmeans_iters=kmeans_iters,
                           em_iters=gmm_em_iters, seed=0, check_finite=False)
    start = (previous.weights.astype(numpy.float64), previous.means64,
             previous.variances.astype(numpy.float64))

    def fit(init):
        if isinstance(init, str):
            return lambda: gmm.fit_gmm(counted(rows), K, kmeans_iters=kmeans_iters,
                                       em_iters=gmm_em_iters, seed=0, check_finite=False,
                                       init=init)
        return lambda: gmm.fit_gmm(counted(rows), K, em_iters=em_iters, seed=0,
                                   check_finite=False, init=init)
    return {'fit, k-means++': (fit('kmeans++'), None),
            'fit, AFK-MC²': (fit('afkmc2'), None),
            'fit, warm start': (fit(start), None)}


def step_parts(shape, K=3, em_iters=2):
    """``{part: (setup, run)}``: ``setup(counting)`` builds a link and makes its earlier steps
    (each inside its own counting), ``run(link)`` the step counted."""
    first, second = batch(shape, 1, K), batch(shape, 2, K)
    far = batch(shape, 3, K, shift=8.0)

    def link(init, steps, **options):
        def setup(count):
            mn = device_resident(MixtureNormalization(shape[1], n_components=K,
                                                      em_iters=em_iters, init=init, seed=0,
                                                      **options))
            for x in steps:
                with count():
                    layer_step(mn, x)
            return mn
        return setup

    return {
        'layer step, k-means++': (link('kmeans++', [first]), second),
        'layer step, AFK-MC²': (link('afkmc2', [first]), second),
        'layer step, previous (warm)': (link('previous', [first]), second),
        'layer step, previous (reseed: every)': (link('previous', [first], reseed_every=1),
                                                  second),
        'layer step, previous (warm fit discarded)': (link('previous', [first, second]), far),
    }


def count_all(shape=SHAPE, K=3, em_iters=2):
    """``{part: {'xp': {...}, 'kernels': {...}}}``; each path's counts: ``launches``,
    ``cuda_kernels``, ``syncs`` (total), ``sync_sites``, ``uploads``, ``chainer`` (launches
    issued from chainer's own code), ``kernel_calls``, and for a layer step ``decision`` (the
    warm start's: 'warm', 'every', ...)."""
    shape = tuple(shape)
    table = {}
    parts = {**fit_parts(shape, K, em_iters), **step_parts(shape, K, em_iters)}
    for part, (run, x) in parts.items():
        row = table[part] = {}
        for label, use in PATHS:
            count = functools.partial(counting, use, MODULES)
            link = run(count) if x is not None else None
            with count() as c:
                if link is None:
                    run()
                else:
                    layer_step(link, x)
            row[label] = {'launches': c.launches, 'cuda_kernels': c.cuda_kernels,
                          'syncs': c.n_syncs, 'sync_sites': dict(sorted(c.syncs.items())),
                          'uploads': c.uploads, 'chainer': c.origins['chainer'],
                          'kernel_calls': c.kernel_calls}
            if link is not None:
                row[label]['decision'] = link.warm_start.state['last'] \
                    if link.init == 'previous' else None
    return table


def print_table(table, shape):
    N, C = shape[:2]
    m = N * int(numpy.prod(shape[2:], dtype=numpy.int64))
    print(f'x of shape {tuple(shape)} (m={m} rows, D={C}), K=3, em_iters=2; counts per '
          'training step')
    head = (f'{"part":<42} {"xp: launches":>12} {"syncs":>5}   {"kernels: launches":>17} '
            f'{"CUDA":>4} {"syncs":>5} {"uploads":>7}  decision')
    print(head)
    print('-' * len(head))
    for part, row in table.items():
        xp, k = row['xp'], row['kernels']
        print(f'{part:<42} {xp["launches"]:>12} {xp["syncs"]:>5}   {k["launches"]:>17} '
              f'{k["cuda_kernels"]:>4} {k["syncs"]:>5} {k["uploads"]:>7}  '
              f'{k.get("decision") or ""}')
    by_chainer = sum(row[path]['chainer'] for row in table.values() for path in row)
    print(f"(CUDA: of the launches, the package's CUDA kernels; uploads: host-to-device copies; "
          f"launches issued from chainer's own code: {by_chainer})")
    print('\nhost synchronizations on the kernel path, by site (the same on the xp path unless '
          'shown):')
    for part, row in table.items():
        sites = row['kernels']['sync_sites']
        print(f'  {part}: ' + ', '.join(f'{n} x {s}' if n > 1 else s
                                        for s, n in sites.items()))
        if row['xp']['sync_sites'] != sites:
            print(f'    xp path: {row["xp"]["sync_sites"]}')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--shape', type=int, nargs=4, default=SHAPE, metavar=('N', 'C', 'H', 'W'),
                   help='the input shape (default %(default)s)')
    p.add_argument('--json', help='write the counts here')
    args = p.parse_args(argv)
    table = count_all(args.shape)
    print_table(table, args.shape)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(table, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
