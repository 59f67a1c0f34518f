"""Models of the paper's experiments; ``mn_layers`` picks which normalizations are MN."""
from mixnorm_chainer.models.cifar_cnn import CifarCNN  # NOQA
from mixnorm_chainer.models.dcgan import Discriminator, Generator  # NOQA
from mixnorm_chainer.models.densenet import DenseNet  # NOQA
from mixnorm_chainer.models.inception_v3 import InceptionV3  # NOQA
from mixnorm_chainer.models.norm import NormFactory, check_mn_layers  # NOQA
