"""Datasets: CIFAR-10/100 (Section 4.1) and an offline stand-in, scikit-learn's digits.

``get_cifar`` reads the official python-version CIFAR archives (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz``) or their extracted folders from ``data_dir``, falls back to
chainer's downloader, and normalizes every channel with the training split's mean and standard
deviation (Section 4.1). ``write_cifar_archive`` writes small synthetic archives in exactly that
format, so tests and offline smoke runs go through the real loading code. ``augment`` is the
paper's training augmentation (random crop with 4-pixel zero padding, random horizontal flip).

``load_digits`` ships inside the scikit-learn wheel (1797 8x8 grey images, 10 classes), so it
is the real data every machine has. It is upsampled (bilinear) to ``size`` x ``size``, repeated
to 3 channels and standardized with the training split's mean and standard deviation
(Section 4.1 normalizes CIFAR the same way).
"""
import gzip
import io
import os
import pickle
import tarfile

import chainer.datasets
import numpy
import scipy.ndimage
from chainer.datasets import TransformDataset, TupleDataset
from sklearn.datasets import load_digits


def get_digits(size=16, channels=3, test_fraction=0.2, seed=0, dtype=numpy.float32):
    """Digits as (train, test) ``TupleDataset`` of ``(image (channels, size, size), label)``.

    The split is a random permutation with ``seed`` (1438 train / 359 test images for 0.2).
    """
    if size < 8:
        raise ValueError(f'size must be >= 8 (the digits are 8x8); got {size}')
    digits = load_digits()
    images = digits.images.astype(numpy.float64) / 16.0
    if size != 8:
        images = scipy.ndimage.zoom(images, (1, size / 8.0, size / 8.0), order=1)
    images = numpy.repeat(images[:, None], channels, axis=1)
    labels = digits.target.astype(numpy.int32)
    order = numpy.random.RandomState(seed).permutation(len(labels))
    n_test = int(round(test_fraction * len(labels)))
    test_idx, train_idx = order[:n_test], order[n_test:]
    mean = images[train_idx].mean()
    std = images[train_idx].std()
    images = ((images - mean) / std).astype(dtype)
    return (TupleDataset(images[train_idx], labels[train_idx]),
            TupleDataset(images[test_idx], labels[test_idx]))


# --- CIFAR ------------------------------------------------------------------------------------

# the official python-version files: archive, its top folder, the pickled members, label key
_CIFAR = {
    'cifar10': dict(n_classes=10, archive='cifar-10-python.tar.gz', folder='cifar-10-batches-py',
                    train=tuple(f'data_batch_{i}' for i in range(1, 6)), test='test_batch',
                    label_key=b'labels', meta='batches.meta', title='CIFAR-10'),
    'cifar100': dict(n_classes=100, archive='cifar-100-python.tar.gz', folder='cifar-100-python',
                     train=('train',), test='test', label_key=b'fine_labels', meta='meta',
                     title='CIFAR-100'),
}
_CIFAR10_LABEL_NAMES = (b'airplane', b'automobile', b'bird', b'cat', b'deer', b'dog', b'frog',
                        b'horse', b'ship', b'truck')
_URL = 'https://www.cs.toronto.edu/~kriz/{}'


def _cifar_spec(name):
    key = str(name).lower().replace('-', '').replace('_', '')
    if key not in _CIFAR:
        raise ValueError(f"CIFAR name must be 'cifar10' or 'cifar100'; got {name!r}")
    return key, _CIFAR[key]


def _get(d, key):
    """``d[key]`` for a pickled CIFAR dict (bytes keys as in the originals; str keys tolerated)."""
    if key in d:
        return d[key]
    if key.decode() in d:
        return d[key.decode()]
    raise KeyError(f'CIFAR batch has no {key!r} entry (keys: {sorted(map(repr, d))})')


def _unpickle(fileobj):
    return pickle.load(fileobj, encoding='bytes')


