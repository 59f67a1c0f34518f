"""DCGAN of Section 4.5: models, losses, updater, `mixnorm-exp run dcgan-*` with FID, resume,
summarize, registry rows, and figures/figure6.py / figure7.py on tiny runs."""
# isort: off
import mixnorm_chainer  # noqa: F401  (first: chainer on numpy >= 2 needs _compat)
# isort: on
import io
import json
import os

import chainer
import chainer.links as L
import numpy
import pytest

from mixnorm_chainer.links import MixtureNormalization
from mixnorm_chainer.models import Discriminator, Generator, dcgan
from mixnorm_chainer.reproduce import gan, registry, reports, runner, training

from figure_scripts import load_script

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
TINY = ['--dataset', 'digits', '--input-size', '8', '--width', '16', '--batch-size', '16',
        '--train-limit', '96', '--fid-samples', '32', '--fid-extractor', 'small',
        '--fid-batch-size', '32', '--no-progress']


def read_log(directory):
    with open(os.path.join(directory, 'log.json')) as f:
        return json.load(f)


# -- models ----------------------------------------------------------------------------------

def test_architecture_follows_the_dcgan_spec():
    """chainer-gan-lib's DCGAN at 32x32, ch=512: layer shapes and parameter counts."""
    g = Generator(image_size=32)
    assert g.linear.W.shape == (4 * 4 * 512, 128)
    assert [getattr(g, 'deconv{}'.format(i)).W.shape for i in range(1, 5)] == [
        (512, 256, 4, 4), (256, 128, 4, 4), (128, 64, 4, 4), (64, 3, 3, 3)]
    assert [link.avg_mean.shape[0] for link in g.norm_layers().values()] == [8192, 256, 128, 64]
    # linear + 4 deconvs (with biases) + 4 BN (gamma, beta)
    expected = (128 * 8192 + 8192 + 512 * 256 * 16 + 256 + 256 * 128 * 16 + 128
                + 128 * 64 * 16 + 64 + 64 * 3 * 9 + 3 + 2 * (8192 + 256 + 128 + 64))
    assert sum(p.size for p in g.params()) == expected
    d = Discriminator(image_size=32)
    convs = [(64, 3, 3), (128, 64, 4), (128, 128, 3), (256, 128, 4), (256, 256, 3),
             (512, 256, 4), (512, 512, 3)]
    names = ['c0_0', 'c0_1', 'c1_0', 'c1_1', 'c2_0', 'c2_1', 'c3_0']
    for name, (c_out, c_in, k) in zip(names, convs):
        assert getattr(d, name).W.shape == (c_out, c_in, k, k)
    assert d.l4.W.shape == (1, 512 * 4 * 4)
    bns = [link for link in d.links() if isinstance(link, L.BatchNormalization)]
    assert len(bns) == 6 and all(b.gamma is None for b in bns)


@pytest.mark.parametrize('size, channels', [(8, 1), (16, 3)])
def test_shapes_and_output_range(size, channels):
    numpy.random.seed(0)
    g = Generator(mn_layers=dcgan.PAPER_MN_LAYERS, image_size=size, out_channels=channels,
                  ch=32, seed=0)
    d = Discriminator(image_size=size, in_channels=channels, ch=32)
    z = g.make_hidden(12, rng=numpy.random.default_rng(0))
    assert z.shape == (12, 128) and z.min() >= -1 and z.max() <= 1
    x = g(z)
    assert x.shape == (12, channels, size, size)
    assert numpy.all(numpy.abs(x.array) <= 1)
    y = d(x)
    assert y.shape == (12, 1) and numpy.all(numpy.isfinite(y.array))


def test_mn_layers_select_the_normalizations():
    g = Generator(mn_layers=('deconv1', 'deconv2'), image_size=8, ch=16)
    kinds = {name: type(link) for name, link in g.norm_layers().items()}
    assert kinds == {'linear': L.BatchNormalization, 'deconv1': MixtureNormalization,
                     'deconv2': MixtureNormalization, 'deconv3': L.BatchNormalization}
    assert g.deconv1_norm.n_components == 3
    assert all(isinstance(link, L.BatchNormalization)
               for link in Generator(image_size=8, ch=16).norm_layers().values())
    with pytest.raises(ValueError, match='unknown MN layer'):
        Generator(mn_layers=('deconv4',), image_size=8)
    with pytest.raises(ValueError, match='multiple of 8'):
        Generator(image_size=12)
    with pytest.raises(ValueError, match='multiple of 8'):
        Discriminator(image_size=20)


