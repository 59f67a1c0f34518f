"""Frechet Inception Distance (FID) for the DCGAN experiment (paper Section 4.5, Figure 7).

FID (Heusel et al., 2017) fits a Gaussian to feature vectors of real and of generated images and
reports the Frechet (2-Wasserstein) distance between the two fits::

    FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))

The feature extractor is pluggable (:func:`get_extractor`):

* ``'inception'``: the FID variant of Inception-V3 (TensorFlow's 2015-12-05 graph as ported by
  pytorch-fid), 2048-d pool3 features. It loads the published FID weights from a local ``.npz``
  converted from pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` with
  ``python -m mixnorm_chainer.reproduce.fid convert IN.pth OUT.npz`` (needs torch, only for converting).
  With those weights the numbers are comparable to published FIDs.
* ``'small'``: an offline stand-in, a fixed-seed random-weight 3-layer conv net (64-d features).
  Deterministic and cheap, good for tests and for *relative* comparisons between runs scored
  with the same extractor, but its FIDs are **not comparable** to published FIDs
  (``extractor.comparable is False``).

Usage::

    ext = get_extractor('small')                     # or ('inception', weights='fid_inception.npz')
    scorer = FIDScorer(ext, real_images)             # images (N, C, H, W) in [-1, 1], C = 1 or 3
    fid = scorer(generated_images)
"""
import argparse
import functools
import sys
import warnings

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np
import scipy.linalg

#: File name and URL of pytorch-fid's published FID Inception weights (a torch state dict).
PYTORCH_FID_WEIGHTS_FILE = 'pt_inception-2015-12-05-6726825d.pth'
PYTORCH_FID_WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                           + PYTORCH_FID_WEIGHTS_FILE)

_MISSING_WEIGHTS_HELP = (
    "the 'inception' FID extractor needs the published FID Inception weights as a local .npz. "
    f'Download pytorch-fid\'s {PYTORCH_FID_WEIGHTS_FILE} from {PYTORCH_FID_WEIGHTS_URL} '
    '(port of TensorFlow\'s inception-2015-12-05 graph used by the original FID code), convert it '
    'once with `python -m mixnorm_chainer.reproduce.fid convert '
    f'{PYTORCH_FID_WEIGHTS_FILE} fid_inception.npz` (needs torch, CPU build is enough), then pass '
    "weights='fid_inception.npz' (runner: --fid-extractor inception --inception-weights "
    "fid_inception.npz). For offline tests use get_extractor('small') instead (its FIDs are "
    'not comparable to published ones).')


# --------------------------------------------------------------------------------------------
# Frechet distance and Gaussian fits


