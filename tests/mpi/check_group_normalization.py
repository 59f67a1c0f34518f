"""Run under ``mpiexec -n P``: MixtureGroupNormalization needs no communication between ranks.

Its sets are per sample (sample n's channels of one group), so the plain layer under ChainerMN
data parallelism is the single-process layer: nothing to synchronize. Every rank builds the
same global batch (float64), keeps its equal share of the samples and checks

* layers: the plain layer's output and x-gradient on the rank's share equal the single-process
  layer's on the whole batch (the share's rows), and the gamma/beta gradients summed over the
  ranks equal the single-process ones;
* a model: CifarCNN with MGN at every conv, converted as ``mixnorm-exp run --communicator``
  converts it (``data_parallel.synchronize_normalization``: the MGN links stay as they are),
  gives the share's rows of the single-process logits;
* training: a few steps of the CifarCNN with MGN, data parallel (each rank its share, a
  ``chainermn.create_multi_node_optimizer`` averaging the gradients; its first ``update()``
  only broadcasts rank 0's parameters, so it is called once before the steps) vs one process
  on the whole batch, for SGD and the small-batch rows' RMSprop: the parameters after the
  steps. For contrast the same with BN per rank (``--no-sync-norm``), which must differ, and
  with synchronized BN (``MultiNodeBatchNormalization``), which must not.

Rank 0 writes a JSON report to argv[1]; exit status 0 = all passed.
"""
# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy-2 shim)
# isort: on
import copy
import sys

import chainer
import chainer.functions as F
import numpy

from mixnorm_chainer import MixtureGroupNormalization
from mixnorm_chainer.models import CifarCNN
from mixnorm_chainer.reproduce.data_parallel import synchronize_normalization

import mpi_report
from mpi_report import max_err

#: global batch (divisible by 2, 3, 4 ranks), image side, training steps
N, SIZE, STEPS = 12, 8, 3
#: tolerances (float64). A layer's output and x-gradient on a share are the single process's
#: bit for bit (EXACT); gamma/beta gradients are sums in another order, a model's logits pass
#: convolutions of another batch size (LAYER_TOL); parameters after STEPS differ by the
#: multi-node optimizer's mean of P shares' gradients vs one mean (TRAIN_TOL; measured on 2
#: ranks: 0 / 3.6e-15 / 4.4e-16 / 5.4e-14 SGD, 2.4e-13 RMSprop)
EXACT = ('y', 'gx', 'test_mode_y')
LAYER_TOL, TRAIN_TOL = 1e-12, 1e-9
LAYER_CASES = [
    dict(name='G=4 K=3 relu', shape=(N, 8, 4, 4),
         options=dict(groups=4, n_components=3, em_iters=2, activation='relu')),
    dict(name='G=1 K=2 EM3 affine=statistics', shape=(N, 6, 3, 3),
         options=dict(groups=1, n_components=2, em_iters=3, affine='statistics')),
    dict(name='G=2 K=3 fc sample_fraction=0.5', shape=(N, 16),
         options=dict(groups=2, n_components=3, em_iters=2, sample_fraction=0.5)),
]


def share(rank, size, n=N):
    return rank * n // size, (rank + 1) * n // size


def clustered(shape, seed):
    rng = numpy.random.default_rng(seed)
    x = rng.normal(size=shape)
    x.reshape(shape[0], -1)[:, ::3] += 3.0          # every set has two clusters of values
    return x


def layer_case(comm, case, seed):
    """Errors of the rank's plain layer on its share vs the single-process layer."""
    lo, hi = share(comm.rank, comm.size)
    x = clustered(case['shape'], seed)
    gy = numpy.random.default_rng(seed + 1).normal(size=case['shape'])
    options = dict(case['options'])
    groups = options.pop('groups')
    single = MixtureGroupNormalization(groups, case['shape'][1], dtype=numpy.float64, **options)
    single.gamma.array[...] = numpy.linspace(0.5, 1.5, single.size)
    single.beta.array[...] = numpy.linspace(-0.2, 0.3, single.size)
    single.cleargrads()
    rank = copy.deepcopy(single)
    xv = chainer.Variable(x.copy())
    y = single(xv)
    y.grad = gy.copy()
    y.backward()
    xl = chainer.Variable(x[lo:hi].copy())
    yl = rank(xl)
    yl.grad = gy[lo:hi].copy()
    yl.backward()
    g_gamma = comm.mpi_comm.allreduce(rank.gamma.grad)
    g_beta = comm.mpi_comm.allreduce(rank.beta.grad)
    with chainer.using_config('train', False):
        test_y = rank(x[lo:hi]).array
    return {'y': max_err(y.array[lo:hi], yl.array), 'gx': max_err(xv.grad[lo:hi], xl.grad),
            'ggamma': max_err(single.gamma.grad, g_gamma),
            'gbeta': max_err(single.beta.grad, g_beta),
            'test_mode_y': max_err(y.array[lo:hi], test_y)}


