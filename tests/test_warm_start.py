"""Cheaper seeding (issue 24): AFK-MC² (``init='afkmc2'``) and warm-started EM
(``init='previous'``, :mod:`mixnorm_chainer.warm_start`): the seeding against an independent
implementation, warm fits against cold ones on a stationary stream, the reseeding rule, the
queue's component order, resume and recomputation. The multi-rank layer with both options is
checked in tests/mpi/check_multi_node.py."""
import math

import chainer
import chainer.functions as F
import numpy
import pytest
from sklearn.cluster import kmeans_plusplus
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from mixnorm_chainer import MixtureNormalization, fit_gmm, gmm, seeding
from mixnorm_chainer.queue import aligned_mixture
from mixnorm_chainer.warm_start import REASONS, WarmStart, align

from script_loader import load_script

CENTRES = numpy.array([[-4.0, 0.0, 2.0], [3.0, 3.0, -1.0], [0.0, -5.0, 0.0]])
SCALES = numpy.array([1.0, 0.6, 0.8])
WEIGHTS = numpy.array([0.5, 0.3, 0.2])


def mixture_batch(rng, m=600, shift=0.0, weights=WEIGHTS):
    """m rows from the 3-component mixture above (a stationary stream when shift is 0)."""
    labels = rng.choice(len(weights), size=m, p=weights)
    return CENTRES[labels] + shift + SCALES[labels, None] * rng.normal(size=(m, 3))


def conv_batch(rng, n=48, shift=0.0, weights=WEIGHTS):
    """An (n, 3, 2, 2) activation whose pixel rows follow the mixture (4 rows per sample)."""
    rows = mixture_batch(rng, 4 * n, shift, weights)
    return rows.reshape(n, 2, 2, 3).transpose(0, 3, 1, 2).copy()


def matched(a, b):
    """Max |a_k - b_pi(k)| over the best permutation pi of b's components (means (K, D))."""
    from scipy.optimize import linear_sum_assignment
    cost = numpy.abs(a[:, None] - b[None]).max(axis=2)
    r, c = linear_sum_assignment(cost)
    return cost[r, c].max(), c


# -- AFK-MC² --------------------------------------------------------------------------------

def reference_afkmc2(X, K, rng, L):
    """AFK-MC² written from Bachem et al. (2016), Algorithm 1, in float64 with the same draws
    as :func:`seeding.afkmc2` (first index, proposal draws, acceptance draws)."""
    n = len(X)
    c1 = X[int(rng.integers(n))]
    d2 = ((X - c1) ** 2).sum(axis=1)
    q = 0.5 * d2 / d2.sum() + 0.5 / n
    cumulative = numpy.cumsum(q)
    u = rng.random((K - 1) * L)
    idx = numpy.minimum(numpy.searchsorted(cumulative, u), n - 1)
    acc = rng.random((K - 1, L))
    C = [c1]
    for k in range(K - 1):
        chain = idx[k * L:(k + 1) * L]

        def dist(i):
            return min(((X[i] - c) ** 2).sum() for c in C)
        x = chain[0]
        dx = dist(x)
        for j in range(1, L):
            y = chain[j]
            dy = dist(y)
            if dx == 0 or dy * q[x] / (dx * q[y]) > acc[k, j]:
                x, dx = y, dy
        C.append(X[x])
    return numpy.array(C)


@pytest.mark.parametrize('K,L', [(2, 1), (3, 5), (4, 40)])
def test_afkmc2_equals_an_independent_implementation(K, L):
    X = mixture_batch(numpy.random.default_rng(K), 300)
    ours = seeding.afkmc2(X, K, numpy.random.default_rng(7), chain_length=L)
    theirs = reference_afkmc2(X, K, numpy.random.default_rng(7), L)
    numpy.testing.assert_array_equal(ours, theirs)


def seeding_cost(X, centres):
    return ((X[:, None] - centres[None]) ** 2).sum(axis=2).min(axis=1).sum()


