import chainer
import chainer.links as L
import numpy
import pytest

from mixnorm_chainer import MixtureNormalization
from mixnorm_chainer.models import DenseNet, InceptionV3
from mixnorm_chainer.models.inception_v3 import LAYER_NAMES as INCEPTION_LAYERS


def n_params(model):
    return sum(p.size for p in model.params())


def kinds(model):
    return {name: type(link) for name, link in model.norm_layers().items()}


def images(n, size, seed=0):
    return numpy.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(numpy.float32)


# ---------------------------------------------------------------- Inception-V3, independent table

def inception_convs():
    """(c_in, c_out, kh, kw) of every BasicConv2d of torchvision's Inception-V3 without the aux
    head, in torchvision's order (channel table of torchvision/models/inception.py)."""
    convs = [(3, 32, 3, 3), (32, 32, 3, 3), (32, 64, 3, 3), (64, 80, 1, 1), (80, 192, 3, 3)]
    for c, pool_features in ((192, 32), (256, 64), (288, 64)):                  # Mixed_5b-5d
        convs += [(c, 64, 1, 1), (c, 48, 1, 1), (48, 64, 5, 5), (c, 64, 1, 1), (64, 96, 3, 3),
                  (96, 96, 3, 3), (c, pool_features, 1, 1)]
    convs += [(288, 384, 3, 3), (288, 64, 1, 1), (64, 96, 3, 3), (96, 96, 3, 3)]  # Mixed_6a
    for c7 in (128, 160, 160, 192):                                               # Mixed_6b-6e
        convs += [(768, 192, 1, 1),
                  (768, c7, 1, 1), (c7, c7, 1, 7), (c7, 192, 7, 1),
                  (768, c7, 1, 1), (c7, c7, 7, 1), (c7, c7, 1, 7), (c7, c7, 7, 1), (c7, 192, 1, 7),
                  (768, 192, 1, 1)]
    convs += [(768, 192, 1, 1), (192, 320, 3, 3),                                 # Mixed_7a
              (768, 192, 1, 1), (192, 192, 1, 7), (192, 192, 7, 1), (192, 192, 3, 3)]
    for c in (1280, 2048):                                                        # Mixed_7b, 7c
        convs += [(c, 320, 1, 1), (c, 384, 1, 1), (384, 384, 1, 3), (384, 384, 3, 1),
                  (c, 448, 1, 1), (448, 384, 3, 3), (384, 384, 1, 3), (384, 384, 3, 1),
                  (c, 192, 1, 1)]
    return convs


def inception_params(n_classes):
    convs = inception_convs()
    weights = sum(kh * kw * c_in * c_out for c_in, c_out, kh, kw in convs)
    norms = sum(2 * c_out for _, c_out, _, _ in convs)
    return weights + norms + 2048 * n_classes + n_classes


def test_inception_parameter_count():
    assert len(inception_convs()) == 94
    for n_classes in (10, 100):
        model = InceptionV3(n_classes)
        assert n_params(model) == inception_params(n_classes)
        assert len(model.norm_layers()) == 94
    assert inception_params(10) == 21806058 and inception_params(100) == 21990468
    # torchvision's documented 27,161,264 (1000 classes) includes the aux head:
    # 1x1 768->128 + BN, 5x5 128->768 + BN, linear 768->1000
    aux = 768 * 128 + 2 * 128 + 25 * 128 * 768 + 2 * 768 + 768 * 1000 + 1000
    assert inception_params(1000) == 27161264 - aux
    # MN replaces BN one for one: the same learnable parameters (gamma, beta)
    assert n_params(InceptionV3(10, mn_layers=('inc2/0', 'inc3/0'))) == inception_params(10)


def test_inception_feature_map_sizes():
    model = InceptionV3(10)
    maps = model.feature_maps(images(2, 32))
    shapes = {name: h.shape[1:] for name, h in maps.items()}
    assert shapes == {'stem': (192, 32, 32), 'pool': (192, 15, 15), 'inc1': (288, 15, 15),
                      'red1': (768, 7, 7), 'inc2': (768, 7, 7), 'red2': (1280, 3, 3),
                      'inc3': (2048, 3, 3)}
    # the blocks keep the resolution; inc1's modules give 256, 288, 288 channels
    h = maps['pool']
    for module, c in zip(model.inc1, (256, 288, 288)):
        h = module(h)
        assert h.shape[1:] == (c, 15, 15)


