"""Feature extractors for FID (:mod:`mixnorm_chainer.reproduce.fid`): :func:`get_extractor`
gives a :class:`FeatureExtractor` around the FID Inception-V3
(:mod:`mixnorm_chainer.reproduce.fid_inception`; numbers comparable to published FIDs) or around
:class:`SmallConvNet`, an offline random-weight stand-in (not comparable). Images are resized
bilinearly as pytorch-fid does (:func:`resize_bilinear`).
"""
import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np

from mixnorm_chainer.reproduce.fid_inception import (
    MISSING_WEIGHTS_HELP,
    FIDInceptionV3,
    load_fid_inception_npz,
)

# --------------------------------------------------------------------------------------------
# Extractors


class FeatureExtractor:
    """Callable ``extractor(images, batch_size=None) -> (N, D)`` numpy float64 features.

    ``images``: float numpy/cupy array (N, C, H, W) with values in [-1, 1], C = 1 (replicated to
    3 channels) or 3, any H, W (bilinearly resized to ``input_size``). Batches of ``batch_size``
    go through ``model`` in test mode without backprop. The model runs on ``device`` if one was
    given, else on the device of the images.

    Attributes:
        name (str), comparable (bool: numbers comparable to published FIDs), dim (int),
        input_size (int), batch_size (int), model (chainer.Link).
    """

    def __init__(self, model, name, comparable, dim, input_size, batch_size, device=None):
        self.model = model
        self.name = name
        self.comparable = comparable
        self.dim = dim
        self.input_size = input_size
        self.batch_size = batch_size
        self.device = None
        if device is not None:
            self.device = chainer.get_device(device)
            model.to_device(self.device)

    def __repr__(self):
        return f'<FeatureExtractor {self.name!r} dim={self.dim} comparable={self.comparable}>'

    def preprocess(self, x):
        """(n, C, H, W) float32 array in [-1, 1] -> (n, 3, S, S) array, S = input_size."""
        if x.shape[1] == 1:
            x = x.repeat(3, axis=1)
        return resize_bilinear(x, (self.input_size, self.input_size))

    def __call__(self, images, batch_size=None):
        if isinstance(images, chainer.Variable):
            images = images.array
        _check_images(images)
        bs = int(batch_size or self.batch_size)
        if bs < 1:
            raise ValueError(f'batch_size must be >= 1, got {bs}')
        device = self.device or chainer.backend.get_device_from_array(images)
        if self.model.device != device:
            self.model.to_device(device)
        cpu = chainer.backend.CpuDevice()
        out = []
        with chainer.using_config('train', False), chainer.using_config('enable_backprop', False):
            for i in range(0, len(images), bs):
                x = device.send(images[i:i + bs]).astype(np.float32, copy=False)
                y = self.model(self.preprocess(x))
                out.append(np.asarray(cpu.send(y.array), dtype=np.float64).reshape(len(x), -1))
        return np.concatenate(out, axis=0)


def _bilinear_matrix(n_in, n_out):
    """(n_out, n_in) bilinear interpolation weights, half-pixel centres, no antialiasing."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m


def resize_bilinear(x, size):
    """Bilinear resize of a (N, C, H, W) numpy/cupy array to ``size`` = (H', W').

    Same sampling as ``torch.nn.functional.interpolate(mode='bilinear', align_corners=False)``
    (what pytorch-fid uses to reach 299x299) and as ``chainer.functions.resize_images(...,
    align_corners=False)``, which chainer 7.8.1 cannot run on numpy >= 1.24 (it uses
    ``numpy.float``). Implemented as two matrix products, ``R_h x R_w^T``.
    """
    h, w = x.shape[2:]
    if (h, w) == tuple(size):
        return x
    xp = chainer.backend.get_array_module(x)
    rh = xp.asarray(_bilinear_matrix(h, size[0]), dtype=x.dtype)
    rw = xp.asarray(_bilinear_matrix(w, size[1]), dtype=x.dtype)
    return xp.matmul(xp.matmul(rh, x), rw.T)


def _check_images(images):
    shape = getattr(images, 'shape', None)
    if shape is None or len(shape) != 4:
        raise ValueError(f'images must be an array of shape (N, C, H, W), got shape {shape}')
    if shape[0] < 1:
        raise ValueError('images is empty (N = 0)')
    if shape[1] not in (1, 3):
        raise ValueError(f'images must have 1 or 3 channels (axis 1), got shape {shape}')
    if images.dtype.kind != 'f':
        raise ValueError(f'images must be floats in [-1, 1], got dtype {images.dtype}')
    xp = chainer.backend.get_array_module(images)
    lo, hi = float(xp.min(images)), float(xp.max(images))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError('images contain NaN or Inf')
    if lo < -1.01 or hi > 1.01:
        raise ValueError(f'images must lie in [-1, 1], got values in [{lo:.4g}, {hi:.4g}]')


class SmallConvNet(chainer.Chain):
    """Offline stand-in for Inception: a fixed-seed random-weight conv net (NOT comparable FIDs).

    3x32x32 input -> [3x3 conv, ReLU, 2x2 avg pool] x 2 -> 3x3 conv, ReLU -> global average
    pool -> ``channels[-1]`` features. Weights are He-normal from ``numpy.random.RandomState(seed)``
    and never trained: the features are deterministic, generic image statistics.
    """

    def __init__(self, channels=(32, 64, 64), seed=0):
        super().__init__()
        rng = np.random.RandomState(seed)
        c_in = 3
        with self.init_scope():
            self.convs = chainer.ChainList()
            for c in channels:
                w = rng.normal(0.0, np.sqrt(2.0 / (c_in * 9)), (c, c_in, 3, 3)).astype(np.float32)
                self.convs.append(L.Convolution2D(c_in, c, 3, 1, 1, initialW=w, initial_bias=0))
                c_in = c

    def forward(self, x):
        n = len(self.convs)
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i < n - 1:
                x = F.average_pooling_2d(x, 2)
        return F.mean(x, axis=(2, 3))


# --------------------------------------------------------------------------------------------
# The factory


def get_extractor(kind='small', weights=None, device=None, batch_size=None, seed=0):
    """Feature extractor for FID.

    Args:
        kind: ``'small'`` (offline random-weight conv net, 64-d, 32x32 input, FIDs NOT
            comparable to published ones) or ``'inception'`` (FID Inception-V3, 2048-d pool3,
            299x299 input; needs ``weights``).
        weights: path of the converted .npz for ``'inception'`` (see module docstring).
        device: chainer device spec (e.g. ``'@cupy:0'``); None: the device of the images.
        batch_size: images per forward (default 500 small, 50 inception).
        seed: weight seed of the small extractor.
    """
    if kind == 'small':
        return FeatureExtractor(SmallConvNet(seed=seed), name=f'small-random-conv-seed{seed}',
                                comparable=False, dim=64, input_size=32,
                                batch_size=batch_size or 500, device=device)
    if kind == 'inception':
        if weights is None:
            raise ValueError(MISSING_WEIGHTS_HELP)
        model = load_fid_inception_npz(FIDInceptionV3(), weights)
        return FeatureExtractor(model, name='fid-inception-v3-pool3', comparable=True, dim=2048,
                                input_size=299, batch_size=batch_size or 50, device=device)
    raise ValueError(f"unknown FID extractor kind {kind!r} (use 'small' or 'inception')")