def _find_cifar_source(spec, data_dir):
    """('folder' | 'archive', path) for what ``data_dir`` holds, or None.

    Looked for, in this order: the extracted folder ``data_dir/<folder>/`` with every member
    file, ``data_dir`` itself being that folder (same name, or holding the meta file too), and
    ``data_dir/<archive>``.
    """
    if data_dir is None:
        return None
    data_dir = os.fspath(data_dir)
    members = spec['train'] + (spec['test'],)

    def complete(folder, extra=()):
        return all(os.path.isfile(os.path.join(folder, m)) for m in members + extra)

    if complete(os.path.join(data_dir, spec['folder'])):
        return 'folder', os.path.join(data_dir, spec['folder'])
    is_folder = os.path.basename(os.path.normpath(data_dir)) == spec['folder']
    if complete(data_dir, () if is_folder else (spec['meta'],)):
        return 'folder', data_dir
    archive = os.path.join(data_dir, spec['archive'])
    if os.path.isfile(archive):
        return 'archive', archive
    return None


def _read_batches(spec, kind, path):
    """The unpickled train members and test member from a folder or a tar.gz archive."""
    members = spec['train'] + (spec['test'],)
    if kind == 'folder':
        batches = []
        for m in members:
            with open(os.path.join(path, m), 'rb') as f:
                batches.append(_unpickle(f))
    else:
        batches = []
        with tarfile.open(path, 'r:gz') as archive:
            for m in members:
                member = f"{spec['folder']}/{m}"
                try:
                    f = archive.extractfile(member)
                except KeyError:
                    f = None
                if f is None:
                    raise FileNotFoundError(
                        f'{path} has no member {member!r}; is it the python version of '
                        f"{spec['title']} ({spec['archive']})?") from None
                with f:
                    batches.append(_unpickle(f))
    return batches[:-1], batches[-1]


def _stack(spec, batches, where):
    """uint8 images (N, 3, 32, 32) and int32 labels (N,) from unpickled CIFAR batches."""
    xs, ys = [], []
    for d in batches:
        x = numpy.asarray(_get(d, b'data'))
        y = numpy.asarray(_get(d, spec['label_key']), dtype=numpy.int64).reshape(-1)
        if x.dtype != numpy.uint8 or x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
            raise ValueError(f'{where}: expected uint8 data of shape (N, 3072) and N labels; '
                             f'got {x.dtype} {x.shape} and {y.shape}')
        xs.append(x)
        ys.append(y)
    x = numpy.concatenate(xs).reshape(-1, 3, 32, 32)
    y = numpy.concatenate(ys)
    if len(y) and (y.min() < 0 or y.max() >= spec['n_classes']):
        raise ValueError(f"{where}: labels outside [0, {spec['n_classes']}): "
                         f'{y.min()}..{y.max()}')
    return x, y.astype(numpy.int32)


def _missing_message(key, spec, data_dir, download_error):
    files = ', '.join(spec['train'] + (spec['test'],))
    if data_dir is None:
        looked = 'No data_dir was given'
    else:
        looked = (f"Found neither {spec['archive']} nor the extracted folder "
                  f"{spec['folder']}/ in data_dir={os.fspath(data_dir)!r}")
    if download_error is None:
        fallback = 'download was not attempted (download=False)'
    else:
        fallback = (f'chainer.datasets.get_{key}() could not download it '
                    f'({type(download_error).__name__}: {download_error})')
    return (f"{spec['title']} not found. {looked}, and {fallback}. "
            f"Put {spec['archive']} (from {_URL.format(spec['archive'])}), or the folder "
            f"{spec['folder']}/ extracted from it (with {files}), into a directory DIR and pass "
            f"that directory: --data-dir DIR to the experiment runner, or "
            f"data_dir=DIR to get_cifar('{key}', ...) / get_dataset('{key}', ...).")


def _load_cifar_uint8(name, data_dir=None, download=True):
    """Raw CIFAR: (train_x, train_y, test_x, test_y, source); images uint8 (N, 3, 32, 32)."""
    key, spec = _cifar_spec(name)
    found = _find_cifar_source(spec, data_dir)
    if found is not None:
        kind, path = found
        train_batches, test_batch = _read_batches(spec, kind, path)
        train_x, train_y = _stack(spec, train_batches, f'{path} (train)')
        test_x, test_y = _stack(spec, [test_batch], f'{path} (test)')
        return train_x, train_y, test_x, test_y, path
    error = None
    if download:
        loader = getattr(chainer.datasets, f'get_{key}')  # looked up now: tests monkeypatch it
        try:
            train, test = loader(withlabel=True, ndim=3, scale=255., dtype=numpy.float32)
        except Exception as e:  # offline: URLError; anything else is reported the same way
            error = e
        else:
            out = []
            for split in (train, test):
                x, y = split._datasets  # chainer's TupleDataset(images, labels): 0., 1., .. 255.
                x = numpy.rint(x, out=x).astype(numpy.uint8)
                out += [x, numpy.asarray(y, dtype=numpy.int32)]
            return (*out, f'chainer.datasets.get_{key}')
    raise FileNotFoundError(_missing_message(key, spec, data_dir, error)) from error


