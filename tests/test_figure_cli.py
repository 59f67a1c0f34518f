"""The figure scripts' command line as a researcher walks it: ``--run`` a folder of
``mixnorm-exp run --seeds`` (Figures 1, 6, 7 and 8 draw seed 0 or ``--seed S``; Figure 9 one
panel per seed or ``--seed S``) and ``--out`` checked before any work (a missing folder is
created; one that cannot be is a one-line error)."""
import json
import os

import numpy
import pytest

from figure_scripts import check_png, load_script, make_run

SCRIPTS = range(1, 10)
FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)


def make_recorded_run(out, seed, channels=8, rows=256, K=3, iterations=20):
    """A run folder of cnn-c10-MN-2 (seed ``seed``) with a recording.npz as ``--record conv2
    conv3`` writes it: conv2 inputs and conv3 MN captures with their mixtures at 20..100% of
    training, and conv3's component counts. The values depend on the seed."""
    make_run(None, 'cnn-c10-MN-2', dataset='digits', epochs=5, seed=seed,
             iterations_per_epoch=iterations // 5, out=out)
    rng = numpy.random.default_rng(100 + seed)
    arrays, captures = {}, []
    for f in FRACTIONS:
        for layer, is_mn in (('conv2', False), ('conv3', True)):
            key = 'cap{}'.format(len(captures))
            mode = rng.random((rows, 1)) < 0.7
            arrays[key + '/x'] = numpy.where(mode, rng.normal(0, 1, (rows, channels)),
                                             rng.normal(4, 1.5, (rows, channels))
                                             ).astype(numpy.float16)
            if is_mn:
                w = rng.random(K) + 0.2
                arrays[key + '/weights'] = (w / w.sum()).astype(numpy.float32)
                arrays[key + '/means'] = rng.normal(0, 2, (K, channels)).astype(numpy.float32)
                arrays[key + '/variances'] = rng.uniform(0.5, 2, (K, channels)).astype(
                    numpy.float32)
            it = int(round(f * iterations))
            captures.append({'key': key, 'layer': layer, 'fraction': f, 'iteration': it,
                             'epoch': it / (iterations // 5), 'is_mn': is_mn,
                             'shape': [16, channels, 4, 4]})
    arrays['captures'] = numpy.asarray(json.dumps(captures))
    arrays['iterations'] = numpy.arange(1, iterations + 1)
    arrays['components/conv3'] = numpy.full(iterations, K, numpy.int64)
    arrays['components/conv3'][rng.random(iterations) < 0.2] = K - 1
    numpy.savez(os.path.join(out, 'recording.npz'), **arrays)
    return out


@pytest.fixture
def seeds_folder(tmp_path):
    """``mixnorm-exp run cnn-c10-MN-2 --seeds 0,1 --record conv2 conv3 --out OUT``'s layout."""
    out = str(tmp_path / 'cnn-c10-MN-2@digits')
    for seed in (0, 1):
        make_recorded_run(os.path.join(out, 'seed{}'.format(seed)), seed)
    return out


def error_line(capsys, code, exc):
    err = capsys.readouterr().err
    assert exc.value.code == code, err
    assert len(err.strip().splitlines()) == 1, err           # one line, no traceback
    return err


# -- a folder of several seeds ---------------------------------------------------------------

@pytest.mark.parametrize('n, args', [(1, ['--layer', 'conv2', '--channels', '2']),
                                     (8, ['--layer', 'conv3', '--channels', '2'])])
def test_figures_1_and_8_draw_one_seed_of_a_seeds_folder(seeds_folder, tmp_path, capsys, n,
                                                         args):
    fig = load_script(n)
    out = str(tmp_path / 'made' / 'f.png')                   # a folder that does not exist yet
    numbers = fig.main(['--run', seeds_folder, '--out', out] + args)
    check_png(out)
    assert numbers['run'] == os.path.join(seeds_folder, 'seed0')          # seed 0 by default
    seed1 = fig.main(['--run', seeds_folder, '--seed', '1', '--out', out] + args)
    assert seed1['run'] == os.path.join(seeds_folder, 'seed1')
    assert seed1 != dict(numbers, run=seed1['run'])                       # another recording
    # a seed folder itself, and a run folder with --seed of its own seed
    one = fig.main(['--run', os.path.join(seeds_folder, 'seed1'), '--out', out] + args)
    assert one == seed1
    assert fig.main(['--run', os.path.join(seeds_folder, 'seed1'), '--seed', '1',
                     '--out', out] + args) == seed1
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        fig.main(['--run', seeds_folder, '--seed', '2', '--out', out] + args)
    err = error_line(capsys, 2, e)
    assert 'no run of seed 2' in err and 'seed0, seed1' in err and '--seed' in err
    with pytest.raises(SystemExit) as e:
        fig.main(['--run', os.path.join(seeds_folder, 'seed1'), '--seed', '0', '--out', out]
                 + args)
    assert 'is the run of seed 1, not seed 0' in error_line(capsys, 2, e)


def test_seeds_folder_without_seed_0(tmp_path, capsys):
    out = str(tmp_path / 'runs')
    for seed in (1, 2):
        make_recorded_run(os.path.join(out, 'seed{}'.format(seed)), seed)
    with pytest.raises(SystemExit) as e:
        load_script(1).main(['--run', out, '--out', str(tmp_path / 'f1.png')])
    err = error_line(capsys, 2, e)
    assert 'no run of seed 0 (the default)' in err and 'seed1, seed2 (seeds 1, 2)' in err
    numbers = load_script(1).main(['--run', out, '--seed', '2', '--channels', '2',
                                   '--out', str(tmp_path / 'f1.png')])
    assert numbers['run'] == os.path.join(out, 'seed2')


def test_figure9_one_panel_per_seed_or_the_seed_given(seeds_folder, tmp_path, capsys):
    fig9 = load_script(9)
    out = str(tmp_path / 'f9.png')
    every = fig9.main(['--run', seeds_folder, '--out', out])
    assert sorted(every) == [os.path.join(seeds_folder, s) for s in ('seed0', 'seed1')]
    one = fig9.main(['--run', seeds_folder, '--seed', '1', '--out', out])
    check_png(out)
    assert list(one) == [os.path.join(seeds_folder, 'seed1')]
    assert one[os.path.join(seeds_folder, 'seed1')] == every[os.path.join(seeds_folder, 'seed1')]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        fig9.main(['--run', seeds_folder, '--seed', '3', '--out', out])
    assert 'seed0, seed1' in error_line(capsys, 2, e)


def make_gan_run(out, name, seed, fids, interval=10):
    """A DCGAN run folder (seed ``seed``): setting.json, log.json with ``fid`` every
    ``interval`` updates, and the sample grid of each evaluation."""
    from mixnorm_chainer.reproduce import gan, registry
    os.makedirs(os.path.join(out, 'samples'))
    record = {'setting': registry.get(name).to_dict(), 'dataset': 'digits', 'seed': seed,
              'iterations': len(fids) * interval, 'fid': {'extractor': 'small-random-conv-seed0',
                                                         'comparable_to_published': False}}
    with open(os.path.join(out, 'setting.json'), 'w') as f:
        json.dump(record, f)
    log = []
    for i, fid in enumerate(fids):
        it = (i + 1) * interval
        log.append({'iteration': it, 'epoch': 0, 'gen/loss': 1.0, 'dis/loss': 1.0, 'fid': fid})
        numpy.savez(gan.sample_path(out, it, 'npz'),
                    images=numpy.full((16, 1, 8, 8), it, numpy.uint8))
    with open(os.path.join(out, 'log.json'), 'w') as f:
        json.dump(log, f)
    return out


def test_figures_6_and_7_draw_one_seed_of_a_seeds_folder(tmp_path, capsys):
    folders = {}
    for name, fids in (('dcgan-c10-BN', [(90, 60, 50, 55), (80, 70, 65, 52)]),
                       ('dcgan-c10-MN', [(80, 45, 48, 40), (85, 58, 49, 51)])):
        folders[name] = str(tmp_path / name)
        for seed, f in enumerate(fids):
            make_gan_run(os.path.join(folders[name], 'seed{}'.format(seed)), name, seed, f)
    bn, mn = folders['dcgan-c10-BN'], folders['dcgan-c10-MN']
    out = str(tmp_path / 'f.png')
    six = load_script(6).main(['--run', bn, mn, '--out', out])
    check_png(out)
    assert six[os.path.join(mn, 'seed0')]['best'] == 40
    assert six[os.path.join(mn, 'seed0')]['steps_to_baseline'] == 20     # 45 <= BN's best 50
    six = load_script(6).main(['--run', bn, mn, '--seed', '1', '--out', out])
    assert six[os.path.join(bn, 'seed1')]['best'] == 52
    seven = load_script(7).main(['--run', bn, mn, '--seed', '1', '--out', out])
    assert seven[os.path.join(mn, 'seed1')]['best_update'] == 30
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        load_script(7).main(['--run', bn, mn, '--seed', '4', '--out', out])
    assert 'seed0, seed1 (seeds 0, 1)' in error_line(capsys, 2, e)


# -- --out, checked before any work ----------------------------------------------------------

@pytest.mark.parametrize('n', SCRIPTS)
def test_out_whose_folder_cannot_be_made_fails_first(n, tmp_path, capsys):
    """A file where --out's folder should be: the one-line --out error, not the (missing)
    run's: --out is checked before the runs are read."""
    blocker = tmp_path / 'afile'
    blocker.write_text('not a folder')
    missing = str(tmp_path / 'no-such-run')
    with pytest.raises(SystemExit) as e:
        load_script(n).main(['--run', missing, '--out', str(blocker / 'sub' / 'x.png')])
    err = error_line(capsys, 2, e)
    assert 'figure{}: error: --out'.format(n) in err
    assert '{} is a file, not a folder'.format(blocker) in err


@pytest.mark.parametrize('n', SCRIPTS)
def test_out_folder_is_created_before_the_runs_are_read(n, tmp_path, capsys):
    folder = tmp_path / 'new' / 'deeper'
    with pytest.raises(SystemExit) as e:
        load_script(n).main(['--run', str(tmp_path / 'no-such-run'),
                             '--out', str(folder / 'x.png')])
    err = error_line(capsys, 2, e)
    assert 'no-such-run' in err and 'error: --out' not in err   # the run's error, after the check
    assert folder.is_dir()


@pytest.mark.parametrize('n', [1, 2, 9])
def test_out_that_is_a_folder_or_an_unknown_format(n, tmp_path, capsys):
    missing = str(tmp_path / 'no-such-run')
    with pytest.raises(SystemExit) as e:
        load_script(n).main(['--run', missing, '--out', str(tmp_path)])
    assert 'is a folder' in error_line(capsys, 2, e)
    with pytest.raises(SystemExit) as e:
        load_script(n).main(['--run', missing, '--out', str(tmp_path / 'x.pnq')])
    assert 'no .pnq files' in error_line(capsys, 2, e)
