"""The paper's experimental settings as data (Tables 2-6, Sections 4.4, 4.5), with its numbers.

Each :class:`Setting` is one row of a table: model, which layers get MN, K, "EM iter.",
optimizer, learning rate, weight decay, batch size, epochs, learning-rate policy, and what the
paper reports for it. ``mixnorm-exp`` reads these records; nothing else restates the numbers.

Optimizers (PAPER-NOTES 10):

* ``'rmsprop'``: "RMSprop with 0.9 momentum" is read as the squared-gradient decay,
  chainer ``RMSprop(lr, alpha=0.9, eps=1e-8)`` (chainer's RMSprop has no momentum term).
* ``'nesterov'``: Nesterov's accelerated gradient with momentum 0.9, chainer ``NesterovAG``.
* ``'adam'`` (DCGAN, Section 4.5): chainer ``Adam(alpha=lr, beta1=0, beta2=0.9)`` for both
  networks; GAN settings have ``iterations`` (generator updates) instead of ``epochs``.

Learning-rate policies:

* ``('exponential', rate, every_epochs)``: lr *= rate every ``every_epochs`` epochs
  (x0.93 every 2 epochs for the CIFAR CNN, every 4 for Inception-V3). A run with fewer epochs
  (``--epochs``/``--scale``) is the first part of the paper's run: same decay per epoch.
* ``('step', factor, fractions)``: lr *= factor at each fraction of the run's epochs
  (DenseNet and Table 6: /10 at 50% and 75%; Table 6's second policy: /5 at 30, 60, 80%).

Beyond the paper (each row says so in ``notes``): generalized batch normalization (GBN rows),
and a small-batch study of group normalization (``norms``: GN, and the mixture of
:class:`~mixnorm_chainer.MixtureGroupNormalization`) against Table 2's BN-2.

Assumptions where the paper is silent (marked in ``notes``): Table 6 gives no K, EM iter. or
weight decay; we use K=5, EM iter. 2 (the setting of Table 4's best CIFAR-100 model, MN-4, at
the same layers' depth) and weight decay 5e-4 (the Inception-V3 runs of Table 4).
"""
import dataclasses
import difflib

DATASETS = ('cifar10', 'cifar100')
MODELS = ('cifar_cnn', 'inception_v3', 'densenet40', 'densenet100', 'dcgan')


@dataclasses.dataclass(frozen=True)
class Setting:
    """One experiment of the paper.

    ``paper`` holds what the paper reports: ``acc_at`` = maximum test accuracy (%) after 25, 50,
    75, 100% of the epochs (Tables 2, 4); ``steps_to_baseline`` = gradient updates to reach the
    baseline's maximum accuracy (Tables 3, 5, 6; None = never); ``max_acc`` = best test
    accuracy (%); ``best_error`` = best test error (%) (Section 4.4).
    """
    name: str
    table: str
    dataset: str
    model: str
    label: str
    mn_layers: tuple = ()
    n_components: int = 3
    em_iters: int = 2
    optimizer: str = 'rmsprop'
    lr: float = 0.01
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 100
    schedule: tuple = ('exponential', 0.93, 2)
    baseline: str = None
    paper: dict = dataclasses.field(default_factory=dict)
    notes: str = ''
    #: Generalized batch normalization (gbn.py): layers, deviation ('std'/'mad'/'cvar'), alpha.
    gbn_layers: tuple = ()
    gbn_deviation: str = None
    gbn_alpha: float = None
    #: GAN settings (Section 4.5) train for this many generator updates instead of epochs.
    iterations: int = None
    #: MN options of the setting beyond the paper's table (builders.MN_OPTIONS), as
    #: ((key, value), ...); e.g. the DenseNet rows' initial gamma.
    mn_options: tuple = ()
    #: Other normalizations (models.norm.NormFactory's ``norms``) as ((layer, kind), ...),
    #: kind 'gn' (group normalization) or 'mgn' (mixture group normalization: K =
    #: n_components, EM iter. = em_iters), and their G (None: 32, cut to a divisor of C).
    norms: tuple = ()
    groups: int = None

    @property
    def is_mn(self):
        return bool(self.mn_layers)

    @property
    def has_mixture(self):
        """MN or MGN layers: the setting's K and EM iter. are used."""
        return self.is_mn or any(kind == 'mgn' for _, kind in self.norms)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d['mn_layers'] = list(self.mn_layers)
        d['schedule'] = list(self.schedule)
        d['gbn_layers'] = list(self.gbn_layers)
        d['mn_options'] = dict(self.mn_options)
        d['norms'] = dict(self.norms)
        return d


