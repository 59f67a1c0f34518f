"""The paper's CIFAR CNN (Table 1)."""
import chainer
import chainer.functions as F
import chainer.links as L

from mixnorm_chainer.models.norm import DEFAULT_GROUPS, NormFactory, check_mn_layers

#: (name, out channels, kernel, pad, pooling after it) as in Table 1.
LAYERS = (('conv1', 64, 5, 2, 'max'), ('conv2', 128, 5, 2, 'max'),
          ('conv3', 128, 5, 2, 'max'), ('conv4', 256, 3, 1, 'avg'))
LAYER_NAMES = tuple(spec[0] for spec in LAYERS)


class CifarCNN(chainer.Chain):
    """Table 1: four conv+norm+ReLU layers, 3x3/2 max pools, global average pool, linear.

    ``conv_k`` is a stride-1 convolution (no bias; the normalization has beta) followed by
    BN (or MN for the names in ``mn_layers``, or the kind ``norms`` gives it) and ReLU.
    pool1-3 are 3x3 stride-2 max pools with Chainer's ceil-mode output (32 -> 16 -> 8 -> 4, as
    in Table 1); pool4 averages over the whole remaining map (= the 4x4 average pool for 32x32
    inputs), so any input size works. MN and MGN layers use Eq. 40 (fused per-component ReLU)
    unless ``fused_relu=False``.

    Args:
        n_classes: 10 or 100.
        mn_layers: subset of ('conv1', 'conv2', 'conv3', 'conv4'); () is the all-BN model.
        n_components, em_iters: K and "EM iter." of every MN layer.
        in_channels: image channels.
        gbn_layers: subset of the layer names that get generalized batch normalization
            (GBN, :mod:`mixnorm_chainer.gbn`) instead of BN; disjoint from ``mn_layers``.
        gbn_options: :class:`~mixnorm_chainer.gbn.GeneralizedBatchNormalization` options,
            e.g. ``dict(deviation='cvar', alpha=0.75)``.
        norms: ``{layer name: kind}``, kind 'bn', 'mn', 'gbn', 'gn' (``L.GroupNormalization``)
            or 'mgn' (:class:`~mixnorm_chainer.MixtureGroupNormalization`); ``'*'``: every
            layer not named (:class:`~mixnorm_chainer.models.norm.NormFactory`).
        groups: G of the GN/MGN layers, each cut to the largest divisor of its channels
            that is at most ``groups`` (conv1-4 have 64, 128, 128, 256: 32 divides all).
        mgn_components: K of the MGN layers (default ``n_components``).
        **mn_options: other :class:`~mixnorm_chainer.MixtureNormalization` options
            (e.g. ``sample_fraction``, ``inference``), ``fused_relu``, and ``mgn_options``
            (other MGN options).
    """

    def __init__(self, n_classes=10, mn_layers=(), n_components=3, em_iters=2,
                 in_channels=3, gbn_layers=(), gbn_options=None, norms=None,
                 groups=DEFAULT_GROUPS, mgn_components=None, **mn_options):
        super().__init__()
        self.gbn_layers = check_mn_layers(gbn_layers, LAYER_NAMES)
        norm = NormFactory(check_mn_layers(mn_layers, LAYER_NAMES), n_components, em_iters,
                           gbn_layers=self.gbn_layers, gbn_options=gbn_options, norms=norms,
                           groups=groups, mgn_components=mgn_components, **mn_options)
        self.mn_layers = norm.mixture_layers(norm.mn_layers)
        self.norm_kinds = {name: norm.kind(name) for name in LAYER_NAMES}
        self._relu_fused = {}
        with self.init_scope():
            c_in = in_channels
            for name, c_out, ksize, pad, _ in LAYERS:
                setattr(self, name, L.Convolution2D(c_in, c_out, ksize, pad=pad, nobias=True))
                link, fused = norm(name, c_out)
                setattr(self, name + '_norm', link)
                self._relu_fused[name] = fused
                c_in = c_out
            self.linear = L.Linear(c_in, n_classes)
        norm.check_names()

    def norm_layers(self):
        """``{layer name: normalization link}`` in network order."""
        return {name: getattr(self, name + '_norm') for name in LAYER_NAMES}

    def forward(self, x):
        h = x
        for name, _, _, _, pool in LAYERS:
            h = getattr(self, name + '_norm')(getattr(self, name)(h))
            if not self._relu_fused[name]:
                h = F.relu(h)
            if pool == 'max':
                h = F.max_pooling_2d(h, 3, stride=2)
            else:
                h = F.average(h, axis=(2, 3))
        return self.linear(h)