def _as_float64(a, name):
    if chainer.backend.get_array_module(a) is not np:   # cupy -> numpy
        a = chainer.backend.CpuDevice().send(a)
    a = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f'{name} contains NaN or Inf')
    return a


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (the FID formula).

    ``||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2))`` with
    :func:`scipy.linalg.sqrtm`, handled as pytorch-fid does: if the matrix square root is not
    finite or not accurate (near-singular product, e.g. fewer samples than feature dimensions),
    ``eps * I`` is added to both covariances and the root recomputed; a small imaginary residue
    from round-off is dropped, a large one (diagonal imaginary part > 1e-3) raises ValueError.

    Args:
        mu1, mu2: means, shape (D,).
        sigma1, sigma2: covariances, shape (D, D).
        eps: diagonal offset used when the product is near-singular.

    Returns:
        float.
    """
    mu1 = np.atleast_1d(_as_float64(mu1, 'mu1'))
    mu2 = np.atleast_1d(_as_float64(mu2, 'mu2'))
    sigma1 = np.atleast_2d(_as_float64(sigma1, 'sigma1'))
    sigma2 = np.atleast_2d(_as_float64(sigma2, 'sigma2'))
    if mu1.ndim != 1 or mu2.ndim != 1:
        raise ValueError(f'mu1 and mu2 must be vectors, got shapes {mu1.shape} and {mu2.shape}')
    if mu1.shape != mu2.shape:
        raise ValueError(f'mu1 and mu2 have different lengths: {mu1.shape} vs {mu2.shape}')
    d = mu1.shape[0]
    for name, s in (('sigma1', sigma1), ('sigma2', sigma2)):
        if s.shape != (d, d):
            raise ValueError(f'{name} has shape {s.shape}, expected ({d}, {d}) to match the means')
    if not eps >= 0:
        raise ValueError(f'eps must be >= 0, got {eps}')

    diff = mu1 - mu2
    covmean = _sqrtm_checked(sigma1 @ sigma2)
    if covmean is None:
        offset = np.eye(d) * eps
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.all(np.isfinite(covmean)):
            raise ValueError('sqrtm(sigma1 sigma2) is not finite even after adding '
                             f'eps={eps} to the covariance diagonals')
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ValueError(f'sqrtm(sigma1 sigma2) has a large imaginary component {m:.3g}')
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _sqrtm_checked(a, rtol=1e-5):
    """sqrtm(a), or None if it is not finite or ``||X X - a||_F > rtol ||a||_F``."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        x = scipy.linalg.sqrtm(a)
    if not np.all(np.isfinite(x)):
        return None
    scale = np.linalg.norm(a)
    if scale > 0 and np.linalg.norm(x @ x - a) > rtol * scale:
        return None
    return x


def feature_statistics(features):
    """Gaussian fit of features (N, D): ``(mu, sigma)`` in float64 (unbiased ``np.cov``)."""
    f = _as_float64(features, 'features')
    if f.ndim != 2:
        raise ValueError(f'features must have shape (N, D), got {f.shape}')
    if f.shape[0] < 2:
        raise ValueError(f'need at least 2 feature vectors for a covariance, got {f.shape[0]}')
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


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
# FID Inception-V3 (pytorch-fid's fid_inception_v3: torchvision Inception3 + FIDInceptionA/C/E)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv2d(chainer.Chain):
    """torchvision BasicConv2d: conv (no bias) -> batch norm (eps 1e-3) -> ReLU."""

    def __init__(self, c_in, c_out, ksize, stride=1, pad=0):
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(c_in, c_out, _pair(ksize), stride, _pair(pad), nobias=True)
            self.bn = L.BatchNormalization(c_out, eps=1e-3)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3_exclude_pad(x):
    """3x3/1 average pool, pad 1, padded zeros not counted (TF 'SAME'; count_include_pad=False)."""
    return F.average_pooling_nd(x, 3, 1, 1, pad_value=None)


def _max_pool(x, ksize, stride, pad=0):
    return F.max_pooling_2d(x, ksize, stride, pad, cover_all=False)


class FIDInceptionA(chainer.Chain):
    """Mixed_5b/c/d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool (padding excluded)-1x1."""

    def __init__(self, c_in, pool_features):
        super().__init__()
        with self.init_scope():
            self.branch1x1 = BasicConv2d(c_in, 64, 1)
            self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
            self.branch5x5_2 = BasicConv2d(48, 64, 5, pad=2)
            self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, pad=1)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, pad=1)
            self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_3x3_exclude_pad(x))
        return F.concat((b1, b5, b3, bp), axis=1)


class InceptionB(chainer.Chain):
    """Mixed_6a (grid reduction): 3x3/2 | 1x1-3x3-3x3/2 | max pool 3x3/2."""

    def __init__(self, c_in):
        super().__init__()
        with self.init_scope():
            self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
            self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, pad=1)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return F.concat((b3, bd, _max_pool(x, 3, 2)), axis=1)


