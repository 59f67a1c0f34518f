"""CIFAR loading (from synthetic archives in the official format), augmentation, dispatch."""
# isort: off
import mixnorm_chainer  # noqa: F401  (first: chainer on numpy >= 2 needs _compat)
# isort: on
import os
import pickle
import tarfile

import chainer
import numpy
import pytest

from mixnorm_chainer.reproduce import datasets
from mixnorm_chainer.reproduce.datasets import (
    augment,
    cifar_statistics,
    get_cifar,
    get_dataset,
    write_cifar_archive,
)

SIZES = {'cifar10': (103, 21), 'cifar100': (230, 57)}  # 103: uneven over CIFAR-10's 5 batches
FOLDER = {'cifar10': 'cifar-10-batches-py', 'cifar100': 'cifar-100-python'}
ARCHIVE = {'cifar10': 'cifar-10-python.tar.gz', 'cifar100': 'cifar-100-python.tar.gz'}
MEMBERS = {'cifar10': ['data_batch_1', 'data_batch_2', 'data_batch_3', 'data_batch_4',
                       'data_batch_5', 'test_batch', 'batches.meta'],
           'cifar100': ['train', 'test', 'meta']}


def read_pickles(name, path):
    """The members of a written archive or folder, unpickled independently of the library."""
    out = {}
    if path.endswith('.tar.gz'):
        with tarfile.open(path, 'r:gz') as tar:
            for m in MEMBERS[name]:
                out[m] = pickle.load(tar.extractfile(f'{FOLDER[name]}/{m}'), encoding='bytes')
    else:
        for m in MEMBERS[name]:
            with open(os.path.join(path, m), 'rb') as f:
                out[m] = pickle.load(f, encoding='bytes')
    return out


def raw_splits(name, pickles):
    """uint8 images (N, 3, 32, 32) and labels of both splits, straight from the pickles."""
    key = b'labels' if name == 'cifar10' else b'fine_labels'
    train = MEMBERS[name][:-2]
    test = MEMBERS[name][-2]
    x = numpy.concatenate([pickles[m][b'data'] for m in train]).reshape(-1, 3, 32, 32)
    y = numpy.concatenate([pickles[m][key] for m in train])
    return x, y, pickles[test][b'data'].reshape(-1, 3, 32, 32), numpy.array(pickles[test][key])


@pytest.fixture(scope='module')
def written(tmp_path_factory):
    """{(name, extracted): (data_dir, path written)} for both datasets, archive and folder."""
    out = {}
    for name in ('cifar10', 'cifar100'):
        for extracted in (False, True):
            d = str(tmp_path_factory.mktemp(f'{name}_{int(extracted)}'))
            out[name, extracted] = d, write_cifar_archive(d, name, *SIZES[name], seed=1,
                                                          extracted=extracted)
    return out


