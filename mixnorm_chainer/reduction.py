"""Where a mini-batch's rows are: the sums over rows that a fit and a transform need.

Every quantity the GMM fit (:mod:`mixnorm_chainer.gmm`, :mod:`mixnorm_chainer.seeding`) and the
transform's statistics (:mod:`mixnorm_chainer.functions`) need from *all* rows is a sum over
rows (k-means++ potentials, Lloyd centroid sums, the EM sufficient statistics ``sum nu``,
``sum nu x``, ``sum nu x^2``) or the row at a drawn index. Those few operations go through a
``reduction`` object: :class:`LocalReduction` (:data:`LOCAL`, the default: all rows are in this
process) or :class:`mixnorm_chainer.multi_node.AllReduce` (rows spread over MPI ranks; the sums
are all-reduced, so every rank fits the mixture of the global batch). The centring constant that
every sum of squares is taken around (:func:`centering_shift`) belongs to the same contract.
"""
import numpy
from chainer.backend import get_array_module


class LocalReduction:
    """The rows of the batch are all in this process: sums over rows are local sums.

    The interface :func:`fit_gmm` uses for every cross-row quantity (see
    :class:`mixnorm_chainer.multi_node.AllReduce` for the distributed one):

    * ``total(m)``: number of rows of the whole batch, given this process's ``m``;
    * ``sum(*arrays)``: the sums over all processes of per-process partial sums;
    * ``take(X, i)``: the row with batch index ``i``, shape (D,);
    * ``candidates(X, closest, targets)``: k-means++ sampling, the rows at the first batch
      index whose cumulative potential (``closest``, cumulated in float64) reaches each target;
    * ``subset(X, ids)``: this process's rows among the sorted batch indices ``ids`` and the
      reduction for that subset (Section 5.1 subsampling);
    * ``shift(X)``: the centring constant of :func:`centering_shift` (or None).
    """

    def total(self, m):
        return m

    def sum(self, *arrays):
        return arrays

    def take(self, X, i):
        return X[i]

    def candidates(self, X, closest, targets):
        xp = get_array_module(X)
        cumulative = xp.cumsum(closest, dtype=numpy.float64)
        ids = xp.minimum(xp.searchsorted(cumulative, targets), X.shape[0] - 1)
        return X[ids]

    def subset(self, X, ids):
        xp = get_array_module(X)
        return X[xp.asarray(ids)], self

    def shift(self, X):
        return centering_shift(X)


LOCAL = LocalReduction()


def centering_shift(X, max_rows=256, max_ratio=100.0):
    """A per-channel constant to subtract from rows X before sums of squares, or None.

    ``sum x^2 / n - mean^2`` in float32 loses about ``(1 + mean^2 / var) * eps`` of relative
    precision. The shift is the mean of <= ``max_rows`` evenly spaced rows; on the CPU it is
    applied only when some channel has ``mean^2 > max_ratio * var`` there (worst loss then
    ~1e-5 relative), saving a full pass over the rows for typical, roughly centred
    activations. On the GPU, where the pass is cheap and the test would cost a host sync,
    it is always applied. Every computation it feeds is shift-invariant.

    The fit computes it (through ``reduction.shift``; the distributed reduction takes the
    global column mean instead) and keeps it as :attr:`GaussianMixture.center`, which the
    transform then uses. X: rows (m, D), or the (N, D, S) view of N*S rows that the kernels
    address (the same rows are sampled, without a transpose).
    """
    xp = get_array_module(X)
    if X.ndim == 3:                       # rows r = n S + s of the (N, D, S) view
        N, D, S = X.shape
        r = xp.arange(0, N * S, max(1, N * S // max_rows))
        sample = X[r // S, :, r % S]
    else:
        sample = X[::max(1, X.shape[0] // max_rows)]
    # in the compute dtype: float16 activations are normalized in float32
    shift = sample.mean(axis=0, dtype=numpy.float32 if X.dtype == numpy.float16 else X.dtype)
    spread = sample.var(axis=0, dtype=shift.dtype)
    if xp is numpy and bool((shift * shift <= max_ratio * spread).all()):
        return None
    return shift
