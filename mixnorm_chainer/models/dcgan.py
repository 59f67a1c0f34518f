"""DCGAN of Section 4.5: generator with BN (or MN) and the standard DCGAN discriminator.

The paper: "[the generator] consist[s] of one linear and four deconvolution layers. The first
three deconvolution layers are separated from each other by batch normalization followed by
ReLU"; MN replaces "the batch normalization layers associated with the first two deconvolution
layers" (K=3, EM iter. 2); Adam(alpha=2e-4, beta1=0, beta2=0.9) for both networks, 100K
updates, FID every 10K. These are exactly the DCGAN of Chainer's ``chainer-gan-lib``
(``common/net.py``: ``DCGANGenerator``/``DCGANDiscriminator``, ``dcgan/updater.py``), whose
defaults are the same Adam, 100K iterations and evaluation every 10K; we follow it:

Generator (image side S = 32 for CIFAR, any multiple of 8; w = S / 8, ch = 512):
    z (128, uniform in [-1, 1]) -> linear (ch*w*w) -> BN -> ReLU -> (ch, w, w)  ``linear``
    -> deconv 4x4/2 -> ch/2, 2w   -> BN|MN -> ReLU                              ``deconv1``
    -> deconv 4x4/2 -> ch/4, 4w   -> BN|MN -> ReLU                              ``deconv2``
    -> deconv 4x4/2 -> ch/8, S    -> BN|MN -> ReLU                              ``deconv3``
    -> deconv 3x3/1 -> C, S -> tanh                                             ``deconv4``
The normalization after layer ``X`` is the link ``X_norm``; ``mn_layers`` names layers among
``('linear', 'deconv1', 'deconv2', 'deconv3')`` (paper: ``('deconv1', 'deconv2')``). MN layers
use Eq. 40 (ReLU per component, fused) unless ``fused_relu=False``, as in ``CifarCNN``.

Discriminator (chainer-gan-lib's ``DCGANDiscriminator``, the "standard CNN" of the SN-GAN
paper's Table 3 with batch normalization and without spectral normalization):
    conv3x3/1 ch/8, conv4x4/2 ch/4, conv3x3/1 ch/4, conv4x4/2 ch/2, conv3x3/1 ch/2,
    conv4x4/2 ch, conv3x3/1 ch, linear -> 1 logit;
LeakyReLU(0.2) after every conv, BN (no gamma) after every conv but the first. All weights are
drawn from N(0, 0.02).
"""
import chainer
import chainer.functions as F
import chainer.links as L
import numpy

from mixnorm_chainer.models.norm import DEFAULT_GROUPS, NormFactory, check_mn_layers

#: generator layers that are followed by a normalization (candidates for ``mn_layers``)
NORM_LAYERS = ('linear', 'deconv1', 'deconv2', 'deconv3')
#: Section 4.5: MN at the normalizations of the first two deconvolutions
PAPER_MN_LAYERS = ('deconv1', 'deconv2')


def _check_size(image_size):
    if int(image_size) != image_size or image_size < 8 or image_size % 8:
        raise ValueError('image_size must be a multiple of 8 (>= 8); got {!r}'.format(
            image_size))
    return int(image_size)


