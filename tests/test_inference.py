"""The inference strategies of mixnorm_chainer.reproduce.inference (Section 3.2) and the row
pool."""
import copy
import io
import json
import os
import shutil
import types

import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest

from mixnorm_chainer import MixtureNormalization, fit_gmm
from mixnorm_chainer.functions import to_rows
from mixnorm_chainer.models import CifarCNN
from mixnorm_chainer.models.cifar_cnn import LAYERS
from mixnorm_chainer.pool import pool_indices, pool_memory_bytes
from mixnorm_chainer.queue import aligned_mixture
from mixnorm_chainer.reproduce import inference, refit, runfolder

C = 4


def batch(rng, shape=(6, C, 2, 2), dtype=numpy.float32):
    """Two clusters per channel, off the origin."""
    modes = numpy.array([-3.0, 2.0])[rng.integers(0, 2, size=(shape[0], 1) + shape[2:])]
    return (modes + rng.normal(scale=0.5, size=shape) + 5).astype(dtype)


def trained_link(steps=5, pool_rows=5, queue_length=3, shape=(6, C, 2, 2), **kw):
    link = MixtureNormalization(C, queue_length=queue_length, pool_rows=pool_rows, seed=0, **kw)
    rng = numpy.random.default_rng(1)
    inputs = [batch(rng, shape) for _ in range(steps)]
    with chainer.using_config('train', True):
        for x in inputs:
            link(x)
    return link, inputs


def expected_statistics(rows, nu):
    """Eq. 35-36 in float64, written out."""
    rows, nu = rows.astype(numpy.float64), nu.astype(numpy.float64)
    nuhat = nu / nu.sum(axis=0)
    mu = nuhat.T @ rows
    var = numpy.stack([nuhat[:, k] @ (rows - mu[k]) ** 2 for k in range(nu.shape[1])])
    return nu.mean(axis=0), mu, var


def assert_one_pass_variances(got, mu, var):
    """float32 variances against the float64 ones: the one-pass ``sum nu x^2 / n - mu^2``
    cancels terms of size ``var + mu^2`` (mu^2 / var up to 270 here); measured up to 14 float32
    roundoffs of them (recompute, conv2), allowed 150."""
    eps32 = numpy.finfo(numpy.float32).eps
    err = numpy.abs(got - var) / (eps32 * (var + mu ** 2))
    assert err.max() <= 150, err.max()


def state_of(model):
    """Every parameter and persistent (queues, pools, BN averages, MN generator states)."""
    state = {}
    chainer.serializers.DictionarySerializer(state).save(model)
    return {k: numpy.array(v) for k, v in state.items()}


