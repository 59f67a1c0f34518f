"""Count the GPU kernel launches of the per-set fit (Mixture Group Normalization), on the CPU.

The fit (:func:`mixnorm_chainer.group_gmm.fit_set_mixtures`) runs on numpy twice: on the xp
path, and on the CUDA kernel path (:mod:`mixnorm_chainer.kernels.group`, the kernel strings
compiled with g++ by ``tests/cuda_kernel_harness.py``), counted by ``launch_counting.py``
(next to this script). Every array operation is counted as the one CuPy kernel it launches on
the GPU: each ufunc call and reduction, ``where``, ``sort``, ``argmin``/``argmax``, ``mean``,
a dtype-changing ``astype``, a fancy index or an assignment into an array,
``arange``/``ones``/``zeros``/``full``, and each ElementwiseKernel / ReductionKernel call;
views (reshape, broadcasting, basic slicing), ``empty`` and ``asarray`` of an array count
nothing. It is an estimate of what CuPy would launch, not a measurement: ``sort`` may launch
several kernels in CuPy, and nothing here has run on a GPU. The transform (chainer.functions)
is the same on both paths and is not counted.

Usage: ``python experiments/group_launch_count.py [--json out.json]`` (a few seconds; needs g++).
"""
import argparse
import json
import os
import sys

import numpy

# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy >= 2 support)
# isort: on

from mixnorm_chainer import group_gmm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also when loaded by a test
from launch_counting import counted, counting  # noqa: E402


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
            with counting(use, [group_gmm]) as count:
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
