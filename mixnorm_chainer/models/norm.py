"""One normalization factory, so ``mn_layers=(...)`` and ``norms={...}`` mean the same in every
model.

A model lists the names of its normalization layers; each named in ``mn_layers`` becomes a
:class:`~mixnorm_chainer.MixtureNormalization`, every other one a ``L.BatchNormalization``
(``mn_layers=()`` is the all-BN baseline). ``norms={name: kind}`` picks any of
:data:`KINDS` per layer (``'*'``: every layer not named otherwise):

* ``'bn'``: ``L.BatchNormalization``; ``'mn'``: :class:`~mixnorm_chainer.MixtureNormalization`;
* ``'gbn'``: :class:`~mixnorm_chainer.gbn.GeneralizedBatchNormalization`;
* ``'gn'``: chainer's ``L.GroupNormalization`` (Wu & He 2018);
* ``'mgn'``: :class:`~mixnorm_chainer.MixtureGroupNormalization` (a K-component mixture per
  sample and group; no batch statistics, the same transform in training and test).

GN and MGN take ``groups`` (G; default 32 as in the GN paper). A layer of C channels gets
:func:`group_count` ``(C, groups)``, the largest divisor of C that is at most ``groups``, so
every layer's C works: C = 64 and groups = 32 give 32 groups of 2 channels; C = 76 (a DenseNet
layer) gives 19; a prime C above ``groups`` gives 1 (one group: a mixture layer norm).
"""
import zlib

import chainer.links as L
import numpy

from mixnorm_chainer.gbn import GeneralizedBatchNormalization
from mixnorm_chainer.group_normalization import MixtureGroupNormalization
from mixnorm_chainer.links import MixtureNormalization

#: the normalizations a layer can get (``norms={name: kind}``)
KINDS = ('bn', 'mn', 'gbn', 'gn', 'mgn')
#: G of GN and MGN unless given (Wu & He 2018's default)
DEFAULT_GROUPS = 32
#: the ``norms`` key of every layer not named otherwise
EVERY_LAYER = '*'


def check_mn_layers(mn_layers, valid_names):
    """Return mn_layers as a tuple after checking every name is one of ``valid_names``."""
    if isinstance(mn_layers, str):
        mn_layers = (mn_layers,)
    mn_layers = tuple(mn_layers)
    unknown = [name for name in mn_layers if name not in valid_names]
    if unknown:
        raise ValueError(f'unknown MN layer name(s) {unknown}; valid names are {list(valid_names)}')
    return mn_layers


