"""Inception-V3 modified for 32x32 CIFAR images (Section 4.3, Tables 4-6, Figures 8-9)."""
import chainer
import chainer.functions as F
import chainer.links as L

from mixnorm_chainer.links import MixtureNormalization
from mixnorm_chainer.models.norm import DEFAULT_GROUPS, NormFactory, check_mn_layers


def _conv(c_out, ksize=1, stride=1, pad=0):
    """One BasicConv2d: (out channels, (kh, kw), stride, (ph, pw))."""
    if isinstance(ksize, int):
        ksize = (ksize, ksize)
    if isinstance(pad, int):
        pad = (pad, pad)
    return c_out, ksize, stride, pad


#: The stem: Conv2d_1a (stride 1 here, 2 in Inception-V3), 2a, 2b, [first max pool removed],
#: 3b (1x1), 4a; every 3x3 padded so the stem keeps 32x32. Followed by a 3x3/2 max pool.
STEM = (_conv(32, 3, 1, 1), _conv(32, 3, 1, 1), _conv(64, 3, 1, 1), _conv(80, 1),
        _conv(192, 3, 1, 1))

# A branch is (kind, convs): 'plain' runs its convs in sequence; 'avg' runs a 3x3/1 average
# pool (pad 1) first; 'split' runs all but the last two convs in sequence and then the last two
# in parallel on that output (InceptionE's 1x3 / 3x1 pair), both outputs concatenated.
# Branches are in torchvision's order; a module with ``max_pool`` ends with a 3x3/2 max-pool
# branch, which has no convolution.


def inception_a(pool_features):
    """torchvision InceptionA: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg-1x1."""
    return (('plain', (_conv(64),)),
            ('plain', (_conv(48), _conv(64, 5, 1, 2))),
            ('plain', (_conv(64), _conv(96, 3, 1, 1), _conv(96, 3, 1, 1))),
            ('avg', (_conv(pool_features),))), False


def inception_b():
    """torchvision InceptionB (grid reduction 1): 3x3/2 | 1x1-3x3-3x3/2 | max pool 3x3/2."""
    return (('plain', (_conv(384, 3, 2),)),
            ('plain', (_conv(64), _conv(96, 3, 1, 1), _conv(96, 3, 2)))), True


def inception_c(c7):
    """torchvision InceptionC: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avg-1x1."""
    return (('plain', (_conv(192),)),
            ('plain', (_conv(c7), _conv(c7, (1, 7), 1, (0, 3)), _conv(192, (7, 1), 1, (3, 0)))),
            ('plain', (_conv(c7), _conv(c7, (7, 1), 1, (3, 0)), _conv(c7, (1, 7), 1, (0, 3)),
                       _conv(c7, (7, 1), 1, (3, 0)), _conv(192, (1, 7), 1, (0, 3)))),
            ('avg', (_conv(192),))), False


def inception_d():
    """torchvision InceptionD (grid reduction 2): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool."""
    return (('plain', (_conv(192), _conv(320, 3, 2))),
            ('plain', (_conv(192), _conv(192, (1, 7), 1, (0, 3)), _conv(192, (7, 1), 1, (3, 0)),
                       _conv(192, 3, 2)))), True


def inception_e():
    """torchvision InceptionE: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | avg-1x1."""
    return (('plain', (_conv(320),)),
            ('split', (_conv(384), _conv(384, (1, 3), 1, (0, 1)), _conv(384, (3, 1), 1, (1, 0)))),
            ('split', (_conv(448), _conv(384, 3, 1, 1), _conv(384, (1, 3), 1, (0, 1)),
                       _conv(384, (3, 1), 1, (1, 0)))),
            ('avg', (_conv(192),))), False


#: (layer name, module spec) in network order: three Inception blocks of 3, 4 and 2 layers
#: separated by the grid reductions red1 and red2 (Table 4's names).
LAYERS = (tuple((f'inc1/{i}', inception_a(p)) for i, p in enumerate((32, 64, 64)))
          + (('red1', inception_b()),)
          + tuple((f'inc2/{i}', inception_c(c7)) for i, c7 in enumerate((128, 160, 160, 192)))
          + (('red2', inception_d()),)
          + tuple((f'inc3/{i}', inception_e()) for i in range(2)))
LAYER_NAMES = tuple(name for name, _ in LAYERS)
#: The stages ``feature_maps`` returns, in order.
STAGES = ('stem', 'pool', 'inc1', 'red1', 'inc2', 'red2', 'inc3')


