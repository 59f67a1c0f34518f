"""Datasets. Offline real data: scikit-learn's handwritten digits, shaped like CIFAR images.

``load_digits`` ships inside the scikit-learn wheel (1797 8x8 grey images, 10 classes), so it
is the real data every machine has. It is upsampled (bilinear) to ``size`` x ``size``, repeated
to 3 channels and standardized with the training split's mean and standard deviation
(Section 4.1 normalizes CIFAR the same way).
"""
import numpy
import scipy.ndimage
from chainer.datasets import TupleDataset
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