def test_losses_are_the_non_saturating_gan_losses():
    rng = numpy.random.default_rng(0)
    yr, yf = rng.normal(size=(7, 1)) * 3, rng.normal(size=(7, 1)) * 3
    sig = lambda v: 1 / (1 + numpy.exp(-v))    # noqa: E731
    g = dcgan.generator_loss(chainer.Variable(yf))
    d = dcgan.discriminator_loss(chainer.Variable(yr), chainer.Variable(yf))
    assert float(g.array) == pytest.approx(-numpy.log(sig(yf)).mean(), rel=1e-12)
    assert float(d.array) == pytest.approx(
        -numpy.log(sig(yr)).mean() - numpy.log(1 - sig(yf)).mean(), rel=1e-12)


def test_one_update_changes_both_networks_and_is_deterministic():
    def step():
        numpy.random.seed(0)
        g = Generator(mn_layers=dcgan.PAPER_MN_LAYERS, image_size=8, out_channels=1, ch=16,
                      seed=0)
        d = Discriminator(image_size=8, in_channels=1, ch=16)
        data = numpy.random.default_rng(1).uniform(-1, 1, (32, 1, 8, 8)).astype(numpy.float32)
        it = chainer.iterators.SerialIterator(data, 16, shuffle=False)
        opt_g, opt_d = gan.make_adam(g), gan.make_adam(d)
        assert (opt_g.alpha, opt_g.beta1, opt_g.beta2) == (2e-4, 0.0, 0.9)
        before = {k: p.array.copy() for k, p in list(g.namedparams()) + list(d.namedparams())}
        up = gan.GANUpdater(it, g, d, opt_g, opt_d, '@numpy', seed=3)
        rep = chainer.reporter.Reporter()
        obs = {}
        with rep.scope(obs):
            up.update()
        after = {k: p.array for k, p in list(g.namedparams()) + list(d.namedparams())}
        return before, after, obs

    before, after, obs = step()
    assert set(obs) == {'gen/loss', 'dis/loss', 'time/update'}
    changed = {k for k in before if not numpy.array_equal(before[k], after[k])}
    gen_keys = {k for k in before if k.startswith('/deconv') or k.startswith('/linear')}
    assert gen_keys and gen_keys <= changed                   # every generator parameter moved
    assert {k for k in before if k.startswith('/c') or k.startswith('/l4')} <= changed
    _, after2, obs2 = step()
    assert all(numpy.array_equal(after[k], after2[k]) for k in after)
    assert float(obs['gen/loss'].array) == float(obs2['gen/loss'].array)


def test_gan_images_digits_scale():
    x, text = gan.gan_images('digits', size=16)
    assert x.shape == (1797, 1, 16, 16) and x.dtype == numpy.float32
    assert x.min() == -1.0 and x.max() == 1.0
    # at 8x8 these are sklearn's digits (pixel / 16 in [0, 1]) mapped to [-1, 1], in
    # get_digits' order (permutation with seed 0)
    from sklearn.datasets import load_digits
    raw = load_digits().images[numpy.random.RandomState(0).permutation(1797)]
    x8, _ = gan.gan_images('digits', size=8)
    numpy.testing.assert_allclose(x8[:, 0], raw / 8.0 - 1.0, atol=1e-5)
    assert 'digits' in text
    with pytest.raises(ValueError, match='32x32'):
        gan.gan_images('cifar10', size=16)


def test_image_grid():
    imgs = numpy.arange(5 * 1 * 2 * 2, dtype=numpy.uint8).reshape(5, 1, 2, 2)
    grid = gan.image_grid(imgs, cols=3)
    assert grid.shape == (4, 6, 3)
    assert numpy.array_equal(grid[2:4, 2:4, 0], imgs[4, 0])
    assert numpy.all(grid[2:, 4:] == 0)
    padded = gan.image_grid(imgs, cols=3, pad=1, fill=7)
    assert padded.shape == (5, 8, 3)
    assert numpy.array_equal(padded[3:5, 3:5, 0], imgs[4, 0]) and padded[2, 0, 0] == 7
    assert numpy.array_equal(gan.to_uint8(numpy.array([-1.0, 0.0, 1.0])), [0, 128, 255])