def last_norm_indices(kind, n_convs):
    """Indices of the convs (BNs) of a branch whose outputs reach the concatenation."""
    return (n_convs - 2, n_convs - 1) if kind == 'split' else (n_convs - 1,)


class ConvNormReLU(chainer.Chain):
    """torchvision's BasicConv2d: convolution (no bias), BN (or MN), ReLU.

    ``norm`` is the factory's ``(link, relu_fused)``; with a fused ReLU (Eq. 40) the MN link
    has already rectified its output and no further ReLU is applied.
    """

    def __init__(self, c_in, spec, norm):
        super().__init__()
        c_out, ksize, stride, pad = spec
        link, self.relu_fused = norm
        with self.init_scope():
            self.conv = L.Convolution2D(c_in, c_out, ksize, stride=stride, pad=pad, nobias=True)
            self.norm = link

    def forward(self, x):
        h = self.norm(self.conv(x))
        return h if self.relu_fused else F.relu(h)


class InceptionModule(chainer.ChainList):
    """One Inception layer or grid reduction: a ChainList of branches (each a ChainList of
    :class:`ConvNormReLU`), outputs concatenated along channels.

    The normalization of conv ``j`` of branch ``b`` is ``<name>/<b>/<j>``. If ``name`` is in
    the factory's ``mn_layers``, the last normalization of every branch (both of a split
    branch) is MN, all others BN (Table 4's caption).
    """

    def __init__(self, name, c_in, spec, norm):
        super().__init__()
        branches, self.max_pool = spec
        self.kinds = tuple(kind for kind, _ in branches)
        self.out_channels = c_in if self.max_pool else 0
        for b, (kind, convs) in enumerate(branches):
            last = last_norm_indices(kind, len(convs))
            blocks = []
            c = c_in
            for j, conv in enumerate(convs):
                # the layer name selects MN (or norms' kind) for a last BN; a full BN name is
                # never in mn_layers (check_mn_layers), only possibly in norms
                norm_name = name if j in last else f'{name}/{b}/{j}'
                blocks.append(ConvNormReLU(c, conv, norm(norm_name, conv[0])))
                c = conv[0]
            self.out_channels += c * len(last)
            self.append(chainer.ChainList(*blocks))

    def forward(self, x):
        outs = []
        for kind, branch in zip(self.kinds, self):
            h = F.average_pooling_2d(x, 3, stride=1, pad=1) if kind == 'avg' else x
            blocks = list(branch)
            tails = blocks[-2:] if kind == 'split' else blocks[-1:]
            for block in blocks[:len(blocks) - len(tails)]:
                h = block(h)
            outs.extend(block(h) for block in tails)
        if self.max_pool:
            outs.append(F.max_pooling_2d(x, 3, stride=2, cover_all=False))
        return F.concat(outs, axis=1)