def assert_same_state(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key


def small_cnn(mn_layers=('conv3',), seed=0, dtype=numpy.float32, **kw):
    numpy.random.seed(seed)                   # chainer's initializers draw from numpy's RNG
    with chainer.using_config('dtype', dtype):
        return CifarCNN(mn_layers=mn_layers, seed=seed, **kw)


def images(seed, n=8, size=16, dtype=numpy.float32):
    rng = numpy.random.default_rng(seed)
    return (rng.normal(size=(n, 3, size, size)).astype(dtype),
            rng.integers(0, 10, size=n).astype(numpy.int32))


def train(model, steps=3, seed=0):
    opt = chainer.optimizers.SGD(0.01)
    opt.setup(model)
    losses = []
    for step in range(steps):
        x, t = images(seed + step)
        loss = F.softmax_cross_entropy(model(x), t)
        model.cleargrads()
        loss.backward()
        opt.update()
        losses.append(loss.array)
    return losses


def norm_input(model, x, name):
    """The input of ``name``'s normalization, by CifarCNN's layers written out (test mode)."""
    h = x
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for layer, _, _, _, pool in LAYERS:
            h = getattr(model, layer)(h)
            if layer == name:
                return to_rows(h.array)
            norm = getattr(model, layer + '_norm')
            h = norm(h)
            if not isinstance(norm, MixtureNormalization) or norm.activation != 'relu':
                h = F.relu(h)
            h = F.max_pooling_2d(h, 3, stride=2) if pool == 'max' else F.average(h, axis=(2, 3))
    raise AssertionError(name)


# -- the row pool ----------------------------------------------------------------------------

def test_pool_indices_are_evenly_spread_and_deterministic():
    for m, n in ((24, 5), (4096, 64), (100, 7), (10, 10), (3, 5)):
        ids = pool_indices(m, n)
        k = min(m, n)
        assert ids.size == k and numpy.all(numpy.diff(ids) > 0)
        bounds = numpy.arange(k + 1) * m // k          # one index in each stratum
        assert numpy.all((bounds[:-1] <= ids) & (ids < bounds[1:]))
    # a stride of a multiple of H*W = 64 does not take the same pixel of every image
    assert len(set(pool_indices(64 * 64, 64) % 64)) > 32
    assert pool_memory_bytes(10, 256, 128) == 10 * 256 * 128 * 4


def test_pool_keeps_the_strided_rows_of_the_last_T_batches():
    link, inputs = trained_link(steps=5, pool_rows=5, queue_length=3)
    assert link.pool.count == 3 and link.pool.rows.shape == (3, 5, C)
    assert link.pool.rows.dtype == numpy.float32
    assert link.pool.rows.nbytes == link.pool.memory_bytes == pool_memory_bytes(3, 5, C)
    for t, x in enumerate(inputs[-3:]):                # oldest first, as the queue
        rows = to_rows(x)
        expected = rows[pool_indices(rows.shape[0], 5)]
        numpy.testing.assert_array_equal(link.pool.rows[t], expected)
    numpy.testing.assert_array_equal(link.pool.kept_rows(),
                                     numpy.concatenate(list(link.pool.rows)))
    # a batch with fewer rows than pool_rows: all its rows, pool_sizes says how many
    with chainer.using_config('train', True):
        small = batch(numpy.random.default_rng(5), (3, C))
        link(small)
    numpy.testing.assert_array_equal(link.pool.sizes, [5, 5, 3])
    numpy.testing.assert_array_equal(link.pool.rows[-1, :3], small)
    assert link.pool.kept_rows().shape == (13, C)


def test_training_is_bit_identical_with_and_without_a_pool():
    plain, pooled = small_cnn(), small_cnn(pool_rows=50)
    losses = [train(plain), train(pooled)]
    numpy.testing.assert_array_equal(losses[0], losses[1])
    a, b = state_of(plain), state_of(pooled)
    pool_keys = {k for k in b if k.startswith('conv3_norm/pool')}
    assert pool_keys == {'conv3_norm/pool', 'conv3_norm/pool_sizes', 'conv3_norm/pool_count'}
    for key in ('conv3_norm/mn_options',):              # differs by pool_rows only
        assert json.loads(a.pop(key).tobytes()) == dict(
            json.loads(b.pop(key).tobytes()), pool_rows=0)
    assert_same_state({k: v for k, v in a.items() if k not in pool_keys},
                      {k: v for k, v in b.items() if k not in pool_keys})
    assert pooled.conv3_norm.pool.count == 3 and plain.conv3_norm.pool.rows.size == 0
    x, _ = images(9)
    with chainer.using_config('train', False):
        numpy.testing.assert_array_equal(plain(x).array, pooled(x).array)


def test_pool_fit_equals_a_direct_fit_of_the_same_rows():
    link, _ = trained_link(steps=4, pool_rows=20, shape=(10, C, 2, 2), n_components=2)
    rng = numpy.random.default_rng(2)
    link.gamma.array[:] = rng.uniform(0.5, 1.5, C)
    link.beta.array[:] = rng.normal(size=C)
    rows = link.pool.kept_rows().copy()
    pool, rng_state = link.pool.rows.copy(), link._rng.bit_generator.state
    fit, statistics = refit.pool_fit(link, seed=7)

    direct = fit_gmm(rows, 2, kmeans_iters=link.kmeans_iters, em_iters=link.gmm_em_iters, seed=7,
                     min_weight=link.min_weight, reg_covar=link.reg_covar)
    K = direct.n_components
    assert link.queue.count == 1 and K == fit.n_components == 2
    numpy.testing.assert_array_equal(link.queue.fit_weights[-1, :K], direct.weights)
    numpy.testing.assert_allclose(link.queue.fit_means[-1, :K], direct.means, rtol=1e-6)
    numpy.testing.assert_array_equal(link.queue.fit_variances[-1, :K], direct.variances)
    lam, mu, var = expected_statistics(rows, direct.responsibilities(rows))
    numpy.testing.assert_allclose(link.queue.weights[-1, :K], lam, rtol=1e-5)
    numpy.testing.assert_allclose(link.queue.means[-1, :K], mu, rtol=1e-5)
    assert_one_pass_variances(link.queue.variances[-1, :K], mu, var)
    # the pool and the layer's generator are untouched
    numpy.testing.assert_array_equal(link.pool.rows, pool)
    assert link._rng.bit_generator.state == rng_state

    # test mode normalizes with that mixture: Eq. 34-35 with the fit's nu and those statistics
    x = batch(numpy.random.default_rng(3), (5, C, 3, 3))
    with chainer.using_config('train', False):
        y = link(x).array
    X = to_rows(x).astype(numpy.float64)
    nu = direct.responsibilities(to_rows(x)).astype(numpy.float64)
    xhat = sum(nu[:, k:k + 1] / numpy.sqrt(lam[k]) * (X - mu[k]) / numpy.sqrt(var[k] + link.eps)
               for k in range(K))
    expected = xhat * link.gamma.array + link.beta.array
    numpy.testing.assert_allclose(to_rows(y), expected, rtol=1e-4, atol=1e-4)


def test_pool_round_trips_through_serializers_and_old_snapshots_load():
    link, _ = trained_link(steps=4, pool_rows=5)
    f = io.BytesIO()
    chainer.serializers.save_npz(f, link)
    f.seek(0)
    fresh = MixtureNormalization(C, queue_length=3, pool_rows=5)
    chainer.serializers.load_npz(f, fresh)
    numpy.testing.assert_array_equal(fresh.pool.rows, link.pool.rows)
    numpy.testing.assert_array_equal(fresh.pool.sizes, link.pool.sizes)
    assert fresh.pool.count == 3 and isinstance(fresh.pool.count, int)
    # a link built without a pool takes the saved pool_rows (as the other saved options)
    f.seek(0)
    other = MixtureNormalization(C, queue_length=3)
    chainer.serializers.load_npz(f, other)
    assert other.pool_rows == 5 and other.pool.count == 3
    numpy.testing.assert_array_equal(other.pool.rows, link.pool.rows)

    # a snapshot of before the pool: no pool arrays, no pool_rows option
    f.seek(0)
    with numpy.load(f) as z:
        old = {k: z[k] for k in z.files if not k.startswith('pool')}
    options = json.loads(old['mn_options'].tobytes())
    del options['pool_rows']
    old['mn_options'] = numpy.frombuffer(json.dumps(options).encode(), numpy.uint8)
    g = io.BytesIO()
    numpy.savez(g, **old)
    g.seek(0)
    chainer.serializers.load_npz(g, fresh)
    assert fresh.pool_rows == 5 and fresh.pool.count == 0 and fresh.queue.count == 3
    assert not fresh.pool.sizes.any()
    with pytest.raises(ValueError, match='no row pool'):
        fresh.pool.kept_rows()


# -- recompute -------------------------------------------------------------------------------

def test_recompute_equals_a_direct_fit_of_the_inputs_in_forward_order():
    model = small_cnn(mn_layers=('conv2', 'conv3'))
    train(model, steps=2)
    batches = [images(10 + i) for i in range(3)]
    original = state_of(model)
    work = copy.deepcopy(model)
    done = inference.recompute(work, batches, seed=5)
    assert list(done) == ['/conv2_norm', '/conv3_norm']
    for layer in ('conv2', 'conv3'):
        # conv3's inputs are those after conv2 was recomputed (work), conv2's are unchanged
        rows = numpy.concatenate([norm_input(work, x, layer) for x, _ in batches])
        link = getattr(work, layer + '_norm')
        assert done['/' + layer + '_norm']['rows'] == rows.shape[0]
        direct = fit_gmm(rows, 3, kmeans_iters=link.kmeans_iters, em_iters=link.gmm_em_iters,
                         seed=5, min_weight=link.min_weight, reg_covar=link.reg_covar)
        K = direct.n_components
        assert link.queue.count == 1 and not link.queue.weights[-1, K:].any()
        numpy.testing.assert_array_equal(link.queue.fit_weights[-1, :K], direct.weights)
        numpy.testing.assert_allclose(link.queue.fit_means[-1, :K], direct.means, rtol=1e-6)
        lam, mu, var = expected_statistics(rows, direct.responsibilities(rows))
        numpy.testing.assert_allclose(link.queue.weights[-1, :K], lam, rtol=1e-5)
        numpy.testing.assert_allclose(link.queue.means[-1, :K], mu, rtol=1e-4, atol=1e-6)
        assert_one_pass_variances(link.queue.variances[-1, :K], mu, var)
    # gathering in the trained model sees conv3 inputs through the old conv2 queue: different
    old_rows = refit.gather_inputs(model, batches, ['/conv3_norm'])['/conv3_norm']
    new_rows = numpy.concatenate([norm_input(work, x, 'conv3') for x, _ in batches])
    assert old_rows.shape == new_rows.shape and not numpy.allclose(old_rows, new_rows)
    assert_same_state(state_of(model), original)      # recompute on the copy only


def test_recompute_with_one_component_is_the_population_mean_and_biased_variance():
    model = small_cnn(n_components=1, dtype=numpy.float64)
    assert model.conv3_norm.queue.count == 0            # untrained: recompute needs no queue
    batches = [images(20 + i, dtype=numpy.float64) for i in range(2)]
    inference.recompute(model, batches, rows_per_batch=100)
    rows = numpy.concatenate([norm_input(model, x, 'conv3')[pool_indices(128, 100)]
                              for x, _ in batches])
    assert rows.shape == (200, 128) and rows.dtype == numpy.float64
    link = model.conv3_norm
    numpy.testing.assert_array_equal(link.queue.weights[-1], [1.0])
    numpy.testing.assert_allclose(link.queue.means[-1, 0], rows.mean(axis=0), rtol=1e-6)
    numpy.testing.assert_allclose(link.queue.variances[-1, 0], rows.var(axis=0), rtol=1e-6)
    # the fitted mixture has the variance floor reg_covar added; the statistics have no eps
    numpy.testing.assert_allclose(link.queue.fit_variances[-1, 0],
                                  rows.var(axis=0) + link.reg_covar, rtol=1e-6)
    # test mode is then batch normalization with those statistics (+ the fused ReLU)
    x, _ = images(30, dtype=numpy.float64)
    X = norm_input(model, x, 'conv3')
    with chainer.using_config('train', False):
        y = link(X).array
    expected = ((X - rows.mean(axis=0)) / numpy.sqrt(rows.var(axis=0) + link.eps)
                * link.gamma.array + link.beta.array)
    numpy.testing.assert_allclose(y, numpy.maximum(expected, 0), rtol=1e-6, atol=1e-9)


# -- evaluate_strategies ---------------------------------------------------------------------

def forward_with_mn_in_training_mode(net, x):
    """CifarCNN's forward written out: MN layers in training mode, BN layers in test mode."""
    h = x
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for layer, _, _, _, pool in LAYERS:
            h = getattr(net, layer)(h)
            norm = getattr(net, layer + '_norm')
            with chainer.using_config('train', isinstance(norm, MixtureNormalization)):
                h = norm(h)
            if not isinstance(norm, MixtureNormalization) or norm.activation != 'relu':
                h = F.relu(h)
            h = F.max_pooling_2d(h, 3, stride=2) if pool == 'max' else F.average(h, axis=(2, 3))
        return net.linear(h)


@pytest.fixture(scope='module')
def classifier():
    net = small_cnn(pool_rows=40)
    train(net, steps=3)
    return L.Classifier(net)


def assert_identical(a, b, path='model', seen=None):
    """a and b (a deep copy taken before) hold the same state, bit for bit, walked without the
    serializers: arrays (dtype, shape, bytes), parameters (arrays and gradients), random
    generators (their states), containers and every attribute of every object (links, queues,
    pools, options), so that a changed, added or removed attribute anywhere fails."""
    seen = set() if seen is None else seen
    if (id(a), id(b)) in seen:
        return
    seen.add((id(a), id(b)))
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, numpy.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape) and a.tobytes() == b.tobytes(), path
    elif isinstance(a, chainer.Variable):
        assert_identical(a.array, b.array, path + '.array', seen)
        assert_identical(a.grad, b.grad, path + '.grad', seen)
    elif isinstance(a, numpy.random.Generator):
        assert repr(a.bit_generator.state) == repr(b.bit_generator.state), path
    elif isinstance(a, numpy.random.RandomState):
        assert_identical(a.get_state(legacy=False), b.get_state(legacy=False), path, seen)
    elif isinstance(a, dict):
        assert list(a) == list(b), (path, sorted(set(a) ^ set(b), key=str))
        for key in a:
            assert_identical(a[key], b[key], '{}[{!r}]'.format(path, key), seen)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            assert_identical(u, v, '{}[{}]'.format(path, i), seen)
    elif isinstance(a, (types.MethodType, types.FunctionType)):
        assert getattr(a, '__func__', a) is getattr(b, '__func__', b), path
    elif hasattr(a, '__dict__') and not isinstance(a, type):
        assert_identical(vars(a), vars(b), path + '.__dict__', seen)
    else:
        assert a == b or (a != a and b != b), (path, a, b)


