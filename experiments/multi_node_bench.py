"""ChainerMN cost of the synchronized MN layer.

Run: ``mpiexec -n 2 python experiments/multi_node_bench.py``.

(a) Communication: bytes all-reduced per rank by one EM iteration, one Lloyd iteration,
    k-means++ seeding, the transform's statistics and the backward pass of an MN layer, against
    the bytes of the activations a gather of the global batch would move, for the CIFAR CNN's
    conv3 (C=128, 8x8 maps) and Inception-V3's widest MN layer shape.
(b) Speed: CifarCNN training steps/sec on P ranks with MultiNodeBatchNormalization everywhere
    (BN), with synchronized MN at conv3 (MN-sync) and with per-rank MN (MN-local), timed side by
    side, alternating, after warm-up. Ratios are what to read; absolute numbers are machine noise.
"""
# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy-2 shim)
# isort: on
import argparse
import sys
import time

import chainer
import chainer.links as L
import chainermn
import numpy

from mixnorm_chainer.gmm import fit_gmm
from mixnorm_chainer.models import CifarCNN
from mixnorm_chainer.multi_node import (
    AllReduce,
    CommunicationLog,
    MultiNodeMixtureNormalization,
)
from mixnorm_chainer.reproduce.data_parallel import synchronize_normalization


def fit_bytes(comm, X, K, kmeans_iters, em_iters):
    log = CommunicationLog()
    reduction = AllReduce.agree(comm, X.shape[0], None, log)
    fit_gmm(X, K, kmeans_iters=kmeans_iters, em_iters=em_iters, seed=0, min_weight=0,
            reduction=reduction)
    return log.bytes, log.collectives


def communication(comm, rows_per_rank, C, K, out):
    rng = numpy.random.default_rng(comm.rank)
    X = rng.normal(size=(rows_per_rank, C)).astype(numpy.float32)
    b00, _ = fit_bytes(comm, X, K, 0, 0)
    b01, _ = fit_bytes(comm, X, K, 0, 1)
    b10, _ = fit_bytes(comm, X, K, 1, 0)
    seeding = b00
    link = MultiNodeMixtureNormalization(C, comm, n_components=K, em_iters=2, seed=0,
                                         min_weight=0)
    x = chainer.Variable(X.reshape(-1, C))
    y = link(x)
    forward = link.communication.bytes
    y.grad = numpy.ones_like(y.array)
    y.backward()
    backward = link.communication.bytes - forward
    gather = rows_per_rank * comm.size * C * 4
    if comm.rank == 0:
        print(f'C={C:4d} K={K} rows/rank={rows_per_rank:6d}: per rank all-reduced bytes: '
              f'EM iter {b01 - b00:6d} ({K}x(2x{C}+1) float32), Lloyd iter {b10 - b00:6d}, '
              f'k-means++ + M-step init {seeding:6d}; one MN forward (EM iter. 2) {forward:6d}, '
              f'backward {backward:6d}; gathering the global batch instead: {gather:,d} bytes '
              f'({gather / (forward + backward):.0f}x a full training step)', file=out, flush=True)


def steps_per_sec(comm, model, opt, x, t, iters):
    comm.mpi_comm.Barrier()
    start = time.perf_counter()
    for _ in range(iters):
        opt.update(model, x, t)
    comm.mpi_comm.Barrier()
    return iters / (time.perf_counter() - start)


def speed(comm, batch, size, iters, repeats):
    variants = {}
    for name, mn_layers, sync in (('BN', (), True), ('MN-sync', ('conv3',), True),
                                  ('MN-local', ('conv3',), False)):
        numpy.random.seed(0)
        model = L.Classifier(CifarCNN(10, mn_layers=mn_layers, seed=0))
        if sync:
            model = synchronize_normalization(model, comm)
        opt = chainermn.create_multi_node_optimizer(
            chainer.optimizers.RMSprop(lr=0.01, alpha=0.9, eps=1e-8), comm)
        opt.setup(model)
        variants[name] = (model, opt)
    rng = numpy.random.default_rng(comm.rank)
    x = rng.normal(size=(batch // comm.size, 3, size, size)).astype(numpy.float32)
    t = rng.integers(0, 10, batch // comm.size).astype(numpy.int32)
    rates = {name: [] for name in variants}
    for model, opt in variants.values():
        steps_per_sec(comm, model, opt, x, t, 1)            # warm-up
    for _ in range(repeats):
        for name, (model, opt) in variants.items():
            rates[name].append(steps_per_sec(comm, model, opt, x, t, iters))
    if comm.rank == 0:
        base = numpy.array(rates['BN'])
        print(f'CifarCNN training steps/sec on {comm.size} ranks, global batch {batch} '
              f'({batch // comm.size}/rank), {size}x{size}, {repeats} x {iters} steps each, '
              'alternating:')
        for name, r in rates.items():
            r = numpy.array(r)
            print(f'  {name:9s} {numpy.median(r):7.3f} steps/s   paired ratio to BN: median '
                  f'{numpy.median(r / base):.3f} (min {numpy.min(r / base):.3f}, max '
                  f'{numpy.max(r / base):.3f})', flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--communicator', default='naive')
    p.add_argument('--batch', type=int, default=64, help='global mini-batch')
    p.add_argument('--size', type=int, default=32, help='image side')
    p.add_argument('--iters', type=int, default=3)
    p.add_argument('--repeats', type=int, default=3)
    args = p.parse_args()
    comm = chainermn.create_communicator(args.communicator)
    if comm.rank == 0:
        print(f'{comm.size} ranks, communicator {args.communicator}')
    for rows, C, K in ((args.batch // comm.size * 64, 128, 3), (128 // comm.size * 49, 768, 5)):
        communication(comm, rows, C, K, sys.stdout)
    speed(comm, args.batch, args.size, args.iters, args.repeats)


if __name__ == '__main__':
    main()