def test_afkmc2_chain_approaches_kmeans_plusplus():
    """AFK-MC² approximates plain k-means++ (one trial per centre; scikit-learn's
    ``kmeans_plusplus(n_local_trials=1)`` as the reference): with Section 5.1's chain length its
    seeding potential is within a few percent of it (measured 4412 vs 4331, medians over 200
    seeds); a chain of one row is a draw from the proposal alone and is far worse (10135): the
    chain does the work. The paper's greedy k-means++ (2 + log K trials) is better still (3639)."""
    X = mixture_batch(numpy.random.default_rng(0), 900)
    costs = {}
    for name, seed_fn in (
            ('kmeans++ 1 trial', lambda s: kmeans_plusplus(X, 3, random_state=s,
                                                           n_local_trials=1)[0]),
            ('afkmc2 L=1', lambda s: seeding.afkmc2(X, 3, numpy.random.default_rng(s), 1)),
            ('afkmc2', lambda s: seeding.afkmc2(X, 3, numpy.random.default_rng(s)))):
        costs[name] = numpy.median([seeding_cost(X, seed_fn(s)) for s in range(200)])
    assert abs(costs['afkmc2'] / costs['kmeans++ 1 trial'] - 1) < 0.1
    assert costs['afkmc2 L=1'] > 2 * costs['afkmc2']


def test_chain_length_follows_section_5_1():
    assert seeding.chain_length_for(16384, 3) == math.ceil(3 * math.log(16384) ** 2 * math.log(3))
    assert seeding.chain_length_for(64, 3) == 58
    assert seeding.chain_length_for(10, 1) >= 1


def test_afkmc2_fit_recovers_the_mixture_like_scikit_learn():
    X = mixture_batch(numpy.random.default_rng(1), 3000)
    ours = fit_gmm(X, 3, kmeans_iters=3, em_iters=20, seed=0, init='afkmc2')
    sk = SkGaussianMixture(3, covariance_type='diag', random_state=0).fit(X)
    err, _ = matched(numpy.asarray(ours.means), sk.means_)
    assert err < 1e-3
    assert ours.score(X) == pytest.approx(sk.score(X), abs=1e-4)


def test_afkmc2_on_constant_rows_is_finite():
    X = numpy.ones((50, 3))
    g = fit_gmm(X, 3, seed=0, init='afkmc2')
    assert numpy.isfinite(g.variances).all() and g.n_components >= 1


# -- warm-started fits ----------------------------------------------------------------------

def stream(seed, steps, m=600):
    rng = numpy.random.default_rng(seed)
    return [mixture_batch(rng, m) for _ in range(steps)]


def count_passes(monkeypatch):
    """Count the passes over the rows of a fit: distance passes of the seeding, k-means
    assignments, E-steps, M-steps."""
    counts = dict.fromkeys(('seeding', 'kmeans', 'e_step', 'm_step'), 0)
    for module, name, key in ((seeding, '_nearest_squared_distances', 'seeding'),
                              (gmm, 'kmeans_assign', 'kmeans'), (gmm, 'e_step', 'e_step'),
                              (gmm, 'component_moments', 'm_step')):
        original = getattr(module, name)

        def counted(*a, _o=original, _k=key, **kw):
            counts[_k] += 1
            return _o(*a, **kw)
        monkeypatch.setattr(module, name, counted)
    return counts


def test_warm_fits_converge_to_the_cold_fits_with_fewer_passes(monkeypatch):
    """On a stationary stream, EM warm-started from the previous batch's fit lands on the
    mixture cold fits find (within sampling noise), in fewer passes over the rows."""
    batches = stream(0, 12)
    counts = count_passes(monkeypatch)
    previous, warm, cold = None, [], []
    for t, X in enumerate(batches):
        before = dict(counts)
        c = fit_gmm(X, 3, kmeans_iters=1, em_iters=1, seed=t)
        cold_passes = sum(counts.values()) - sum(before.values())
        before = dict(counts)
        w = c if previous is None else fit_gmm(X, 3, em_iters=2, init=previous, seed=t)
        warm_passes = sum(counts.values()) - sum(before.values())
        previous = w
        if t:
            assert warm_passes < cold_passes
            warm.append(w)
            cold.append(c)
    # warm: 2 E-steps + 2 M-steps; cold: 3 seeding passes, 2 assignments, 1 E-step, 2 M-steps
    assert (warm_passes, cold_passes) == (4, 8)
    truth_err = [matched(numpy.asarray(w.means), CENTRES)[0] for w in warm]
    # the rows' own sampling noise: sd / sqrt(n_k) of the smallest component ~ 0.8/sqrt(120)
    assert max(truth_err) < 0.25
    for w, c, X in zip(warm, cold, batches[1:]):
        err, perm = matched(numpy.asarray(w.means), numpy.asarray(c.means))
        assert err < 0.015, err                      # measured <= 1.3e-3
        assert w.score(X) >= c.score(X) - 3e-13       # measured <= 2.2e-14 below
    # warm starts keep the order: component k describes the same mode at every step
    orders = [tuple(matched(numpy.asarray(w.means), CENTRES)[1]) for w in warm]
    assert len(set(orders)) == 1