class FIDInceptionC(chainer.Chain):
    """Mixed_6b-e: 1x1 | 1x7-7x1 | 7x1-1x7-7x1-1x7 | avg pool (padding excluded)-1x1."""

    def __init__(self, c_in, c7):
        super().__init__()
        with self.init_scope():
            self.branch1x1 = BasicConv2d(c_in, 192, 1)
            self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
            self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), pad=(0, 3))
            self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), pad=(3, 0))
            self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
            self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), pad=(3, 0))
            self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), pad=(0, 3))
            self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), pad=(3, 0))
            self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), pad=(0, 3))
            self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for f in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):
            bd = f(bd)
        bp = self.branch_pool(_avg_pool_3x3_exclude_pad(x))
        return F.concat((b1, b7, bd, bp), axis=1)


class InceptionD(chainer.Chain):
    """Mixed_7a (grid reduction): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool 3x3/2."""

    def __init__(self, c_in):
        super().__init__()
        with self.init_scope():
            self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
            self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
            self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
            self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), pad=(0, 3))
            self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), pad=(3, 0))
            self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for f in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = f(b7)
        return F.concat((b3, b7, _max_pool(x, 3, 2)), axis=1)


class FIDInceptionE(chainer.Chain):
    """Mixed_7b/c: 1x1 | 1x1-(1x3,3x1) | 1x1-3x3-(1x3,3x1) | pool-1x1.

    ``pool='avg'`` (Mixed_7b): 3x3/1 average pool with padding excluded from the count;
    ``pool='max'`` (Mixed_7c): 3x3/1 max pool, pad 1 (the FID graph's quirk, FIDInceptionE_2).
    """

    def __init__(self, c_in, pool):
        super().__init__()
        if pool not in ('avg', 'max'):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        with self.init_scope():
            self.branch1x1 = BasicConv2d(c_in, 320, 1)
            self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
            self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), pad=(0, 1))
            self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), pad=(1, 0))
            self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
            self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, pad=1)
            self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), pad=(0, 1))
            self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), pad=(1, 0))
            self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = F.concat((self.branch3x3_2a(b3), self.branch3x3_2b(b3)), axis=1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = F.concat((self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)), axis=1)
        if self.pool == 'avg':
            p = _avg_pool_3x3_exclude_pad(x)
        else:
            p = _max_pool(x, 3, 1, 1)
        return F.concat((b1, b3, bd, self.branch_pool(p)), axis=1)


