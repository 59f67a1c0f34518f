"""Mixture Normalization over the global batch of data-parallel ChainerMN training.

Under ChainerMN every MPI rank holds a share ``B_p`` of the mini-batch. A plain
:class:`~mixnorm_chainer.MixtureNormalization` then fits each rank's own rows (each rank has its
own mixture, like per-rank ``L.BatchNormalization``). :class:`MultiNodeMixtureNormalization`
fits one mixture to the rows of all ranks, as ChainerMN's ``MultiNodeBatchNormalization`` does
for BN: on P ranks it gives the mixture, outputs and gradients of the single-process layer on
the concatenated batch ``B_1 + ... + B_P`` (same seed), up to floating-point summation order.

Every cross-row quantity of the fit and of the transform is a sum over rows (Section 3.2, 4.2):

* k-means++ (Section 4.2): the potential ``sum_i min_c ||x_i - c||^2`` and each candidate's
  potential are all-reduced; a candidate index is drawn from the same host RNG on every rank,
  the rank whose rows contain that position of the global cumulative potential contributes
  the row (the others contribute zeros) and one all-reduce delivers it to all;
* Lloyd k-means: per-centre row counts and coordinate sums, ``K (D + 1)`` numbers;
* EM (Eq. 31 E-step locally; M-step): ``sum_i nu_ik``, ``sum_i nu_ik x_i``,
  ``sum_i nu_ik x_i^2``, ``K (2D + 1)`` numbers per iteration (plus a second all-reduce of the
  centred ``sum_i nu_ik (x_i - mu_k)^2`` for components far from the batch mean, and for all
  of them on the GPU; see :func:`mixnorm_chainer.gmm.component_moments`);
* the transform's statistics (Eq. 35-36): the same sums under the final nu;
* the backward pass: ``P_k = sum_i dL/dz^k_i`` and ``Q_k = sum_i dL/dz^k_i x_i``, ``2 K D``
  numbers (the gradient through mu_k and sigma_k^2 needs them; see
  :class:`~mixnorm_chainer.functions.MixtureNormalizationGrad`).

A pass moves a few times ``K D`` numbers instead of the ``m D`` activations a gather would.
Sums are staged through host memory (a ``K x D`` buffer; the fit already synchronizes once
for pruning), so any MPI works, CUDA-aware or not.

Gradients: ``x`` gets the gradient of the *sum* of the ranks' losses (each rank's upstream
gradient is its own loss's); gamma and beta get this rank's contribution, whose sum over ranks
is the summed loss's gradient. ChainerMN's multi-node optimizer averages the ranks' gradients,
so training follows the gradient of the mean of the ranks' losses, as for BN.
"""
import json

import chainer
import chainer.training
import numpy
from chainer.backend import get_array_module
from chainer.backends import cuda

from mixnorm_chainer.functions import check_input, compute_dtype, to_rows
from mixnorm_chainer.gmm import rows_problem
from mixnorm_chainer.link_state import scale_shift
from mixnorm_chainer.links import MixtureNormalization, training_input_error