def test_warm_start_from_a_converged_mixture_needs_no_seeding(monkeypatch):
    X = mixture_batch(numpy.random.default_rng(2), 900)
    previous = fit_gmm(X, 3, kmeans_iters=3, em_iters=30, seed=0)
    counts = count_passes(monkeypatch)
    again = fit_gmm(X, 3, em_iters=1, init=previous, seed=0)
    assert counts['seeding'] == 0 and counts['kmeans'] == 0
    err, perm = matched(numpy.asarray(again.means), numpy.asarray(previous.means))
    assert list(perm) == [0, 1, 2] and err < 1e-4
    assert again.start.score == pytest.approx(previous.score(X), rel=1e-10)
    numpy.testing.assert_allclose(again.start.weights, again.weights, rtol=1e-6)
    assert again.start.live == 3


def test_warm_start_input_errors():
    X = mixture_batch(numpy.random.default_rng(0), 100)
    for init, fragment in (('previous', "got 'previous'"), ('random', 'fit_gmm init must be'),
                           ((numpy.ones(2), numpy.zeros((2, 4)), numpy.ones((2, 4))),
                            'a mixture of 1..3 components over 3 channels'),
                           ((numpy.ones(2), numpy.zeros((2, 3)), numpy.zeros((2, 3))),
                            'variances > 0'),
                           ((numpy.zeros(2), numpy.zeros((2, 3)), numpy.ones((2, 3))),
                            'not all 0'),
                           (42, 'got int')):
        with pytest.raises(ValueError, match='fit_gmm init') as e:
            fit_gmm(X, 3, init=init)
        assert fragment in str(e.value) and '\n' not in str(e.value)
    with pytest.raises(ValueError, match='chain_length must be an integer >= 1'):
        fit_gmm(X, 3, init='afkmc2', chain_length=0)
    for bad in (dict(init='warm'), dict(reseed_every=-1), dict(reseed_drop=0),
                dict(chain_length=2.5)):
        with pytest.raises(ValueError) as e:
            MixtureNormalization(3, **bad)
        assert list(bad)[0] in str(e.value) and '\n' not in str(e.value)


# -- the layer: reseeding rule, order, state -----------------------------------------------

def train_steps(link, batches):
    ys = []
    for x in batches:
        ys.append(link(x).array)
    return ys


def test_reseeding_rule_triggers_where_it_says():
    rng = numpy.random.default_rng(0)
    link = MixtureNormalization(3, init='previous', seed=0, dtype=numpy.float64)
    decisions = []
    for _ in range(8):                                   # stationary: seeded once
        link(conv_batch(rng))
        decisions.append(link.warm_start.state['last'])
    assert decisions == ['first'] + ['warm'] * 7
    link(conv_batch(rng, shift=1.5))                     # the batch jumps: 'drop'
    assert link.warm_start.state['last'] == 'drop'
    link(conv_batch(rng, shift=1.5))
    assert link.warm_start.state['last'] == 'warm'
    link(conv_batch(rng, shift=1.5, weights=[0.5, 0.5, 0.0]))   # a mode vanishes: 'collapse'
    assert link.warm_start.state['last'] == 'collapse'
    link(conv_batch(rng, shift=1.5))
    link.queue.fit_weights[-1, 2] = 0                    # the previous fit lost a component
    link(conv_batch(rng, shift=1.5))
    assert link.warm_start.state['last'] == 'pruned'
    reseeds = link.warm_start.state['reseeds']
    # the step after 'collapse' reseeds too ('drop'): its fit split the two modes in three
    assert reseeds == dict(first=1, pruned=1, every=0, collapse=1, drop=2)
    assert set(reseeds) == set(REASONS)

    every = MixtureNormalization(3, init='previous', reseed_every=3, seed=0)
    seen = []
    for _ in range(7):
        every(conv_batch(rng).astype(numpy.float32))
        seen.append(every.warm_start.state['last'])
    assert seen == ['first', 'warm', 'warm', 'every', 'warm', 'warm', 'every']


