"""Mixture Normalization (Kalayeh & Shah) for Chainer/CuPy.

Import this package before chainer when running on numpy >= 2 / Python >= 3.12:
:mod:`mixnorm_chainer._compat` adapts chainer 7.8.1 there (and does nothing on numpy 1.26).
"""
# isort: off
from mixnorm_chainer import _compat  # noqa: F401  (must run before chainer is imported)
# isort: on
from mixnorm_chainer import models
from mixnorm_chainer.functions import ComponentStatistics, mixture_normalization
from mixnorm_chainer.gbn import GeneralizedBatchNormalization, generalized_batch_normalization
from mixnorm_chainer.gmm import GaussianMixture, fit_gmm
from mixnorm_chainer.group_gmm import SetMixtures, fit_set_mixtures
from mixnorm_chainer.group_normalization import (
    MixtureGroupNormalization,
    mixture_group_normalization,
)
from mixnorm_chainer.links import MixtureNormalization
from mixnorm_chainer.multi_node import MultiNodeMixtureNormalization
from mixnorm_chainer.queue import queue_normalization

__all__ = ['ComponentStatistics', 'GaussianMixture', 'GeneralizedBatchNormalization',
           'MixtureGroupNormalization', 'MixtureNormalization', 'MultiNodeMixtureNormalization',
           'SetMixtures', 'fit_gmm', 'fit_set_mixtures', 'generalized_batch_normalization',
           'mixture_group_normalization', 'mixture_normalization', 'models',
           'queue_normalization']
__version__ = '0.3.0'