def data(seed=0):
    rng = numpy.random.default_rng(seed)
    x = rng.normal(size=(STEPS, N, 3, SIZE, SIZE))
    x[:, :, 0, ::2] += 2.0
    return x, rng.integers(0, 10, size=(STEPS, N)).astype(numpy.int32)


def build(norm):
    numpy.random.seed(7)
    with chainer.using_config('dtype', numpy.float64):
        return CifarCNN(10, norms={'*': norm})


def train(model, optimizer, x, t, lo=0, hi=N):
    for step in range(STEPS):
        loss = F.softmax_cross_entropy(model(x[step, lo:hi]), t[step, lo:hi])
        model.cleargrads()
        loss.backward()
        optimizer.update()
    return {p: param.array.copy() for p, param in model.namedparams()}


def make_optimizer(kind):
    if kind == 'sgd':
        return chainer.optimizers.MomentumSGD(lr=0.01, momentum=0.9)
    return chainer.optimizers.RMSprop(lr=0.01, alpha=0.9, eps=1e-8)     # the rows' optimizer


def training_case(comm, norm, kind, sync=True):
    """Largest parameter difference after STEPS: data parallel over the ranks vs one process
    on the whole batch (same initial parameters, same global batches)."""
    import chainermn
    lo, hi = share(comm.rank, comm.size)
    x, t = data()
    single = build(norm)
    parallel = copy.deepcopy(single)
    if sync:
        parallel = synchronize_normalization(parallel, comm)
    kinds = sorted({type(link).__name__ for _, link in parallel.namedlinks(skipself=True)
                    if 'norm' in type(link).__name__.lower()})
    start = {p: param.array.copy() for p, param in single.namedparams()}
    opt = make_optimizer(kind)
    opt.setup(single)
    want = train(single, opt, x, t)
    popt = chainermn.create_multi_node_optimizer(make_optimizer(kind), comm)
    popt.setup(parallel)
    popt.update()           # ChainerMN's first update only broadcasts rank 0's parameters
    got = train(parallel, popt, x, t, lo, hi)
    moved = max(max_err(want[p], start[p]) for p in want)   # training moved the parameters
    return {'max_error': max(max_err(want[p], got[p]) for p in want), 'moved': moved,
            'links': kinds}


def model_case(comm):
    """Logits of the converted MGN model on the rank's share vs one process's."""
    lo, hi = share(comm.rank, comm.size)
    x, _ = data(1)
    single = build('mgn')
    parallel = synchronize_normalization(copy.deepcopy(single), comm)
    same = all(type(a) is type(b) for (_, a), (_, b) in
               zip(single.namedlinks(skipself=True), parallel.namedlinks(skipself=True)))
    errs = {}
    for mode in (True, False):
        with chainer.using_config('train', mode), chainer.no_backprop_mode():
            errs['train' if mode else 'test'] = max_err(single(x[0]).array[lo:hi],
                                                        parallel(x[0, lo:hi]).array)
    return errs, same


def main():
    import chainermn
    comm = chainermn.create_communicator('naive')
    report = {'size': comm.size, 'layers': {}, 'training': {}, 'failures': []}
    fail = report['failures'].append

    def checks():
        for i, case in enumerate(LAYER_CASES):
            errs = layer_case(comm, case, seed=20 + i)
            report['layers'][case['name']] = errs
            if not (max(errs.values()) <= LAYER_TOL and all(errs[k] == 0 for k in EXACT)):
                fail(f"rank {comm.rank} layer {case['name']}: {errs}")
        errs, same = model_case(comm)
        report['model'] = dict(errs, links_unchanged=same)
        if not (same and max(errs.values()) <= LAYER_TOL):
            fail(f"rank {comm.rank} model: {report['model']}")
        for kind in ('sgd', 'rmsprop'):
            case = training_case(comm, 'mgn', kind)
            report['training']['mgn ' + kind] = case
            if not case['max_error'] <= TRAIN_TOL or case['links'] != [
                    'MixtureGroupNormalization']:
                fail(f'rank {comm.rank} training mgn {kind}: {case}')
        # contrast: BN per rank sees only its share, so it must differ (the check can fail);
        # synchronized BN sees the global batch like one process
        report['training']['bn per rank sgd'] = training_case(comm, 'bn', 'sgd', sync=False)
        report['training']['bn synchronized sgd'] = training_case(comm, 'bn', 'sgd')

    return mpi_report.run(comm, report, checks)


if __name__ == '__main__':
    sys.exit(main())