def _channel_statistics(images):
    """Per-channel mean and standard deviation (float64, (3,)) of uint8 images / 255.

    Exact and memory-light: computed from each channel's histogram of the 256 byte values.
    """
    values = numpy.arange(256, dtype=numpy.float64) / 255.0
    mean, std = numpy.empty(images.shape[1]), numpy.empty(images.shape[1])
    for c in range(images.shape[1]):
        counts = numpy.bincount(images[:, c].ravel(), minlength=256).astype(numpy.float64)
        n = counts.sum()
        if n == 0:
            raise ValueError('cannot compute statistics of an empty training split')
        mean[c] = counts @ values / n
        std[c] = numpy.sqrt(counts @ (values - mean[c]) ** 2 / n)
    return mean, std


def cifar_statistics(name, data_dir=None, *, download=True):
    """Per-channel ``(mean, std)`` of the CIFAR training split, pixel values scaled to [0, 1].

    Both are float64 arrays of shape (3,) (population standard deviation, ddof=0); these are
    what :func:`get_cifar` normalizes with. Reads the data as :func:`get_cifar` does (the
    returned datasets also carry them as ``channel_mean`` / ``channel_std``).
    """
    train_x = _load_cifar_uint8(name, data_dir, download)[0]
    return _channel_statistics(train_x)


def get_cifar(name, data_dir=None, *, normalize=True, dtype=numpy.float32, download=True):
    """CIFAR-10 or CIFAR-100 as (train, test) ``TupleDataset`` of ``(image (3, 32, 32), label)``.

    ``name`` is ``'cifar10'`` or ``'cifar100'`` (fine labels, 100 classes). Sources, in order:

    1. ``data_dir`` holding the extracted folder ``cifar-10-batches-py/`` (``data_batch_1`` ..
       ``data_batch_5``, ``test_batch``) / ``cifar-100-python/`` (``train``, ``test``), or being
       that folder itself, or holding the official archive ``cifar-10-python.tar.gz`` /
       ``cifar-100-python.tar.gz`` (its members are read directly, nothing is extracted);
    2. otherwise (``data_dir`` None or holding none of these) ``chainer.datasets.get_cifar10`` /
       ``get_cifar100``, which uses chainer's dataset cache and downloads when needed
       (skipped with ``download=False``);
    3. otherwise ``FileNotFoundError`` whose message names the files, the directory and how to
       pass it (``--data-dir`` of the runner or ``data_dir=``).

    Pixels are scaled to [0, 1]; with ``normalize`` (Section 4.1) every channel is then
    standardized with the mean and standard deviation of the training split, on both splits.
    Both datasets get the attributes ``channel_mean`` and ``channel_std`` (float64 (3,), in the
    [0, 1] scale, see :func:`cifar_statistics`) and ``source`` (the folder, archive or chainer
    loader read). Labels are int32.
    """
    train_x, train_y, test_x, test_y, source = _load_cifar_uint8(name, data_dir, download)
    mean, std = _channel_statistics(train_x)
    # a lookup table per channel: (v / 255 - mean) / std for the 256 byte values v, computed in
    # float64 and rounded once to dtype; no float64 copy of a whole split is made
    table = numpy.arange(256, dtype=numpy.float64) / 255.0
    if normalize:
        table = (table[None] - mean[:, None]) / std[:, None]
    else:
        table = numpy.repeat(table[None], 3, axis=0)
    table = table.astype(dtype)
    out = []
    for x, y in ((train_x, train_y), (test_x, test_y)):
        images = numpy.empty(x.shape, dtype=dtype)
        for c in range(3):
            images[:, c] = table[c][x[:, c]]
        dataset = TupleDataset(images, y)
        dataset.channel_mean, dataset.channel_std, dataset.source = mean, std, source
        out.append(dataset)
    return tuple(out)


