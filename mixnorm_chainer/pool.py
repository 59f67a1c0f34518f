"""The row pool: rows of a layer's last T training batches, for the paper's first inference
strategy (Section 3.2: one mixture fitted to a pool of past activations;
:func:`mixnorm_chainer.reproduce.refit.pool_fit`).

The rows are chosen without random draws (:func:`pool_indices`), so keeping a pool changes
nothing in training.
"""
import chainer
import numpy
from chainer.backends import cuda

from mixnorm_chainer import options

#: frac(i * golden ratio): the offsets of :func:`pool_indices` in their strata
_GOLDEN = (5 ** 0.5 - 1) / 2


def pool_indices(m, pool_rows):
    """The rows of an m-row batch the pool keeps: ``n = min(pool_rows, m)`` sorted indices, the
    i-th in the i-th of n strata of consecutive rows ``[i m // n, (i + 1) m // n)``, at the
    offset ``floor(frac(i g) * stratum length)`` (g the golden ratio). Evenly strided like
    ``i m // n``, but a stride that is a multiple of a feature map's H*W does not pick the
    same pixel of every image. Deterministic: no random draws."""
    n = min(int(pool_rows), int(m))
    i = numpy.arange(n, dtype=numpy.int64)
    low = i * m // n
    length = (i + 1) * m // n - low
    return low + numpy.floor(i * _GOLDEN % 1.0 * length).astype(numpy.int64)


def pool_memory_bytes(queue_length, pool_rows, size):
    """Memory of a link's row pool: ``queue_length * pool_rows * size * 4`` bytes (float32)."""
    return int(queue_length) * int(pool_rows) * int(size) * 4


class RowPool:
    """``pool_rows`` rows of each of the last ``length`` training batches, oldest entry first.

    ``rows`` (T, pool_rows, C) float32 holds them, ``sizes`` (T,) the rows of each entry (fewer
    when a batch has fewer than ``pool_rows`` rows) and ``count`` the entries filled. With
    ``pool_rows = 0`` the pool keeps nothing.
    """

    #: the arrays and the count, as saved in snapshots (``pool``, ``pool_sizes``, ``pool_count``)
    KEYS = {'rows': 'pool', 'sizes': 'pool_sizes', 'count': 'pool_count'}

    def __init__(self, length, pool_rows, size, xp=numpy):
        self.length = int(length)
        self.pool_rows = options.check('pool_rows', pool_rows)
        self.size = int(size)
        self.rows = xp.zeros((self.length, self.pool_rows, self.size), numpy.float32)
        self.sizes = xp.zeros(self.length, numpy.int64)
        self.count = 0

    def push(self, rows):
        """Keep the batch's :func:`pool_indices` rows as the newest entry (no random draws)."""
        xp = cuda.get_array_module(self.rows)
        ids = pool_indices(rows.shape[0], self.pool_rows)
        self.rows[:-1] = self.rows[1:].copy()
        self.rows[-1] = 0
        self.rows[-1, :ids.size] = rows[xp.asarray(ids)].astype(numpy.float32, copy=False)
        self.sizes[:-1] = self.sizes[1:].copy()
        self.sizes[-1] = ids.size
        self.count = min(self.count + 1, self.length)

    def kept_rows(self):
        """The rows of the filled entries, concatenated oldest first (n, C)."""
        if not self.pool_rows or not self.count:
            raise ValueError('the MN layer keeps no row pool{}: build it with pool_rows > 0 '
                             '(mixnorm-exp run --mn-option pool_rows=N) and train'.format(
                                 '' if self.pool_rows else ' (pool_rows=0)'))
        sizes = cuda.to_cpu(self.sizes)
        xp = cuda.get_array_module(self.rows)
        return xp.concatenate([self.rows[t, :int(sizes[t])]
                               for t in range(self.length - self.count, self.length)])

    @property
    def memory_bytes(self):
        return pool_memory_bytes(self.length, self.pool_rows, self.size)

    def serialize(self, serializer):
        """Save or load the pool. A snapshot without one (older, or saved with pool_rows=0)
        leaves it empty; the link's deserializer skips the missing keys."""
        if isinstance(serializer, chainer.Deserializer):
            self.count = 0
            self.sizes[...] = 0
        serializer(self.KEYS['rows'], self.rows)
        serializer(self.KEYS['sizes'], self.sizes)
        self.count = int(serializer(self.KEYS['count'], self.count))

    def device_resident_accept(self, visitor):
        """Move the arrays with the link (``to_device``, ``to_gpu``)."""
        self.rows = visitor.visit_array(self.rows)
        self.sizes = visitor.visit_array(self.sizes)