@pytest.mark.parametrize('n_classes,mn_layers', [(10, ()), (100, ('inc2/0',))])
def test_inception_output_shape(n_classes, mn_layers):
    model = InceptionV3(n_classes, mn_layers=mn_layers)
    y = model(images(2, 32))
    assert y.shape == (2, n_classes)
    assert numpy.isfinite(y.array).all()


INC2_0 = ['inc2/0/0/0', 'inc2/0/1/2', 'inc2/0/2/4', 'inc2/0/3/0']
INC3_0 = ['inc3/0/0/0', 'inc3/0/1/1', 'inc3/0/1/2', 'inc3/0/2/2', 'inc3/0/2/3', 'inc3/0/3/0']
RED = ['red1/0/0', 'red1/1/2', 'red2/0/1', 'red2/1/3']


@pytest.mark.parametrize('mn_layers,expected', [
    (('inc2/0', 'inc3/0'), INC2_0 + INC3_0),                     # MN-3/MN-4, Figure 9: 10
    (('red1', 'red2'), RED),                                     # MN-1: 4
    (('red1', 'red2', 'inc3/0'), RED + INC3_0),                  # MN-2: 10
    (('inc3/0', 'inc1/1'), ['inc1/1/0/0', 'inc1/1/1/1', 'inc1/1/2/2', 'inc1/1/3/0'] + INC3_0),
    ((), []),
])
def test_inception_mn_modules(mn_layers, expected):
    model = InceptionV3(10, mn_layers=mn_layers, n_components=5, em_iters=4)
    assert model.mn_norm_names() == expected                    # network order
    for name, kind in kinds(model).items():
        assert kind is (MixtureNormalization if name in expected else L.BatchNormalization)
    for name in expected:
        link = model.norm_layers()[name]
        assert link.n_components == 5 and link.em_iters == 4
        assert link.activation == 'relu'                         # Eq. 40 by default


def test_inception_norm_names_and_counts():
    model = InceptionV3(10, mn_layers=INCEPTION_LAYERS)
    names = list(model.norm_layers())
    assert names[:6] == ['stem/0', 'stem/1', 'stem/2', 'stem/3', 'stem/4', 'inc1/0/0/0']
    assert names[-1] == 'inc3/1/3/0'
    # Figure 8's layer: fifth BN of the third (7x7dbl) branch of inc2/0, a 192-channel 1x7 conv
    fig8 = model.inc2[0][2][4]
    assert model.norm_layers()['inc2/0/2/4'] is fig8.norm
    assert fig8.conv.W.shape == (192, 128, 1, 7)
    per_layer = {}
    for name in model.mn_norm_names():
        layer = name.rsplit('/', 2)[0]
        per_layer[layer] = per_layer.get(layer, 0) + 1
    assert per_layer == {**{f'inc1/{i}': 4 for i in range(3)}, 'red1': 2,
                         **{f'inc2/{i}': 4 for i in range(4)}, 'red2': 2,
                         **{f'inc3/{i}': 6 for i in range(2)}}
    # every link path of a normalization is its name + '/norm' (checkpoints read the same)
    paths = {path for path, _ in model.namedlinks()}
    assert all(f'/{name}/norm' in paths for name in names)


@pytest.mark.parametrize('name', ['inc2/4', 'inc4/0', 'red3', 'stem/0', 'inc2/0/2/4', 'conv3'])
def test_inception_unknown_layer_name_is_a_clear_error(name):
    with pytest.raises(ValueError, match='unknown MN layer'):
        InceptionV3(10, mn_layers=('inc2/0', name))


# ---------------------------------------------------------------- DenseNet, independent formula

