"""GN and MGN in the models (``norms={layer: kind}``, ``groups``), the small-batch registry
rows (``cnn-*-GN-2``, ``-MGN1-2``, ``-MGN-2``) and their runs: list, run, seeds at batch 2 in
folders of their own, smoke, resume, ``--mn-option`` refused."""
import json
import os

import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest

from mixnorm_chainer import (
    GeneralizedBatchNormalization,
    MixtureGroupNormalization,
    MixtureNormalization,
)
from mixnorm_chainer.models import CifarCNN, DenseNet, Generator, InceptionV3, NormFactory
from mixnorm_chainer.models.cifar_cnn import LAYERS as CNN_LAYERS
from mixnorm_chainer.models.norm import group_count
from mixnorm_chainer.reproduce import builders, registry, runfolder, seeds, smoke

from cli_runner import run_cli

TINY = ['--dataset', 'digits', '--input-size', '8', '--train-limit', '16', '--test-limit', '16',
        '--no-progress']
ROWS = ('GN-2', 'MGN1-2', 'MGN-2')


def images(n=4, size=8, seed=0):
    return numpy.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(numpy.float32)


@pytest.fixture
def no_plots(monkeypatch):
    from chainer.training import extensions
    monkeypatch.setattr(extensions.PlotReport, 'available', staticmethod(lambda: False))


# -- G: the largest divisor of C that is at most groups -------------------------------------

@pytest.mark.parametrize('channels, groups, expected', [
    (64, 32, 32), (256, 32, 32), (3, 32, 3), (76, 32, 19), (196, 32, 28), (80, 32, 20),
    (37, 32, 1), (128, 1, 1), (12, 5, 4), (8192, 32, 32)])
def test_group_count_is_the_largest_divisor_not_above_groups(channels, groups, expected):
    g = group_count(channels, groups)
    assert g == expected and channels % g == 0 and g <= groups
    assert not any(channels % h == 0 for h in range(g + 1, groups + 1))


@pytest.mark.parametrize('groups', [0, -3, 2.5])
def test_bad_groups_fail_when_the_factory_is_built(groups):
    with pytest.raises(ValueError, match='groups must be a positive integer'):
        NormFactory((), groups=groups)


# -- the factory ----------------------------------------------------------------------------

def test_factory_builds_each_kind():
    norm = NormFactory(('a',), n_components=4, em_iters=3, gbn_layers=('b',),
                       norms={'c': 'gn', 'd': 'mgn', 'e': 'bn'}, groups=8, mgn_components=2,
                       mgn_options={'min_weight': 0.05}, seed=0)
    assert [norm.kind(n) for n in 'abcdef'] == ['mn', 'gbn', 'gn', 'mgn', 'bn', 'bn']
    mn, fused = norm('a', 6)
    assert isinstance(mn, MixtureNormalization) and fused and mn.n_components == 4
    assert isinstance(norm('b', 6)[0], GeneralizedBatchNormalization)
    gn, fused = norm('c', 12)
    assert isinstance(gn, L.GroupNormalization) and gn.groups == 6 and not fused
    mgn, fused = norm('d', 24)
    assert isinstance(mgn, MixtureGroupNormalization) and fused
    assert (mgn.groups, mgn.size, mgn.n_components, mgn.em_iters, mgn.min_weight,
            mgn.activation) == (8, 24, 2, 3, 0.05, 'relu')
    assert type(norm('e', 6)[0]) is L.BatchNormalization
    # Eq. 40 only where a ReLU follows and fused_relu is on, as for MN
    assert norm('d', 24, followed_by_relu=False)[0].activation is None
    after = NormFactory((), norms={'d': 'mgn'}, fused_relu=False)('d', 24)
    assert after[0].activation is None and after[1] is False
    # MGN's K defaults to the factory's
    assert NormFactory((), 5, norms={'d': 'mgn'})('d', 10)[0].n_components == 5


def test_star_is_every_layer_not_named():
    norm = NormFactory(('a',), norms={'*': 'gn', 'b': 'bn'})
    assert [norm.kind(n) for n in 'abc'] == ['mn', 'bn', 'gn']


def test_factory_refuses_contradictions_and_unknown_kinds():
    with pytest.raises(ValueError, match='one kind in norms and another'):
        NormFactory(('a',), norms={'a': 'gn'})
    with pytest.raises(ValueError, match='one kind in norms and another'):
        NormFactory((), gbn_layers=('a',), norms={'a': 'mgn'})
    NormFactory(('a',), norms={'a': 'mn'})                   # the same kind twice is fine
    with pytest.raises(ValueError, match="unknown normalization kind.*'ln'"):
        NormFactory((), norms={'a': 'ln'})