def test_no_false_reseeds_on_a_stationary_stream():
    """The 'drop' threshold sits far above the score's batch-to-batch noise."""
    rng = numpy.random.default_rng(3)
    link = MixtureNormalization(3, init='previous', seed=1)
    scores = []
    for _ in range(40):
        link(conv_batch(rng, n=32).astype(numpy.float32))
        if link.warm_start.state['last'] == 'warm':
            scores.append(link.last_fit.start.score / 3)
    assert link.warm_start.reseeds == 1
    assert numpy.std(scores) < 0.2 * link.reseed_drop    # measured 0.047 (128 rows a batch)


def test_the_rule_can_fail():
    """Planted: a rule whose threshold is below the score's noise reseeds on plain batches."""
    rng = numpy.random.default_rng(3)
    link = MixtureNormalization(3, init='previous', seed=1, reseed_drop=1e-4)
    for _ in range(20):
        link(conv_batch(rng, n=32).astype(numpy.float32))
    assert link.warm_start.state['reseeds']['drop'] > 0


def queue_orders(link):
    """For each filled queue entry, the permutation taking its fitted means to CENTRES."""
    T = link.queue.count
    return [tuple(matched(link.queue.fit_means[-1 - t], CENTRES)[1]) for t in range(T)]


def test_reseeded_fits_keep_the_queue_order(monkeypatch):
    """A planted label switch: every step reseeds (reseed_every=1) and the seeding returns its
    centres in another order each time; aligned, every queue entry's component k still describes
    the same mode. Without the alignment (init='kmeans++', the paper's) the order changes."""
    original = seeding.kmeans_plusplus
    calls = []

    def shuffled(X, K, rng, *a, **kw):
        centres = original(X, K, rng, *a, **kw)
        calls.append(1)
        return centres[numpy.roll(numpy.arange(K), len(calls))]
    monkeypatch.setattr(gmm, 'kmeans_plusplus', shuffled)
    rng = numpy.random.default_rng(5)
    batches = [conv_batch(rng) for _ in range(6)]
    aligned = MixtureNormalization(3, init='previous', reseed_every=1, seed=0,
                                   dtype=numpy.float64)
    train_steps(aligned, batches)
    assert aligned.warm_start.state['reseeds']['every'] == 5
    assert len(set(queue_orders(aligned))) == 1
    plain = MixtureNormalization(3, seed=0, dtype=numpy.float64)
    train_steps(plain, batches)
    assert len(set(queue_orders(plain))) > 1


def test_a_permuted_previous_mixture_gives_the_same_output():
    """Planted label switch in the queue: the newest entry's components reversed. The warm fit
    starts from that order, keeps it, and normalizes exactly as from the original order."""
    rng = numpy.random.default_rng(6)
    batches = [conv_batch(rng) for _ in range(3)]
    a = MixtureNormalization(3, init='previous', seed=0, dtype=numpy.float64)
    b = MixtureNormalization(3, init='previous', seed=0, dtype=numpy.float64)
    train_steps(a, batches[:2])
    train_steps(b, batches[:2])
    for name in ('fit_weights', 'fit_means', 'fit_variances'):
        getattr(b.queue, name)[-1] = getattr(b.queue, name)[-1][::-1].copy()
    ya, = train_steps(a, batches[2:])
    yb, = train_steps(b, batches[2:])
    numpy.testing.assert_allclose(yb, ya, rtol=0, atol=7e-14)     # measured 7.1e-15
    numpy.testing.assert_allclose(b.queue.fit_means[-1], a.queue.fit_means[-1][::-1],
                                  rtol=1e-15)                          # measured 0


def test_align_puts_components_in_the_previous_order():
    X = mixture_batch(numpy.random.default_rng(0), 900)
    g = fit_gmm(X, 3, kmeans_iters=2, em_iters=10, seed=0)
    order = numpy.array([2, 0, 1])
    previous = (numpy.asarray(g.weights)[order], g.means64[order],
                numpy.asarray(g.variances, numpy.float64)[order])
    a = align(g, previous)
    numpy.testing.assert_array_equal(a.means64, previous[1])
    numpy.testing.assert_array_equal(numpy.asarray(a.weights), previous[0])
    assert align(g, (g.weights, g.means64, g.variances)) is g


def snapshot(link):
    state = {}
    link.serialize(chainer.serializers.DictionarySerializer(state))
    return state


