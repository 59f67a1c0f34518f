"""The FID variant of Inception-V3 and its weights, for the ``'inception'`` FID extractor
(:func:`mixnorm_chainer.reproduce.fid_extractors.get_extractor`).

:class:`FIDInceptionV3` is pytorch-fid's ``fid_inception_v3`` (TensorFlow's 2015-12-05 graph:
torchvision's ``Inception3`` with the FID patches), up to its 2048-d pool3 features. Its weights
are pytorch-fid's published ``pt_inception-2015-12-05-6726825d.pth``, converted once to an
``.npz`` (:func:`convert_pytorch_fid_weights`; ``python -m mixnorm_chainer.reproduce.fid
convert IN.pth OUT.npz``, needs torch) and loaded by :func:`load_fid_inception_npz`.
"""
import functools

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np

#: File name and URL of pytorch-fid's published FID Inception weights (a torch state dict).
PYTORCH_FID_WEIGHTS_FILE = 'pt_inception-2015-12-05-6726825d.pth'
PYTORCH_FID_WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                           + PYTORCH_FID_WEIGHTS_FILE)

#: what to do when the 'inception' extractor has no weights
MISSING_WEIGHTS_HELP = (
    "the 'inception' FID extractor needs the published FID Inception weights as a local .npz. "
    f'Download pytorch-fid\'s {PYTORCH_FID_WEIGHTS_FILE} from {PYTORCH_FID_WEIGHTS_URL} '
    '(port of TensorFlow\'s inception-2015-12-05 graph used by the original FID code), convert it '
    'once with `python -m mixnorm_chainer.reproduce.fid convert '
    f'{PYTORCH_FID_WEIGHTS_FILE} fid_inception.npz` (needs torch, CPU build is enough), then pass '
    "weights='fid_inception.npz' (runner: --fid-extractor inception --inception-weights "
    "fid_inception.npz). For offline tests use get_extractor('small') instead (its FIDs are "
    'not comparable to published ones).')


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
                             f'keys {extra[:3]}. {MISSING_WEIGHTS_HELP}')
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