# -- registry ----------------------------------------------------------------------------------

def test_registry_rows_section_4_5():
    bn, mn = registry.get('dcgan-c10-BN'), registry.get('dcgan-c10-MN')
    for s in (bn, mn):
        assert (s.table, s.dataset, s.model, s.optimizer, s.lr, s.iterations) == (
            'Section 4.5', 'cifar10', 'dcgan', 'adam', 2e-4, 100000)
    assert bn.mn_layers == () and bn.paper == {'best_fid': 37.56, 'best_fid_step': 6e4}
    assert mn.mn_layers == ('deconv1', 'deconv2') and (mn.n_components, mn.em_iters) == (3, 2)
    assert mn.baseline == 'dcgan-c10-BN'
    assert mn.paper == {'best_fid': 33.35, 'steps_to_baseline': 2.5e4}
    # "a reduction of ~58%"
    assert 1 - mn.paper['steps_to_baseline'] / bn.paper['best_fid_step'] == pytest.approx(
        0.583, abs=1e-3)
    out = io.StringIO()
    reports.list_settings('Section 4.5', out=out)
    assert 'dcgan-c10-MN' in out.getvalue() and '100K' in out.getvalue()


# -- runs ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_run_writes_log_with_fid_samples_and_setting(tmp_path, capsys):
    out = str(tmp_path / 'mn')
    code = runner.main(['run', 'dcgan-c10-MN', '--iterations', '6', '--fid-interval', '3',
                        '--log-interval', '3', '--out', out] + TINY)
    assert code == 0, capsys.readouterr().err
    log = read_log(out)
    assert [e['iteration'] for e in log] == [3, 6]
    assert all('fid' in e and e['fid'] > 0 and 'gen/loss' in e and 'dis/loss' in e for e in log)
    assert log[1]['fid/best'] == min(log[0]['fid'], log[1]['fid'])
    with open(os.path.join(out, 'setting.json')) as f:
        record = json.load(f)
    assert record['fid']['extractor'].startswith('small')
    assert record['fid']['comparable_to_published'] is False
    assert (record['fid']['n_fake'], record['fid']['n_real'], record['image_size']) == (32, 96, 8)
    for it in (3, 6):
        assert open(gan.sample_path(out, it, 'png'), 'rb').read(8) == PNG_MAGIC
        with numpy.load(gan.sample_path(out, it, 'npz')) as z:
            assert z['images'].shape == (100, 1, 8, 8) and z['images'].dtype == numpy.uint8
    snapshots = sorted(f for f in os.listdir(out) if f.startswith('snapshot'))
    assert snapshots == ['snapshot_iter_3', 'snapshot_iter_6']           # the two newest kept


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_interrupted_run_resumes_without_lost_or_duplicated_entries(tmp_path, capsys):
    def args_for(out, resume=False):
        argv = ['run', 'dcgan-c10-MN', '--iterations', '8', '--fid-interval', '4',
                '--log-interval', '2', '--out', out] + TINY + (['--resume'] if resume else [])
        return runner.build_parser().parse_args(argv)

    def crash(trainer):                      # dies after the snapshot at 4, before entry 6
        if trainer.updater.iteration == 5:
            raise Interrupt()

    full = str(tmp_path / 'full')
    training.run(args_for(full))
    out = str(tmp_path / 'run')
    with pytest.raises(Interrupt):
        training.run(args_for(out), extra_extensions=[(crash, (1, 'iteration'))])
    assert [e['iteration'] for e in read_log(out)] == [2, 4]
    training.run(args_for(out, resume=True))
    log, ref = read_log(out), read_log(full)
    assert [e['iteration'] for e in log] == [2, 4, 6, 8]
    assert [e['iteration'] for e in log if 'fid' in e] == [4, 8]
    # same z, data order and initialization: the resumed run is the uninterrupted one, bit for
    # bit (losses, FIDs, parameters and Adam states of both networks)
    for a, b in zip(log, ref):
        for key in ('gen/loss', 'dis/loss', 'fid', 'fid/best'):
            assert (key in a) == (key in b)
            if key in a:
                assert a[key] == b[key], (key, a['iteration'])
    with numpy.load(os.path.join(out, 'snapshot_iter_8')) as x, \
            numpy.load(os.path.join(full, 'snapshot_iter_8')) as y:
        keys = [k for k in x.files if 'elapsed_time' not in k and not k.endswith('/_log')]
        assert sorted(keys) == sorted(k for k in y.files if k in keys)
        assert any(k.startswith('updater/model:gen') or 'optimizer:gen' in k for k in keys)
        for k in keys:
            assert x[k].tobytes() == y[k].tobytes(), k
    # a finished run is left as it is; other options are refused before anything is written
    setting_json = open(os.path.join(out, 'setting.json')).read()
    assert runner.main(['run', 'dcgan-c10-MN', '--out', out, '--resume']) == 0
    assert 'the run is complete (8 of 8 updates)' in capsys.readouterr().out
    assert runner.main(['run', 'dcgan-c10-MN', '--out', out, '--resume', '--width', '8']) == 2
    assert '--width 8 (the run has 16)' in capsys.readouterr().err
    assert open(os.path.join(out, 'setting.json')).read() == setting_json