@pytest.mark.parametrize('init', ['previous', 'afkmc2'])
def test_resume_is_bit_identical(init):
    rng = numpy.random.default_rng(8)
    batches = [conv_batch(rng).astype(numpy.float32) for _ in range(8)]
    batches[5] = batches[5] + 1.5     # a 'drop' reseed after the resume point
    options = dict(init=init, reseed_every=4, seed=3)
    whole = MixtureNormalization(3, **options)
    ys = train_steps(whole, batches)
    first = MixtureNormalization(3, **options)
    train_steps(first, batches[:3])
    saved = snapshot(first)
    resumed = MixtureNormalization(3, init='kmeans++', seed=99)     # options come from the file
    resumed.serialize(chainer.serializers.NpzDeserializer(saved))
    assert resumed.init == init
    ys_resumed = train_steps(resumed, batches[3:])
    for a, b in zip(ys[3:], ys_resumed):
        numpy.testing.assert_array_equal(a, b)
    assert resumed.warm_start.state == whole.warm_start.state
    if init == 'previous':
        assert whole.warm_start.state['reseeds']['every'] >= 1
        assert whole.warm_start.state['reseeds']['drop'] == 1
    numpy.testing.assert_array_equal(resumed.queue.fit_means, whole.queue.fit_means)


def test_snapshot_without_warm_start_state_loads():
    """An older snapshot (no init options, no warm-start state) loads as init='kmeans++'."""
    link = MixtureNormalization(3, seed=0)
    link(conv_batch(numpy.random.default_rng(0)).astype(numpy.float32))
    saved = snapshot(link)
    del saved['mn_init_state']
    import json
    opts = json.loads(saved['mn_options'].tobytes().decode())
    for name in ('init', 'chain_length', 'reseed_every', 'reseed_drop'):
        del opts[name]
    saved['mn_options'] = numpy.frombuffer(json.dumps(opts).encode(), numpy.uint8)
    other = MixtureNormalization(3, init='previous', seed=1)
    other.serialize(chainer.serializers.NpzDeserializer(saved))
    assert other.init == 'kmeans++' and other.warm_start.state['warm'] == 0


def test_recomputation_reuses_the_warm_fit():
    """Under F.forget the second call normalizes with the first call's (warm) mixture and the
    warm start's state advances once per step."""
    rng = numpy.random.default_rng(9)
    batches = [conv_batch(rng) for _ in range(3)]
    plain = MixtureNormalization(3, init='previous', seed=0, dtype=numpy.float64)
    forgot = MixtureNormalization(3, init='previous', seed=0, dtype=numpy.float64)
    for x in batches:
        xv, xf = chainer.Variable(x.copy()), chainer.Variable(x.copy())
        y = plain(xv)
        yf = F.forget(forgot, xf)
        for out in (y, yf):
            out.grad = numpy.cos(numpy.arange(out.size)).reshape(out.shape)
            out.backward()
        numpy.testing.assert_array_equal(y.array, yf.array)
        numpy.testing.assert_array_equal(xf.grad, xv.grad)             # measured: equal
    assert forgot.warm_start.state == plain.warm_start.state
    assert plain.warm_start.state['warm'] == 2


def test_warm_start_state_counts():
    ws = WarmStart(reseed_every=2)
    assert ws.reason_before(None) == 'first'
    previous = (numpy.array([0.5, 0.5, 0.0]), numpy.zeros((3, 2)), numpy.ones((3, 2)))
    assert ws.reason_before(previous) is None
    assert ws.reason_after(gmm.StartInfo(-1.0, numpy.array([0.5, 0.5, 1e-12]), 2), 2, 3) \
        == 'pruned'
    assert ws.reason_after(gmm.StartInfo(-1.0, numpy.array([0.5, 0.495, 0.005]), 3), 2, 3) \
        == 'collapse'
    assert ws.reason_after(gmm.StartInfo(-1.0, numpy.array([0.4, 0.3, 0.3]), 3), 2, 3) is None
    assert ws.state['score'] == -0.5
    assert ws.reason_after(gmm.StartInfo(-3.0, numpy.array([0.4, 0.3, 0.3]), 3), 2, 3) == 'drop'
    ws.state['since_seeding'] = 2
    assert ws.reason_before(previous) == 'every'


# -- test mode over aligned entries ----------------------------------------------------------

