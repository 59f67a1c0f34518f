"""``python -m mixnorm_chainer.reproduce.fid score A B``: the FID of two image sets, as
pytorch-fid's command line does it (folders of images, .npz of images, .npz of saved statistics)."""
import subprocess
import sys

import numpy
import pytest
from PIL import Image
from test_fid import fid_roundoff

from mixnorm_chainer.reproduce import fid


def digits(offset, n=40):
    from sklearn.datasets import load_digits
    images = load_digits().images[offset:offset + n]                  # (n, 8, 8) in [0, 16]
    return (numpy.kron(images, numpy.ones((2, 2))) * 255 / 16).astype(numpy.uint8)


@pytest.fixture
def image_sets(tmp_path):
    a, b = digits(0), digits(200)
    folder = tmp_path / 'a'
    folder.mkdir()
    for i, image in enumerate(a):
        Image.fromarray(image).save(folder / f'{i:03d}.png')
    (folder / 'notes.txt').write_text('not an image')
    npz = tmp_path / 'b.npz'
    numpy.savez(npz, images=b[..., None])                             # (N, H, W, 1) uint8
    floats = tmp_path / 'b_float.npz'
    numpy.savez(floats, images=b[:, None].astype(numpy.float32) / 255)  # (N, 1, H, W) in [0, 1]
    return a, b, str(folder), str(npz), str(floats)


def run(*args):
    proc = subprocess.run([sys.executable, '-m', 'mixnorm_chainer.reproduce.fid', *args],
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def expected_fid(a, b):
    """The FID of two uint8 image sets and how far rounding can move it (40 images of 64
    features: 25 ~0 eigenvalues of S1 S2, 4.8e-8 on 0.043)."""
    extractor = fid.get_extractor('small')
    stats = [fid.feature_statistics(extractor(x[:, None].astype(numpy.float32) / 127.5 - 1))
             for x in (a, b)]
    return fid.frechet_distance(*stats[0], *stats[1]), fid_roundoff(*stats[0], *stats[1])


def printed(value):
    """Half a unit in the last place of ``FID: {:.6g}``."""
    return 0.5 * 10.0 ** (numpy.floor(numpy.log10(abs(value))) - 5) if value else 0.0


@pytest.mark.slow
def test_score_folder_npz_and_saved_statistics(image_sets, tmp_path):
    a, b, folder, npz, floats = image_sets
    expected, roundoff = expected_fid(a, b)
    stats = str(tmp_path / 'stats.npz')
    rc, out, err = run('score', folder, npz, '--extractor', 'small', '--save-stats', stats)
    assert rc == 0, err
    value = float(out.split()[1])
    assert abs(value - expected) <= roundoff + printed(expected) and value > 0
    assert 'not comparable' in out
    for other in (floats, npz):
        rc, out, err = run('score', stats, other, '--extractor', 'small')
        assert rc == 0, err
        assert float(out.split()[1]) == pytest.approx(expected, rel=1e-4)
    rc, out, _ = run('score', folder, folder, '--extractor', 'small')
    value = float(out.split()[1])
    assert rc == 0 and abs(value) <= expected_fid(a, a)[1] + printed(value)


@pytest.mark.parametrize('case, message', [
    ('missing', 'no such file or folder'),
    ('empty folder', 'no image files'),
    ('wrong keys', 'expected an array named images'),
    ('one image', 'at least 2'),
    ('out of range', 'must lie in \\[0, 1\\]'),
    ('other sizes', 'all images must have one size'),
    ('other extractor', 'features of'),
    ('no weights', 'needs --inception-weights'),
    ('bad batch', 'positive integer'),
])
def test_score_errors_are_one_line(image_sets, tmp_path, case, message):
    a, b, folder, npz, floats = image_sets
    args = ['score', folder, npz, '--extractor', 'small']
    if case == 'missing':
        args[2] = str(tmp_path / 'nope')
    elif case == 'empty folder':
        (tmp_path / 'empty').mkdir()
        args[2] = str(tmp_path / 'empty')
    elif case == 'wrong keys':
        numpy.savez(tmp_path / 'w.npz', x=a, y=b)
        args[2] = str(tmp_path / 'w.npz')
    elif case == 'one image':
        numpy.savez(tmp_path / 'one.npz', images=a[:1, None])
        args[2] = str(tmp_path / 'one.npz')
    elif case == 'out of range':
        numpy.savez(tmp_path / 'r.npz', images=a[:, None].astype(numpy.float32))
        args[2] = str(tmp_path / 'r.npz')
    elif case == 'other sizes':
        Image.fromarray(numpy.zeros((5, 5), numpy.uint8)).save(tmp_path / 'a' / 'zzz.png')
    elif case == 'other extractor':
        numpy.savez(tmp_path / 's.npz', mu=numpy.zeros(3), sigma=numpy.eye(3))
        args[2] = str(tmp_path / 's.npz')
    elif case == 'no weights':
        args = args[:3]
    elif case == 'bad batch':
        args += ['--batch-size', '0']
    rc, out, err = run(*args)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in err, err
    import re
    assert re.search(message, lines[0]), lines[0]