def test_bad_gan_options_are_clear_errors(tmp_path, capsys):
    base = ['run', 'dcgan-c10-BN', '--out', str(tmp_path / 'x')] + TINY
    assert runner.main(base + ['--iterations', '4', '--fid-interval', '3',
                               '--log-interval', '2']) == 2
    assert 'multiple of --log-interval' in capsys.readouterr().err
    assert runner.main(base + ['--epochs', '2']) == 2
    assert '--iterations' in capsys.readouterr().err
    assert runner.main(base + ['--iterations', '4', '--fid-interval', '2',
                               '--fid-extractor', 'inception']) == 2
    assert 'weights' in capsys.readouterr().err


# -- summarize and figures on fabricated runs ----------------------------------------------------

def make_run(root, name, fids, interval=10, log_interval=5, extractor='small-random-conv-seed0',
             comparable=False, grids=True):
    """A run folder like `mixnorm-exp run dcgan-...` writes: setting.json, log.json (losses
    every ``log_interval`` updates, ``fid`` every ``interval``) and sample grids."""
    setting = registry.get(name)
    out = os.path.join(str(root), name)
    os.makedirs(os.path.join(out, 'samples'), exist_ok=True)
    record = {'setting': setting.to_dict(), 'dataset': 'digits', 'iterations': len(fids) * interval,
              'fid': {'extractor': extractor, 'comparable_to_published': comparable}}
    with open(os.path.join(out, 'setting.json'), 'w') as f:
        json.dump(record, f)
    log = []
    for it in range(log_interval, len(fids) * interval + 1, log_interval):
        e = {'iteration': it, 'epoch': 0, 'gen/loss': 1.0, 'dis/loss': 1.0}
        if it % interval == 0:
            e['fid'] = fids[it // interval - 1]
            if grids:
                imgs = numpy.full((100, 1, 8, 8), it % 256, dtype=numpy.uint8)
                numpy.savez(gan.sample_path(out, it, 'npz'), images=imgs)
        log.append(e)
    with open(os.path.join(out, 'log.json'), 'w') as f:
        json.dump(log, f)
    return out


BN_FIDS = [90.0, 70.0, 60.0, 50.0, 45.0, 48.0, 44.0, 47.0]    # best 44 at update 70
MN_FIDS = [80.0, 60.0, 43.5, 40.0, 42.0, 39.0, 41.0, 40.5]    # reaches 44 at 30, best 39 at 60


def test_summarize_gan_runs(tmp_path, capsys):
    bn = make_run(tmp_path, 'dcgan-c10-BN', BN_FIDS)
    mn = make_run(tmp_path, 'dcgan-c10-MN', MN_FIDS)
    runs = {r.name: r for r in gan.summarize([bn, mn], out=io.StringIO())}
    assert gan.best_fid(runs['dcgan-c10-BN']) == (44.0, 70)
    assert gan.best_fid(runs['dcgan-c10-MN']) == (39.0, 60)
    assert gan.steps_to_fid(runs['dcgan-c10-MN'], 44.0) == 30
    assert gan.steps_to_fid(runs['dcgan-c10-BN'], 10.0) is None
    assert runner.main(['summarize', bn, mn]) == 0
    text = capsys.readouterr().out
    assert 'Section 4.5 on digits' in text and 'not comparable' in text
    row = [line for line in text.splitlines() if line.startswith('dcgan-c10-MN')][-1].split()
    # run, baseline, target, BN at, steps, reduction | paper: BN at, steps, reduction
    assert row[:6] == ['dcgan-c10-MN', 'dcgan-c10-BN', '44.00', '70', '30', '57%']
    assert row[7:] == ['6e+04', '2.5e+04', '58%']
    assert '37.56' in text and '33.35' in text


def test_figure6_and_figure7_from_logs(tmp_path, capsys):
    bn = make_run(tmp_path, 'dcgan-c10-BN', BN_FIDS)
    mn = make_run(tmp_path, 'dcgan-c10-MN', MN_FIDS)
    png6 = str(tmp_path / 'f6.png')
    summary = load_script(6).main(['--run', bn, mn, '--out', png6])
    assert open(png6, 'rb').read(8) == PNG_MAGIC
    s_bn, s_mn = summary[bn], summary[mn]
    assert (s_bn['best'], s_bn['best_update'], s_bn['evaluations']) == (44.0, 70, 8)
    assert (s_mn['steps_to_baseline'], s_mn['target']) == (30, 44.0)
    # band: population std of 3 adjacent evaluations, centred (edges cut to 2)
    expected = numpy.mean([numpy.std(MN_FIDS[max(0, i - 1):i + 2]) for i in range(8)])
    assert s_mn['mean_rolling_std'] == pytest.approx(expected, rel=1e-9)
    png7 = str(tmp_path / 'f7.png')
    summary7 = load_script(7).main(['--run', bn, mn, '--out', png7, '--n', '16'])
    assert open(png7, 'rb').read(8) == PNG_MAGIC
    assert summary7[mn]['best_update'] == 60 and summary7[mn]['n'] == 16
    out = capsys.readouterr().out
    assert 'figure6' in out and 'figure7' in out


def test_figures_explain_missing_pieces(tmp_path, capsys):
    mn = make_run(tmp_path, 'dcgan-c10-MN', MN_FIDS)
    with pytest.raises(SystemExit) as e:                       # no BN baseline given
        load_script(6).main(['--run', mn, '--out', str(tmp_path / 'x.png')])
    assert e.value.code == 2 and 'dcgan-c10-BN' in capsys.readouterr().err
    bn = make_run(tmp_path / 'nogrid', 'dcgan-c10-BN', BN_FIDS, grids=False)
    with pytest.raises(SystemExit) as e:
        load_script(7).main(['--run', bn, '--out', str(tmp_path / 'y.png')])
    assert e.value.code == 2 and 'no sample grid' in capsys.readouterr().err


@pytest.mark.slow
def test_run_on_a_generated_cifar_archive(tmp_path):
    """The full-scale path (CIFAR-10 archive from --data-dir, 3x32x32 images) end to end."""
    from mixnorm_chainer.reproduce.datasets import write_cifar_archive
    data = tmp_path / 'data'
    write_cifar_archive(str(data), 'cifar10', n_train=48, n_test=16, seed=0)
    out = str(tmp_path / 'c10')
    code = runner.main(['run', 'dcgan-c10-MN', '--data-dir', str(data), '--iterations', '2',
                        '--fid-interval', '2', '--width', '16', '--batch-size', '16',
                        '--fid-samples', '16', '--fid-extractor', 'small', '--no-progress',
                        '--out', out])
    assert code == 0
    with open(os.path.join(out, 'setting.json')) as f:
        record = json.load(f)
    assert (record['n_train'], record['channels'], record['image_size']) == (48, 3, 32)
    assert [e['iteration'] for e in read_log(out) if 'fid' in e] == [2]
    with numpy.load(gan.sample_path(out, 2, 'npz')) as z:
        assert z['images'].shape == (100, 3, 32, 32)
    x, _ = gan.gan_images('cifar10', str(data))
    assert x.shape == (48, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert x.min() < -0.9 and x.max() > 0.9
