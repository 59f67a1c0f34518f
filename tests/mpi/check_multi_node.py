"""Run under ``mpiexec -n P``: the synchronized MN layer on P ranks vs one process.

Every rank builds the same global batch, keeps its own unequal share of the samples, runs
:class:`MultiNodeMixtureNormalization` on it and, on the side, the single-process
:class:`MixtureNormalization` on the whole batch (same seed). It checks the mixture, the
statistics, outputs, gradients (x: this rank's slice; gamma, beta: summed over ranks), queue,
the warm start's decisions and test-mode outputs, for several options (the AFK-MC² seeding and
warm starts among them); then that bad input on one rank raises the same
ValueError on every rank. Rank 0 writes a JSON report to argv[1]. Exit status 0 = all passed.
"""
# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy-2 shim)
# isort: on
import sys

import chainer
import numpy

from mixnorm_chainer import MixtureNormalization
from mixnorm_chainer.multi_node import MultiNodeMixtureNormalization, create_multi_node_mn_model

import mpi_report
from mpi_report import max_err

CASES = [
    dict(name='conv K=3 EM2', shape=(11, 5, 3, 3), options=dict(n_components=3, em_iters=2)),
    dict(name='conv K=4 EM4 relu', shape=(9, 4, 2, 3),
         options=dict(n_components=4, em_iters=4, activation='relu')),
    dict(name='fc K=3 affine=statistics', shape=(40, 6),
         options=dict(n_components=3, em_iters=3, affine='statistics')),
    dict(name='conv K=5 pruned', shape=(10, 3, 2, 2),
         options=dict(n_components=5, em_iters=2, min_weight=0.2)),
    dict(name='conv K=3 sample_fraction=0.5', shape=(12, 4, 2, 2),
         options=dict(n_components=3, em_iters=2, sample_fraction=0.5)),
    dict(name='conv K=1 (BN)', shape=(8, 4, 2, 2), options=dict(n_components=1, em_iters=2)),
    dict(name='conv K=3 init=afkmc2', shape=(12, 4, 2, 2),
         options=dict(n_components=3, em_iters=2, init='afkmc2', chain_length=7)),
    # warm starts over 6 steps: the first seeds, 'every' reseeds at step 3, the rest are warm
    dict(name='conv K=3 init=previous', shape=(12, 4, 3, 3), steps=6,
         options=dict(n_components=3, em_iters=2, init='previous', reseed_every=3)),
]


def split_sizes(n, size):
    """Unequal shares: rank p gets about (p + 1) parts."""
    weights = numpy.arange(1, size + 1)
    cuts = numpy.floor(numpy.cumsum(weights) / weights.sum() * n).astype(int)
    return numpy.diff(numpy.concatenate([[0], cuts]))