@pytest.mark.parametrize('extracted', [False, True], ids=['tar.gz', 'folder'])
@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
def test_get_cifar_loads_and_normalizes(written, name, extracted):
    data_dir, path = written[name, extracted]
    assert path == os.path.join(data_dir, FOLDER[name] if extracted else ARCHIVE[name])
    train_x, train_y, test_x, test_y = raw_splits(name, read_pickles(name, path))
    n_train, n_test = SIZES[name]
    assert train_x.shape == (n_train, 3, 32, 32) and test_x.shape == (n_test, 3, 32, 32)

    train, test = get_cifar(name, data_dir)
    assert isinstance(train, chainer.datasets.TupleDataset)
    assert len(train) == n_train and len(test) == n_test
    x, t = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == numpy.float32
    assert isinstance(t, numpy.int32)
    images, labels = train._datasets
    assert labels.dtype == numpy.int32 and test._datasets[1].dtype == numpy.int32
    numpy.testing.assert_array_equal(labels, train_y)
    numpy.testing.assert_array_equal(test._datasets[1], test_y)
    n_classes = 10 if name == 'cifar10' else 100
    assert set(labels) == set(range(n_classes))  # every class appears (n_train >= n_classes)

    # direct computation: /255, per-channel mean and std of the training split, both splits
    mean = (train_x / 255.0).mean(axis=(0, 2, 3))
    std = (train_x / 255.0).std(axis=(0, 2, 3))
    expect_train = (train_x / 255.0 - mean[:, None, None]) / std[:, None, None]
    expect_test = (test_x / 255.0 - mean[:, None, None]) / std[:, None, None]
    numpy.testing.assert_allclose(images, expect_train, rtol=0, atol=1e-5)
    numpy.testing.assert_allclose(test._datasets[0], expect_test, rtol=0, atol=1e-5)
    numpy.testing.assert_allclose(images.mean(axis=(0, 2, 3), dtype=numpy.float64), 0, atol=1e-6)
    numpy.testing.assert_allclose(images.std(axis=(0, 2, 3), dtype=numpy.float64), 1, atol=1e-6)
    assert numpy.abs(test._datasets[0].mean(axis=(0, 2, 3))).max() > 1e-3  # train stats, not own

    for d in (train, test):
        numpy.testing.assert_allclose(d.channel_mean, mean, rtol=1e-12)
        numpy.testing.assert_allclose(d.channel_std, std, rtol=1e-12)
        assert d.source == path
    stat_mean, stat_std = cifar_statistics(name, data_dir)
    numpy.testing.assert_allclose(stat_mean, mean, rtol=1e-12)
    numpy.testing.assert_allclose(stat_std, std, rtol=1e-12)

    raw_train, raw_test = get_cifar(name, data_dir, normalize=False, dtype=numpy.float64)
    assert raw_train[0][0].dtype == numpy.float64
    numpy.testing.assert_allclose(raw_train._datasets[0], train_x / 255.0, rtol=1e-15)
    numpy.testing.assert_allclose(raw_test._datasets[0], test_x / 255.0, rtol=1e-15)


