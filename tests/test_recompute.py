"""Memory-saving recomputation (``F.forget``): chainer calls a forgotten function twice, the
second time in backward with ``chainer.config.in_recomputing``. The normalization layers must
normalize the second call with the first call's statistics and leave their state (queue, pool,
random generator, running estimates) as the first call left it, as ``L.BatchNormalization``
does. The gradient under ``F.forget`` must equal the plain one, bit for bit."""
import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest

from mixnorm_chainer import GeneralizedBatchNormalization, MixtureNormalization

C = 4


def soft_batch(seed, shape=(6, C, 5, 5)):
    """Overlapping modes: soft responsibilities, so a different fit is a different output."""
    rng = numpy.random.default_rng(seed)
    modes = numpy.array([-1.5, 0.0, 1.5])[rng.integers(0, 3, size=(shape[0], 1) + shape[2:])]
    return modes + rng.normal(size=shape)


def state(link):
    """Everything a training step may change besides gamma/beta, as comparable arrays."""
    arrays = {name: getattr(link.queue, name).copy() for name in link.queue.ARRAYS}
    arrays.update(count=link.queue.count, pool=link.pool.rows.copy(), pool_count=link.pool.count,
                  rng=repr(link._rng.bit_generator.state))
    return arrays


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], numpy.ndarray):
            numpy.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


def train_step(link, x, gy, forget):
    v = chainer.Variable(x)
    y = F.forget(link, v) if forget else link(v)
    y.grad = gy
    y.backward()
    grads = (v.grad, link.gamma.grad.copy(), link.beta.grad.copy())
    link.cleargrads()
    return y.array, grads


@pytest.mark.parametrize('options', [dict(), dict(sample_fraction=0.5),
                                     dict(activation='relu', affine='statistics'),
                                     dict(pool_rows=7, sample_fraction=0.5)])
def test_forget_gives_the_plain_output_gradient_and_state(options):
    plain = MixtureNormalization(C, n_components=3, dtype=numpy.float64, seed=0, **options)
    forgot = MixtureNormalization(C, n_components=3, dtype=numpy.float64, seed=0, **options)
    rng = numpy.random.default_rng(1)
    for step in range(3):
        x, gy = soft_batch(step), rng.normal(size=(6, C, 5, 5))
        y1, g1 = train_step(plain, x, gy, forget=False)
        y2, g2 = train_step(forgot, x, gy, forget=True)
        numpy.testing.assert_array_equal(y2, y1)
        for a, b in zip(g2, g1):
            numpy.testing.assert_array_equal(a, b)
        assert forgot.queue.count == plain.queue.count == step + 1
        assert_same_state(state(forgot), state(plain))
        assert not forgot._forgotten.entries          # consumed by the recomputation
    with chainer.using_config('train', False):
        x = soft_batch(9)
        numpy.testing.assert_array_equal(forgot(x).array, plain(x).array)


def test_a_layer_called_twice_in_one_forgotten_block():
    """Two calls with different inputs inside one F.forget: each recomputation takes its own
    call's mixture (matched by the input), so the gradient is still the plain one."""
    def block(link, conv):
        return lambda x: link(conv(F.relu(link(x))))
    rng = numpy.random.default_rng(2)
    x, gy = soft_batch(0), rng.normal(size=(6, C, 5, 5))
    results = []
    for forget in (False, True):
        link = MixtureNormalization(C, n_components=2, dtype=numpy.float64, seed=3,
                                    sample_fraction=0.5)
        conv = L.Convolution2D(C, C, 3, pad=1, nobias=True,
                               initialW=numpy.random.default_rng(4).normal(size=(C, C, 3, 3)))
        f = block(link, conv)
        v = chainer.Variable(x)
        y = F.forget(f, v) if forget else f(v)
        y.grad = gy
        y.backward()
        results.append((y.array, v.grad, link.gamma.grad, link.queue.count, state(link)))
    (y1, gx1, gg1, n1, s1), (y2, gx2, gg2, n2, s2) = results
    numpy.testing.assert_array_equal(y2, y1)
    numpy.testing.assert_array_equal(gx2, gx1)
    numpy.testing.assert_array_equal(gg2, gg1)
    assert n1 == n2 == 2
    assert_same_state(s2, s1)


def test_recomputing_without_a_forward_is_a_clear_error():
    link = MixtureNormalization(C, seed=0)
    with chainer.using_config('in_recomputing', True):
        with pytest.raises(ValueError, match='no forward pass under F.forget saw'):
            link(soft_batch(0).astype(numpy.float32))


def test_gbn_running_estimates_are_updated_once_under_forget():
    rng = numpy.random.default_rng(5)
    x, gy = rng.normal(size=(6, C, 3, 3)), rng.normal(size=(6, C, 3, 3))
    links = [GeneralizedBatchNormalization(C, deviation='mad', dtype=numpy.float64)
             for _ in range(2)]
    outs = [train_step(link, x, gy, forget) for link, forget in zip(links, (False, True))]
    numpy.testing.assert_array_equal(outs[1][0], outs[0][0])
    for a, b in zip(outs[1][1], outs[0][1]):
        numpy.testing.assert_array_equal(a, b)
    plain, forgot = links
    assert forgot.n_updates == plain.n_updates == 1
    numpy.testing.assert_array_equal(forgot.avg_center, plain.avg_center)
    numpy.testing.assert_array_equal(forgot.avg_deviation, plain.avg_deviation)
