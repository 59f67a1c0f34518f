"""``mixnorm-exp smoke``: a few steps of every setting on digits; exit 1 when one diverges."""
import math

import chainer
import numpy
import pytest

from mixnorm_chainer.reproduce import registry, smoke

from cli_runner import run_cli


def result(losses, test_loss=1.0, error='', name='x'):
    return smoke.Result(name, 'nesterov', 0.1, 8, list(losses), test_loss, error)


# -- the verdict rule ------------------------------------------------------------------------

def test_verdict_rule():
    bn = result([2.3, 1.0])
    assert smoke.verdict(result([2.3, 1.2]), bn) == ''
    assert smoke.verdict(bn) == ''
    # "last": the mean of the last half of the steps
    assert result([4.0, 9.0, 1.0, 3.0]).last == 2.0 and result([4.0, 9.0, 1.0]).last == 5.0
    # non-finite: a training loss, the test-mode loss, an error that stopped training
    assert smoke.verdict(result([2.3, math.nan])) == 'non-finite'
    assert smoke.verdict(result([math.inf, 2.3])) == 'non-finite'
    assert smoke.verdict(result([2.3, 1.0], test_loss=math.nan)) == 'non-finite'
    assert smoke.verdict(result([2.3, 1.0], error='MN: has training diverged?')) == 'non-finite'
    assert smoke.verdict(result([])) == 'non-finite'
    # growth alone is no verdict (BN rows the paper trained grow at these sizes)
    assert smoke.verdict(result([2.0, 20.0])) == ''
    # above BN: last > PAIR_FACTOR x BN's last + PAIR_MARGIN
    limit = smoke.PAIR_FACTOR * 1.0 + smoke.PAIR_MARGIN
    assert smoke.verdict(result([2.3, limit + 0.01]), bn) == 'above BN'
    assert smoke.verdict(result([2.3, limit - 0.01]), bn) == ''
    # a diverged BN row is no reference
    assert smoke.verdict(result([2.3, limit + 0.01]), result([2.3, math.nan])) == ''


def test_plan_puts_each_bn_row_before_its_rows():
    names = [s.name for s in smoke.plan(['dense40-c100-MN', 'cnn-c10-GBN-mad-2',
                                         'cnn-c10-BN-2'])]
    assert names == ['dense40-c100-BN', 'dense40-c100-MN', 'cnn-c10-BN-2', 'cnn-c10-GBN-mad-2']
    everything = smoke.plan()
    assert sorted(s.name for s in everything) == sorted(registry.SETTINGS)
    position = {s.name: i for i, s in enumerate(everything)}
    assert all(position[s.baseline] < position[s.name] for s in everything if s.baseline)
    assert {s.model for s in everything} >= {'dcgan', 'densenet40', 'inception_v3'}
    assert any(s.gbn_layers for s in everything)


def test_every_line_fits_110_columns():
    r = result([2.3, 1e30], test_loss=math.nan, name='cnn-c100-GBN-cvar25-2',
               error='x' * 200)
    for text in (smoke.HEADER, smoke.line(r, result([2.3, 1.0]), 'non-finite'),
                 smoke.line(result([0.5, 1e30], name=r.name), None, '')):
        assert len(text) <= 110, text


# -- the command -----------------------------------------------------------------------------