class Generator(chainer.Chain):
    """DCGAN generator (module docstring); ``mn_layers`` selects the MN normalizations.

    Args:
        mn_layers: subset of :data:`NORM_LAYERS`; () is DCGAN-BN, :data:`PAPER_MN_LAYERS` is
            the paper's DCGAN-MN.
        n_components, em_iters: K and "EM iter." of every MN layer (paper: 3, 2).
        image_size: output side (multiple of 8; 32 for CIFAR).
        out_channels: image channels (3 for CIFAR).
        n_hidden: dimension of z.
        ch: channels of the first feature map (halved by each of the first three deconvs).
        wscale: std of the N(0, wscale) weight initializer.
        norms: ``{layer name: kind}`` among :data:`NORM_LAYERS` ('bn', 'mn', 'gbn', 'gn',
            'mgn'; ``'*'``: every one not named;
            :class:`~mixnorm_chainer.models.norm.NormFactory`). The ``linear`` normalization
            sees (N, ch*w*w) rows: GN/MGN there group its ch*w*w features.
        groups: G of the GN/MGN layers, each cut to the largest divisor of its channels that
            is at most ``groups``.
        mgn_components: K of the MGN layers (default ``n_components``).
        **mn_options: other :class:`~mixnorm_chainer.MixtureNormalization` options (e.g.
            ``seed``), ``fused_relu`` and ``mgn_options``.
    """

    def __init__(self, mn_layers=(), n_components=3, em_iters=2, image_size=32,
                 out_channels=3, n_hidden=128, ch=512, wscale=0.02, norms=None,
                 groups=DEFAULT_GROUPS, mgn_components=None, **mn_options):
        super().__init__()
        mn_layers = check_mn_layers(mn_layers, NORM_LAYERS)
        self.image_size = _check_size(image_size)
        if ch < 8 or ch % 8:
            raise ValueError('ch must be a multiple of 8; got {!r}'.format(ch))
        self.n_hidden, self.ch, self.bottom = int(n_hidden), int(ch), self.image_size // 8
        norm = NormFactory(mn_layers, n_components, em_iters, norms=norms, groups=groups,
                           mgn_components=mgn_components, **mn_options)
        self.mn_layers = norm.mixture_layers(mn_layers)
        self._relu_fused = {}
        w = chainer.initializers.Normal(wscale)
        widths = (ch, ch // 2, ch // 4, ch // 8)
        with self.init_scope():
            self.linear = L.Linear(n_hidden, self.bottom * self.bottom * ch, initialW=w)
            for i in range(1, 4):
                setattr(self, 'deconv{}'.format(i),
                        L.Deconvolution2D(widths[i - 1], widths[i], 4, 2, 1, initialW=w))
            self.deconv4 = L.Deconvolution2D(widths[3], out_channels, 3, 1, 1, initialW=w)
            # the linear layer's BN is over its ch*w*w outputs (chainer-gan-lib's ``bn0``)
            sizes = (self.bottom * self.bottom * ch,) + widths[1:]
            for name, width in zip(NORM_LAYERS, sizes):
                link, fused = norm(name, width)
                setattr(self, name + '_norm', link)
                self._relu_fused[name] = fused
        norm.check_names()

    def norm_layers(self):
        """``{layer name: normalization link}`` in network order."""
        return {name: getattr(self, name + '_norm') for name in NORM_LAYERS}

    def make_hidden(self, n, rng=None):
        """``n`` latent vectors, uniform in [-1, 1] (chainer-gan-lib's default), float32
        numpy; ``rng``: a ``numpy.random.Generator``/``RandomState`` (default: numpy's global
        generator)."""
        rng = numpy.random if rng is None else rng
        return rng.uniform(-1, 1, (int(n), self.n_hidden)).astype(numpy.float32)

    def _norm_relu(self, name, h):
        h = getattr(self, name + '_norm')(h)
        return h if self._relu_fused[name] else F.relu(h)

    def forward(self, z):
        z = F.reshape(z, (z.shape[0], -1))
        h = self._norm_relu('linear', self.linear(z))
        h = F.reshape(h, (z.shape[0], self.ch, self.bottom, self.bottom))
        for name in NORM_LAYERS[1:]:
            h = self._norm_relu(name, getattr(self, name)(h))
        return F.tanh(self.deconv4(h))


class Discriminator(chainer.Chain):
    """Standard DCGAN discriminator (module docstring); returns (N, 1) logits."""

    def __init__(self, image_size=32, in_channels=3, ch=512, wscale=0.02, slope=0.2):
        super().__init__()
        self.image_size = _check_size(image_size)
        if ch < 8 or ch % 8:
            raise ValueError('ch must be a multiple of 8; got {!r}'.format(ch))
        self.slope = slope
        bottom = self.image_size // 8
        w = chainer.initializers.Normal(wscale)
        # (name, in, out, ksize, stride, pad)
        self._convs = (('c0_0', in_channels, ch // 8, 3, 1, 1), ('c0_1', ch // 8, ch // 4, 4, 2, 1),
                       ('c1_0', ch // 4, ch // 4, 3, 1, 1), ('c1_1', ch // 4, ch // 2, 4, 2, 1),
                       ('c2_0', ch // 2, ch // 2, 3, 1, 1), ('c2_1', ch // 2, ch, 4, 2, 1),
                       ('c3_0', ch, ch, 3, 1, 1))
        with self.init_scope():
            for name, c_in, c_out, k, s, p in self._convs:
                setattr(self, name, L.Convolution2D(c_in, c_out, k, s, p, initialW=w))
                if name != 'c0_0':
                    setattr(self, 'bn' + name[1:], L.BatchNormalization(c_out, use_gamma=False))
            self.l4 = L.Linear(bottom * bottom * ch, 1, initialW=w)

    def forward(self, x):
        h = x
        for name, *_ in self._convs:
            h = getattr(self, name)(h)
            if name != 'c0_0':
                h = getattr(self, 'bn' + name[1:])(h)
            h = F.leaky_relu(h, self.slope)
        return self.l4(h)


def generator_loss(y_fake):
    """Non-saturating generator loss, mean over the batch of softplus(-D(G(z)))
    (= -log sigmoid(D(G(z))); chainer-gan-lib's ``dcgan/updater.py``)."""
    return F.sum(F.softplus(-y_fake)) / y_fake.shape[0]


def discriminator_loss(y_real, y_fake):
    """Discriminator loss: mean softplus(-D(x)) + mean softplus(D(G(z)))
    (= -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))))."""
    return (F.sum(F.softplus(-y_real)) / y_real.shape[0]
            + F.sum(F.softplus(y_fake)) / y_fake.shape[0])