def _short(dataset):
    return {'cifar10': 'c10', 'cifar100': 'c100'}[dataset]


def _cifar_cnn():
    """Table 2 (CIFAR CNN, RMSprop, x0.93 every 2 epochs, batch 256, 100 epochs) + Table 3."""
    regimes = {1: (0.01, 1e-4), 2: (0.01, 2e-5), 3: (0.05, 1e-4), 4: (0.05, 2e-5)}
    table2 = {
        'cifar10': {
            'BN-1': (None, 79.37, 84.34, 86.24, 86.74), 'BN-2': (None, 84.11, 86.92, 87.65, 87.95),
            'BN-3': (None, 68.77, 71.68, 75.25, 77.35), 'BN-4': (None, 73.84, 77.84, 81.43, 82.58),
            'MN-1': ((('conv3',), 3, 2), 81.91, 85.10, 86.51, 87.08),
            'MN-2': ((('conv3',), 3, 2), 85.56, 87.28, 88.05, 88.47),
            'MN-3': ((('conv3',), 3, 2), 67.84, 73.09, 74.80, 77.33),
            'MN-4': ((('conv3',), 3, 2), 76.70, 80.82, 83.31, 83.87),
        },
        'cifar100': {
            'BN-1': (None, 52.54, 57.83, 60.37, 62.11), 'BN-2': (None, 56.09, 60.05, 61.46, 62.14),
            'BN-3': (None, 23.13, 28.12, 33.21, 36.80), 'BN-4': (None, 36.98, 43.89, 46.95, 49.08),
            'MN-1': ((('conv3',), 3, 2), 55.30, 60.47, 61.46, 62.20),
            'MN-2': ((('conv3',), 3, 2), 59.04, 60.86, 61.77, 62.29),
            'MN-3': ((('conv3',), 3, 2), 29.80, 36.30, 40.66, 43.77),
            'MN-4': ((('conv3',), 3, 2), 42.31, 48.96, 51.98, 52.62),
            'MN-5': ((('conv3',), 3, 4), 59.05, 61.94, 62.56, 62.76),
            'MN-6': ((('conv3',), 3, 8), 58.98, 61.83, 62.67, 63.12),
            'MN-7': ((('conv2',), 3, 2), 57.63, 61.23, 62.15, 62.63),
            'MN-8': ((('conv2', 'conv3'), 3, 2), 59.79, 61.67, 62.50, 62.96),
        },
    }
    # Table 3: steps to BN-2's maximum accuracy, and each model's maximum accuracy.
    table3 = {
        'cifar10': {'BN-2': (1.95e4, 87.95), 'MN-2': (1.34e4, 88.47)},
        'cifar100': {'BN-2': (1.81e4, 62.14), 'MN-2': (1.77e4, 62.29), 'MN-5': (1.07e4, 62.76),
                     'MN-6': (1.09e4, 63.12), 'MN-7': (1.34e4, 62.63), 'MN-8': (1.03e4, 62.96)},
    }
    for dataset, rows in table2.items():
        for label, (mn, *acc) in rows.items():
            index = int(label.split('-')[1])
            lr, wd = regimes[min(index, 2) if index > 4 else index]
            paper = {'acc_at': tuple(acc), 'max_acc': acc[-1]}
            if label in table3[dataset]:
                paper['steps_to_baseline'], paper['max_acc'] = table3[dataset][label]
            layers, K, em = mn if mn else ((), 3, 2)
            baseline = None if not mn else 'cnn-{}-BN-{}'.format(
                _short(dataset), index if index <= 4 else 2)
            yield Setting(
                name='cnn-{}-{}'.format(_short(dataset), label), table='Table 2',
                dataset=dataset, model='cifar_cnn', label=label, mn_layers=layers,
                n_components=K, em_iters=em, optimizer='rmsprop', lr=lr, weight_decay=wd,
                batch_size=256, epochs=100, schedule=('exponential', 0.93, 2),
                baseline=baseline, paper=paper)