def manual_evaluation(classifier, batches, printed=False):
    """Test-mode loss and hits of the classifier, by hand (on a copy)."""
    net = copy.deepcopy(classifier.predictor)
    if printed:
        net.conv3_norm.inference = 'printed'
    losses, hits = [], 0
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for x, t in batches:
            y = net(x).array
            losses.append(float(F.softmax_cross_entropy(y, t).array))
            hits += int((y.argmax(axis=1) == t).sum())
    return numpy.mean(losses), hits


def test_evaluate_strategies_leaves_the_model_unchanged(classifier):
    test = [images(40 + i) for i in range(2)]
    train_batches = [images(50 + i) for i in range(3)]
    before, global_rng = copy.deepcopy(classifier), numpy.random.get_state(legacy=False)
    results = inference.evaluate_strategies(classifier, test, train_batches, n_batches=2)
    assert_identical(classifier, before)
    assert_identical(numpy.random.get_state(legacy=False), global_rng, 'numpy.random')
    assert list(results) == list(inference.STRATEGIES)
    for strategy, result in results.items():
        assert result['n'] == 16, strategy
        hits = result['accuracy'] * 16                 # a fraction of the 16 test examples
        assert hits == round(hits), (strategy, result['accuracy'])
    assert results['pool']['pool'] == {'/predictor/conv3_norm': {
        'rows': 3 * 40, 'bytes': 10 * 40 * 128 * 4}}   # 3 steps of 40 rows; T x rows x C float32
    assert results['recompute']['recomputed']['/predictor/conv3_norm']['rows'] == 2 * 8 * 16
    # the queue (Eq. 38-39) and the printed form, by hand on the copy taken before
    for strategy, printed in (('queue', False), ('printed', True)):
        loss, hits = manual_evaluation(before, test, printed)
        assert results[strategy]['loss'] == pytest.approx(loss, rel=1e-12), strategy
        assert round(results[strategy]['accuracy'] * 16) == hits, strategy
    assert results['printed']['loss'] != results['queue']['loss']     # T = 3 entries
    # 'pool' and 'recompute' are the library functions (tested on their own above) on copies
    work = copy.deepcopy(before)
    refit.pool_fit(work.predictor.conv3_norm, seed=0)
    assert inference.evaluate(work, test)['loss'] == results['pool']['loss']
    work = copy.deepcopy(before)
    inference.recompute(work, train_batches[:2])
    assert inference.evaluate(work, test)['loss'] == results['recompute']['loss']
    # 'aligned': the queue averaged slot by slot (queue.aligned_mixture) as the only entry
    work = copy.deepcopy(before)
    link = work.predictor.conv3_norm
    merged = [aligned_mixture(*m, link.queue.count, link.queue_decay)
              for m in (link.queue.fit, link.queue.statistics)]
    refit.store_mixture(link, *[tuple(a[0] for a in m) for m in merged])
    assert inference.evaluate(work, test)['loss'] == results['aligned']['loss']
    assert len({results[s]['loss'] for s in inference.STRATEGIES}) == 6   # six different