# -- the models -----------------------------------------------------------------------------

def kinds(model):
    return {name: type(link).__name__ for name, link in model.norm_layers().items()}


def test_cifar_cnn_takes_norms_and_groups():
    net = CifarCNN(norms={'conv1': 'gn', 'conv2': 'mgn', 'conv4': 'gbn'}, mn_layers=('conv3',),
                   groups=16, mgn_components=2, seed=0)
    assert kinds(net) == {'conv1': 'GroupNormalization', 'conv2': 'MixtureGroupNormalization',
                          'conv3': 'MixtureNormalization',
                          'conv4': 'GeneralizedBatchNormalization'}
    assert net.conv1_norm.groups == 16 and net.conv2_norm.groups == 16
    assert net.conv2_norm.n_components == 2 and net.conv3_norm.n_components == 3
    assert net.mn_layers == ('conv3',)
    assert net.norm_kinds == {'conv1': 'gn', 'conv2': 'mgn', 'conv3': 'mn', 'conv4': 'gbn'}
    assert net(images()).shape == (4, 10)


def test_norms_mn_is_mn_layers():
    """``norms={'conv3': 'mn'}`` builds the very model ``mn_layers=('conv3',)`` builds."""
    x = images(8)
    outs = []
    for kw in (dict(mn_layers=('conv3',)), dict(norms={'conv3': 'mn'})):
        numpy.random.seed(0)
        net = CifarCNN(seed=0, **kw)
        assert net.mn_layers == ('conv3',)
        outs.append(net(x).array)
    numpy.testing.assert_array_equal(*outs)


def test_unknown_norms_name_is_a_clear_error():
    for build, name in ((lambda n: CifarCNN(norms=n), 'conv1'),
                       (lambda n: DenseNet(depth=7, norms=n), 'block1/0'),
                       (lambda n: Generator(norms=n, ch=16, image_size=8), 'deconv1')):
        with pytest.raises(ValueError, match="unknown normalization layer name.*'conv9'.*" +
                           name):
            build({'conv9': 'gn'})


def manual_forward(net, x):
    """CifarCNN's forward spelled out: ReLU after each norm unless its link fused it."""
    h = x
    for name, _, _, _, pool in CNN_LAYERS:
        link = getattr(net, name + '_norm')
        h = link(getattr(net, name)(h))
        fused = getattr(link, 'activation', None) == 'relu'
        h = h if fused else F.relu(h)
        h = F.max_pooling_2d(h, 3, stride=2) if pool == 'max' else F.average(h, axis=(2, 3))
    return net.linear(h)


@pytest.mark.parametrize('fused_relu', [True, False])
def test_mgn_fuses_the_relu_that_follows_it(fused_relu):
    """MGN followed by ReLU gets Eq. 40 (activation='relu', the model skips its own ReLU);
    with fused_relu=False the model applies ReLU after it (Eq. 41); the two differ at K=3."""
    x = images(4, 16)
    numpy.random.seed(1)
    net = CifarCNN(norms={'*': 'mgn'}, fused_relu=fused_relu)
    assert all(link.activation == ('relu' if fused_relu else None)
               for link in net.norm_layers().values())
    assert all(net._relu_fused[name] is fused_relu for name in net._relu_fused)
    numpy.testing.assert_allclose(net(x).array, manual_forward(net, x).array, rtol=0, atol=0)
    numpy.random.seed(1)
    other = CifarCNN(norms={'*': 'mgn'}, fused_relu=not fused_relu)
    assert abs(net(x).array - other(x).array).max() > 1e-3