@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
def test_written_archive_has_the_official_layout(tmp_path, name):
    path = write_cifar_archive(str(tmp_path), name, *SIZES[name], seed=0)
    with tarfile.open(path, 'r:gz') as tar:
        assert tar.getnames() == [FOLDER[name]] + [f'{FOLDER[name]}/{m}' for m in MEMBERS[name]]
    pickles = read_pickles(name, path)
    batches = [m for m in MEMBERS[name] if 'meta' not in m]
    keys = {b'batch_label', b'data', b'filenames'}
    keys |= {b'labels'} if name == 'cifar10' else {b'fine_labels', b'coarse_labels'}
    for m in batches:
        d = pickles[m]
        assert set(d) == keys
        assert d[b'data'].dtype == numpy.uint8 and d[b'data'].shape[1] == 3072
        assert len(d[b'filenames']) == len(d[b'data']) and isinstance(d[b'filenames'][0], bytes)
        assert d[b'batch_label'].startswith(b'testing' if m.startswith('test') else b'training')
    if name == 'cifar10':
        assert [len(pickles[m][b'labels']) for m in batches] == [21, 20, 21, 20, 21, 21]
        assert len(pickles['batches.meta'][b'label_names']) == 10
    else:
        d = pickles['train']
        assert d[b'coarse_labels'] == [t // 5 for t in d[b'fine_labels']]
        assert len(pickles['meta'][b'fine_label_names']) == 100
        assert len(pickles['meta'][b'coarse_label_names']) == 20
    # deterministic per seed, byte for byte; another seed gives other data
    again = write_cifar_archive(str(tmp_path / 'again'), name, *SIZES[name], seed=0)
    other = write_cifar_archive(str(tmp_path / 'other'), name, *SIZES[name], seed=1)
    with open(path, 'rb') as a, open(again, 'rb') as b, open(other, 'rb') as c:
        first = a.read()
        assert first == b.read() and first != c.read()


def test_synthetic_classes_are_learnable(written):
    train, test = get_cifar('cifar10', written['cifar10', False][0])
    (x, y), (xt, yt) = train._datasets, test._datasets
    centroids = numpy.stack([x[y == k].mean(axis=0).ravel() for k in range(10)])
    dist = ((xt.reshape(len(xt), -1)[:, None] - centroids[None]) ** 2).sum(-1)
    assert (dist.argmin(1) == yt).mean() >= 0.9  # nearest class mean


def test_data_dir_may_be_the_extracted_folder_itself(written):
    data_dir, folder = written['cifar100', True]
    train, test = get_cifar('cifar100', folder)
    ref_train, _ = get_cifar('cifar100', data_dir)
    numpy.testing.assert_array_equal(train._datasets[0], ref_train._datasets[0])
    assert train.source == folder


@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
@pytest.mark.parametrize('given', [False, True], ids=['no data_dir', 'empty data_dir'])
def test_clear_error_when_nothing_is_found(tmp_path, monkeypatch, name, given):
    calls = []

    def offline(**kwargs):
        calls.append(kwargs)
        raise OSError('simulated: no network')

    monkeypatch.setattr(chainer.datasets, f'get_{name}', offline)
    data_dir = str(tmp_path) if given else None
    with pytest.raises(FileNotFoundError) as info:
        get_cifar(name, data_dir)
    assert calls == [dict(withlabel=True, ndim=3, scale=255., dtype=numpy.float32)]
    msg = str(info.value)
    for part in [ARCHIVE[name], FOLDER[name] + '/', *MEMBERS[name][:-1], '--data-dir',
                 'data_dir=', 'simulated: no network', f'get_{name}()']:
        assert part in msg, part
    assert (repr(str(tmp_path)) in msg) == given
    assert isinstance(info.value.__cause__, OSError)

    with pytest.raises(FileNotFoundError, match='download was not attempted'):
        get_cifar(name, data_dir, download=False)
    assert len(calls) == 1
    with pytest.raises(FileNotFoundError, match=ARCHIVE[name].replace('.', r'\.')):
        get_dataset(name, data_dir)


def test_chainer_fallback_is_used_and_normalized(monkeypatch):
    rng = numpy.random.RandomState(0)
    raw = [rng.randint(0, 256, size=(n, 3, 32, 32)).astype(numpy.uint8) for n in (40, 10)]
    labels = [rng.randint(0, 10, size=n).astype(numpy.int32) for n in (40, 10)]

    def cached(withlabel, ndim, scale, dtype):  # chainer's output: float images in [0, scale]
        return tuple(chainer.datasets.TupleDataset(x.astype(dtype) * (scale / 255.), y)
                     for x, y in zip(raw, labels))

    monkeypatch.setattr(chainer.datasets, 'get_cifar10', cached)
    train, test = get_cifar('cifar10')
    assert train.source == 'chainer.datasets.get_cifar10'
    mean, std = (raw[0] / 255.).mean(axis=(0, 2, 3)), (raw[0] / 255.).std(axis=(0, 2, 3))
    for d, x, y in zip((train, test), raw, labels):
        numpy.testing.assert_allclose(
            d._datasets[0], (x / 255. - mean[:, None, None]) / std[:, None, None], atol=1e-5)
        numpy.testing.assert_array_equal(d._datasets[1], y)


def test_archive_without_the_members_is_reported(tmp_path):
    with tarfile.open(tmp_path / 'cifar-10-python.tar.gz', 'w:gz'):
        pass
    with pytest.raises(FileNotFoundError, match='cifar-10-batches-py/data_batch_1'):
        get_cifar('cifar10', str(tmp_path))
    with pytest.raises(ValueError, match='cifar10'):
        get_cifar('cifar1000', str(tmp_path))


# --- augmentation ----------------------------------------------------------------------------

def random_images(n=50, seed=0):
    rng = numpy.random.RandomState(seed)
    x = rng.normal(size=(n, 3, 32, 32)).astype(numpy.float32)
    return chainer.datasets.TupleDataset(x, numpy.arange(n, dtype=numpy.int32))


def locate(out, image, pad=4):
    """(dy, dx, flipped) such that ``out`` is that window of the zero-padded image, or None."""
    padded = numpy.pad(image, ((0, 0), (pad, pad), (pad, pad)))
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            window = padded[:, dy:dy + 32, dx:dx + 32]
            for flipped, cand in ((False, window), (True, window[:, :, ::-1])):
                if numpy.array_equal(out, cand):
                    return dy - pad, dx - pad, flipped
    return None


def draws(dataset, epochs=4):
    return [dataset[i] for _ in range(epochs) for i in range(len(dataset))]


def test_augment_crops_are_padded_shifts_and_flip_half_the_time():
    base = random_images()
    aug = augment(base, seed=3)
    assert isinstance(aug, chainer.datasets.TransformDataset) and len(aug) == len(base)
    shifts, flips = [], []
    for k, (x, t) in enumerate(draws(aug)):
        assert x.shape == (3, 32, 32) and x.dtype == numpy.float32 and x.flags.c_contiguous
        assert t == k % len(base)  # labels untouched
        found = locate(x, base[t][0])
        assert found is not None
        shifts.append(found[:2])
        flips.append(found[2])
    shifts = numpy.array(shifts)
    assert numpy.abs(shifts).max() == 4  # within +-4, and the extremes are reached
    assert len(set(shifts[:, 0])) == 9 and len(set(shifts[:, 1])) == 9
    assert 0.4 <= numpy.mean(flips) <= 0.6  # 200 draws


def test_augment_is_deterministic_per_seed_and_flip_false_never_flips():
    base = random_images()
    a, b, c = draws(augment(base, seed=7)), draws(augment(base, seed=7)), draws(augment(base))
    assert all(numpy.array_equal(x, y) and s == t for (x, s), (y, t) in zip(a, b))
    assert not all(numpy.array_equal(x, y) for (x, _), (y, _) in zip(a, c))
    other = draws(augment(base, seed=8))
    assert sum(numpy.array_equal(x, y) for (x, _), (y, _) in zip(a, other)) < len(a) // 4

    plain = draws(augment(base, flip=False, seed=7))
    for (x, t), (y, _) in zip(plain, a):
        dy, dx, flipped = locate(x, base[t][0])
        assert not flipped
        # same seed: the same crops as with flip=True, only never mirrored
        assert numpy.array_equal(y, x) or numpy.array_equal(y, x[:, :, ::-1])

    same = draws(augment(base, pad=0, flip=False, seed=1), epochs=1)
    assert all(numpy.array_equal(x, base[t][0]) for x, t in same)
    bare = augment(base._datasets[0], seed=0)  # a dataset of bare images
    assert locate(bare[5], base[5][0]) is not None
    with pytest.raises(ValueError, match='pad'):
        augment(base, pad=-1)


def test_augment_in_an_iterator_on_digits():
    train, _ = datasets.get_digits(size=16)
    it = chainer.iterators.SerialIterator(augment(train, flip=False, seed=0), 32)
    x, t = chainer.dataset.concat_examples(it.next())
    assert x.shape == (32, 3, 16, 16) and x.dtype == numpy.float32 and t.dtype == numpy.int32


# --- dispatcher ------------------------------------------------------------------------------

def test_get_dataset_dispatch(written):
    train, test, n = get_dataset('digits')
    assert (len(train), len(test), n) == (1438, 359, 10) and train[0][0].shape == (3, 16, 16)
    ref, _ = datasets.get_digits(size=16, seed=0)
    numpy.testing.assert_array_equal(train._datasets[0], ref._datasets[0])
    train, _, _ = get_dataset('digits', size=8, seed=2)
    assert train[0][0].shape == (3, 8, 8)
    for name, n_classes in (('cifar10', 10), ('cifar100', 100)):
        data_dir = written[name, False][0]
        train, test, n = get_dataset(name, data_dir)
        assert (len(train), len(test), n) == (*SIZES[name], n_classes)
        assert train[0][0].shape == (3, 32, 32)
    assert get_dataset('CIFAR-10', written['cifar10', False][0])[2] == 10
    with pytest.raises(ValueError, match='32x32'):
        get_dataset('cifar10', written['cifar10', False][0], size=16)
    with pytest.raises(ValueError, match='digits'):
        get_dataset('mnist')