def _inception():
    """Table 4 (Inception-V3, RMSprop, x0.93 every 4 epochs, batch 128, wd 5e-4, 200 epochs)
    + Table 5, and Table 6 (Nesterov, lr 0.14, batch 256, 150 epochs, two drop policies)."""
    table4 = {
        'cifar10': {
            'BN-1': (None, 0.001, 89.18, 90.62, 91.08, 91.50),
            'MN-1': ((('red1', 'red2'), 3, 8), 0.001, 89.47, 91.03, 91.70, 91.91),
            'MN-2': ((('red1', 'red2', 'inc3/0'), 3, 4), 0.001, 89.73, 91.69, 92.09, 92.55),
            'MN-3': ((('inc2/0', 'inc3/0'), 3, 2), 0.001, 90.49, 91.52, 92.17, 92.30),
            'MN-4': ((('inc2/0', 'inc3/0'), 5, 2), 0.001, 90.26, 91.77, 92.00, 92.25),
        },
        'cifar100': {
            'BN-1': (None, 0.001, 66.88, 69.44, 71.03, 71.30),
            'BN-5': (None, 0.005, 40.68, 47.47, 51.13, 52.63),
            'MN-1': ((('red1', 'red2'), 3, 8), 0.001, 66.6, 68.86, 70.01, 70.43),
            'MN-2': ((('red1', 'red2', 'inc3/0'), 3, 4), 0.001, 68.26, 70.78, 71.78, 72.23),
            'MN-4': ((('inc2/0', 'inc3/0'), 5, 2), 0.001, 68.4, 70.99, 71.98, 72.74),
            'MN-5': ((('inc2/0', 'inc3/0'), 5, 2), 0.005, 50.41, 55.69, 57.88, 59.10),
        },
    }
    table5 = {
        'cifar10': {'BN-1': (7.34e4, 91.50), 'MN-1': (4.29e4, 91.91), 'MN-2': (3.86e4, 92.55),
                    'MN-3': (3.82e4, 92.30), 'MN-4': (3.58e4, 92.25)},
        'cifar100': {'BN-1': (7.34e4, 71.30), 'MN-1': (None, 70.43), 'MN-2': (4.57e4, 72.23),
                     'MN-4': (3.93e4, 72.74)},
    }
    for dataset, rows in table4.items():
        for label, (mn, lr, *acc) in rows.items():
            paper = {'acc_at': tuple(acc), 'max_acc': acc[-1]}
            if label in table5[dataset]:
                paper['steps_to_baseline'], paper['max_acc'] = table5[dataset][label]
            layers, K, em = mn if mn else ((), 3, 2)
            baseline = None if not mn else 'inc-{}-BN-{}'.format(
                _short(dataset), 5 if lr == 0.005 else 1)
            yield Setting(
                name='inc-{}-{}'.format(_short(dataset), label), table='Table 4',
                dataset=dataset, model='inception_v3', label=label, mn_layers=layers,
                n_components=K, em_iters=em, optimizer='rmsprop', lr=lr, weight_decay=5e-4,
                batch_size=128, epochs=200, schedule=('exponential', 0.93, 4),
                baseline=baseline, paper=paper)
    table6 = {
        'nag1': (('step', 0.1, (0.5, 0.75)), {'BN': (2.78e4, 75.75), 'MN': (1.52e4, 77.30)}),
        'nag2': (('step', 0.2, (0.3, 0.6, 0.8)), {'BN': (2.41e4, 75.20), 'MN': (1.79e4, 77.32)}),
    }
    for policy, (schedule, rows) in table6.items():
        for label, (steps, max_acc) in rows.items():
            mn = label == 'MN'
            yield Setting(
                name='inc-c100-{}-{}'.format(policy, label), table='Table 6',
                dataset='cifar100', model='inception_v3', label=label,
                mn_layers=('inc2/1', 'inc3/0') if mn else (), n_components=5, em_iters=2,
                optimizer='nesterov', lr=0.14, weight_decay=5e-4, batch_size=256, epochs=150,
                schedule=schedule, baseline='inc-c100-{}-BN'.format(policy) if mn else None,
                paper={'steps_to_baseline': steps, 'max_acc': max_acc},
                notes=("K, EM iter., weight decay not in the paper: assumed 5, 2 (Table 4's "
                       'MN-4), 5e-4 (Table 4)') if mn else
                      'weight decay not in the paper: assumed 5e-4 (Table 4)')