def _synthetic_split(rng, patterns, n, n_classes):
    """n uint8 images (n, 3072) and labels: a class's colour pattern plus pixel noise."""
    labels = rng.permutation(numpy.arange(n) % n_classes) if n else numpy.zeros(0, int)
    noise = rng.normal(0.0, 40.0, size=(n, 3, 32, 32))
    images = numpy.clip(numpy.rint(patterns[labels] + noise), 0, 255).astype(numpy.uint8)
    return images.reshape(n, 3072), labels


def write_cifar_archive(directory, name, n_train, n_test, seed=0, extracted=False):
    """Write a small synthetic CIFAR in the official python format; returns its path.

    Writes ``directory/cifar-10-python.tar.gz`` (members ``cifar-10-batches-py/data_batch_1``
    .. ``data_batch_5``, ``test_batch``, ``batches.meta``) or ``directory/cifar-100-python.tar.gz``
    (``cifar-100-python/train``, ``test``, ``meta``); with ``extracted`` the folder
    ``directory/cifar-10-batches-py/`` / ``directory/cifar-100-python/`` with the same files
    instead. Members are protocol-2 pickles of dicts with bytes keys as in the originals:
    ``b'batch_label'``, ``b'labels'`` (CIFAR-100: ``b'fine_labels'`` and ``b'coarse_labels'`` =
    fine // 5), ``b'data'`` (uint8 (N, 3072), channel-major 3x32x32) and ``b'filenames'``;
    CIFAR-10's ``n_train`` images are split over the 5 batches as evenly as possible.

    Images are learnable but not trivial: each class has a fixed smooth colour pattern (a random
    4x4 colour grid upsampled to 32x32), and every image adds Gaussian noise (std 40 of 255) to
    its class's pattern. Labels cycle through the classes in a random order, so every class
    appears once ``n >= n_classes``. Deterministic per ``seed`` (byte-identical archives).
    """
    key, spec = _cifar_spec(name)
    n_classes = spec['n_classes']
    rng = numpy.random.RandomState(seed)
    grid = rng.uniform(30.0, 225.0, size=(n_classes, 3, 4, 4))
    patterns = numpy.kron(grid, numpy.ones((8, 8)))  # (n_classes, 3, 32, 32)
    train_x, train_y = _synthetic_split(rng, patterns, int(n_train), n_classes)
    test_x, test_y = _synthetic_split(rng, patterns, int(n_test), n_classes)

    def batch(batch_label, x, y, start):
        d = {b'batch_label': batch_label}
        if key == 'cifar10':
            d[b'labels'] = [int(t) for t in y]
        else:
            d[b'fine_labels'] = [int(t) for t in y]
            d[b'coarse_labels'] = [int(t) // 5 for t in y]
        d[b'data'] = numpy.ascontiguousarray(x)
        d[b'filenames'] = [b'synthetic_%03d_%06d.png' % (t, start + i) for i, t in enumerate(y)]
        return d

    files = {}
    if key == 'cifar10':
        bounds = numpy.linspace(0, len(train_y), 6).round().astype(int)
        for i in range(5):
            lo, hi = bounds[i], bounds[i + 1]
            files[f'data_batch_{i + 1}'] = batch(b'training batch %d of 5' % (i + 1),
                                                 train_x[lo:hi], train_y[lo:hi], lo)
        files['test_batch'] = batch(b'testing batch 1 of 1', test_x, test_y, 0)
        files['batches.meta'] = {b'num_cases_per_batch': int(bounds[1] - bounds[0]),
                                 b'label_names': list(_CIFAR10_LABEL_NAMES), b'num_vis': 3072}
    else:
        files['train'] = batch(b'training batch 1 of 1', train_x, train_y, 0)
        files['test'] = batch(b'testing batch 1 of 1', test_x, test_y, 0)
        files['meta'] = {b'fine_label_names': [b'class_%02d' % i for i in range(100)],
                         b'coarse_label_names': [b'superclass_%02d' % i for i in range(20)]}
    blobs = {m: pickle.dumps(d, protocol=2) for m, d in files.items()}

    os.makedirs(directory, exist_ok=True)
    if extracted:
        folder = os.path.join(directory, spec['folder'])
        os.makedirs(folder, exist_ok=True)
        for m, blob in blobs.items():
            with open(os.path.join(folder, m), 'wb') as f:
                f.write(blob)
        return folder
    path = os.path.join(directory, spec['archive'])
    with open(path, 'wb') as raw, gzip.GzipFile('', 'wb', fileobj=raw, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode='w', format=tarfile.GNU_FORMAT) as tar:
            info = tarfile.TarInfo(spec['folder'])
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
            for m, blob in blobs.items():
                info = tarfile.TarInfo(f"{spec['folder']}/{m}")
                info.size, info.mode = len(blob), 0o644
                tar.addfile(info, io.BytesIO(blob))
    return path


# --- augmentation -----------------------------------------------------------------------------

class _RandomCropFlip:
    """Transform of ``augment``: one random draw from its own RandomState per call."""

    def __init__(self, pad, flip, seed):
        self.pad, self.flip = pad, flip
        self.rng = numpy.random.RandomState(seed)

    def __call__(self, in_data):
        image, rest = (in_data[0], in_data[1:]) if isinstance(in_data, tuple) else (in_data, None)
        # always three draws, so flip=False gives the same crops as flip=True with a seed
        dy, dx = self.rng.randint(0, 2 * self.pad + 1, size=2)
        mirror = self.rng.random_sample() < 0.5 and self.flip
        p = self.pad
        if p:
            padded = numpy.zeros(image.shape[:-2] + (image.shape[-2] + 2 * p,
                                                     image.shape[-1] + 2 * p), dtype=image.dtype)
            padded[..., p:-p, p:-p] = image
            image = padded[..., dy:dy + image.shape[-2], dx:dx + image.shape[-1]]
        if mirror:
            image = image[..., ::-1]
        image = numpy.ascontiguousarray(image)
        return image if rest is None else (image, *rest)


def augment(dataset, *, pad=4, flip=True, seed=None):
    """Section 4.1's training augmentation as a ``TransformDataset`` (transformed on access).

    Every access zero-pads the image (the last two axes) by ``pad`` pixels, crops a random
    window of the original size (offsets uniform in [0, 2 * pad], i.e. shifts of up to
    ``pad`` pixels) and, with ``flip``, mirrors it horizontally with probability 1/2. The images
    are already normalized, so the zero padding is the training mean. Use ``flip=False`` for
    digits (not mirror-symmetric). Examples are ``(image, label, ...)`` tuples (only the image
    is changed) or bare images.

    The randomness comes from the transform's own ``numpy.random.RandomState(seed)``, one draw
    per access: the same seed and the same sequence of accesses (e.g. a ``SerialIterator`` with
    a seeded order sampler) give the same images. Worker processes of a
    ``MultiprocessIterator`` would each copy that state, so use a serial iterator for
    reproducible runs.
    """
    if int(pad) != pad or pad < 0:
        raise ValueError(f'pad must be a non-negative integer; got {pad!r}')
    return TransformDataset(dataset, _RandomCropFlip(int(pad), bool(flip), seed))


# --- dispatcher -------------------------------------------------------------------------------

def get_dataset(name, data_dir=None, size=None, seed=0):
    """``(train, test, n_classes)`` for ``'cifar10'``, ``'cifar100'`` or ``'digits'``.

    CIFAR: :func:`get_cifar` (``size`` must be None or 32; ``seed`` is unused, the split is the
    official one). Digits: :func:`get_digits` with image side ``size`` (default 16) and split
    ``seed``; ``data_dir`` is unused.
    """
    key = str(name).lower().replace('-', '').replace('_', '')
    if key == 'digits':
        train, test = get_digits(size=16 if size is None else size, seed=seed)
        return train, test, 10
    if key in _CIFAR:
        if size not in (None, 32):
            raise ValueError(f'CIFAR images are 32x32; size={size!r} is not supported')
        train, test = get_cifar(key, data_dir)
        return train, test, _CIFAR[key]['n_classes']
    raise ValueError(f"dataset must be 'cifar10', 'cifar100' or 'digits'; got {name!r}")
