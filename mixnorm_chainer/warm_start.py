"""Warm-started training fits (``init='previous'``) and the rule that decides when to reseed.

The paper fits every training step's mixture from scratch (k-means++, k-means, EM; Section
4.2). With ``init='previous'`` a layer instead starts EM from the mixture it fitted at the
previous step (the newest entry of its parameter queue: the fitted GMM, not the Eq. 35-36
statistics) and skips the seeding and k-means passes. Component k of one step then continues
component k of the step before, so the queue's entries line up component by component.

It reseeds (the layer's k-means++ fit) when the previous mixture cannot or should not be the
start. In the order they are checked:

* ``'first'``: there is no previous mixture (the first training step, an empty queue);
* ``'every'``: ``reseed_every`` > 0 steps have passed since the last seeding;
* ``'pruned'``: the previous fit lost a component to pruning (Section 5.3), so it has fewer
  than K; a warm start would keep it at K' < K for good;
* ``'collapse'``: after the first EM iteration from the previous mixture some component's
  weight is below ``min_weight``: it explains (almost) none of this batch and would be pruned;
* ``'drop'``: the batch's mean log-likelihood per channel under the previous mixture fell more
  than ``reseed_drop`` nats below its running average over the warm steps since the last
  'drop' (an exponential average, decay 0.9): the batch moved away from the mixture. Across
  i.i.d. batches of a stationary distribution this score varies by about sd/sqrt(m) (a few
  hundredths of a nat for m in the thousands); a 0.5-nat drop per channel is what moving every
  point by one standard deviation of its component costs, so the default 0.5 reseeds on such
  jumps and not on sampling noise or the gradual drift of training.

'first' and 'every' are decided on the host before fitting. 'pruned', 'collapse' and 'drop'
are decided from the first warm EM iteration, with the one host transfer that the decision
needs (:func:`mixnorm_chainer.gmm.warm_start_em`): the fit stops there and the layer reseeds
(docs/seeding.md counts how often). The previous mixture stays where the queue is: a warm step
transfers nothing else to the host. A reseeded fit's components are put in the order of the
previous mixture's (the assignment that minimizes the summed standardized squared distances of
the means, :func:`align`), so reseeding does not reorder the queue either.

The decision is made from host values computed from all-reduced sums (the start score and
weights, :func:`mixnorm_chainer.gmm.warm_start_em`), so every rank of
:class:`~mixnorm_chainer.multi_node.MultiNodeMixtureNormalization` makes the same one. The
state (:attr:`WarmStart.state`: steps since seeding, the running score, counts of each
decision, the last decision) is saved by the layer's serializer, so a resumed run decides as
the uninterrupted one.
"""
import numpy
from chainer.backend import get_array_module
from chainer.backends import cuda
from scipy.optimize import linear_sum_assignment

from mixnorm_chainer.gmm import GaussianMixture

#: why a step reseeded, in the order the rule checks
REASONS = ('first', 'every', 'pruned', 'collapse', 'drop')
#: decay of the running average of the start score
SCORE_DECAY = 0.9


