"""What a run is built from: the setting's network, its optimizer and its data.

:mod:`mixnorm_chainer.reproduce.training` trains with these;
:mod:`mixnorm_chainer.reproduce.inference` rebuilds a trained run's model with them.
"""
import os

import chainer
import chainer.links as L

from mixnorm_chainer import options as layer_options
from mixnorm_chainer.models import CifarCNN, DenseNet, InceptionV3
from mixnorm_chainer.reproduce import runfolder
from mixnorm_chainer.reproduce.datasets import get_dataset

#: MN options a run may set (``mixnorm-exp run --mn-option KEY=VALUE``; a setting's own are
#: in ``Setting.mn_options``): the choices where the paper is ambiguous, and the row pool.
#: key -> (the values it takes, parse)
MN_OPTIONS = {
    'affine': ("'output' (gamma, beta after Eq. 34; default) or 'statistics' (Eq. 37)",
               lambda v: _choice(v, layer_options.AFFINE_PLACEMENTS)),
    'relu': ("'fused' (Eq. 40, ReLU per component; default) or 'after' (Eq. 41)",
             lambda v: _choice(v, ('fused', 'after'))),
    'kmeans_iters': ('how many of "EM iter." are k-means iterations (default: half)',
                     lambda v: _integer(v, 0)),
    'initial_gamma': ("a number or '1/sqrt(K)'", lambda v: v if v in layer_options.GAMMA_RULES
                      else _number(v)),
    'inference': ("'consistent' (default) or 'printed' form of Eq. 38",
                  lambda v: _choice(v, layer_options.INFERENCE_FORMS)),
    'pool_rows': ('rows of each of the last T training batches kept for the pool strategy '
                  '(default 0: none)', lambda v: _integer(v, 0)),
    'init': ("'kmeans++' (default), 'afkmc2' (Section 5.1's MCMC seeding) or 'previous' (EM "
             "warm-started from the previous step's mixture)",
             lambda v: _choice(v, layer_options.INITS)),
    'chain_length': ("AFK-MC²'s chain length (default K ln^2(m) ln K)",
                     lambda v: _integer(v, 1)),
    'reseed_every': ("with init=previous, reseed every that many steps (default 0: only by "
                     "the rule)", lambda v: _integer(v, 0)),
    'reseed_drop': ("with init=previous, reseed when the batch's log-likelihood per channel "
                    "drops this many nats (default 0.5)", lambda v: _positive_number(v)),
}


def _positive_number(value):
    number = _number(value)
    if number <= 0:
        raise ValueError('a number > 0')
    return number


def _choice(value, choices):
    if value not in choices:
        raise ValueError('one of {}'.format(', '.join(choices)))
    return value


def _integer(value, low):
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError('an integer >= {}'.format(low)) from None
    if number < low or str(number) != str(value).strip():
        raise ValueError('an integer >= {}'.format(low))
    return number


def _number(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError('a number') from None
    if not number == number or number in (float('inf'), float('-inf')):
        raise ValueError('a finite number')
    return number


def parse_mn_option(text):
    """``'affine=statistics'`` -> ``('affine', 'statistics')``; a ValueError names the keys or
    the values a key takes."""
    key, sep, value = str(text).partition('=')
    key = key.strip().replace('-', '_')
    if not sep or key not in MN_OPTIONS:
        raise ValueError('{!r}: give KEY=VALUE with KEY one of {}'.format(
            text, ', '.join(MN_OPTIONS)))
    what, parse = MN_OPTIONS[key]
    try:
        return key, parse(value.strip())
    except ValueError as e:
        raise ValueError('{!r}: {} must be {} ({})'.format(text, key, e, what)) from None


def mn_options_of(setting, run_options=None):
    """The setting's MN options updated with a run's (both as KEY -> value)."""
    options = dict(getattr(setting, 'mn_options', ()) or ())
    options.update(run_options or {})
    for key in options:
        if key not in MN_OPTIONS:
            raise ValueError('unknown MN option {!r}; the options are {}'.format(
                key, ', '.join(MN_OPTIONS)))
    return options


def model_keywords(mn_options):
    """MN options as keywords of the models (``relu`` is the factory's ``fused_relu``)."""
    kw = dict(mn_options)
    if 'relu' in kw:
        kw['fused_relu'] = kw.pop('relu') == 'fused'
    return kw


def build_model(setting, n_classes, seed=None, mn_layers=None, mn_options=None):
    """The setting's network (MN where the setting says, with the setting's MN options updated
    by ``mn_options``; GBN, GN and MGN where it says), wrapped in ``L.Classifier``."""
    layers = setting.mn_layers if mn_layers is None else mn_layers
    kw = dict(n_classes=n_classes, mn_layers=layers, n_components=setting.n_components,
              em_iters=setting.em_iters, seed=seed)
    kw.update(model_keywords(mn_options_of(setting, mn_options)))
    if setting.gbn_layers:                # generalized batch normalization (gbn.py)
        if setting.model != 'cifar_cnn':
            raise ValueError('gbn_layers is supported for the cifar_cnn model only; got '
                             '{!r}'.format(setting.model))
        kw.update(gbn_layers=setting.gbn_layers, gbn_options=dict(
            deviation=setting.gbn_deviation, alpha=setting.gbn_alpha))
    if setting.norms:                     # GN / MGN (models.norm.NormFactory); K: the setting's
        kw.update(norms=dict(setting.norms), mgn_components=setting.n_components)
        if setting.groups is not None:
            kw['groups'] = setting.groups
    if setting.model == 'cifar_cnn':
        net = CifarCNN(**kw)
    elif setting.model == 'inception_v3':
        net = InceptionV3(**kw)
    elif setting.model.startswith('densenet'):
        net = DenseNet(depth=int(setting.model[len('densenet'):]), growth_rate=12, **kw)
    else:
        raise ValueError('unknown model {!r}'.format(setting.model))
    return L.Classifier(net)


def build_optimizer(setting, model):
    if setting.optimizer == 'rmsprop':
        opt = chainer.optimizers.RMSprop(lr=setting.lr, alpha=0.9, eps=1e-8)
    elif setting.optimizer == 'nesterov':
        opt = chainer.optimizers.NesterovAG(lr=setting.lr, momentum=0.9)
    else:
        raise ValueError('unknown optimizer {!r}'.format(setting.optimizer))
    opt.setup(model)
    if setting.weight_decay:
        opt.add_hook(chainer.optimizer_hooks.WeightDecay(setting.weight_decay))
    return opt


def load_data(dataset, data_dir, size, seed):
    """``get_dataset``; with ``data_dir`` only that folder is read (nothing is downloaded)."""
    if data_dir is not None and dataset != 'digits':
        if not os.path.isdir(data_dir):
            raise runfolder.RunError('--data-dir {} is not a folder; give the folder that holds '
                                     'the {} archive or its extracted folder'.format(
                                         data_dir, dataset))
        from mixnorm_chainer.reproduce.datasets import get_cifar
        train, test = get_cifar(dataset, data_dir, download=False)
        return train, test, 10 if dataset == 'cifar10' else 100
    return get_dataset(dataset, data_dir=data_dir, size=size, seed=seed)