class InceptionV3(chainer.Chain):
    """Inception-V3 (Szegedy et al. 2016; torchvision's ``inception_v3`` structure and channel
    counts) for 32x32 CIFAR images, as modified in Section 4.3.

    Stem: the five BasicConv2d of Inception-V3 (3x3 32, 3x3 32, 3x3 64, 1x1 80, 3x3 192) with
    the first convolution's stride 2 -> 1 and the first max pool removed; the 3x3 convolutions
    are padded (pad 1) so the stem keeps 32x32; then the second 3x3/2 max pool (no padding,
    floor). Then InceptionA x3 (``inc1/0-2``), InceptionB (``red1``), InceptionC x4
    (``inc2/0-3``), InceptionD (``red2``), InceptionE x2 (``inc3/0-1``), global average pool
    and a linear classifier. The grid reductions are unpadded stride-2 as in Inception-V3, so
    the maps are 32 -> 15 (pool) -> 7 (red1) -> 3 (red2): output stride 8 and a 3x3 final map.
    No auxiliary classifier and no dropout. Every convolution has no bias and is followed by
    BN (Chainer's default eps 2e-5, not torchvision's 1e-3) and ReLU.

    Normalizations are named ``stem/<j>`` and ``<layer>/<branch>/<j>`` (branches in
    torchvision's order, ``j`` counting the branch's convs in torchvision's definition order;
    InceptionE's split branches number the 1x3 before the 3x1), e.g. ``inc2/0/2/4`` is the
    fifth BN of the 7x7dbl branch of the first InceptionC (Figure 8). Naming a layer in
    ``mn_layers`` makes the last BN of each of its branches MN: 4 for InceptionA and C,
    2 for InceptionB and D (their max-pool branch has no BN), 6 for InceptionE (the 1x3 and
    3x1 of its two split branches are both last).

    Args:
        n_classes: 10 or 100.
        mn_layers: subset of ``LAYER_NAMES`` (``inc1/0``, ..., ``red1``, ..., ``inc3/1``);
            () is the all-BN model.
        n_components, em_iters: K and "EM iter." of every MN layer.
        in_channels: image channels.
        norms: ``{name: kind}`` ('bn', 'mn', 'gbn', 'gn', 'mgn';
            :class:`~mixnorm_chainer.models.norm.NormFactory`): a layer name (``inc2/0``)
            gives the kind to the last normalization of each of its branches (as
            ``mn_layers``), ``stem/<j>`` and ``<layer>/<branch>/<j>`` to one of the others,
            ``'*'`` to every one not named.
        groups: G of the GN/MGN layers, each cut to the largest divisor of its channels that
            is at most ``groups`` (e.g. 80 -> 20, 48 -> 24, 192 -> 32).
        mgn_components: K of the MGN layers (default ``n_components``).
        **mn_options: other :class:`~mixnorm_chainer.MixtureNormalization` options
            (e.g. ``sample_fraction``, ``inference``), ``fused_relu`` and ``mgn_options``.
    """

    def __init__(self, n_classes=10, mn_layers=(), n_components=3, em_iters=2,
                 in_channels=3, norms=None, groups=DEFAULT_GROUPS, mgn_components=None,
                 **mn_options):
        super().__init__()
        norm = NormFactory(check_mn_layers(mn_layers, LAYER_NAMES), n_components, em_iters,
                           norms=norms, groups=groups, mgn_components=mgn_components,
                           **mn_options)
        self.mn_layers = norm.mixture_layers(norm.mn_layers)
        with self.init_scope():
            blocks = []
            c = in_channels
            for j, conv in enumerate(STEM):
                blocks.append(ConvNormReLU(c, conv, norm(f'stem/{j}', conv[0])))
                c = conv[0]
            self.stem = chainer.ChainList(*blocks)
            stages = {}
            for name, spec in LAYERS:
                module = InceptionModule(name, c, spec, norm)
                c = module.out_channels
                stages.setdefault(name.split('/')[0], []).append(module)
            self.inc1 = chainer.ChainList(*stages['inc1'])
            self.red1 = stages['red1'][0]
            self.inc2 = chainer.ChainList(*stages['inc2'])
            self.red2 = stages['red2'][0]
            self.inc3 = chainer.ChainList(*stages['inc3'])
            self.linear = L.Linear(c, n_classes)
        norm.check_names()

    def _modules(self):
        """``(layer name, InceptionModule)`` in network order."""
        for stage in ('inc1', 'red1', 'inc2', 'red2', 'inc3'):
            link = getattr(self, stage)
            if isinstance(link, InceptionModule):
                yield stage, link
            else:
                for i, module in enumerate(link):
                    yield f'{stage}/{i}', module

    def norm_layers(self):
        """``{full normalization name: link}`` for every normalization, in network order."""
        layers = {f'stem/{j}': block.norm for j, block in enumerate(self.stem)}
        for name, module in self._modules():
            for b, branch in enumerate(module):
                for j, block in enumerate(branch):
                    layers[f'{name}/{b}/{j}'] = block.norm
        return layers

    def mn_norm_names(self):
        """Full names of the MN links, in network order (e.g. Figure 9's 10 modules)."""
        return [name for name, link in self.norm_layers().items()
                if isinstance(link, MixtureNormalization)]

    def feature_maps(self, x):
        """``{stage: output}`` for ``STAGES`` (stem convs, max pool, each block/reduction)."""
        maps = {}
        h = x
        for block in self.stem:
            h = block(h)
        maps['stem'] = h
        h = maps['pool'] = F.max_pooling_2d(h, 3, stride=2, cover_all=False)
        for stage in STAGES[2:]:
            link = getattr(self, stage)
            for module in ([link] if isinstance(link, InceptionModule) else link):
                h = module(h)
            maps[stage] = h
        return maps

    def forward(self, x):
        h = self.feature_maps(x)['inc3']
        return self.linear(F.average(h, axis=(2, 3)))