def test_train_mode_strategy_runs_the_mn_layers_in_training_mode(classifier):
    test = [images(60 + i) for i in range(2)]
    result = inference.evaluate_strategies(classifier, test, strategies=['train-mode'])
    net = copy.deepcopy(classifier.predictor)
    losses, hits = [], []
    for x, t in test:
        y = forward_with_mn_in_training_mode(net, x)
        losses.append(float(F.softmax_cross_entropy(y, t).array))
        hits.append(float(F.accuracy(y, t).array))
    assert result['train-mode']['loss'] == pytest.approx(numpy.mean(losses), rel=1e-12)
    assert result['train-mode']['accuracy'] == pytest.approx(numpy.mean(hits), rel=1e-12)
    assert net.conv3_norm.queue.count == min(classifier.predictor.conv3_norm.queue.count + 2, 10)


def test_strategies_that_do_not_apply_are_reported_not_raised():
    test = [images(70)]
    bn = L.Classifier(small_cnn(mn_layers=()))
    results = inference.evaluate_strategies(bn, test, [images(71)])
    assert 'accuracy' in results['queue']
    for strategy in inference.STRATEGIES[1:]:
        assert results[strategy] == {'unavailable': 'the model has no MN layers'}
    net = small_cnn()
    train(net, steps=1)
    results = inference.evaluate_strategies(L.Classifier(net), test, None)
    assert results['pool'] == {'unavailable': 'no row pool: conv3_norm built with pool_rows=0 '
                                              '(train with --mn-option pool_rows=N)'}
    assert results['recompute'] == {'unavailable': 'no training batches given'}
    untrained = inference.evaluate_strategies(L.Classifier(small_cnn()), test, [images(71)])
    assert untrained['queue'] == untrained['printed'] == {
        'unavailable': 'the queue of conv3_norm is empty (no training step since it was built)'}
    assert 'accuracy' in untrained['recompute'] and 'accuracy' in untrained['train-mode']
    with pytest.raises(ValueError, match="unknown strategy 'best'"):
        inference.evaluate_strategies(L.Classifier(net), test, strategies=['best'])
    with pytest.raises(ValueError, match='nothing to recompute'):
        inference.recompute(bn, [images(71)])


