"""One normalization factory, so ``mn_layers=(...)`` means the same in every model.

A model lists the names of its normalization layers; each named in ``mn_layers`` becomes a
:class:`~mixnorm_chainer.MixtureNormalization`, every other one a ``L.BatchNormalization``
(``mn_layers=()`` is the all-BN baseline).
"""
import zlib

import chainer.links as L
import numpy

from mixnorm_chainer.gbn import GeneralizedBatchNormalization
from mixnorm_chainer.links import MixtureNormalization


def check_mn_layers(mn_layers, valid_names):
    """Return mn_layers as a tuple after checking every name is one of ``valid_names``."""
    if isinstance(mn_layers, str):
        mn_layers = (mn_layers,)
    mn_layers = tuple(mn_layers)
    unknown = [name for name in mn_layers if name not in valid_names]
    if unknown:
        raise ValueError(f'unknown MN layer name(s) {unknown}; valid names are {list(valid_names)}')
    return mn_layers


def layer_seed(seed, name):
    """The seed of the random generator of MN layer ``name`` in a model built with ``seed``.

    Each layer draws its own stream (k-means++ rows, subsample indices), derived from the model
    seed and the layer name, so runs stay reproducible but layers with the same row count do
    not draw the same rows. ``None`` stays None: each layer then seeds its stream from numpy's
    global random state when it is built (``numpy.random.seed`` makes the model repeat).
    """
    if seed is None:
        return None
    return numpy.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()),))


class NormFactory:
    """Builds the normalization of a named layer.

    Args:
        mn_layers: names that get mixture normalization.
        n_components, em_iters: K and the paper's "EM iter." for every MN layer.
        fused_relu: when an MN layer is followed by ReLU, apply Eq. 40 (ReLU per component,
            the paper's prescription) inside the layer; the model then skips its own ReLU.
        gbn_layers: names that get generalized batch normalization
            (:class:`~mixnorm_chainer.gbn.GeneralizedBatchNormalization`).
        gbn_options: its options, e.g. ``dict(deviation='cvar', alpha=0.75)``.
        **mn_options: any other :class:`MixtureNormalization` option; ``seed`` is the model's
            seed, from which each MN layer's own is derived (:func:`layer_seed`).
    """

    def __init__(self, mn_layers, n_components=3, em_iters=2, fused_relu=True, gbn_layers=(),
                 gbn_options=None, **mn_options):
        self.mn_layers = tuple(mn_layers)
        self.gbn_layers = tuple(gbn_layers)
        both = sorted(set(self.mn_layers) & set(self.gbn_layers))
        if both:
            raise ValueError(f'layer(s) {both} are in both mn_layers and gbn_layers')
        self.gbn_options = dict(gbn_options or {})
        self.n_components = n_components
        self.em_iters = em_iters
        self.fused_relu = fused_relu
        self.seed = mn_options.pop('seed', None)
        self.mn_options = mn_options
        self._built = {}

    def is_mn(self, name):
        return name in self.mn_layers

    def __call__(self, name, size, followed_by_relu=True):
        """The normalization link for layer ``name`` with ``size`` channels.

        Returns ``(link, relu_fused)``: ``relu_fused`` tells the caller not to apply ReLU.
        """
        if name in self.gbn_layers:
            return GeneralizedBatchNormalization(size, **self.gbn_options), False
        if not self.is_mn(name):
            return L.BatchNormalization(size), False
        fuse = self.fused_relu and followed_by_relu
        # several links may share a layer name (Inception's branches): number them
        count = self._built[name] = self._built.get(name, -1) + 1
        seed = layer_seed(self.seed, f'{name}#{count}' if count else name)
        link = MixtureNormalization(size, n_components=self.n_components,
                                    em_iters=self.em_iters,
                                    activation='relu' if fuse else None, seed=seed,
                                    **self.mn_options)
        return link, fuse