def group_count(channels, groups=DEFAULT_GROUPS):
    """G of a GN/MGN layer with ``channels`` channels: the largest divisor of ``channels`` that
    is at most ``groups`` (so any channel count works; 1 when no other divisor fits)."""
    if int(groups) != groups or groups < 1:
        raise ValueError(f'groups must be a positive integer; got {groups!r}')
    for g in range(min(int(groups), int(channels)), 0, -1):
        if channels % g == 0:
            return g
    raise ValueError(f'channels must be a positive integer; got {channels!r}')


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
        n_components, em_iters: K and the paper's "EM iter." for every MN layer (and, unless
            ``mgn_components`` / ``mgn_options`` say otherwise, every MGN layer).
        fused_relu: when an MN or MGN layer is followed by ReLU, apply Eq. 40 (ReLU per
            component, the paper's prescription) inside the layer; the model then skips its
            own ReLU.
        gbn_layers: names that get generalized batch normalization
            (:class:`~mixnorm_chainer.gbn.GeneralizedBatchNormalization`).
        gbn_options: its options, e.g. ``dict(deviation='cvar', alpha=0.75)``.
        norms: ``{name: kind}``, kind one of :data:`KINDS`; ``'*'`` is every layer not named
            (in ``norms``, ``mn_layers`` or ``gbn_layers``). A name in ``mn_layers`` or
            ``gbn_layers`` with another kind here is a ValueError.
        groups: G of every GN and MGN layer, cut to :func:`group_count` of its channels.
        mgn_components: K of the MGN layers (default ``n_components``).
        mgn_options: other :class:`~mixnorm_chainer.MixtureGroupNormalization` options.
        **mn_options: any other :class:`MixtureNormalization` option; ``seed`` is the model's
            seed, from which each MN layer's own is derived (:func:`layer_seed`).
    """

    def __init__(self, mn_layers=(), n_components=3, em_iters=2, fused_relu=True, gbn_layers=(),
                 gbn_options=None, norms=None, groups=DEFAULT_GROUPS, mgn_components=None,
                 mgn_options=None, **mn_options):
        self.mn_layers = tuple(mn_layers)
        self.gbn_layers = tuple(gbn_layers)
        both = sorted(set(self.mn_layers) & set(self.gbn_layers))
        if both:
            raise ValueError(f'layer(s) {both} are in both mn_layers and gbn_layers')
        self.norms = dict(norms or {})
        listed = dict([(n, 'mn') for n in self.mn_layers] + [(n, 'gbn') for n in self.gbn_layers])
        clash = sorted(n for n, kind in listed.items() if self.norms.get(n, kind) != kind)
        if clash:
            raise ValueError(f'layer(s) {clash} get one kind in norms and another in mn_layers '
                             f'or gbn_layers')
        bad = {n: k for n, k in self.norms.items() if k not in KINDS}
        if bad:
            raise ValueError(f'unknown normalization kind(s) {bad}; the kinds are {list(KINDS)}')
        self.kinds = dict(self.norms, **listed)
        self.default_kind = self.kinds.pop(EVERY_LAYER, 'bn')
        group_count(1, groups)                  # a bad groups fails here, not at a layer
        self.groups = int(groups)
        self.gbn_options = dict(gbn_options or {})
        self.n_components = n_components
        self.em_iters = em_iters
        self.mgn_components = n_components if mgn_components is None else mgn_components
        self.mgn_options = dict(mgn_options or {})
        self.fused_relu = fused_relu
        self.seed = mn_options.pop('seed', None)
        self.mn_options = mn_options
        self._built = {}
        self._names = {}                        # every layer name asked for, in order

    def kind(self, name):
        """The kind (:data:`KINDS`) of layer ``name``."""
        return self.kinds.get(name, self.default_kind)

    def is_mn(self, name):
        return self.kind(name) == 'mn'

    def __call__(self, name, size, followed_by_relu=True):
        """The normalization link for layer ``name`` with ``size`` channels.

        Returns ``(link, relu_fused)``: ``relu_fused`` tells the caller not to apply ReLU.
        """
        self._names[name] = None
        kind = self.kind(name)
        if kind == 'gbn':
            return GeneralizedBatchNormalization(size, **self.gbn_options), False
        if kind == 'bn':
            return L.BatchNormalization(size), False
        if kind == 'gn':
            return L.GroupNormalization(group_count(size, self.groups), size), False
        fuse = bool(self.fused_relu and followed_by_relu)
        if kind == 'mgn':
            options = dict(dict(n_components=self.mgn_components, em_iters=self.em_iters),
                           **self.mgn_options)
            link = MixtureGroupNormalization(group_count(size, self.groups), size,
                                             activation='relu' if fuse else None, **options)
            return link, fuse
        # several links may share a layer name (Inception's branches): number them
        count = self._built[name] = self._built.get(name, -1) + 1
        seed = layer_seed(self.seed, f'{name}#{count}' if count else name)
        link = MixtureNormalization(size, n_components=self.n_components,
                                    em_iters=self.em_iters,
                                    activation='relu' if fuse else None, seed=seed,
                                    **self.mn_options)
        return link, fuse

    def check_names(self):
        """After a model built its layers: a ValueError naming the layers of ``norms`` that it
        has none of (with the names it has)."""
        unknown = [n for n in self.norms if n != EVERY_LAYER and n not in self._names]
        if unknown:
            names = list(self._names)
            shown = ', '.join(names[:12]) + (f', ... ({len(names)} in all)' if len(names) > 12
                                             else '')
            raise ValueError(f'unknown normalization layer name(s) {unknown} in norms; the '
                             f"model's are {shown}, and '{EVERY_LAYER}' (every other layer)")

    def mixture_layers(self, mn_layers):
        """``mn_layers`` and then the other names ``norms`` makes MN (a model's ``mn_layers``)."""
        return tuple(mn_layers) + tuple(n for n, kind in self.norms.items()
                                        if kind == 'mn' and n != EVERY_LAYER
                                        and n not in mn_layers)