def test_aligned_mixture_of_equal_entries_is_that_entry():
    rng = numpy.random.default_rng(0)
    w = numpy.array([0.2, 0.0, 0.8])
    mu, var = rng.normal(size=(3, 4)), rng.random((3, 4)) + 0.1
    q = (numpy.tile(w, (5, 1)), numpy.tile(mu, (5, 1, 1)), numpy.tile(var, (5, 1, 1)))
    lam, m, v = aligned_mixture(*q, n_present=4, decay=0.9)
    numpy.testing.assert_allclose(lam[0], w, rtol=1e-15)             # measured 0
    numpy.testing.assert_allclose(m[0][[0, 2]], mu[[0, 2]], rtol=2e-15)   # measured 1.8e-16
    numpy.testing.assert_allclose(v[0][[0, 2]], var[[0, 2]], rtol=2e-15)  # measured 2.2e-16
    assert (m[0][1] == 0).all() and (v[0][1] == 1).all()       # a slot with no mass


def test_aligned_mixture_matches_the_moments_of_each_slot():
    """Slot k's merged Gaussian has the mean and variance of the tau*lambda-weighted mixture of
    the entries' k-th components (computed here as E[x] and E[x^2] - E[x]^2)."""
    rng = numpy.random.default_rng(1)
    T, K, C = 4, 3, 2
    w = rng.dirichlet(numpy.ones(K), size=T)
    mu, var = rng.normal(size=(T, K, C)), rng.random((T, K, C)) + 0.5
    lam, m, v = aligned_mixture(w, mu, var, n_present=3, decay=0.8)
    tau = numpy.array([0.8 ** 2, 0.8, 1.0]) / (0.8 ** 2 + 0.8 + 1.0)
    for k in range(K):
        p = tau * w[1:, k]
        mean = (p[:, None] * mu[1:, k]).sum(0) / p.sum()
        second = (p[:, None] * (var[1:, k] + mu[1:, k] ** 2)).sum(0) / p.sum()
        # measured 2.2e-16, 3.3e-16, 4.2e-16 relative
        assert lam[0, k] == pytest.approx(p.sum(), rel=3e-15)
        numpy.testing.assert_allclose(m[0, k], mean, rtol=4e-15)
        numpy.testing.assert_allclose(v[0, k], second - mean ** 2, rtol=5e-15)


def test_copyparams_copies_the_warm_start_state():
    rng = numpy.random.default_rng(4)
    a = MixtureNormalization(3, init='previous', seed=0)
    for _ in range(3):
        a(conv_batch(rng).astype(numpy.float32))
    b = MixtureNormalization(3, init='previous', seed=0)
    b.copyparams(a)
    assert b.warm_start.state == a.warm_start.state and b.warm_start.state['warm'] == 2
    b.warm_start.state['warm'] = 7
    assert a.warm_start.state['warm'] == 2


def test_warm_start_far_from_the_origin_float32_agrees_with_float64():
    """A warm fit of rows at 1e4 in float32 agrees with float64 to float32 rounding of the
    spread (measured: means 3.5e-5, variances 5.6e-5, start score 1.4e-5), not of the offset
    (a float32 unit at 1e4 is 1e-3): the fit centres the rows, and the start's means are
    centred in float64 before the cast."""
    rng = numpy.random.default_rng(11)
    X = mixture_batch(rng, 900) + 1e4
    previous = fit_gmm(X, 3, kmeans_iters=2, em_iters=5, seed=0)
    batch = mixture_batch(rng, 900) + 1e4
    fits = {dtype: fit_gmm(batch.astype(dtype), 3, em_iters=2, init=previous, seed=0)
            for dtype in (numpy.float32, numpy.float64)}
    mean_err = numpy.abs(fits[numpy.float32].means64 - fits[numpy.float64].means64).max()
    var_err = numpy.abs(fits[numpy.float32].variances - fits[numpy.float64].variances).max()
    assert mean_err < 1e-4 and var_err < 1e-4, (mean_err, var_err)
    assert fits[numpy.float32].start.score == pytest.approx(fits[numpy.float64].start.score,
                                                            abs=1e-4)


def test_reseed_report_refuses_a_missing_folder_in_one_line(tmp_path, capsys):
    script = load_script('experiments/seeding_reseeds.py')
    assert script.main([str(tmp_path / 'nowhere')]) == 2
    err = capsys.readouterr().err
    assert 'not a run folder' in err and len(err.strip().splitlines()) == 1
    assert script.main([]) == 2
    assert capsys.readouterr().err.startswith('usage: ')