def test_mgn_k1_fused_equals_gn_then_relu():
    """K = 1: MGN with its fused ReLU is GN followed by ReLU, in the whole model."""
    x = images(4, 16)
    numpy.random.seed(2)
    mgn = CifarCNN(norms={'*': 'mgn'}, mgn_components=1, groups=8)
    numpy.random.seed(2)
    gn = CifarCNN(norms={'*': 'gn'}, groups=8)
    for name in ('conv1', 'conv2', 'conv3', 'conv4'):
        getattr(gn, name + '_norm').eps = getattr(mgn, name + '_norm').eps
    numpy.testing.assert_allclose(mgn(x).array, gn(x).array, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('kind', ['gn', 'mgn', 'bn'])
def test_a_sample_does_not_depend_on_its_batch(kind):
    """GN/MGN everywhere: each sample's logits are the same in a batch of 2 and of 6 (what makes
    them usable at batch 2); with BN (the check can fail) they are not."""
    x = images(6, 16)
    numpy.random.seed(3)
    net = CifarCNN(norms={'*': kind})
    with chainer.no_backprop_mode():
        whole, pair = net(x).array, net(x[:2]).array
    gap = abs(whole[:2] - pair).max()
    if kind == 'bn':
        assert gap > 1e-2
    else:
        assert gap < 1e-4


def test_densenet_inception_and_dcgan_take_norms():
    d = DenseNet(depth=10, norms={'*': 'gn', 'final': 'mgn'}, mn_layers=('trans1',), groups=8,
                 seed=0)
    k = kinds(d)
    assert k['trans1'] == 'MixtureNormalization' and k['final'] == 'MixtureGroupNormalization'
    assert k['block1/0'] == k['trans2'] == 'GroupNormalization' and d.mn_layers == ('trans1',)
    assert d.norm_layers()['block1/1'].groups == group_count(28, 8) == 7
    assert d(images(2, 8)).shape == (2, 10)

    inc = InceptionV3(norms={'inc2/0': 'mgn', 'stem/0': 'gn', 'inc1/0/1/0': 'gn'})
    k = kinds(inc)
    assert sum(v == 'MixtureGroupNormalization' for v in k.values()) == 4     # InceptionC: 4
    assert all(k[n] == 'MixtureGroupNormalization' for n in ('inc2/0/0/0', 'inc2/0/2/4'))
    assert k['inc2/0/1/0'] == 'BatchNormalization'
    assert k['stem/0'] == k['inc1/0/1/0'] == 'GroupNormalization'
    assert inc.norm_layers()['stem/4'].__class__ is L.BatchNormalization
    with pytest.raises(ValueError, match="'inc9'"):
        InceptionV3(norms={'inc9': 'gn'})

    g = Generator(norms={'*': 'mgn', 'linear': 'gn'}, ch=16, image_size=8, mgn_components=2)
    k = kinds(g)
    assert k == {'linear': 'GroupNormalization', 'deconv1': 'MixtureGroupNormalization',
                 'deconv2': 'MixtureGroupNormalization', 'deconv3': 'MixtureGroupNormalization'}
    assert g.deconv3_norm.groups == 2 and g.deconv3_norm.activation == 'relu'
    assert g(g.make_hidden(2, rng=numpy.random.default_rng(0))).shape == (2, 3, 8, 8)


# -- the registry rows ----------------------------------------------------------------------

@pytest.mark.parametrize('dataset', ['c10', 'c100'])
def test_small_batch_rows_are_bn2_with_another_normalization(dataset):
    base = registry.get('cnn-{}-BN-2'.format(dataset))
    for label, kind, groups in (('GN-2', 'gn', 32), ('MGN1-2', 'mgn', 1), ('MGN-2', 'mgn', 32)):
        s = registry.get('cnn-{}-{}'.format(dataset, label))
        assert s.baseline == base.name and s.table == 'Small batch' and not s.is_mn
        assert s.norms == tuple((c, kind) for c in ('conv1', 'conv2', 'conv3', 'conv4'))
        assert s.groups == groups and (s.n_components, s.em_iters) == (3, 2)
        for field in ('dataset', 'model', 'optimizer', 'lr', 'weight_decay', 'batch_size',
                      'epochs', 'schedule'):
            assert getattr(s, field) == getattr(base, field), field
        assert 'not in the MN paper' in s.notes and '--batch-size 2' in s.notes
        assert s.to_dict()['norms'] == dict(s.norms)
        net = builders.build_model(s, 10, seed=0).predictor
        for link in net.norm_layers().values():
            assert isinstance(link, MixtureGroupNormalization if kind == 'mgn'
                              else L.GroupNormalization)
            assert link.groups == groups
            if kind == 'mgn':
                assert (link.n_components, link.em_iters, link.activation) == (3, 2, 'relu')


def test_list_shows_the_rows(capsys):
    code, out, _ = run_cli(['list', '--table', 'Small batch'], capsys)
    assert code == 0
    table = out.split('\n\n')[0].splitlines()
    rows = {line.split()[0]: line for line in table[1:]}
    assert set(rows) == {'cnn-{}-{}'.format(d, r) for d in ('c10', 'c100') for r in ROWS}
    assert 'MGN G=1: conv1-4' in rows['cnn-c10-MGN1-2']
    assert 'GN G=32: conv1-4' in rows['cnn-c100-GN-2']
    # name, 'Small batch', data, model, layers (3 words), K, EM iter.
    assert rows['cnn-c10-MGN-2'].split()[8:10] == ['3', '2']
    assert rows['cnn-c10-GN-2'].split()[8:10] == ['-', '-']
    assert out.count('not in the MN paper') == 6


def test_smoke_plan_pairs_each_row_with_bn2():
    names = [s.name for s in smoke.plan(['cnn-c10-MGN-2', 'cnn-c100-GN-2', 'cnn-c10-GN-2'])]
    assert names == ['cnn-c10-BN-2', 'cnn-c10-MGN-2', 'cnn-c100-BN-2', 'cnn-c100-GN-2',
                     'cnn-c10-GN-2']
    everything = [s.name for s in smoke.plan()]
    for d in ('c10', 'c100'):
        for r in ROWS:
            assert everything.index('cnn-{}-BN-2'.format(d)) < everything.index(
                'cnn-{}-{}'.format(d, r))


def test_smoke_trains_the_rows(capsys):
    code, out, _ = run_cli(['smoke', 'cnn-c10-GN-2', 'cnn-c10-MGN1-2', 'cnn-c10-MGN-2',
                            '--steps', '3', '--batch-size', '4'], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and lines[-1].endswith('all train'), out
    assert [ln.split()[0] for ln in lines[1:5]] == ['cnn-c10-BN-2', 'cnn-c10-GN-2',
                                                    'cnn-c10-MGN1-2', 'cnn-c10-MGN-2']
    assert all(ln.split()[7] == 'yes' for ln in lines[1:5])


def test_mn_options_are_refused_for_the_rows(capsys, tmp_path):
    code, _, err = run_cli(['run', 'cnn-c10-MGN-2', '--mn-option', 'kmeans_iters=0',
                            '--out', str(tmp_path / 'r')] + TINY, capsys)
    assert code == 2 and err.count('\n') == 1
    assert 'no MN layers (its GN/MGN layers take no MN option)' in err
    assert not (tmp_path / 'r').exists()
    code, _, err = run_cli(['smoke', 'cnn-c10-GN-2', '--mn-option', 'kmeans_iters=0'], capsys)
    assert code == 2 and 'none of the settings has MN layers' in err


# -- runs: one epoch, seeds at batch 2 in folders of their own, resume ----------------------

def read(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.usefixtures('no_plots')
@pytest.mark.parametrize('label', ROWS)
def test_a_row_runs_one_epoch_on_digits(tmp_path, capsys, label):
    out = tmp_path / 'run'
    code, text, err = run_cli(['run', 'cnn-c10-' + label, '--epochs', '1', '--batch-size', '8',
                               '--out', str(out)] + TINY, capsys)
    assert code == 0, err
    log = read(out / 'log.json')
    assert [e['epoch'] for e in log] == [1] and log[0]['iteration'] == 2
    assert numpy.isfinite(log[0]['main/loss']) and numpy.isfinite(log[0]['validation/main/loss'])
    setting = read(out / 'setting.json')['setting']
    kind = {'GN-2': 'gn', 'MGN1-2': 'mgn', 'MGN-2': 'mgn'}[label]
    assert setting['norms'] == {c: kind for c in ('conv1', 'conv2', 'conv3', 'conv4')}


@pytest.mark.slow
@pytest.mark.usefixtures('no_plots')
def test_seeds_at_batch_2_and_4_get_folders_and_labels_of_their_own(tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.chdir(tmp_path)
    for name in ('cnn-c10-BN-2', 'cnn-c10-MGN-2'):
        for batch in ('2', '4'):
            code, _, err = run_cli(['run', name, '--epochs', '1', '--seeds', '0,1,2',
                                    '--batch-size', batch] + TINY, capsys)
            assert code == 0, err
    folders = sorted(os.listdir('results'))
    assert folders == ['cnn-c10-BN-2@digits+batch=2', 'cnn-c10-BN-2@digits+batch=4',
                       'cnn-c10-MGN-2@digits+batch=2', 'cnn-c10-MGN-2@digits+batch=4']
    for f in folders:
        assert sorted(os.listdir(os.path.join('results', f))) == ['seed0', 'seed1', 'seed2']
        assert read(os.path.join('results', f, 'seed1', 'setting.json'))['options'][
            'batch_size'] == int(f[-1])
    # shown together, the batch sizes tell the variants apart; MGN pairs with BN-2 of its batch
    code, out, _ = run_cli(['summarize'] + [os.path.join('results', f) for f in folders], capsys)
    assert code == 0
    over = out[out.index('\npaired with the baseline'):]
    for batch in ('2', '4'):
        row = [ln for ln in over.splitlines()
               if ln.startswith('cnn-c10-MGN-2@digits+batch=' + batch)]
        assert len(row) == 1 and row[0].split()[1] == 'cnn-c10-BN-2+batch=' + batch
        assert row[0].split()[2] == '3'
    # one batch size shown: no batch in the labels (the tables stay narrow)
    code, out, _ = run_cli(['summarize', 'results/' + folders[0], 'results/' + folders[2]],
                           capsys)
    assert code == 0 and '+batch=' not in out and 'cnn-c10-MGN-2@digits ' in out


@pytest.mark.usefixtures('no_plots')
def test_a_resumed_mgn_run_equals_the_uninterrupted_one(tmp_path, capsys):
    argv = ['run', 'cnn-c10-MGN1-2', '--batch-size', '4'] + TINY
    whole, part = str(tmp_path / 'whole'), str(tmp_path / 'part')
    assert run_cli(argv + ['--epochs', '2', '--out', whole], capsys)[0] == 0
    assert run_cli(argv + ['--epochs', '1', '--out', part], capsys)[0] == 0
    code, text, err = run_cli(argv + ['--epochs', '2', '--out', part, '--resume'], capsys)
    assert code == 0, err

    def numbers(folder):
        return [{k: v for k, v in e.items() if k != 'elapsed_time'}
                for e in read(os.path.join(folder, 'log.json'))]
    assert numbers(part) == numbers(whole) and len(numbers(whole)) == 2
    assert len(read(os.path.join(part, 'setting.json'))['resumed']) == 1
    with numpy.load(os.path.join(whole, 'snapshot_epoch_2')) as a, \
            numpy.load(os.path.join(part, 'snapshot_epoch_2')) as b:
        params = [k for k in a.files if k.startswith('updater/model:main/') and 'norm' in k]
        assert params
        for k in params:
            numpy.testing.assert_array_equal(a[k], b[k])


# -- folder names and labels ----------------------------------------------------------------

def test_default_folder_carries_a_batch_size_other_than_the_settings():
    s = registry.get('cnn-c10-GN-2')
    assert runfolder.default_out(s, 'cifar10') == os.path.join('results', 'cnn-c10-GN-2')
    assert runfolder.default_out(s, 'cifar10', batch_size=256) == os.path.join(
        'results', 'cnn-c10-GN-2')
    assert runfolder.default_out(s, 'digits', 1, batch_size=2) == os.path.join(
        'results', 'cnn-c10-GN-2@digits+batch=2-seed1')
    mn = registry.get('cnn-c10-MN-2')
    assert runfolder.default_out(mn, 'cifar10', 0, {'affine': 'statistics'}, 8) == os.path.join(
        'results', 'cnn-c10-MN-2+batch=8+affine=statistics')


def record(name, batch, seed=0, dataset='digits'):
    return {'setting': registry.get(name).to_dict(), 'dataset': dataset,
            'options': {'name': name, 'batch_size': batch, 'seed': seed, 'mn_options': {}}}


def test_variant_label_carries_the_batch_where_it_tells_runs_apart():
    a, b, c = record('cnn-c10-GN-2', 2), record('cnn-c10-GN-2', 8), record('cnn-c10-BN-2', 2)
    assert seeds.variant_label(a) == 'cnn-c10-GN-2@digits+batch=2'        # alone: always
    assert seeds.variant_label(record('cnn-c10-GN-2', 256)) == 'cnn-c10-GN-2@digits'
    assert seeds.variant_label(a, shown=[a, c]) == 'cnn-c10-GN-2@digits'
    assert seeds.variant_label(a, shown=[a, b, c]) == 'cnn-c10-GN-2@digits+batch=2'
    assert seeds.variant_label(b, with_dataset=False, shown=[a, b]) == 'cnn-c10-GN-2+batch=8'
    assert seeds.variant_key(a) != seeds.variant_key(b)