# -- the CLI ---------------------------------------------------------------------------------

def tiny_run(out, extra=()):
    """A tiny MN run of `mixnorm-exp run` (1 epoch of 4 steps on 8x8 digits)."""
    from chainer.training import extensions

    from mixnorm_chainer.reproduce import runner
    with pytest.MonkeyPatch.context() as m:
        m.setattr(extensions.PlotReport, 'available', staticmethod(lambda: False))
        assert runner.main(['run', 'cnn-c10-MN-2', '--dataset', 'digits', '--input-size', '8',
                            '--epochs', '1', '--batch-size', '32', '--train-limit', '128',
                            '--test-limit', '64', '--out', out, '--no-progress'] + list(extra)) == 0
    return out


@pytest.fixture(scope='module')
def run_folder(tmp_path_factory):
    return tiny_run(str(tmp_path_factory.mktemp('runs') / 'mn'))


def bn_run_folder(mn_folder, out, snapshot=True):
    """A BN run folder: the MN run's setting.json for cnn-c10-BN-2 and a snapshot of the BN
    model in the trainer's layout (model under updater/model:main/)."""
    from mixnorm_chainer.reproduce import builders, registry
    os.makedirs(out)
    record = runfolder.read_json(os.path.join(mn_folder, 'setting.json'))
    setting = registry.get('cnn-c10-BN-2')
    record['setting'] = setting.to_dict()
    record['options']['name'] = setting.name
    runfolder.write_json(os.path.join(out, 'setting.json'), record)
    if snapshot:
        state = {}
        chainer.serializers.DictionarySerializer(state).save(
            builders.build_model(setting, 10, seed=0))
        with open(os.path.join(out, 'snapshot_epoch_1'), 'wb') as f:
            numpy.savez(f, **{'updater/model:main/' + k: v for k, v in state.items()})
    return out


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.startswith('mixnorm-exp: error: ') and err.count('\n') == 1, err
    return err


