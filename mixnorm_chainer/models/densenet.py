"""The basic DenseNet for CIFAR (Huang et al. 2017; Section 4.4, Figure 5, Table 7)."""
import chainer
import chainer.functions as F
import chainer.links as L

from mixnorm_chainer.links import MixtureNormalization
from mixnorm_chainer.models.norm import DEFAULT_GROUPS, NormFactory, check_mn_layers

#: The normalizations that can be MN: both transitions' and the final one (Section 4.4).
LAYER_NAMES = ('trans1', 'trans2', 'final')
#: Channels of the first convolution (basic DenseNet: 16).
STEM_CHANNELS = 16


class NormReLUConv(chainer.Chain):
    """BN (or MN, GN, MGN) - ReLU - convolution (no bias: every output feeds a later
    normalization).

    ``norm`` is the factory's ``(link, relu_fused)``; with a fused ReLU (Eq. 40) the MN or MGN
    link has already rectified its output.
    """

    def __init__(self, c_in, c_out, ksize, norm):
        super().__init__()
        link, self.relu_fused = norm
        with self.init_scope():
            self.norm = link
            self.conv = L.Convolution2D(c_in, c_out, ksize, pad=ksize // 2, nobias=True)

    def forward(self, x):
        h = self.norm(x)
        return self.conv(h if self.relu_fused else F.relu(h))


class DenseNet(chainer.Chain):
    """DenseNet {L = depth, k = growth_rate} without bottleneck or compression.

    A 3x3 convolution to 16 channels; three dense blocks of ``(depth - 4) // 3`` layers, each
    layer BN-ReLU-3x3 conv with ``growth_rate`` outputs concatenated to its input; after blocks
    1 and 2 a transition BN-ReLU-1x1 conv (same channel count)-2x2 average pool; then the final
    BN-ReLU, global average pool and a linear classifier. No dropout. depth 40: 12 layers per
    block and 16 + 36 * 12 = 448 channels at the final BN; depth 100: 32 layers per block;
    depth 20: 5 layers per block, 196 channels (Table 7).

    Normalizations are named ``block<b>/<i>`` (layer ``i`` of dense block ``b``), ``trans1``,
    ``trans2`` and ``final``; only the last three can be in ``mn_layers``. The paper's MN
    models use ``mn_layers=('trans1', 'trans2', 'final')`` (Section 4.4), Table 7
    ``('final',)``. ``norms`` may name any of them (``{'*': 'gn'}``: GN everywhere).

    Args:
        depth, growth_rate: L and k (the paper: 40 or 100, and 12).
        n_classes: 10 or 100.
        mn_layers: subset of ('trans1', 'trans2', 'final'); () is the all-BN model.
        n_components, em_iters: K and "EM iter." of every MN layer.
        in_channels: image channels.
        norms: ``{normalization name: kind}`` ('bn', 'mn', 'gbn', 'gn', 'mgn'; ``'*'``: every
            one not named; :class:`~mixnorm_chainer.models.norm.NormFactory`).
        groups: G of the GN/MGN layers, each cut to the largest divisor of its channels that
            is at most ``groups`` (16 + 12 i channels: 28 -> 28, 76 -> 19, 448 -> 32).
        mgn_components: K of the MGN layers (default ``n_components``).
        **mn_options: other :class:`~mixnorm_chainer.MixtureNormalization` options
            (e.g. ``sample_fraction``, ``inference``), ``fused_relu`` and ``mgn_options``.
    """

    def __init__(self, depth=40, growth_rate=12, n_classes=10, mn_layers=(), n_components=3,
                 em_iters=2, in_channels=3, norms=None, groups=DEFAULT_GROUPS,
                 mgn_components=None, **mn_options):
        super().__init__()
        n_layers = (depth - 4) // 3
        if n_layers < 1:
            raise ValueError(f'depth must be at least 7 (one layer per dense block); got {depth}')
        norm = NormFactory(check_mn_layers(mn_layers, LAYER_NAMES), n_components, em_iters,
                           norms=norms, groups=groups, mgn_components=mgn_components,
                           **mn_options)
        self.mn_layers = norm.mixture_layers(norm.mn_layers)
        with self.init_scope():
            self.conv = L.Convolution2D(in_channels, STEM_CHANNELS, 3, pad=1, nobias=True)
            c = STEM_CHANNELS
            for b in (1, 2, 3):
                layers = []
                for i in range(n_layers):
                    layers.append(NormReLUConv(c, growth_rate, 3, norm(f'block{b}/{i}', c)))
                    c += growth_rate
                setattr(self, f'block{b}', chainer.ChainList(*layers))
                if b < 3:
                    setattr(self, f'trans{b}', NormReLUConv(c, c, 1, norm(f'trans{b}', c)))
            self.final_norm, self._final_relu_fused = norm('final', c)
            self.linear = L.Linear(c, n_classes)
        self.out_channels = c
        norm.check_names()

    def norm_layers(self):
        """``{normalization name: link}`` for every normalization, in network order."""
        layers = {}
        for b in (1, 2, 3):
            for i, layer in enumerate(getattr(self, f'block{b}')):
                layers[f'block{b}/{i}'] = layer.norm
            if b < 3:
                layers[f'trans{b}'] = getattr(self, f'trans{b}').norm
        layers['final'] = self.final_norm
        return layers

    def mn_norm_names(self):
        """Names of the MN links, in network order."""
        return [name for name, link in self.norm_layers().items()
                if isinstance(link, MixtureNormalization)]

    def features(self, x):
        """The final normalization's input (N, ``out_channels``, H/4, W/4)."""
        h = self.conv(x)
        for b in (1, 2, 3):
            for layer in getattr(self, f'block{b}'):
                h = F.concat((h, layer(h)), axis=1)
            if b < 3:
                h = F.average_pooling_2d(getattr(self, f'trans{b}')(h), 2, stride=2)
        return h

    def forward(self, x):
        h = self.final_norm(self.features(x))
        if not self._final_relu_fused:
            h = F.relu(h)
        return self.linear(F.average(h, axis=(2, 3)))
