"""Data-parallel runs of ``mixnorm-exp run --communicator`` (ChainerMN): the communicator, each
rank's device and share of the batch, synchronized normalization, and a resume check."""
import chainer
import chainer.training

from mixnorm_chainer.multi_node import create_multi_node_mn_model

COMMUNICATORS = ('naive', 'flat', 'hierarchical', 'two_dimensional', 'single_node',
                 'non_cuda_aware', 'pure_nccl')


def create_communicator(name):
    """``chainermn.create_communicator(name)`` with a clear error when MPI is missing."""
    if name not in COMMUNICATORS:
        raise ValueError('unknown communicator {!r}; one of {}'.format(name, COMMUNICATORS))
    try:
        import chainermn
        from mpi4py import MPI  # noqa: F401
    except ImportError as e:
        raise RuntimeError(
            'ChainerMN needs mpi4py and an MPI runtime ({}); install them with `apt-get '
            'install openmpi-bin libopenmpi-dev` and `pip install mpi4py` (or `pip install '
            '-e .[mpi]`), then launch with `mpiexec -n P mixnorm-exp run ...`'.format(e)) from e
    return chainermn.create_communicator(name)


def rank_device(device, comm):
    """The device of this rank: ``@cupy:<intra-node rank>`` for any cupy device spec."""
    if comm is not None and str(device).startswith('@cupy'):
        return '@cupy:{}'.format(comm.intra_rank)
    return device


def per_rank_batch(batch_size, comm):
    """The global mini-batch ``batch_size`` split evenly over the ranks."""
    if comm is None:
        return batch_size
    if batch_size % comm.size:
        raise ValueError('the batch size {} (the global mini-batch) is not divisible by the {} '
                         'ranks; pass --batch-size a multiple of {}'.format(
                             batch_size, comm.size, comm.size))
    return batch_size // comm.size


def synchronize_normalization(model, comm):
    """BN -> ``chainermn.links.MultiNodeBatchNormalization`` (a copy of ``model``) and MN ->
    :class:`MultiNodeMixtureNormalization`: every normalization sees the global batch."""
    import chainermn
    model = chainermn.links.create_mnbn_model(model, comm)
    return create_multi_node_mn_model(model, comm)


class _ResumeCheck(chainer.training.Extension):
    """After ``--resume`` loaded each rank's newest snapshot, check they are of one iteration."""

    trigger = (1, 'epoch')
    priority = -200                       # initialize after the snapshot's autoload (-100)

    def __init__(self, comm):
        self.comm = comm

    def initialize(self, trainer):
        iterations = self.comm.mpi_comm.allgather(int(trainer.updater.iteration))
        if len(set(iterations)) > 1:
            raise RuntimeError(
                'the ranks resumed from snapshots of different iterations {} (one rank stopped '
                'before writing its snapshot?); delete the newer snapshot_*_rank* files so '
                'that every rank has the same newest one'.format(iterations))

    def __call__(self, trainer):
        pass


def check_resumed_ranks(comm):
    """A trainer extension that fails every rank when their resumed iterations differ."""
    return _ResumeCheck(comm)