def test_cli_recompute_writes_a_loadable_model(run_folder, capsys):
    assert inference.main(['recompute', run_folder, '--batches', '2']) == 0
    line = capsys.readouterr().out
    path = os.path.join(run_folder, 'recomputed_2.npz')
    assert line.count('\n') == 1 and line.startswith(path + ': ')
    assert 'from 2 training batches of 32' in line and 'conv3_norm 256 rows x 128' in line
    assert not [f for f in os.listdir(run_folder) if f.endswith('.tmp')]
    # the file is the model: it loads into the run's model, whose MN queue is the recomputed one
    loaded = inference.load_run(run_folder)
    chainer.serializers.load_npz(path, loaded.model)
    run = inference.load_run(run_folder)
    assert run.model.predictor.conv3_norm.queue.count > 1
    inference.recompute(run.model, inference.training_batches(run, 2), seed=run.seed)
    assert_same_state(state_of(loaded.model), state_of(run.model))
    # more batches than the training set holds: all of them, and the line says so
    assert inference.main(['recompute', run_folder, '--batches', '50']) == 0
    assert 'the training set holds only 4 full batches' in capsys.readouterr().out
    assert os.path.isfile(os.path.join(run_folder, 'recomputed_4.npz'))


def test_cli_evaluate_prints_a_table_and_json(run_folder, tmp_path, capsys):
    bn = bn_run_folder(run_folder, str(tmp_path / 'bn'))
    path = str(tmp_path / 'results.json')
    assert inference.main(['evaluate', run_folder, bn, '--batches', '2', '--json', path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['run', 'seed'] + list(inference.STRATEGIES)
    mn_row, bn_row = lines[1].split(), lines[2].split()
    assert mn_row[:2] == [run_folder, '0'] and mn_row[4] == '-'         # no pool in this run
    assert bn_row[:2] == [bn, '0'] and bn_row[3:] == ['-'] * 5
    assert lines[3:] == [
        '-  {}: pool does not apply (no row pool: conv3_norm built with pool_rows=0 (train '
        'with --mn-option pool_rows=N))'.format(run_folder),
        "-  {}: a BN model; its queue column is BN's test mode (running averages)".format(bn),
        '-  {}: printed, pool, recompute, train-mode, aligned do not apply (the model has no '
        'MN layers)'.format(bn)]
    with open(path) as f:
        results = json.load(f)
    # the rebuilt model's queue accuracy is the trainer's own evaluation of the snapshot
    with open(os.path.join(run_folder, 'log.json')) as f:
        logged = json.load(f)[-1]['validation/main/accuracy']
    mn = results[run_folder]['strategies']
    assert mn['queue']['accuracy'] == pytest.approx(100 * logged, rel=1e-6)
    assert mn['recompute']['recomputed']['conv3_norm']['rows'] == 256
    assert results[bn]['strategies']['printed'] == {'unavailable': 'the model has no MN layers'}
    # the table's cells are the JSON's accuracies (%), two decimals; the BN row's queue column
    # is the BN model's test-mode accuracy
    for row, folder in ((mn_row, run_folder), (bn_row, bn)):
        found = results[folder]['strategies']
        assert row[2:] == ['-' if 'unavailable' in found[s] else
                           '{:.2f}'.format(found[s]['accuracy']) for s in inference.STRATEGIES]
    assert 0 < mn['queue']['accuracy'] < 100 and mn['queue']['n'] == 64


def test_cli_errors_are_one_line(run_folder, tmp_path, capsys):
    empty = str(tmp_path / 'empty')
    os.makedirs(empty)
    assert inference.main(['recompute', empty]) == 2
    assert 'is not a run folder (no setting.json)' in one_line_error(capsys)
    no_snapshot = str(tmp_path / 'no_snapshot')
    os.makedirs(no_snapshot)
    shutil.copy(os.path.join(run_folder, 'setting.json'), no_snapshot)
    assert inference.main(['recompute', no_snapshot]) == 2
    assert 'holds no snapshot' in one_line_error(capsys)
    assert inference.main(['evaluate', no_snapshot]) == 2
    assert 'holds no snapshot' in one_line_error(capsys)
    bn = bn_run_folder(run_folder, str(tmp_path / 'bn'), snapshot=False)
    assert inference.main(['recompute', bn]) == 2
    assert 'nothing to recompute: the run' in one_line_error(capsys)
    assert inference.main(['recompute', run_folder, '--snapshot', 'nope']) == 2
    assert '--snapshot nope: no such file' in one_line_error(capsys)
    with pytest.raises(SystemExit) as e:
        inference.main(['evaluate', run_folder, '--strategies', 'queue,best'])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and "'queue,best': give a comma-separated list" in err


def test_a_run_with_a_pool_trains_as_without_and_evaluates_the_pool(run_folder, tmp_path,
                                                                    capsys):
    from mixnorm_chainer.reproduce import runner
    try:
        runner.build_parser().parse_args(['run', 'cnn-c10-MN-2', '--mn-option', 'pool_rows=50'])
    except SystemExit as e:
        pytest.fail('mixnorm-exp run does not take --mn-option pool_rows=50 (exit {})'.format(
            e.code))
    pooled = tiny_run(str(tmp_path / 'pool'), ['--mn-option', 'pool_rows=50'])
    drop = ('elapsed_time',)
    logs = []
    for folder in (run_folder, pooled):
        with open(os.path.join(folder, 'log.json')) as f:
            logs.append([{k: v for k, v in e.items() if k not in drop} for e in json.load(f)])
    assert logs[0] == logs[1]                             # the pool does not change training
    path = str(tmp_path / 'results.json')
    capsys.readouterr()
    assert inference.main(['evaluate', pooled, '--strategies', 'queue,pool', '--json', path]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    with open(path) as f:
        found = json.load(f)[pooled]['strategies']
    assert row == [pooled, '0'] + ['{:.2f}'.format(found[s]['accuracy']) for s in ('queue', 'pool')]
    assert found['queue']['n'] == found['pool']['n'] == 64
    assert found['pool']['pool'] == {'conv3_norm': {'rows': 4 * 50, 'bytes': 10 * 50 * 128 * 4}}


def test_cli_evaluate_over_seeds_says_what_its_interval_is(run_folder, tmp_path, capsys):
    # a second seed of the same variant: the over-seeds line and, with 2 seeds, a legend that
    # says the interval is the seeds' range (not a bootstrap interval)
    import shutil
    other = str(tmp_path / 'seed1')
    shutil.copytree(run_folder, other)
    record = runfolder.read_json(os.path.join(other, 'setting.json'))
    record['seed'] = record['options']['seed'] = 1
    runfolder.write_json(os.path.join(other, 'setting.json'), record)
    assert inference.main(['evaluate', run_folder, other, '--batches', '2',
                           '--strategies', 'queue']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert 'over seeds: median [interval] (seeds)' in lines
    assert any(line.startswith('cnn-c10-MN-2') and line.endswith('(2)') for line in lines)
    assert "interval with 2 seeds: the seeds' [min, max]" in lines[-1]