class FIDInceptionV3(chainer.Chain):
    """pytorch-fid's FID Inception-V3 up to pool3: (N, 3, 299, 299) in [-1, 1] -> (N, 2048).

    Same layers and names as torchvision's ``Inception3`` with pytorch-fid's FID patches
    (FIDInceptionA/C: average pools exclude padding; Mixed_7b likewise; Mixed_7c max-pools);
    no aux classifier, no fc (pool3 features only). Batch norm runs on its stored statistics.
    Load weights with :func:`load_fid_inception_npz`.
    """

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
            self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
            self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, pad=1)
            self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
            self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
            self.Mixed_5b = FIDInceptionA(192, pool_features=32)
            self.Mixed_5c = FIDInceptionA(256, pool_features=64)
            self.Mixed_5d = FIDInceptionA(288, pool_features=64)
            self.Mixed_6a = InceptionB(288)
            self.Mixed_6b = FIDInceptionC(768, c7=128)
            self.Mixed_6c = FIDInceptionC(768, c7=160)
            self.Mixed_6d = FIDInceptionC(768, c7=160)
            self.Mixed_6e = FIDInceptionC(768, c7=192)
            self.Mixed_7a = InceptionD(768)
            self.Mixed_7b = FIDInceptionE(1280, pool='avg')
            self.Mixed_7c = FIDInceptionE(2048, pool='max')

    def forward(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = _max_pool(x, 3, 2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = _max_pool(x, 3, 2)
        for name in ('Mixed_5b', 'Mixed_5c', 'Mixed_5d', 'Mixed_6a', 'Mixed_6b', 'Mixed_6c',
                     'Mixed_6d', 'Mixed_6e', 'Mixed_7a', 'Mixed_7b', 'Mixed_7c'):
            x = getattr(self, name)(x)
        return F.mean(x, axis=(2, 3))


#: torch parameter suffix -> Chainer parameter name (the only renames the converter does;
#: the module path keeps its names with '.' -> '/').
TORCH_TO_CHAINER = {'conv.weight': 'conv/W', 'bn.weight': 'bn/gamma', 'bn.bias': 'bn/beta',
                    'bn.running_mean': 'bn/avg_mean', 'bn.running_var': 'bn/avg_var'}


def fid_inception_state(model):
    """{npz key: array} of everything :func:`load_fid_inception_npz` expects."""
    out = {}
    for path, param in model.namedparams():
        out[path.lstrip('/')] = param
    for path, link in model.namedlinks():
        if isinstance(link, L.BatchNormalization):
            p = path.lstrip('/')
            out[p + '/avg_mean'] = link.avg_mean
            out[p + '/avg_var'] = link.avg_var
    return out


@functools.lru_cache(maxsize=1)
def fid_inception_shapes():
    """{npz key: shape} of the FID Inception-V3 (470 arrays, 21,820,000 values)."""
    return {k: tuple(v.shape) for k, v in fid_inception_state(FIDInceptionV3()).items()}


def load_fid_inception_npz(model, path):
    """Fill a :class:`FIDInceptionV3` from an .npz written by :func:`convert_pytorch_fid_weights`.

    Every expected key must be present with the right shape (ValueError otherwise).
    """
    expected = fid_inception_state(model)
    with np.load(path) as npz:
        keys = set(npz.files) - {'_meta'}
        missing = sorted(set(expected) - keys)
        extra = sorted(keys - set(expected))
        if missing or extra:
            raise ValueError(f'{path} is not a converted FID Inception weights file: '
                             f'{len(missing)} missing keys {missing[:3]}, {len(extra)} unexpected '
                             f'keys {extra[:3]}. {_MISSING_WEIGHTS_HELP}')
        for key, target in expected.items():
            value = npz[key]
            arr = target.array if isinstance(target, chainer.Variable) else target
            if value.shape != arr.shape:
                raise ValueError(f'{path}: {key} has shape {value.shape}, expected {arr.shape}')
            xp = chainer.backend.get_array_module(arr)
            arr[...] = xp.asarray(value, dtype=arr.dtype)
    return model


def convert_pytorch_fid_weights(in_path, out_path):
    """Convert pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` to the Chainer .npz.

    Name mapping: torch key ``<module path>.<suffix>`` -> npz key
    ``<module path with '.' replaced by '/'>/<TORCH_TO_CHAINER[suffix]>``, e.g.
    ``Mixed_5b.branch1x1.conv.weight`` -> ``Mixed_5b/branch1x1/conv/W``,
    ``Mixed_5b.branch1x1.bn.running_var`` -> ``Mixed_5b/branch1x1/bn/avg_var``. Conv weights
    keep their (out, in, kh, kw) layout (same in Chainer). Dropped: ``fc.*`` (the 1008-way
    classifier, unused for pool3 features) and ``*.num_batches_tracked``. Needs torch.
    """
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('converting the FID Inception weights needs torch '
                          '(pip install torch; a CPU build is enough)') from e
    state = torch.load(in_path, map_location='cpu', weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f'{in_path} does not hold a state dict (got {type(state).__name__})')
    state = {k: v.detach().cpu().numpy() for k, v in state.items()}
    arrays = state_dict_to_npz_arrays(state)
    np.savez(out_path, **arrays)
    return arrays


def state_dict_to_npz_arrays(state):
    """Name mapping of :func:`convert_pytorch_fid_weights` on a {torch key: numpy array} dict."""
    expected = fid_inception_shapes()
    out = {}
    for key, value in state.items():
        if key.startswith('fc.') or key.endswith('num_batches_tracked'):
            continue
        for suffix, new in TORCH_TO_CHAINER.items():
            if key.endswith('.' + suffix):
                out[key[:-len(suffix) - 1].replace('.', '/') + '/' + new] = np.asarray(
                    value, dtype=np.float32)
                break
        else:
            raise ValueError(f'unexpected key in the FID Inception state dict: {key!r}')
    missing = sorted(set(expected) - set(out))
    extra = sorted(set(out) - set(expected))
    if missing or extra:
        raise ValueError(f'state dict does not match the FID Inception-V3: {len(missing)} missing '
                         f'{missing[:3]}, {len(extra)} unexpected {extra[:3]}')
    for key, shape in expected.items():
        if out[key].shape != shape:
            raise ValueError(f'{key}: shape {out[key].shape}, expected {shape}')
    return out


# --------------------------------------------------------------------------------------------
# Public factory and scorer


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
            raise ValueError(_MISSING_WEIGHTS_HELP)
        model = load_fid_inception_npz(FIDInceptionV3(), weights)
        return FeatureExtractor(model, name='fid-inception-v3-pool3', comparable=True, dim=2048,
                                input_size=299, batch_size=batch_size or 50, device=device)
    raise ValueError(f"unknown FID extractor kind {kind!r} (use 'small' or 'inception')")


class FIDScorer:
    """FID of generated images against a fixed set of real images (real statistics cached).

    Args:
        extractor: a :class:`FeatureExtractor` (or a kind string for :func:`get_extractor`).
        real_images: (N, C, H, W) in [-1, 1].
        batch_size: images per extractor forward.

    ``scorer(fake_images)`` -> float FID; ``scorer.real_stats`` = (mu, sigma).
    """

    def __init__(self, extractor, real_images, batch_size=100):
        if isinstance(extractor, str):
            extractor = get_extractor(extractor)
        self.extractor = extractor
        self.batch_size = batch_size
        self.real_stats = feature_statistics(extractor(real_images, batch_size=batch_size))
        self.n_real = len(real_images)

    def stats(self, images):
        """(mu, sigma) of the extractor's features of ``images``."""
        return feature_statistics(self.extractor(images, batch_size=self.batch_size))

    def __call__(self, fake_images):
        mu, sigma = self.stats(fake_images)
        return frechet_distance(mu, sigma, *self.real_stats)


# --------------------------------------------------------------------------------------------
# Image sets for ``score``: a folder of images, an .npz of images, or an .npz of statistics

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp')


def load_image_set(path):
    """``('images', (N, C, H, W) float32 in [-1, 1])`` or ``('stats', (mu, sigma))`` from path.

    A folder: every PNG/JPEG/BMP file in it (sorted by name; all of one size; grey or RGB).
    An .npz: ``mu`` and ``sigma`` (saved statistics, as pytorch-fid's), or an image array under
    ``images`` (or its only array): (N, H, W, C) or (N, C, H, W) with C = 1 or 3, uint8 in
    [0, 255] or float in [0, 1]. Raises ValueError (one line) for anything else.
    """
    import os
    if os.path.isdir(path):
        return 'images', _images_from_folder(path)
    if not os.path.isfile(path):
        raise ValueError(f'{path}: no such file or folder')
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise ValueError(f'{path} is neither a folder of images nor a readable .npz '
                         f'({type(e).__name__}: {_one_line(e)[:120]})') from None
    if 'mu' in arrays and 'sigma' in arrays:
        mu, sigma = (np.asarray(arrays[k], np.float64) for k in ('mu', 'sigma'))
        if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
            raise ValueError(f'{path}: statistics need mu (D,) and sigma (D, D); got '
                             f'{mu.shape} and {sigma.shape}')
        return 'stats', (mu, sigma)
    if 'images' in arrays:
        images = arrays['images']
    elif len(arrays) == 1:
        images, = arrays.values()
    else:
        raise ValueError(f'{path}: expected an array named images (or mu and sigma); found '
                         f'{sorted(arrays)}')
    return 'images', _as_model_images(images, path)


def _images_from_folder(path):
    import os

    from PIL import Image
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise ValueError(f'{path}: no image files ({", ".join(IMAGE_SUFFIXES)}) in the folder')
    images = []
    for name in names:
        try:
            with Image.open(os.path.join(path, name)) as im:
                a = np.asarray(im.convert('L' if im.mode in ('L', 'I', 'I;16', '1') else 'RGB'))
        except Exception as e:
            raise ValueError(f'{os.path.join(path, name)}: not a readable image '
                             f'({type(e).__name__})') from None
        if images and a.shape != images[0].shape:
            raise ValueError(f'{os.path.join(path, name)}: size {a.shape} differs from '
                             f'{names[0]}\'s {images[0].shape}; all images must have one size')
        images.append(a)
    stack = np.stack(images)
    return _as_model_images(stack[..., None] if stack.ndim == 3 else stack, path)


def _as_model_images(images, path):
    """(N, H, W, C) or (N, C, H, W), uint8 or float in [0, 1] -> (N, C, H, W) in [-1, 1]."""
    a = np.asarray(images)
    if a.ndim != 4:
        raise ValueError(f'{path}: images must be 4-D (N, H, W, C) or (N, C, H, W); got shape '
                         f'{a.shape}')
    if a.shape[1] not in (1, 3) and a.shape[-1] in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    if a.shape[1] not in (1, 3):
        raise ValueError(f'{path}: images need 1 or 3 channels; got shape {a.shape}')
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 127.5 - 1
    if a.dtype.kind != 'f':
        raise ValueError(f'{path}: images must be uint8 or float in [0, 1]; got {a.dtype}')
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if not (np.isfinite(a).all() and lo >= -1e-6 and hi <= 1 + 1e-6):
        raise ValueError(f'{path}: float images must lie in [0, 1]; got [{lo:.4g}, {hi:.4g}]')
    return a.astype(np.float32) * 2 - 1


def score_image_sets(a, b, extractor, batch_size=None):
    """FID between two image sets or statistics of :func:`load_image_set` (``(kind, value)``
    pairs) with one :class:`FeatureExtractor`."""
    stats = []
    for path, (kind, value) in zip(('first', 'second'), (a, b)):
        if kind == 'images':
            if len(value) < 2:
                raise ValueError(f'the {path} set has {len(value)} image; FID needs at least 2')
            value = feature_statistics(extractor(value, batch_size=batch_size))
        stats.append(value)
    (mu1, s1), (mu2, s2) = stats
    if mu1.shape != mu2.shape:
        raise ValueError(f'the two sets have features of {mu1.size} and {mu2.size} dimensions '
                         '(saved statistics from another extractor?)')
    return frechet_distance(mu1, s1, mu2, s2)


# --------------------------------------------------------------------------------------------
# Command line: python -m mixnorm_chainer.reproduce.fid convert IN.pth OUT.npz | score A B


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line: ``prog: error: message (see prog --help)``."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


def _one_line(e):
    return ' '.join(str(e).split()) or type(e).__name__


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be a positive integer; got {text!r}')
    return value


def _score_command(args, parser):
    import os
    prog = parser.prog
    if args.extractor == 'inception':
        if args.inception_weights is None:
            parser.error('score: --extractor inception needs --inception-weights W.npz (convert '
                         f'pytorch-fid\'s {PYTORCH_FID_WEIGHTS_FILE} with the convert command), '
                         'or use --extractor small (not comparable to published FIDs)')
        if not os.path.isfile(args.inception_weights):
            parser.error(f'score: --inception-weights {args.inception_weights}: no such file')
    try:
        sets = [load_image_set(path) for path in args.sets]
        extractor = get_extractor(args.extractor, weights=args.inception_weights,
                                  device=args.device, batch_size=args.batch_size)
        fid = score_image_sets(*sets, extractor, args.batch_size)
        if args.save_stats:
            kind, value = sets[0]
            mu, sigma = value if kind == 'stats' else feature_statistics(
                extractor(value, batch_size=args.batch_size))
            np.savez(args.save_stats, mu=mu, sigma=sigma)
    except (ValueError, OSError, RuntimeError) as e:
        print(f'{prog}: error: score: {_one_line(e)}', file=sys.stderr)
        return 2
    note = '' if extractor.comparable else '  (small extractor: not comparable to published FIDs)'
    print(f'FID: {fid:.6g}{note}')
    return 0


def main(argv=None):
    import os
    parser = _Parser(prog='python -m mixnorm_chainer.reproduce.fid',
                     description='FID: score two image sets; convert the Inception weights.')
    sub = parser.add_subparsers(dest='command', required=True)
    conv = sub.add_parser('convert', help=f'convert pytorch-fid\'s {PYTORCH_FID_WEIGHTS_FILE} '
                          '(torch state dict) to the .npz the Chainer FID Inception loads')
    conv.add_argument('input', help=f'{PYTORCH_FID_WEIGHTS_FILE} (from {PYTORCH_FID_WEIGHTS_URL})')
    conv.add_argument('output', help='output .npz')
    sc = sub.add_parser('score', help='the FID between two image sets (as pytorch-fid\'s '
                        'command line): each a folder of PNG/JPEG images, an .npz of images, '
                        'or an .npz of saved statistics (mu, sigma)')
    sc.add_argument('sets', nargs=2, metavar='DIR_OR_NPZ')
    sc.add_argument('--extractor', choices=('inception', 'small'), default='inception',
                    help="'inception' (the FID Inception-V3; needs --inception-weights; numbers "
                    "comparable to published FIDs) or 'small' (an offline random-weight conv "
                    "net: for tests only, not comparable)")
    sc.add_argument('--inception-weights', metavar='W.npz',
                    help='the converted weights (see the convert command)')
    sc.add_argument('--batch-size', type=_positive_int, default=None,
                    help='images per forward (default 50 inception, 500 small)')
    sc.add_argument('--device', default='@numpy', help="chainer device: '@numpy', '@cupy:0'")
    sc.add_argument('--save-stats', metavar='OUT.npz',
                    help='also save the first set\'s statistics (mu, sigma) here')
    args = parser.parse_args(argv)
    prog = parser.prog
    if args.command == 'score':
        return _score_command(args, parser)
    if args.command == 'convert':
        if not os.path.isfile(args.input):
            parser.error(f'convert: {args.input}: no such file; download '
                         f'{PYTORCH_FID_WEIGHTS_FILE} from {PYTORCH_FID_WEIGHTS_URL}')
        out_dir = os.path.dirname(os.path.abspath(args.output))
        if os.path.isdir(args.output) or not os.path.isdir(out_dir):
            parser.error(f'convert: cannot write {args.output} (a folder, or its folder does '
                         'not exist); give an output .npz path in an existing folder')
        try:
            arrays = convert_pytorch_fid_weights(args.input, args.output)
        except ImportError as e:
            print(f'{prog}: error: {_one_line(e)}', file=sys.stderr)
            return 2
        except ValueError as e:             # a state dict, but not the FID Inception's
            print(f'{prog}: error: {args.input}: {_one_line(e)}; is it pytorch-fid\'s '
                  f'{PYTORCH_FID_WEIGHTS_FILE}?', file=sys.stderr)
            return 2
        except OSError as e:
            print(f'{prog}: error: {_one_line(e)}', file=sys.stderr)
            return 2
        except Exception as e:              # torch.load: not a torch file, or a damaged one
            print(f'{prog}: error: {args.input} is not a torch state dict file '
                  f'({type(e).__name__}: {_one_line(e)[:200]}); give pytorch-fid\'s '
                  f'{PYTORCH_FID_WEIGHTS_FILE}', file=sys.stderr)
            return 2
        load_fid_inception_npz(FIDInceptionV3(), args.output)   # round-trip check
        print(f'wrote {args.output}: {len(arrays)} arrays, '
              f'{sum(a.size for a in arrays.values())} values')
    return 0


if __name__ == '__main__':
    sys.exit(main())