def _densenet():
    """Section 4.4 (CIFAR-100, NAG 0.9, lr 0.1 /10 at 50% and 75%, batch 64, wd 1e-4, 200
    epochs); MN replaces the BNs of both transitions and the final BN, K=5, EM iter. 2.

    Not the paper's: the MN layers start with gamma = 1/sqrt(K) (``initial_gamma='1/sqrt(K)'``).
    With gamma = 1, Eq. 34's output has a second moment of about K at initialization and this
    network diverges at lr 0.1 within a few steps (docs/training-speed.md); give
    ``--mn-option initial_gamma=1`` to run the paper's initialization."""
    best_error = {40: {'BN': 25.10, 'MN': 24.63}, 100: {'BN': 21.93, 'MN': 20.97}}
    for depth, errors in best_error.items():
        for label, err in errors.items():
            mn = label == 'MN'
            yield Setting(
                name='dense{}-c100-{}'.format(depth, label), table='Section 4.4',
                dataset='cifar100', model='densenet{}'.format(depth), label=label,
                mn_layers=('trans1', 'trans2', 'final') if mn else (), n_components=5,
                em_iters=2, optimizer='nesterov', lr=0.1, weight_decay=1e-4, batch_size=64,
                epochs=200, schedule=('step', 0.1, (0.5, 0.75)),
                baseline='dense{}-c100-BN'.format(depth) if mn else None,
                paper={'best_error': err, 'max_acc': 100 - err},
                mn_options=(('initial_gamma', '1/sqrt(K)'),) if mn else (),
                notes="MN option initial_gamma=1/sqrt(K), not the paper's 1 (it diverges at "
                      'lr 0.1; docs/training-speed.md)' if mn else '')


def _gbn():
    """Generalized batch normalization (Yuan et al., AAAI 2019), not in the MN paper:
    the CIFAR CNN in Table 2's regime 2 (as BN-2 / MN-2) with GBN at MN-2's layer (conv3).
    Labels: GBN-mad-2 (median / mean absolute deviation), GBN-cvar-2 (0.75-quantile /
    superquantile deviation, upper 25% tail), GBN-cvar25-2 (alpha = 0.25, upper 75% tail).
    The GBN paper does not give its alpha for this network: both alphas are our choice."""
    variants = {'mad': ('mad', None), 'cvar': ('cvar', 0.75), 'cvar25': ('cvar', 0.25)}
    for dataset in DATASETS:
        for key, (deviation, alpha) in variants.items():
            yield Setting(
                name='cnn-{}-GBN-{}-2'.format(_short(dataset), key), table='GBN',
                dataset=dataset, model='cifar_cnn', label='GBN-{}-2'.format(key),
                optimizer='rmsprop', lr=0.01, weight_decay=2e-5, batch_size=256, epochs=100,
                schedule=('exponential', 0.93, 2), baseline='cnn-{}-BN-2'.format(_short(dataset)),
                gbn_layers=('conv3',), gbn_deviation=deviation, gbn_alpha=alpha,
                notes='not in the MN paper: GBN (Yuan et al. 2019) at conv3, {}{}'.format(
                    deviation, '' if alpha is None else
                    ', alpha={} (our choice)'.format(alpha)))


#: the convolutions of the small-batch rows: all four (see _small_batch)
SMALL_BATCH_LAYERS = ('conv1', 'conv2', 'conv3', 'conv4')


def _small_batch():
    """Small batches (not in the MN paper): the CIFAR CNN in Table 2's regime 2 (as BN-2, the
    baseline: RMSprop lr 0.01, wd 2e-5, x0.93 every 2 epochs) with a normalization that uses no
    batch statistics at all four convolutions. GN-2: chainer's ``L.GroupNormalization`` with
    G = 32 (the GN paper's default; it divides 64, 128, 256); MGN1-2: ``MixtureGroupNormalization``
    with one group (a mixture layer norm), K = 3, EM iter. 2 (MN-2's); MGN-2: the same with G =
    32. The study runs each row and BN-2 at small batches, ``--batch-size 2`` (8, 64), whose
    runs get folders and variant labels of their own (``+batch=B``).

    All four convolutions, not MN-2's conv3 alone: at batch 2 every BN layer's statistics are
    those of two images, so a row with BN left at three layers would measure those BNs more than
    the layer under study."""
    rows = {'GN-2': ('gn', 32), 'MGN1-2': ('mgn', 1), 'MGN-2': ('mgn', 32)}
    for dataset in DATASETS:
        for label, (kind, groups) in rows.items():
            yield Setting(
                name='cnn-{}-{}'.format(_short(dataset), label), table='Small batch',
                dataset=dataset, model='cifar_cnn', label=label, n_components=3, em_iters=2,
                optimizer='rmsprop', lr=0.01, weight_decay=2e-5, batch_size=256, epochs=100,
                schedule=('exponential', 0.93, 2), baseline='cnn-{}-BN-2'.format(_short(dataset)),
                norms=tuple((name, kind) for name in SMALL_BATCH_LAYERS), groups=groups,
                notes='not in the MN paper: {} ({}) at all 4 convs, so no BN sees the small '
                      'batch; run with --batch-size 2'.format(kind.upper(), 'G={}{}'.format(
                          groups, ', K=3, EM iter. 2' if kind == 'mgn' else '')))


