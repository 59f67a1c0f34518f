"""Seedings of the k-means that starts Mixture Normalization's fit (Sections 4.2, 5.1).

* :func:`kmeans_plusplus`: the paper's k-means++ with ``2 + int(log K)`` greedy trials per
  centre (Section 4.2), K - 1 rounds over the rows;
* :func:`afkmc2`: AFK-MC² (Bachem et al., NIPS 2016), the assumption-free MCMC approximation of
  k-means++ that Section 5.1 names: one pass over the rows for the proposal, then Markov chains
  over ``(K - 1) chain_length`` drawn rows on the host (:func:`chain_length_for`).

Both draw from a host ``numpy.random.Generator`` and take their sums over rows through a
``reduction`` (:mod:`mixnorm_chainer.reduction`), so the multi-node layer seeds the global batch.
Rows and distances are laid out (K, m), component-major (see :mod:`mixnorm_chainer.gmm`).
"""
import math

import numpy
from chainer.backend import get_array_module
from chainer.backends import cuda

from mixnorm_chainer import kernels
from mixnorm_chainer.reduction import LOCAL


def squared_distances(X, centers, X_sq):
    """``||x_i - c_k||^2`` as (K, m), via ``|x|^2 - 2 x.c + |c|^2``, clipped at 0."""
    xp = get_array_module(X)
    d2 = xp.ascontiguousarray((X @ centers.T).T)
    d2 *= -2
    d2 += X_sq[None, :]
    d2 += (centers * centers).sum(axis=1)[:, None]
    return xp.maximum(d2, 0, out=d2)


def kmeans_plusplus(X, n_clusters, rng, X_sq=None, reduction=LOCAL):
    """k-means++ seeding (Arthur & Vassilvitskii) with ``2 + int(log K)`` local trials.

    The greedy variant of scikit-learn's ``_kmeans_plusplus``: each new centre is the best of
    ``2 + int(log K)`` candidates sampled with probability proportional to the squared distance
    to the nearest chosen centre (Section 4.2). Potentials are accumulated in float64 (as
    scikit-learn's ``stable_cumsum``). Returns centres of shape (K, D).
    """
    xp = get_array_module(X)
    m = reduction.total(X.shape[0])
    if X_sq is None:
        X_sq = (X * X) @ xp.ones(X.shape[1], X.dtype)
    n_local_trials = 2 + int(math.log(n_clusters))
    centers = xp.empty((n_clusters, X.shape[1]), dtype=X.dtype)
    centers[0] = reduction.take(X, int(rng.integers(m)))
    closest = _nearest_squared_distances(X, centers[:1], None, X_sq)[0]
    potential, = reduction.sum(closest.sum(dtype=numpy.float64))
    for c in range(1, n_clusters):
        targets = xp.asarray(rng.random(n_local_trials)) * potential
        candidates = reduction.candidates(X, closest, targets)
        dist = _nearest_squared_distances(X, candidates, closest, X_sq)   # (trials, m)
        candidate_potentials, = reduction.sum(dist.sum(axis=1, dtype=numpy.float64))
        best = candidate_potentials.argmin()
        potential = candidate_potentials[best]
        closest = dist[best]
        centers[c] = candidates[best]
    return centers


def chain_length_for(n_rows, n_clusters):
    """Section 5.1's guidance for the MCMC seeding's chain length, ``m in Theta(K log^2 n
    log K)`` (Bachem et al.'s bound for K-MC²), with constant 1 and natural logarithms:
    ``ceil(K ln(n)^2 ln K)``, at least 1 (K = 3: 58 for 64 rows, 311 for 16384)."""
    n, k = max(int(n_rows), 2), max(int(n_clusters), 2)
    return max(1, int(math.ceil(k * math.log(n) ** 2 * math.log(k))))


def afkmc2(X, n_clusters, rng, chain_length=None, X_sq=None, reduction=LOCAL):
    """AFK-MC² seeding (Bachem, Lucic, Hassani & Krause, NIPS 2016; Section 5.1's [50]).

    The assumption-free MCMC approximation of k-means++: the first centre is a uniformly drawn
    row; one pass over the rows builds the proposal ``q(x) = d(x, c_1)^2 / (2 sum d^2) +
    1 / (2 n)``; each further centre is the end of a Metropolis-Hastings chain of
    ``chain_length`` rows drawn from q, which moves from x to y with probability
    ``min(1, d(y, C)^2 q(x) / (d(x, C)^2 q(y)))`` (d: distance to the nearest chosen centre).
    All chains' rows are drawn at once after that pass, so the rows are read twice (the
    proposal and the drawn rows) instead of once per centre, and the chains run on the host
    over ``(K - 1) chain_length`` drawn rows (one transfer). ``chain_length`` None:
    :func:`chain_length_for`. Returns centres of shape (K, D).
    """
    xp = get_array_module(X)
    m = reduction.total(X.shape[0])
    if chain_length is None:
        chain_length = chain_length_for(m, n_clusters)
    if X_sq is None:
        X_sq = (X * X) @ xp.ones(X.shape[1], X.dtype)
    first = reduction.take(X, int(rng.integers(m)))
    if n_clusters == 1:
        return first[None]
    d1 = _nearest_squared_distances(X, first[None], None, X_sq)[0]
    total, = reduction.sum(d1.sum(dtype=numpy.float64))
    # q = d^2 / (2 total) + 1 / (2 m); all rows at the first centre (total 0): q uniform
    share = xp.where(total > 0, 0.5 / xp.where(total > 0, total, 1), 0)
    floor = xp.where(total > 0, 0.5 / m, 1.0 / m)
    draws = rng.random((n_clusters - 1) * chain_length)
    rows = reduction.candidates(X, d1.astype(numpy.float64) * share + floor, xp.asarray(draws))
    host = cuda.to_cpu(xp.concatenate([share[None], floor[None], first.astype(numpy.float64),
                                       rows.astype(numpy.float64).ravel()]))   # one transfer
    share, floor, first = host[0], host[1], host[2:2 + X.shape[1]]
    rows = host[2 + X.shape[1]:].reshape(-1, X.shape[1])
    q_rows = ((rows - first) ** 2).sum(axis=1) * share + floor
    accept_draws = rng.random((n_clusters - 1, chain_length))
    centers = [first]
    for c in range(n_clusters - 1):
        chain = slice(c * chain_length, (c + 1) * chain_length)
        d = numpy.min([((rows[chain] - centre) ** 2).sum(axis=1) for centre in centers], axis=0)
        qc = q_rows[chain]
        x = 0
        for j in range(1, chain_length):     # accept y when d_y q_x > u d_x q_y (no division)
            if d[j] * qc[x] > accept_draws[c, j] * d[x] * qc[j]:
                x = j
        centers.append(rows[chain][x])
    return xp.asarray(numpy.stack(centers).astype(X.dtype))


def _nearest_squared_distances(X, candidates, closest, X_sq):
    """``min(closest, ||x - c_t||^2)`` (T, m) (``closest`` None: the distances themselves)."""
    if kernels.enabled(X):
        if closest is None:
            closest = get_array_module(X).full(X.shape[0], numpy.inf, X.dtype)
        return kernels.nearest_squared_distances(X, candidates, closest)
    dist = squared_distances(X, candidates, X_sq)
    if closest is not None:
        get_array_module(X).minimum(closest[None, :], dist, out=dist)
    return dist