class CommunicationLog:
    """Counts the all-reduces of a layer: ``collectives`` and ``bytes`` (per rank, sent)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.collectives = 0
        self.bytes = 0

    def add(self, nbytes):
        self.collectives += 1
        self.bytes += int(nbytes)

    def as_dict(self):
        return {'collectives': self.collectives, 'bytes': self.bytes}


class AllReduce:
    """The rows of a batch spread over the ranks of a ChainerMN communicator.

    Implements the ``reduction`` interface of :class:`mixnorm_chainer.reduction.LocalReduction`:
    sums over rows become MPI all-reduces. Build it with :meth:`agree`, a collective every rank
    calls with its row count (and its input error, if any).

    Args:
        comm: a ChainerMN communicator (``chainermn.create_communicator(...)``).
        counts: rows on each rank, in rank order (rank p's rows are global rows
            ``counts[:p].sum() ...``, i.e. the concatenated batch in rank order).
        log: a :class:`CommunicationLog` that counts the traffic.
    """

    def __init__(self, comm, counts, log=None):
        self.comm = comm
        self.counts = numpy.asarray(counts, dtype=numpy.int64)
        self.rank = comm.rank
        self.offset = int(self.counts[:self.rank].sum())
        self.log = log if log is not None else CommunicationLog()

    @classmethod
    def agree(cls, comm, n_rows, error=None, log=None):
        """All ranks exchange their row count and error message (one allgather).

        Raises the same ValueError on every rank, naming the ranks, when any rank reported an
        error or the global batch is empty; so bad input on one rank never leaves the others
        waiting in a collective.
        """
        gathered = comm.mpi_comm.allgather((int(n_rows), error))
        errors = ['rank {}: {}'.format(r, e) for r, (_, e) in enumerate(gathered) if e]
        if errors:
            raise ValueError('MultiNodeMixtureNormalization: bad input on {} of {} ranks; '
                             '{}'.format(len(errors), comm.size, '; '.join(errors)))
        counts = [c for c, _ in gathered]
        if sum(counts) == 0:
            raise ValueError('MultiNodeMixtureNormalization: the global batch has no rows')
        if log is not None:
            log.add(8 * comm.size)
        return cls(comm, counts, log)

    def total(self, m):
        return int(self.counts.sum())

    def sum(self, *arrays):
        """Sums over ranks of each array, in one all-reduce of their packed host copies."""
        xp = get_array_module(arrays[0])
        dtype = numpy.result_type(*[a.dtype for a in arrays])
        host = [numpy.asarray(cuda.to_cpu(a), dtype=dtype).ravel() for a in arrays]
        buf = numpy.concatenate(host)
        total = self.comm.allreduce(buf)
        self.log.add(buf.nbytes)
        out, start = [], 0
        for a, h in zip(arrays, host):
            part = total[start:start + h.size].reshape(a.shape).astype(a.dtype, copy=False)
            out.append(xp.asarray(part))
            start += h.size
        return tuple(out)

    def _owner(self, index):
        """(rank, local index) of global row ``index``."""
        ends = numpy.cumsum(self.counts)
        rank = int(numpy.searchsorted(ends, index, side='right'))
        return rank, int(index - (ends[rank] - self.counts[rank]))

    def take(self, X, i):
        xp = get_array_module(X)
        rank, local = self._owner(i)
        row = X[local] if rank == self.rank else xp.zeros(X.shape[1], X.dtype)
        out, = self.sum(row)
        return out

    def candidates(self, X, closest, targets):
        """k-means++ draws: the rows whose global cumulative potential first reaches each
        target, as :meth:`LocalReduction.candidates` on the concatenated rows."""
        xp = get_array_module(X)
        mine = numpy.zeros(self.comm.size)
        mine[self.rank] = float(closest.sum(dtype=numpy.float64))
        totals, = self.sum(mine)
        totals = cuda.to_cpu(totals)
        ends = numpy.cumsum(totals)
        targets = cuda.to_cpu(targets)
        with_rows = numpy.flatnonzero(self.counts > 0)
        pick = numpy.searchsorted(ends[with_rows], targets, side='left')
        owners = with_rows[numpy.minimum(pick, len(with_rows) - 1)]
        rows = xp.zeros((len(targets), X.shape[1]), X.dtype)
        owned = numpy.flatnonzero(owners == self.rank)
        if owned.size:
            start = ends[self.rank] - totals[self.rank]
            cumulative = start + xp.cumsum(closest, dtype=numpy.float64)
            ids = xp.minimum(xp.searchsorted(cumulative, xp.asarray(targets[owned])),
                             X.shape[0] - 1)
            rows[xp.asarray(owned)] = X[ids]
        out, = self.sum(rows)
        return out

    def subset(self, X, ids):
        """This rank's rows among the sorted global ``ids``; the reduction over the subset."""
        xp = get_array_module(X)
        starts = numpy.concatenate([[0], numpy.cumsum(self.counts)])
        counts = numpy.diff(numpy.searchsorted(ids, starts))
        lo, hi = starts[self.rank], starts[self.rank + 1]
        local = ids[(ids >= lo) & (ids < hi)] - lo
        return X[xp.asarray(local)], AllReduce(self.comm, counts, self.log)

    def shift(self, X):
        """The global column mean (always applied: the ranks must share one centring)."""
        column_sums, = self.sum(X.sum(axis=0))
        return column_sums / self.total(X.shape[0])