def densenet_params(depth, growth_rate, n_classes, in_channels=3):
    """Parameters and final channels of the basic DenseNet: 3x3 conv to 16 (no bias); per dense
    layer BN (2c) + 3x3 conv c -> k; per transition BN (2c) + 1x1 conv c -> c; final BN;
    linear."""
    n = (depth - 4) // 3
    c = 16
    total = 9 * in_channels * 16
    for block in range(3):
        for _ in range(n):
            total += 2 * c + 9 * c * growth_rate
            c += growth_rate
        if block < 2:
            total += 2 * c + c * c
    return total + 2 * c + c * n_classes + n_classes, c


@pytest.mark.parametrize('depth,per_block,channels', [(20, 5, 196), (40, 12, 448),
                                                      (100, 32, 1168)])
def test_densenet_channels(depth, per_block, channels):
    model = DenseNet(depth, 12, n_classes=100)
    assert [len(model.block1), len(model.block2), len(model.block3)] == [per_block] * 3
    assert model.final_norm.gamma.shape == (channels,)
    assert model.linear.W.shape == (100, channels)
    assert model.trans1.conv.W.shape == (16 + 12 * per_block,) * 2 + (1, 1)
    assert model.trans2.conv.W.shape == (16 + 24 * per_block,) * 2 + (1, 1)
    assert len(model.norm_layers()) == 3 * per_block + 3
    assert densenet_params(depth, 12, 100)[1] == channels


@pytest.mark.parametrize('depth,millions', [(40, 1.0), (100, 7.0)])
def test_densenet_parameter_count(depth, millions):
    for n_classes in (10, 100):
        expected, _ = densenet_params(depth, 12, n_classes)
        assert n_params(DenseNet(depth, 12, n_classes)) == expected
        assert abs(expected / 1e6 - millions) < 0.1            # the paper's 1.0M / 7.0M
        mn = DenseNet(depth, 12, n_classes, mn_layers=('trans1', 'trans2', 'final'))
        assert n_params(mn) == expected
    # by hand: stem 432, blocks 108240 + 298320 + 488400, transitions 25920 + 93024,
    # final BN 896, linear 44900
    assert densenet_params(40, 12, 100)[0] == 1060132


@pytest.mark.parametrize('n_classes,mn_layers', [(10, ()), (100, ('trans1', 'trans2', 'final'))])
def test_densenet_output_shape(n_classes, mn_layers):
    model = DenseNet(40, 12, n_classes, mn_layers=mn_layers)
    x = images(2, 32)
    assert model.features(x).shape == (2, 448, 8, 8)
    y = model(x)
    assert y.shape == (2, n_classes)
    assert numpy.isfinite(y.array).all()


@pytest.mark.parametrize('mn_layers', [('trans1', 'trans2', 'final'), ('final',), ('trans2',)])
def test_densenet_mn_layers_pick_the_normalizations(mn_layers):
    model = DenseNet(13, mn_layers=mn_layers, n_components=5, em_iters=2)
    assert model.mn_norm_names() == list(mn_layers)
    for name, kind in kinds(model).items():
        assert kind is (MixtureNormalization if name in mn_layers else L.BatchNormalization)
    assert all(model.norm_layers()[name].activation == 'relu' for name in mn_layers)
    assert all(kind is L.BatchNormalization for kind in kinds(DenseNet(13)).values())


@pytest.mark.parametrize('name', ['block1/0', 'trans3', 'final_norm', 'inc2/0'])
def test_densenet_unknown_layer_name_is_a_clear_error(name):
    with pytest.raises(ValueError, match='unknown MN layer'):
        DenseNet(40, mn_layers=(name,))


# ---------------------------------------------------------------- both: MN K=1, training, npz