def _dcgan():
    """Section 4.5 (DCGAN on CIFAR-10; Figures 6, 7): Adam(alpha=2e-4, beta1=0, beta2=0.9)
    for generator and discriminator, 100K generator updates, FID every 10K; DCGAN-MN replaces
    the BNs of the first two deconvolutions with MN (K=3, EM iter. 2). Paper: DCGAN-BN's best
    FID is 37.56 after 60K updates; DCGAN-MN reaches 37.56 after 25K (~58% fewer) and its best
    is 33.35. Batch size (64) is not given in the paper: chainer-gan-lib's default, whose DCGAN
    and optimizer settings the paper matches."""
    rows = {'BN': ((), {'best_fid': 37.56, 'best_fid_step': 6e4}),
            'MN': (('deconv1', 'deconv2'), {'best_fid': 33.35, 'steps_to_baseline': 2.5e4})}
    for label, (layers, paper) in rows.items():
        yield Setting(
            name='dcgan-c10-{}'.format(label), table='Section 4.5', dataset='cifar10',
            model='dcgan', label='DCGAN-{}'.format(label), mn_layers=layers, n_components=3,
            em_iters=2, optimizer='adam', lr=2e-4, weight_decay=0.0, batch_size=64,
            epochs=None, iterations=100000, schedule=('constant',),
            baseline='dcgan-c10-BN' if layers else None, paper=paper,
            notes='Adam beta1=0, beta2=0.9; batch size 64 not in the paper (assumed: '
                  "chainer-gan-lib's default)")


SETTINGS = {s.name: s for gen in (_cifar_cnn, _inception, _densenet, _gbn, _dcgan,
                                  _small_batch) for s in gen()}

#: Table 7 (DenseNet, MN replacing the last BN, iterations/sec on a Titan X (Pascal)):
#: {(batch, channels at that BN): {K: its/sec}}, K = 1 meaning BN.
TABLE7 = {
    (64, 196): {1: 16.40, 2: 14.46, 3: 14.42, 4: 13.91, 5: 13.69},
    (64, 448): {1: 9.26, 2: 8.83, 3: 8.51, 4: 8.52, 5: 8.41},
    (128, 448): {1: 7.35, 2: 6.59, 3: 6.51, 4: 6.41, 5: 6.38},
}
#: DenseNet depth with that many channels at the final BN (growth rate 12).
TABLE7_DEPTH = {196: 20, 448: 40}


def close_names(name, names, n=5):
    """Up to ``n`` of ``names`` close to ``name``, most similar first: by difflib's similarity
    (as argparse's suggestions; ties alphabetically), then those containing ``name``; case is
    ignored."""
    key = str(name).lower()
    ratios = {c: difflib.SequenceMatcher(None, key, c.lower()).ratio() for c in names}
    close = sorted((c for c, r in ratios.items() if r >= 0.6), key=lambda c: (-ratios[c], c))
    close += sorted(c for c in names if key in c.lower() and c not in close)
    return close[:n]


def unknown(what, name, names, hint):
    """The one-line message of an unknown ``name`` among ``names``, with the close ones."""
    close = close_names(name, names)
    return 'unknown {} {!r}; {}{}'.format(what, name, 'did you mean {}? '.format(', '.join(
        close)) if close else '', hint)


def get(name):
    """The setting called ``name``; a one-line error suggesting the most similar names
    otherwise (:func:`close_names`)."""
    try:
        return SETTINGS[name]
    except KeyError:
        raise KeyError(unknown('setting', name, SETTINGS,
                               '(`mixnorm-exp list` shows all)')) from None