class WarmStart:
    """When a layer's training fit starts from the previous mixture, and when it reseeds.

    Args:
        reseed_every: reseed after this many steps since the last seeding (0: never for this
            reason).
        reseed_drop: the 'drop' threshold, nats per channel.
        min_weight: the 'collapse' threshold (the layer's pruning threshold).
    """

    def __init__(self, reseed_every=0, reseed_drop=0.5, min_weight=0.01):
        self.reseed_every = int(reseed_every)
        self.reseed_drop = float(reseed_drop)
        self.min_weight = float(min_weight)
        self.state = self.initial_state()

    @staticmethod
    def initial_state():
        return {'since_seeding': 0, 'score': None, 'warm': 0, 'last': None,
                'reseeds': {reason: 0 for reason in REASONS}}

    def fit(self, fit, previous, dim, n_components):
        """One training step's mixture. ``fit(init, accept)`` fits the batch: ``init`` a mixture
        to start from, with ``accept`` (a function of the
        :class:`~mixnorm_chainer.gmm.StartInfo` that may stop the fit after its first EM
        iteration, making ``fit`` return None), or ``'seed'`` (``accept`` None).
        ``previous``: the newest queue entry's fitted ``(weights, means, variances)`` (float64,
        where the queue is; pruned components with weight 0), or None. ``dim``: channels, for
        the per-channel score; ``n_components``: K."""
        reason = self.reason_before(previous)
        if reason is None:
            verdict = []

            def accept(start):
                verdict.append(self.reason_after(start, dim, n_components))
                return verdict[0] is None

            gmm = fit(previous, accept)
            if gmm is not None:
                self._record(None)
                return gmm
            reason = verdict[0]
        gmm = fit('seed', None)
        if previous is not None:
            gmm = align(gmm, previous)
        self._record(reason)
        return gmm

    def reason_before(self, previous):
        """'first', 'every' or None (try a warm start), before fitting (host values only)."""
        if previous is None:
            return 'first'
        if self.reseed_every and self.state['since_seeding'] >= self.reseed_every:
            return 'every'
        return None

    def reason_after(self, start, dim, n_components):
        """'pruned', 'collapse', 'drop' or None (keep the warm fit), from the first warm EM
        iteration's :class:`~mixnorm_chainer.gmm.StartInfo`; a kept fit's score enters the
        running average."""
        if start.live < n_components:
            return 'pruned'
        if float(numpy.min(start.weights)) < self.min_weight:
            return 'collapse'
        score = start.score / dim
        reference = self.state['score']
        if reference is not None and score < reference - self.reseed_drop:
            self.state['score'] = None          # a new regime: a new reference
            return 'drop'
        self.state['score'] = score if reference is None else \
            SCORE_DECAY * reference + (1 - SCORE_DECAY) * score
        return None

    def _record(self, reason):
        state = self.state
        state['last'] = 'warm' if reason is None else reason
        if reason is None:
            state['warm'] += 1
            state['since_seeding'] += 1
        else:
            state['reseeds'][reason] += 1
            state['since_seeding'] = 1

    @property
    def reseeds(self):
        """How many steps reseeded, in total."""
        return sum(self.state['reseeds'].values())


def align(gmm, previous):
    """``gmm`` with its components reordered to follow ``previous`` (weights, means, variances;
    components of weight 0 have no partner): the assignment of new to previous components that
    minimizes ``sum_c (mu_new - mu_prev)^2 / (sigma_new^2 + sigma_prev^2)`` (scipy's
    ``linear_sum_assignment`` on the K' x K costs, computed where the arrays are; one host
    transfer); components without a partner go last, in their order. The mixture is the same;
    only the order changes (the transform does not depend on it, the queue's entries do)."""
    xp = get_array_module(gmm.weights)
    weights, means, variances = (xp.asarray(a, dtype=numpy.float64) for a in previous)
    new_vars = gmm.variances.astype(numpy.float64)
    cost = (((gmm.means64[:, None] - means[None]) ** 2) /
            (new_vars[:, None] + variances[None])).sum(axis=2)
    cost = cuda.to_cpu(xp.concatenate([cost, weights[None]]))
    live = cost[-1] > 0
    cost = numpy.where(live[None], cost[:-1], numpy.inf)
    cost = cost[:, live]
    rows, cols = linear_sum_assignment(cost)
    order = list(rows[numpy.argsort(cols)]) + [k for k in range(len(cost)) if k not in rows]
    if order == list(range(len(cost))):
        return gmm
    index = xp.asarray(order)
    aligned = GaussianMixture.from_centred(gmm.weights[index], gmm.centred_means[index],
                                           gmm.variances[index], gmm.center)
    if hasattr(gmm, 'start'):
        aligned.start = gmm.start
    return aligned