class MultiNodeMixtureNormalization(MixtureNormalization):
    """Mixture normalization whose mixture is fitted to the global batch of all ranks.

    Takes the options of :class:`~mixnorm_chainer.MixtureNormalization` plus ``comm``, a
    ChainerMN communicator. Training mode fits the GMM of the concatenated batch (every
    k-means++, k-means and EM step all-reduces its row sums; see the module docstring), so all
    ranks hold the same mixture and push the same statistics onto identical queues; test mode
    (Eq. 38-39 over the queue) needs no communication. The layer's random generator is made
    identical on all ranks (rank 0's seed) at construction.

    Every rank must call it the same number of times in training mode. Bad input on any rank
    (wrong shape, NaN/inf) raises the same ValueError on all ranks.

    ``communication`` (a :class:`CommunicationLog`) counts the all-reduces and bytes of the
    layer since its last ``reset()``.
    """

    def __init__(self, size, comm, **options):
        super().__init__(size, **options)
        self.comm = comm
        self.communication = CommunicationLog()
        self._share_rng()

    @classmethod
    def from_link(cls, link, comm):
        """A synchronized copy of a :class:`MixtureNormalization` (options, gamma/beta, queue,
        random generator state, taken from rank 0)."""
        options = link.options()
        size = options.pop('size')
        new = cls(size, comm, dtype=link._dtype, use_gamma=hasattr(link, 'gamma'),
                  use_beta=hasattr(link, 'beta'), **options)
        state = {}
        link.serialize(chainer.serializers.DictionarySerializer(state))
        new.serialize(chainer.serializers.NpzDeserializer(state))
        new._share_rng()
        if link.device is not None:
            new.to_device(link.device)
        return new

    def _share_rng(self):
        state = self.comm.mpi_comm.bcast(json.dumps(self._rng.bit_generator.state), root=0)
        self._rng.bit_generator.state = json.loads(state)

    def forward(self, x):
        if not chainer.config.train:
            return super().forward(x)
        xa = x.array if isinstance(x, chainer.Variable) else x
        error, rows = None, None
        try:
            check_input(xa, self.size)
            rows = to_rows(xa).astype(compute_dtype(xa.dtype), copy=False)
            problem = rows_problem(rows, self.reg_covar, self.comm.size * rows.shape[0])
            if problem is not None:
                error = training_input_error(problem, xa.shape)
        except ValueError as e:
            error = str(e)
        reduction = AllReduce.agree(self.comm, 0 if rows is None else rows.shape[0], error,
                                    self.communication)
        gamma, beta = scale_shift(self)
        return self._forward_train(x, xa, gamma, beta, rows=rows, reduction=reduction)


def create_multi_node_mn_model(link, comm):
    """Replace, in place, every :class:`MixtureNormalization` under ``link`` by a
    :class:`MultiNodeMixtureNormalization` with the same options and state; returns ``link``.

    The MN counterpart of ``chainermn.links.create_mnbn_model`` (which does the same for
    ``L.BatchNormalization`` and returns a copy).
    """
    if isinstance(link, chainer.ChainList):
        for i, child in enumerate(list(link._children)):
            if _is_local_mn(child):
                new = MultiNodeMixtureNormalization.from_link(child, comm)
                new.name = child.name
                link._children[i] = new
            else:
                create_multi_node_mn_model(child, comm)
    elif isinstance(link, chainer.Chain):
        for name in sorted(link._children):
            child = getattr(link, name)
            if _is_local_mn(child):
                new = MultiNodeMixtureNormalization.from_link(child, comm)
                delattr(link, name)
                with link.init_scope():
                    setattr(link, name, new)
            else:
                create_multi_node_mn_model(child, comm)
    return link


def _is_local_mn(link):
    return isinstance(link, MixtureNormalization) and \
        not isinstance(link, MultiNodeMixtureNormalization)