def clustered(shape, seed):
    rng = numpy.random.default_rng(seed)
    x = rng.normal(size=shape)
    x[: shape[0] // 3] += 3.0
    x[shape[0] // 3: 2 * shape[0] // 3] -= 2.0
    return x


def run_case(comm, case, seed):
    shape = case['shape']
    x = clustered(shape, seed)
    gy = numpy.random.default_rng(seed + 1).normal(size=shape)
    sizes = split_sizes(shape[0], comm.size)
    lo = int(sizes[:comm.rank].sum())
    hi = lo + int(sizes[comm.rank])
    C = shape[1]

    single = MixtureNormalization(C, seed=seed, dtype=numpy.float64, **case['options'])
    synced = MultiNodeMixtureNormalization(C, comm, seed=seed, dtype=numpy.float64,
                                           **case['options'])
    local = MixtureNormalization(C, seed=seed, dtype=numpy.float64, **case['options'])
    errs, unsynced = {}, {}
    for step in range(case.get('steps', 2)):   # two training steps: queues of 2 entries
        xs = x + step * 0.5
        for link in (single, synced):
            link.cleargrads()
        xv = chainer.Variable(xs.copy())
        y = single(xv)
        y.grad = gy.copy()
        y.backward()
        xl = chainer.Variable(xs[lo:hi].copy())
        yl = synced(xl)
        yl.grad = gy[lo:hi].copy()
        yl.backward()
        g_gamma = synced.comm.mpi_comm.allreduce(synced.gamma.grad)
        g_beta = synced.comm.mpi_comm.allreduce(synced.beta.grad)
        fit_s, fit_m = single.last_fit, synced.last_fit
        errs[f'step{step}/K'] = abs(fit_s.n_components - fit_m.n_components)
        errs[f'step{step}/weights'] = max_err(fit_s.weights, fit_m.weights)
        errs[f'step{step}/means'] = max_err(fit_s.means, fit_m.means)
        errs[f'step{step}/variances'] = max_err(fit_s.variances, fit_m.variances)
        for i, name in enumerate(('lambda', 'mu', 'sigma2')):
            errs[f'step{step}/{name}'] = max_err(single.last_statistics[i],
                                                 synced.last_statistics[i])
        errs[f'step{step}/y'] = max_err(y.array[lo:hi], yl.array)
        # for contrast: a plain layer fits only this rank's rows
        unsynced[f'step{step}/y'] = max_err(y.array[lo:hi], local(xs[lo:hi]).array)
        errs[f'step{step}/gx'] = max_err(xv.grad[lo:hi], xl.grad)
        errs[f'step{step}/ggamma'] = max_err(single.gamma.grad, g_gamma)
        errs[f'step{step}/gbeta'] = max_err(single.beta.grad, g_beta)
    for name in ('weights', 'means', 'variances'):
        errs['queue_' + name] = max_err(getattr(single.queue, name), getattr(synced.queue, name))
    # the warm start's decisions (steps since seeding, reseeds by reason) are the same
    errs['warm_start_state'] = float(single.warm_start.state['reseeds'] !=
                                     synced.warm_start.state['reseeds'] or
                                     single.warm_start.state['last'] !=
                                     synced.warm_start.state['last'])
    scores = [link.warm_start.state['score'] for link in (single, synced)]
    errs['warm_start_score'] = 0.0 if scores == [None, None] else abs(scores[0] - scores[1])
    with chainer.using_config('train', False):
        errs['test_mode_y'] = max_err(single(x).array[lo:hi], synced(x[lo:hi]).array)
    return errs, unsynced, synced.communication.as_dict(), [int(s) for s in sizes]


def check_bad_input(comm):
    """Bad input on the last rank only: every rank must raise the same ValueError."""
    results = {}
    for kind in ('nan', 'channels'):
        link = MultiNodeMixtureNormalization(4, comm, seed=0)
        x = numpy.random.default_rng(comm.rank).normal(size=(6, 4, 2, 2)).astype(numpy.float32)
        if comm.rank == comm.size - 1:
            if kind == 'nan':
                x[0, 0, 0, 0] = numpy.nan
            else:
                x = x[:, :3]
        try:
            link(x)
            results[kind] = 'no error'
        except ValueError as e:
            results[kind] = str(e)
    return results


def check_model_conversion(comm):
    """create_multi_node_mn_model replaces the MN links of a model, keeping their state."""
    from mixnorm_chainer.models import CifarCNN, InceptionV3
    ok = {}
    for name, model in (('cifar_cnn', CifarCNN(10, mn_layers=('conv2', 'conv3'), seed=1)),
                        ('inception', InceptionV3(10, mn_layers=('inc2/0',), seed=1))):
        before = [p for p, link in model.namedlinks() if isinstance(link, MixtureNormalization)]
        create_multi_node_mn_model(model, comm)
        after = [p for p, link in model.namedlinks()
                 if isinstance(link, MultiNodeMixtureNormalization)]
        params = sorted(p for p, _ in model.namedparams())
        ok[name] = bool(before) and before == after and len(params) == len(set(params))
    return ok


def main():
    import chainermn
    comm = chainermn.create_communicator('naive')
    report = {'size': comm.size, 'cases': {}, 'failures': []}
    tol = 1e-9

    def checks():
        for i, case in enumerate(CASES):
            errs, unsynced, comms, sizes = run_case(comm, case, seed=10 + i)
            worst = max(errs.values())
            report['cases'][case['name']] = {
                'max_error': worst, 'communication': comms, 'rows_per_rank': sizes,
                'errors': errs, 'unsynchronized_y_error': max(unsynced.values())}
            if not worst <= tol:
                bad = {k: v for k, v in errs.items() if not v <= tol}
                report['failures'].append(f"rank {comm.rank} {case['name']}: {bad}")
        bad_input = check_bad_input(comm)
        report['bad_input'] = bad_input
        for kind, message in bad_input.items():
            if f'rank {comm.size - 1}:' not in message:
                report['failures'].append(f'rank {comm.rank} bad input {kind}: {message}')
        report['conversion'] = check_model_conversion(comm)
        if not all(report['conversion'].values()):
            report['failures'].append(f"rank {comm.rank} conversion {report['conversion']}")

    return mpi_report.run(comm, report, checks)


if __name__ == '__main__':
    sys.exit(main())
