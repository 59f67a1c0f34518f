"""ActivationRecorder (Figures 1, 8, 9 data) and the figure 1 / figure 8 scripts, tiny runs."""
import os

import numpy
import pytest

from mixnorm_chainer.reproduce import runner, training
from mixnorm_chainer.reproduce.recorder import ActivationRecorder, load_recording

from figure_scripts import load_script

TINY = ['--dataset', 'digits', '--input-size', '8', '--train-limit', '64', '--test-limit', '40',
        '--batch-size', '16', '--no-progress']


@pytest.fixture(scope='module')
def mn_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('runs') / 'mn')
    assert runner.main(['run', 'cnn-c10-MN-2', '--epochs', '5', '--out', out,
                        '--record', 'conv2', 'conv3'] + TINY) == 0
    return out


@pytest.mark.slow
def test_recorder_captures_training_batches_at_fractions(mn_run):
    rec = load_recording(os.path.join(mn_run, 'recording.npz'))
    # 5 epochs x 4 iterations: captures at 20/40/60/80/100% = iterations 4, 8, 12, 16, 20
    caps = rec['captures']
    assert [(c['layer'], c['iteration']) for c in caps] == [
        (layer, it) for it in (4, 8, 12, 16, 20) for layer in ('conv2', 'conv3')]
    for c in caps:
        assert c['shape'][0] == 16                       # a training batch, not the test set
        rows = c['shape'][0] * c['shape'][2] * c['shape'][3]
        assert c['x'].shape == (rows, 128) and c['x'].dtype == numpy.float16
        assert c['is_mn'] == (c['layer'] == 'conv3')
        if c['is_mn']:
            K = c['weights'].shape[0]
            assert 1 <= K <= 3 and c['means'].shape == (K, 128)
            numpy.testing.assert_allclose(c['weights'].sum(), 1, rtol=1e-5)
    assert rec['iterations'].tolist() == list(range(1, 21))
    assert set(rec['components']) == {'conv3'}
    assert ((rec['components']['conv3'] >= 1) & (rec['components']['conv3'] <= 3)).all()


def test_recorder_rejects_unknown_layers():
    from mixnorm_chainer.models import CifarCNN
    with pytest.raises(ValueError, match='conv9'):
        ActivationRecorder(CifarCNN(10), ['conv9'])
    with pytest.raises(ValueError, match='fractions'):
        ActivationRecorder(CifarCNN(10), ['conv2'], fractions=(0.0, 0.5))


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_recording_survives_resume(tmp_path):
    out = str(tmp_path / 'run')
    args = runner.build_parser().parse_args(
        ['run', 'cnn-c10-MN-2', '--epochs', '3', '--out', out, '--record', 'conv3',
         '--record-fractions', '0.5,1.0'] + TINY)

    def crash(trainer):
        if trainer.updater.iteration == 10:
            raise Interrupt()

    with pytest.raises(Interrupt):
        training.run(args, extra_extensions=[(crash, (1, 'iteration'))])
    args.resume = True
    training.run(args)
    rec = load_recording(os.path.join(out, 'recording.npz'))
    assert rec['iterations'].tolist() == list(range(1, 13))
    assert [c['iteration'] for c in rec['captures']] == [6, 12]


@pytest.mark.slow
def test_figure1_script(mn_run, tmp_path, capsys):
    fig1 = load_script(1)
    out = str(tmp_path / 'f1.png')
    numbers = fig1.main(['--run', mn_run, '--layer', 'conv2', '--channels', '3', '--out', out])
    assert os.path.getsize(out) > 10000
    assert numbers['fraction'] == 0.6 and len(numbers['channels_shown']) == 3
    for key in ('loglik_gain_K2', 'loglik_gain_K3', 'skewness_K1_mean_abs',
                'skewness_K3_mean_abs'):
        assert key in numbers
    again = fig1.main(['--run', mn_run, '--layer', 'conv2', '--channels', '3', '--out', out])
    assert again == numbers                                   # deterministic
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:                      # one line, no traceback
        fig1.main(['--run', mn_run, '--layer', 'conv4', '--out', out])
    err = capsys.readouterr().err
    assert e.value.code == 2 and '--record conv4' in err and len(err.splitlines()) == 1


def test_figure1_numbers_on_a_known_mixture():
    """Bimodal, skewed channels: K=2,3 gain likelihood and MN reduces the skewness."""
    fig1 = load_script(1)
    rng = numpy.random.default_rng(0)
    n = 3000
    mode = rng.random(n) < 0.7
    X = numpy.where(mode[:, None], rng.normal(0, 1, (n, 4)), rng.normal(6, 1.5, (n, 4)))
    gmms, normalized, gains, skew = fig1.analyse(X)
    assert (gains[2] > 0.05).all() and (gains[3] > 0.05).all()
    assert numpy.abs(skew[3]).mean() < numpy.abs(skew[1]).mean()


@pytest.mark.slow
def test_figure8_script(mn_run, tmp_path, capsys):
    fig8 = load_script(8)
    out = str(tmp_path / 'f8.png')
    numbers = fig8.main(['--run', mn_run, '--channels', '2', '--out', out])
    assert os.path.getsize(out) > 10000
    assert numbers['layer'] == 'conv3'
    assert [f['fraction'] for f in numbers['by_fraction']] == [0.2, 0.4, 0.6, 0.8, 1.0]
    for f in numbers['by_fraction']:
        assert abs(sum(f['weights_sorted']) - 1) < 1e-3
        assert f['weights_sorted'] == sorted(f['weights_sorted'], reverse=True)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        fig8.main(['--run', mn_run, '--layer', 'conv2', '--out', out])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'no MN captures' in err and len(err.splitlines()) == 1