@pytest.mark.parametrize('fused_relu', [True, False])
def test_densenet_k1_mn_equals_bn(fused_relu):
    """K = 1 MN is BN, fused ReLU or not: the model applies ReLU exactly when it should."""
    x = images(4, 16)
    numpy.random.seed(0)
    bn = DenseNet(13)
    numpy.random.seed(0)
    mn = DenseNet(13, mn_layers=('trans1', 'trans2', 'final'), n_components=1,
                  fused_relu=fused_relu, seed=0)   # a seed: no draw from numpy's global state
    assert mn.final_norm.activation == ('relu' if fused_relu else None)
    numpy.testing.assert_allclose(mn(x).array, bn(x).array, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('fused_relu', [True, False])
def test_inception_k1_mn_equals_bn(fused_relu):
    x = images(2, 32)
    numpy.random.seed(0)
    bn = InceptionV3(10)
    numpy.random.seed(0)
    mn = InceptionV3(10, mn_layers=('red1', 'inc3/0'), n_components=1, fused_relu=fused_relu,
                     seed=0)
    numpy.testing.assert_allclose(mn(x).array, bn(x).array, rtol=1e-3, atol=1e-4)


def memorize(model, x, t, steps, lr):
    """RMSprop steps on one fixed batch; returns the losses. Checks the first backward reached
    every parameter with finite gradients."""
    classifier = L.Classifier(model)
    opt = chainer.optimizers.RMSprop(lr=lr, alpha=0.9)
    opt.setup(classifier)
    losses = []
    for step in range(steps):
        classifier.cleargrads()
        loss = classifier(x, t)
        loss.backward()
        if step == 0:
            for name, param in classifier.namedparams():
                assert param.grad is not None and numpy.isfinite(param.grad).all(), name
            assert any(numpy.abs(p.grad).max() > 0 for p in classifier.params())
        opt.update()
        losses.append(float(loss.array))
    return losses


@pytest.mark.slow
@pytest.mark.parametrize('mn_layers', [(), ('inc3/0',)])
def test_inception_training_reduces_the_loss(mn_layers):
    x = images(4, 32)
    t = numpy.array([0, 3, 5, 7], dtype=numpy.int32)
    numpy.random.seed(0)
    model = InceptionV3(10, mn_layers=mn_layers, seed=0)
    losses = memorize(model, x, t, steps=6, lr=1e-4)
    assert all(numpy.isfinite(losses))
    assert losses[-1] < 0.2 * losses[0]


@pytest.mark.parametrize('mn_layers', [(), ('trans1', 'trans2', 'final')])
def test_densenet_training_reduces_the_loss(mn_layers):
    x = images(8, 16)
    t = numpy.arange(8, dtype=numpy.int32) % 10
    numpy.random.seed(0)
    model = DenseNet(13, mn_layers=mn_layers, seed=0)
    losses = memorize(model, x, t, steps=10, lr=1e-3)
    assert all(numpy.isfinite(losses))
    assert losses[-1] < 0.3 * losses[0]


def roundtrip(make, x, tmp_path):
    """Train-mode forward, save_npz, load into a differently initialized model: identical
    test-mode outputs (BN running averages and MN queues travel with the checkpoint)."""
    numpy.random.seed(0)
    model = make()
    model(x)                                                     # fills the MN queues
    with chainer.using_config('train', False):
        expected = model(x).array
    path = str(tmp_path / 'model.npz')
    chainer.serializers.save_npz(path, model)
    numpy.random.seed(1)
    loaded = make()
    assert not numpy.array_equal(loaded.linear.W.array, model.linear.W.array)
    chainer.serializers.load_npz(path, loaded)
    with chainer.using_config('train', False):
        numpy.testing.assert_array_equal(loaded(x).array, expected)
    return model, loaded


def test_densenet_npz_round_trip(tmp_path):
    model, loaded = roundtrip(
        lambda: DenseNet(13, mn_layers=('trans1', 'trans2', 'final'), n_components=3),
        images(6, 16), tmp_path)
    for name in ('trans1', 'trans2', 'final'):
        saved, restored = model.norm_layers()[name], loaded.norm_layers()[name]
        assert restored.queue.count == saved.queue.count == 1
        numpy.testing.assert_array_equal(restored.queue.means, saved.queue.means)


@pytest.mark.slow
def test_inception_npz_round_trip(tmp_path):
    roundtrip(lambda: InceptionV3(10, mn_layers=('inc3/0',)), images(4, 32), tmp_path)