def test_unknown_name_and_bad_options_are_one_line_errors(capsys):
    for argv, text in ((['smoke', 'dense40-c100-XX'], "unknown setting 'dense40-c100-XX'"),
                       (['smoke', 'cnn-c10-BN-2', '--mn-option', 'initial_gamma=1'],
                        'none of the settings has MN layers'),
                       (['smoke', 'cnn-c10-MN-2', '--mn-option', 'nope=1'], "'nope=1'"),
                       (['smoke', '--steps', '0'], 'positive integer'),
                       (['smoke', 'inc-c10-BN-1', '--input-size', '8'], 'Inception-V3 needs 15'),
                       (['smoke', 'dcgan-c10-MN', '--input-size', '12'], 'multiple of 8')):
        code, out, err = run_cli(argv, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
        assert text in err and 'Traceback' not in err, (argv, err)


def test_exit_status_1_names_the_diverged_settings(monkeypatch, capsys):
    def fake(setting, steps, size, batch, seed, mn_options, width):
        losses = [2.3, math.nan] if setting.is_mn else [2.3, 1.0]
        return result(losses, name=setting.name)
    monkeypatch.setattr(smoke, 'check', fake)
    code, out, err = run_cli(['smoke', 'cnn-c10-MN-2', 'cnn-c10-BN-1'], capsys)
    lines = out.strip().splitlines()
    assert code == 1 and lines[0] == smoke.HEADER
    assert [ln.split()[0] for ln in lines[1:4]] == ['cnn-c10-BN-2', 'cnn-c10-MN-2',
                                                    'cnn-c10-BN-1']
    assert 'DIVERGED: non-finite' in lines[2] and lines[3].endswith('ok')
    assert lines[-1].endswith('1 diverged: cnn-c10-MN-2')
    assert '[3/3] cnn-c10-BN-1' in err                     # progress on stderr
    monkeypatch.setattr(smoke, 'check', lambda s, *a: result([2.3, 1.0], name=s.name))
    code, out, _ = run_cli(['smoke', 'cnn-c10-MN-2'], capsys)
    assert code == 0 and out.strip().splitlines()[-1].endswith('all train')


def test_a_setting_and_its_bn_row_train_for_real(capsys):
    code, out, _ = run_cli(['smoke', 'cnn-c100-MN-2', '--steps', '3', '--batch-size', '8',
                            '--input-size', '8'], capsys)
    lines = out.strip().splitlines()
    assert code == 0, out
    bn, mn = (ln.split() for ln in lines[1:3])
    assert bn[:4] == ['cnn-c100-BN-2', 'rmsprop', '0.01', '8'] and mn[0] == 'cnn-c100-MN-2'
    assert float(bn[4]) == pytest.approx(math.log(100), abs=0.5)   # the setting's 100 classes
    assert mn[8] == bn[5] and lines[-1].endswith('all train')      # MN's "BN last" = BN's last


def test_the_same_seed_gives_the_same_losses():
    setting = registry.get('cnn-c10-MN-2')
    a, b = (smoke.check(setting, steps=2, size=8, batch=8, seed=3) for _ in range(2))
    c = smoke.check(setting, steps=2, size=8, batch=8, seed=4)
    assert a.losses == b.losses and a.test_loss == b.test_loss and a.losses != c.losses


@pytest.mark.slow
def test_the_planted_divergence_densenet_mn_with_gamma_1_is_flagged(capsys):
    """Section 4.4's DenseNet-MN at NAG lr 0.1 diverges with the paper's gamma = 1 and trains
    with the setting's initial_gamma=1/sqrt(K) (docs/training-speed.md); ~25 s."""
    small = ['--steps', '6', '--batch-size', '16']
    code, out, _ = run_cli(['smoke', 'dense40-c100-MN', '--mn-option', 'initial_gamma=1']
                           + small, capsys)
    lines = out.strip().splitlines()
    assert code == 1, out
    assert lines[1].split()[0] == 'dense40-c100-BN' and lines[1].split()[-1] == 'ok'
    assert lines[2].startswith('dense40-c100-MN') and 'DIVERGED: above BN' in lines[2]
    assert lines[-1].endswith('1 diverged: dense40-c100-MN')
    code, out, _ = run_cli(['smoke', 'dense40-c100-MN'] + small, capsys)
    assert code == 0 and out.strip().splitlines()[-1].endswith('all train'), out


@pytest.mark.slow
def test_the_whole_table_runs_at_a_tiny_size(capsys):
    """Every registry row (DCGAN and GBN included) at 2 steps of batch 8: the CI size of
    `mixnorm-exp smoke` (~75 s of CPU)."""
    code, out, err = run_cli(['smoke', '--steps', '2', '--batch-size', '8'], capsys)
    lines = out.strip().splitlines()
    assert lines[0] == smoke.HEADER
    assert [ln.split()[0] for ln in lines[1:-1]] == [s.name for s in smoke.plan()]
    assert code == 0 and lines[-1].endswith('all train'), out
    assert all(ln.split()[7] == 'yes' for ln in lines[1:-1])


def test_the_test_mode_pass_is_computed_in_float64():
    """Table 6's rows at batch 8 (2 steps at NAG lr 0.14) reach a test-mode loss of 6e37: in
    float32 the pass overflowed to NaN on numpy 2 (CI) and 'non-finite' reported a large
    number. Planted here by scaling the weights of a model whose running statistics are
    those of its initialization."""
    setting = registry.get('cnn-c10-BN-2')      # MN's test mode needs a trained queue
    model, _, _, (x, t) = smoke._classifier_parts(setting, 16, 8, 0, None)
    for param in model.params():
        param.array *= 1e5
    with chainer.using_config('train', False), chainer.no_backprop_mode(), \
            numpy.errstate(all='ignore'):
        assert not numpy.isfinite(float(model(x, t).array))
        copy = smoke._float64_copy(model)
        loss = float(copy(x.astype(numpy.float64), t).array)
    assert numpy.isfinite(loss) and loss > 1e30
    assert {p.dtype for p in copy.params()} == {numpy.dtype(numpy.float64)}
    assert {p.dtype for p in model.params()} == {numpy.dtype(numpy.float32)}   # a copy
