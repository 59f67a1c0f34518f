import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest

from mixnorm_chainer import MixtureNormalization
from mixnorm_chainer.models import CifarCNN


def n_params(model):
    return sum(p.size for p in model.params())


def test_table1_parameter_count():
    conv = 5 * 5 * 3 * 64 + 5 * 5 * 64 * 128 + 5 * 5 * 128 * 128 + 3 * 3 * 128 * 256
    norm = 2 * (64 + 128 + 128 + 256)
    for n_classes in (10, 100):
        expected = conv + norm + 256 * n_classes + n_classes
        assert n_params(CifarCNN(n_classes)) == expected
        # MN replaces BN one for one: the same learnable parameters (gamma, beta)
        assert n_params(CifarCNN(n_classes, mn_layers=('conv2', 'conv3'))) == expected


def test_table1_feature_map_sizes():
    model = CifarCNN(10)
    shapes = []
    h = numpy.zeros((2, 3, 32, 32), dtype=numpy.float32)
    for name in ('conv1', 'conv2', 'conv3', 'conv4'):
        h = F.relu(getattr(model, name + '_norm')(getattr(model, name)(h)))
        shapes.append(h.shape[1:])
        if name != 'conv4':
            h = F.max_pooling_2d(h, 3, stride=2)
    assert shapes == [(64, 32, 32), (128, 16, 16), (128, 8, 8), (256, 4, 4)]
    assert model(numpy.zeros((2, 3, 32, 32), dtype=numpy.float32)).shape == (2, 10)


@pytest.mark.parametrize('size', [16, 32])
def test_output_shape_any_input_size(size):
    model = CifarCNN(100, mn_layers=('conv3',))
    assert model(numpy.zeros((2, 3, size, size), dtype=numpy.float32)).shape == (2, 100)


def test_mn_layers_pick_the_normalizations():
    model = CifarCNN(10, mn_layers=('conv2', 'conv3'), n_components=5, em_iters=4)
    kinds = {name: type(link) for name, link in model.norm_layers().items()}
    assert kinds == {'conv1': L.BatchNormalization, 'conv2': MixtureNormalization,
                     'conv3': MixtureNormalization, 'conv4': L.BatchNormalization}
    assert model.conv3_norm.n_components == 5 and model.conv3_norm.em_iters == 4
    assert model.conv3_norm.activation == 'relu'          # Eq. 40 by default
    unfused = CifarCNN(10, mn_layers=('conv3',), fused_relu=False)
    assert unfused.conv3_norm.activation is None
    assert all(isinstance(link, L.BatchNormalization)
               for link in CifarCNN(10).norm_layers().values())


def test_unknown_layer_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown MN layer.*conv5"):
        CifarCNN(10, mn_layers=('conv5',))


def test_fused_relu_model_equals_relu_of_unfused_for_k1():
    """With K = 1, Eq. 40 is exactly ReLU(BN(x)): the MN model equals the BN model."""
    x = numpy.random.default_rng(0).normal(size=(4, 3, 16, 16)).astype(numpy.float32)
    numpy.random.seed(0)
    bn = CifarCNN(10)
    numpy.random.seed(0)
    mn = CifarCNN(10, mn_layers=('conv2', 'conv3'), n_components=1, seed=0)  # no global draw
    numpy.testing.assert_allclose(mn(x).array, bn(x).array, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('mn_layers', [(), ('conv3',)])
def test_training_reduces_the_loss(mn_layers):
    rng = numpy.random.default_rng(0)
    x = rng.normal(size=(32, 3, 16, 16)).astype(numpy.float32)
    t = rng.integers(0, 10, size=32).astype(numpy.int32)
    numpy.random.seed(0)
    model = L.Classifier(CifarCNN(10, mn_layers=mn_layers, seed=0))
    opt = chainer.optimizers.RMSprop(lr=0.01, alpha=0.9)
    opt.setup(model)
    losses = []
    for _ in range(15):
        opt.update(model, x, t)
        losses.append(float(model.loss.array))
    assert losses[-1] < 0.5 * losses[0]


def test_training_is_deterministic_for_a_seed():
    """Same seed, same data: bit-identical parameters after MN training steps."""
    rng = numpy.random.default_rng(1)
    x = rng.normal(size=(16, 3, 16, 16)).astype(numpy.float32)
    t = rng.integers(0, 10, size=16).astype(numpy.int32)
    params = []
    for _ in range(2):
        numpy.random.seed(0)
        model = L.Classifier(CifarCNN(10, mn_layers=('conv2', 'conv3'), seed=3))
        opt = chainer.optimizers.RMSprop(lr=0.01, alpha=0.9)
        opt.setup(model)
        for _ in range(3):
            opt.update(model, x, t)
        params.append({name: p.array.copy() for name, p in model.namedparams()})
    for name in params[0]:
        numpy.testing.assert_array_equal(params[0][name], params[1][name])
