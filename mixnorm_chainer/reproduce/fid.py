"""Frechet Inception Distance (FID) for the DCGAN experiment (paper Section 4.5, Figure 7).

FID (Heusel et al., 2017) fits a Gaussian to feature vectors of real and of generated images and
reports the Frechet (2-Wasserstein) distance between the two fits::

    FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))

This module: the distance (:func:`frechet_distance`), the fits (:func:`feature_statistics`),
:class:`FIDScorer`, the FID of two image sets (:func:`score_image_sets`) and the command line
``python -m mixnorm_chainer.reproduce.fid score A B | convert IN.pth OUT.npz``. The feature
extractor is pluggable (:func:`~mixnorm_chainer.reproduce.fid_extractors.get_extractor`):

* ``'inception'``: the FID variant of Inception-V3 (TensorFlow's 2015-12-05 graph as ported by
  pytorch-fid, :mod:`mixnorm_chainer.reproduce.fid_inception`), 2048-d pool3 features. It loads
  the published FID weights from a local ``.npz`` converted from pytorch-fid's
  ``pt_inception-2015-12-05-6726825d.pth`` with ``python -m mixnorm_chainer.reproduce.fid
  convert IN.pth OUT.npz`` (needs torch, only for converting). With those weights the numbers
  are comparable to published FIDs.
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
import sys
import warnings

import chainer
import numpy as np
import scipy.linalg

from mixnorm_chainer.reproduce.arguments import ArgumentParser
from mixnorm_chainer.reproduce.fid_extractors import get_extractor
from mixnorm_chainer.reproduce.fid_inception import (
    PYTORCH_FID_WEIGHTS_FILE,
    PYTORCH_FID_WEIGHTS_URL,
    FIDInceptionV3,
    convert_pytorch_fid_weights,
    load_fid_inception_npz,
)

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
# The scorer


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
    parser = ArgumentParser(prog='python -m mixnorm_chainer.reproduce.fid',
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
