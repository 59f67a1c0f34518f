"""User mistakes give one line (what is wrong, what to do) and a non-zero exit, no traceback
(issue 15): mixnorm-exp, mixnorm-crosscheck, python -m mixnorm_chainer.reproduce.fid, figure
scripts."""
import csv
import io
import json
import os
import shutil
import subprocess
import sys

import chainer
import numpy
import pytest

from mixnorm_chainer.reproduce import (
    crosscheck,
    fid,
    gan,
    registry,
    runfolder,
    runner,
    training,
)

from figure_scripts import load_script

TINY = ['--dataset', 'digits', '--input-size', '8', '--train-limit', '64', '--test-limit', '32',
        '--batch-size', '16', '--no-progress']
GAN_TINY = ['--dataset', 'digits', '--input-size', '8', '--width', '16', '--batch-size', '16',
            '--train-limit', '96', '--fid-samples', '32', '--fid-extractor', 'small',
            '--fid-batch-size', '32', '--no-progress']


def cli(main, argv, capsys):
    """(exit code, stdout, stderr) of a command-line entry point (argparse exits included)."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(main, argv, capsys, *expected, code=2):
    """Run ``argv``: exit ``code``, one line on stderr holding every ``expected`` text."""
    got, _, err = cli(main, argv, capsys)
    lines = err.strip().splitlines()
    assert got == code and len(lines) == 1, (got, err)
    assert 'Traceback' not in err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def exp(argv, capsys, *expected):
    return one_line_error(runner.main, argv, capsys, *expected)


# -- item 5: zero, negative and too large values --------------------------------------------

@pytest.mark.parametrize('argv, option', [
    (['run', 'cnn-c10-MN-2', '--batch-size', '0'], '--batch-size'),
    (['run', 'cnn-c10-MN-2', '--train-limit', '0'], '--train-limit'),
    (['run', 'cnn-c10-MN-2', '--train-limit', '-1400'], '--train-limit'),
    (['run', 'cnn-c10-MN-2', '--epochs', '0'], '--epochs'),
    (['run', 'cnn-c10-MN-2', '--scale', '-1'], '--scale'),
    (['run', 'cnn-c10-MN-2', '--test-batch-size', '0'], '--test-batch-size'),
    (['run', 'cnn-c10-MN-2', '--input-size', '4'], '--input-size'),
    (['run', 'cnn-c10-MN-2', '--seed', '-1'], '--seed'),
    (['run', 'dcgan-c10-BN', '--iterations', '0'], '--iterations'),
    (['run', 'dcgan-c10-BN', '--fid-interval', '0'], '--fid-interval'),
    (['run', 'dcgan-c10-BN', '--fid-samples', '1'], '--fid-samples'),
    (['run', 'dcgan-c10-BN', '--log-interval', '-5'], '--log-interval'),
    (['run', 'cnn-c10-MN-2', '--record-fractions', 'a,b'], '--record-fractions'),
    (['run', 'cnn-c10-MN-2', '--record-fractions', '0,0.5'], '--record-fractions'),
    (['cost', '--iters', '0'], '--iters'),
    (['cost', '--depth', '8'], '--depth'),
    (['cost', '--components', '0'], '--components'),
])
def test_bad_numbers_are_refused_by_the_parser(argv, option, capsys):
    line = exp(argv, capsys, 'argument ' + option, '--help')
    assert line.startswith('mixnorm-exp')


def test_a_batch_larger_than_the_training_set(tmp_path, capsys):
    out = str(tmp_path / 'o')
    exp(['run', 'cnn-c10-MN-2', '--out', out, '--batch-size', '64'] + TINY[:-3] +
        ['--train-limit', '38'], capsys, '--batch-size 64 is larger than the training set (38')
    exp(['run', 'dcgan-c10-BN', '--out', out] + GAN_TINY + ['--batch-size', '200'], capsys,
        '--batch-size 200 is larger than the training set (96')
    assert not os.path.exists(out)


# -- item 6: failed runs leave nothing, --data-dir never downloads ---------------------------

def test_a_failed_run_leaves_no_folder_and_data_dir_is_not_downloaded(tmp_path, capsys,
                                                                      monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError('downloaded although --data-dir was given')
    monkeypatch.setattr(chainer.datasets, 'get_cifar10', no_download)
    empty = tmp_path / 'typo'
    empty.mkdir()
    out = str(tmp_path / 'out')
    exp(['run', 'cnn-c10-BN-2', '--data-dir', str(empty), '--out', out, '--epochs', '1'],
        capsys, 'CIFAR-10 not found', str(empty), 'download was not attempted')
    exp(['run', 'cnn-c10-BN-2', '--data-dir', str(tmp_path / 'nope'), '--out', out], capsys,
        '--data-dir', 'is not a folder')
    exp(['run', 'dcgan-c10-BN', '--data-dir', str(empty), '--out', out, '--iterations', '2',
         '--fid-extractor', 'small'], capsys, 'CIFAR-10 not found')
    assert not os.path.exists(out)


# -- run folder and device errors ------------------------------------------------------------

def test_out_that_is_a_file_or_cannot_be_written(tmp_path, capsys):
    f = tmp_path / 'file'
    f.write_text('keep me')
    exp(['run', 'cnn-c10-MN-2', '--out', str(f)] + TINY, capsys, 'is a file, not a folder')
    exp(['run', 'cnn-c10-MN-2', '--out', str(f / 'sub')] + TINY, capsys, 'is a file')
    assert f.read_text() == 'keep me'
    if os.path.isdir('/proc/self'):
        exp(['run', 'cnn-c10-MN-2', '--out', '/proc/xx'] + TINY, capsys, '--out /proc/xx',
            'cannot create')


def test_missing_inception_weights(tmp_path, capsys):
    out = str(tmp_path / 'g')
    base = ['run', 'dcgan-c10-BN', '--out', out] + GAN_TINY[:-5] + ['--fid-extractor',
                                                                     'inception']
    exp(base + ['--inception-weights', str(tmp_path / 'nope.npz')], capsys,
        '--inception-weights', 'no such file', 'mixnorm_chainer.reproduce.fid convert')
    exp(base, capsys, 'needs the published FID Inception weights')
    assert not os.path.exists(out)


def test_cupy_device_without_cupy(tmp_path, capsys):
    try:
        import cupy  # noqa: F401
        pytest.skip('CuPy is installed')
    except ImportError:
        pass
    exp(['run', 'cnn-c10-MN-2', '--device', '@cupy:0', '--out', str(tmp_path / 'o')] + TINY,
        capsys, '--device @cupy:0', 'gpu-cuda12 or gpu-cuda13 extra', '--device @numpy')
    exp(['cost', '--device', '@cupy:0'], capsys, 'mixnorm-doctor')
    exp(['cost', '--device', '@nonsense'], capsys, "not a chainer device")


def test_list_unknown_table(capsys):
    exp(['list', '--table', 'Table 9'], capsys, "'Table 9'", "'Table 2'")


# -- summarize ---------------------------------------------------------------------------------

def fake_run(root, name, accs, log=True):
    d = root / name
    d.mkdir()
    s = registry.get(name)
    (d / 'setting.json').write_text(json.dumps({'setting': s.to_dict(), 'dataset': s.dataset,
                                                'epochs': len(accs), 'seed': 0}))
    if log:
        (d / 'log.json').write_text(json.dumps([
            {'epoch': i + 1, 'iteration': 10 * (i + 1), 'validation/main/accuracy': a}
            for i, a in enumerate(accs)]))
    return str(d)


def test_summarize_bad_folders(tmp_path, capsys):
    bn = fake_run(tmp_path, 'cnn-c10-BN-2', [0.5, 0.7])
    bad = fake_run(tmp_path, 'cnn-c10-MN-2', [0.6, 0.8])
    with open(os.path.join(bad, 'log.json'), 'w') as f:
        f.write('[{"epoch": 1,')
    exp(['summarize', bn, bad], capsys, os.path.join(bad, 'log.json'), 'not valid JSON')
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'setting.json').write_text('{}')
    exp(['summarize', str(empty)], capsys, 'setting.json lacks setting.name',
        'not written by mixnorm-exp run')
    exp(['summarize', str(tmp_path / 'none')], capsys, 'not a run folder')


def test_summarize_warns_of_missing_logs_and_repeated_folders(tmp_path, capsys):
    bn = fake_run(tmp_path, 'cnn-c10-BN-2', [0.5, 0.7])
    nolog = fake_run(tmp_path, 'cnn-c10-MN-2', [0.6, 0.8], log=False)
    code, out, err = cli(runner.main, ['summarize', bn, nolog, bn + '/'], capsys)
    assert code == 0
    assert 'has no log.json yet' in err and nolog in err
    assert 'given twice' in err
    code, once, _ = cli(runner.main, ['summarize', bn, nolog], capsys)
    assert out == once                               # the repeated folder: no duplicate rows
    assert sum(line.startswith('cnn-c10-BN-2') for line in out.splitlines()) == 2  # 2 tables


def test_summarize_csv(tmp_path, capsys):
    bn = fake_run(tmp_path, 'cnn-c10-BN-2', [0.5, 0.6, 0.55, 0.7])
    mn = fake_run(tmp_path, 'cnn-c10-MN-2', [0.6, 0.72, 0.7, 0.71])
    path = str(tmp_path / 's.csv')
    code, out, _ = cli(runner.main, ['summarize', bn, mn, '--csv', path], capsys)
    assert code == 0 and 'Table 2' in out
    rows = {r['name']: r for r in csv.DictReader(open(path))}
    assert float(rows['cnn-c10-BN-2']['acc_100']) == pytest.approx(70.0)
    assert float(rows['cnn-c10-MN-2']['acc_50']) == pytest.approx(72.0)
    assert rows['cnn-c10-MN-2']['steps_to_baseline'] == '20'
    assert rows['cnn-c10-MN-2']['paper_acc_100'] == '88.47'
    code, out, _ = cli(runner.main, ['summarize', bn, mn, '--csv', '-'], capsys)
    assert code == 0 and out.startswith('dir,name,table')
    assert len(list(csv.DictReader(io.StringIO(out)))) == 2


# -- logs: no ANSI codes off a terminal, progress bar on one, ChainerUI files -----------------

@pytest.mark.slow
def test_logs_are_plain_off_a_terminal_and_chainerui_can_read_the_folder(tmp_path, capsys,
                                                                         monkeypatch):
    from chainer.training import extensions
    monkeypatch.setattr(extensions.PlotReport, 'available', staticmethod(lambda: False))
    names = []

    def spy(trainer):
        names.append(sorted(trainer._extensions))
    out = str(tmp_path / 'plain')
    argv = ['run', 'cnn-c10-MN-2', '--epochs', '1'] + TINY[:-1]      # no --no-progress
    training.run(runner.build_parser().parse_args(argv + ['--out', out]), [(spy, (1, 'epoch'))])
    text = capsys.readouterr().out
    assert '\033' not in text and 'validation/main/accuracy' in text
    assert 'ProgressBar' not in names[-1]
    # ChainerUI: `args` (the options) and `log` (the LogReport entries)
    with open(os.path.join(out, 'args')) as f:
        args = json.load(f)
    assert args['name'] == 'cnn-c10-MN-2' and args['batch_size'] == 16 and args['epochs'] == 1
    with open(os.path.join(out, 'log')) as f, open(os.path.join(out, 'log.json')) as g:
        assert json.load(f) == json.load(g)
    # on a terminal: the progress bar stays
    monkeypatch.setattr(runfolder, 'interactive', lambda: True)
    training.run(runner.build_parser().parse_args(argv + ['--out', str(tmp_path / 'tty')]),
                 [(spy, (1, 'epoch'))])
    assert 'ProgressBar' in names[-1] and '\033[J' in capsys.readouterr().out


def test_interrupt_says_how_to_continue(capsys, monkeypatch):
    def ctrl_c(args, extra_extensions=()):
        raise KeyboardInterrupt
    monkeypatch.setattr(training, 'run', ctrl_c)
    one_line_error(runner.main, ['run', 'cnn-c10-MN-2'], capsys, '--resume', code=130)


# -- crosscheck -----------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def golden(tmp_path_factory):
    d = str(tmp_path_factory.mktemp('golden'))
    crosscheck.export(d)
    return d


def test_crosscheck_bad_inputs(golden, tmp_path, capsys):
    def cc(argv, *expected, code=2):
        return one_line_error(crosscheck.main, argv, capsys, *expected, code=code)
    text = tmp_path / 'outputs.txt'
    text.write_text('not an npz')
    cc(['compare', golden, str(text)], 'is not an .npz file')
    manifest, arrays = crosscheck.load(golden)
    case = manifest['cases'][0]
    key = case['name'] + '/' + next(iter(case['outputs']))
    numpy.savez(str(tmp_path / 'str.npz'), **{key: numpy.array(['a', 'b'])})
    cc(['compare', golden, str(tmp_path / 'str.npz')], key, 'has dtype <U1', 'numeric')
    cc(['export', str(text)], 'is a file; give a directory')
    cc(['compare', golden, str(tmp_path / 'str.npz'), '--tol-scale', '-1'],
       'argument --tol-scale', 'must be a number > 0')
    cc(['compare', golden, str(tmp_path / 'str.npz'), '--tol-scale', 'nan'], '--tol-scale')
    # a wrong-shape output is a failure that says the shapes
    numpy.savez(str(tmp_path / 'shape.npz'), **{key: numpy.zeros((2, 3))})
    code, out, _ = cli(crosscheck.main, ['compare', golden, str(tmp_path / 'shape.npz'),
                                         '--allow-missing'], capsys)
    assert code == 1
    assert 'shape mismatch: {}: shape (2, 3), expected {}'.format(
        key, tuple(arrays[key].shape)) in out
    assert '1 of wrong shape' in out


# -- FID weights converter -----------------------------------------------------------------------

def test_fid_convert_bad_inputs(tmp_path, capsys):
    def conv(argv, *expected):
        return one_line_error(fid.main, ['convert'] + argv, capsys, *expected)
    out = str(tmp_path / 'w.npz')
    conv([str(tmp_path / 'missing.pth'), out], 'no such file', fid.PYTORCH_FID_WEIGHTS_FILE)
    conv([str(tmp_path / 'missing.pth'), str(tmp_path / 'no' / 'w.npz')], 'no such file')
    torch = pytest.importorskip('torch')
    junk = tmp_path / 'junk.pth'
    junk.write_text('hello')
    conv([str(junk), out], 'is not a torch state dict file')
    wrong = str(tmp_path / 'wrong.pth')
    torch.save({'conv.weight': torch.zeros(2)}, wrong)
    conv([wrong, out], wrong, "unexpected key", 'conv.weight')
    torch.save({'fc.weight': torch.zeros(2)}, wrong)
    conv([wrong, out], 'does not match the FID Inception-V3')
    assert not os.path.exists(out)


# -- figure scripts ------------------------------------------------------------------------------

@pytest.mark.parametrize('number', [2, 3, 4])
def test_figure_help_prints(number, capsys):
    code, out, err = cli(load_script(number).main, ['--help'], capsys)
    assert code == 0 and 'test error (%) axis limits' in out and not err


@pytest.mark.parametrize('number', [1, 8])
def test_figures_1_and_8_without_recording(number, tmp_path, capsys):
    run = fake_run(tmp_path, 'cnn-c10-MN-2', [0.5])
    one_line_error(load_script(number).main, ['--run', run, '--out', str(tmp_path / 'f.png')],
                   capsys, 'has no recording.npz', '--record')
    (tmp_path / 'cnn-c10-MN-2' / 'recording.npz').write_bytes(b'damaged')
    one_line_error(load_script(number).main, ['--run', run, '--out', str(tmp_path / 'f.png')],
                   capsys, 'recording.npz')


# -- the console entry point itself ------------------------------------------------------------

def test_console_script_prints_one_line(tmp_path):
    exe = shutil.which('mixnorm-exp', path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip('mixnorm-exp is not installed next to this python')
    proc = subprocess.run([exe, 'run', 'cnn-c10-MN-2', '--batch-size', '0'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ''
    assert proc.stderr.strip().splitlines() == [
        'mixnorm-exp run: error: argument --batch-size: must be a positive integer (>= 1); got 0'
        ' (see mixnorm-exp run --help)']


def parsers(parser, path):
    """``(command path, parser)`` of ``parser`` and of every subcommand under it."""
    import argparse
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, path + ' ' + name)


def test_every_option_of_every_command_has_help(capsys):
    """`mixnorm-exp CMD -h` explains every option and argument (issue 22: `cost -h` did not):
    each action of each subcommand (argument groups included) has a help text, except -h."""
    import argparse
    missing, seen = [], []
    for path, parser in parsers(runner.build_parser(), 'mixnorm-exp'):
        seen.append(path)
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                helped = {a.dest for a in action._choices_actions if (a.help or '').strip()}
                missing += ['{} {} (the command)'.format(path, name) for name in action.choices
                            if name not in helped]
                continue
            if action.help == argparse.SUPPRESS or not (action.help or '').strip():
                missing.append('{} {}'.format(path, '/'.join(action.option_strings) or
                                              action.dest))
    assert not missing, missing
    assert {'mixnorm-exp run', 'mixnorm-exp cost', 'mixnorm-exp summarize'} <= set(seen)
    code, out, _ = cli(runner.main, ['cost', '-h'], capsys)
    assert code == 0 and 'timed iterations' in out


# -- structure -----------------------------------------------------------------------------------

def test_run_folder_code_has_one_way_dependencies():
    """training -> gan -> runfolder: gan imports neither runner nor training, runfolder none of
    them (tests/test_layout.py checks that no package imports run in a circle)."""
    import ast
    for module, banned in ((gan, {'runner', 'training'}),
                           (runfolder, {'runner', 'training', 'gan'})):
        banned = {'mixnorm_chainer.reproduce.' + name for name in banned}
        tree = ast.parse(open(module.__file__).read())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update('{}.{}'.format(node.module, a.name) for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        assert not names & banned, (module.__name__, names & banned)


def test_list_into_a_closed_pipe_exits_quietly():
    """`mixnorm-exp list | head -1`: no 'Broken pipe' error, exit status 0."""
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, '-c', 'import sys; from mixnorm_chainer.reproduce.runner '
                          'import main; sys.exit(main(["list"]))'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()                      # the reader has left before anything is written
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0, err
    assert 'Broken pipe' not in err and 'Traceback' not in err, err
