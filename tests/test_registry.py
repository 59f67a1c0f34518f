"""The registry against the paper's tables, transcribed here a second time as the paper prints
them (rows copied from the text of Tables 2-6), and parsed independently of the registry."""
import pytest

from mixnorm_chainer.reproduce import registry

TABLE2 = {'cifar10': """
BN-1 – (0.01, 1e-4) 79.37 84.34 86.24 86.74
BN-2 – (0.01, 2e-5) 84.11 86.92 87.65 87.95
BN-3 – (0.05, 1e-4) 68.77 71.68 75.25 77.35
BN-4 – (0.05, 2e-5) 73.84 77.84 81.43 82.58
MN-1 (conv3, 3, 2) (0.01, 1e-4) 81.91 85.10 86.51 87.08
MN-2 (conv3, 3, 2) (0.01, 2e-5) 85.56 87.28 88.05 88.47
MN-3 (conv3, 3, 2) (0.05, 1e-4) 67.84 73.09 74.80 77.33
MN-4 (conv3, 3, 2) (0.05, 2e-5) 76.70 80.82 83.31 83.87
""", 'cifar100': """
BN-1 – (0.01, 1e-4) 52.54 57.83 60.37 62.11
BN-2 – (0.01, 2e-5) 56.09 60.05 61.46 62.14
BN-3 – (0.05, 1e-4) 23.13 28.12 33.21 36.80
BN-4 – (0.05, 2e-5) 36.98 43.89 46.95 49.08
MN-1 (conv3, 3, 2) (0.01, 1e-4) 55.30 60.47 61.46 62.20
MN-2 (conv3, 3, 2) (0.01, 2e-5) 59.04 60.86 61.77 62.29
MN-3 (conv3, 3, 2) (0.05, 1e-4) 29.80 36.30 40.66 43.77
MN-4 (conv3, 3, 2) (0.05, 2e-5) 42.31 48.96 51.98 52.62
MN-5 (conv3, 3, 4) (0.01, 2e-5) 59.05 61.94 62.56 62.76
MN-6 (conv3, 3, 8) (0.01, 2e-5) 58.98 61.83 62.67 63.12
MN-7 (conv2, 3, 2) (0.01, 2e-5) 57.63 61.23 62.15 62.63
MN-8 ((conv2,conv3), 3, 2) (0.01, 2e-5) 59.79 61.67 62.50 62.96
"""}

TABLE4 = {'cifar10': """
BN-1 – (0.001, 5e-4) 89.18 90.62 91.08 91.50
MN-1 ((red1,red2), 3, 8) (0.001, 5e-4) 89.47 91.03 91.70 91.91
MN-2 ((red1,red2,inc3/0), 3, 4) (0.001, 5e-4) 89.73 91.69 92.09 92.55
MN-3 ((inc2/0,inc3/0), 3, 2) (0.001, 5e-4) 90.49 91.52 92.17 92.30
MN-4 ((inc2/0,inc3/0), 5, 2) (0.001, 5e-4) 90.26 91.77 92.00 92.25
""", 'cifar100': """
BN-1 – (0.001, 5e-4) 66.88 69.44 71.03 71.30
BN-5 – (0.005, 5e-4) 40.68 47.47 51.13 52.63
MN-1 ((red1,red2), 3, 8) (0.001, 5e-4) 66.6 68.86 70.01 70.43
MN-2 ((red1,red2,inc3/0), 3, 4) (0.001, 5e-4) 68.26 70.78 71.78 72.23
MN-4 ((inc2/0,inc3/0), 5, 2) (0.001, 5e-4) 68.4 70.99 71.98 72.74
MN-5 ((inc2/0,inc3/0), 5, 2) (0.005, 5e-4) 50.41 55.69 57.88 59.10
"""}

# Tables 3 and 5: model, steps to the BN model's maximum accuracy, max. acc. (%)
TABLE3 = {'cifar10': "BN-2 1.95×10^4 87.95\nMN-2 1.34×10^4 88.47",
          'cifar100': "BN-2 1.81×10^4 62.14\nMN-2 1.77×10^4 62.29\nMN-5 1.07×10^4 62.76\n"
                      "MN-6 1.09×10^4 63.12\nMN-7 1.34×10^4 62.63\nMN-8 1.03×10^4 62.96"}
TABLE5 = {'cifar10': "BN-1 7.34×10^4 91.50\nMN-1 4.29×10^4 91.91\nMN-2 3.86×10^4 92.55\n"
                     "MN-3 3.82×10^4 92.30\nMN-4 3.58×10^4 92.25",
          'cifar100': "BN-1 7.34×10^4 71.30\nMN-1 - 70.43\nMN-2 4.57×10^4 72.23\n"
                      "MN-4 3.93×10^4 72.74"}
TABLE6 = {'nag1': "BN 2.78×10^4 75.75\nMN 1.52×10^4 77.30",
          'nag2': "BN 2.41×10^4 75.20\nMN 1.79×10^4 77.32"}


def parse_accuracy_table(text):
    """Rows 'LABEL SETTING (lr, wd) a1 a2 a3 a4', SETTING = '–' or '(layers, K, EM iter.)'."""
    rows = {}
    for line in text.strip().splitlines():
        label, rest = line.split(' ', 1)
        head, accuracies = rest.rsplit(')', 1)
        setting, lr_wd = head.rsplit('(', 1)
        lr, wd = (float(v) for v in lr_wd.split(','))
        setting = setting.strip()
        if setting == '–':
            mn = ((), None, None)
        else:
            layers, k, em = setting[1:-1].rsplit(',', 2)
            mn = (tuple(v.strip('() ') for v in layers.split(',')), int(k), int(em))
        rows[label] = (mn, lr, wd, [float(v) for v in accuracies.split()])
    return rows


def parse_steps_table(text):
    rows = {}
    for line in text.strip().splitlines():
        label, steps, acc = line.split()
        rows[label] = (None if steps == '-' else float(steps.replace('×10^', 'e')), float(acc))
    return rows


def short(dataset):
    return {'cifar10': 'c10', 'cifar100': 'c100'}[dataset]


@pytest.mark.parametrize('prefix, tables, epochs, batch, schedule, model', [
    ('cnn', TABLE2, 100, 256, ('exponential', 0.93, 2), 'cifar_cnn'),
    ('inc', TABLE4, 200, 128, ('exponential', 0.93, 4), 'inception_v3'),
])
def test_accuracy_tables(prefix, tables, epochs, batch, schedule, model):
    for dataset, text in tables.items():
        for label, ((layers, k, em), lr, wd, acc) in parse_accuracy_table(text).items():
            s = registry.get('{}-{}-{}'.format(prefix, short(dataset), label))
            assert (s.dataset, s.model, s.label) == (dataset, model, label)
            assert s.mn_layers == layers
            if layers:
                assert (s.n_components, s.em_iters) == (k, em)
            assert (s.lr, s.weight_decay) == (lr, wd)
            assert s.paper['acc_at'] == tuple(acc)
            assert (s.optimizer, s.batch_size, s.epochs, s.schedule) == (
                'rmsprop', batch, epochs, schedule)


@pytest.mark.parametrize('prefix, tables', [('cnn', TABLE3), ('inc', TABLE5)])
def test_steps_tables(prefix, tables):
    for dataset, text in tables.items():
        for label, (steps, acc) in parse_steps_table(text).items():
            s = registry.get('{}-{}-{}'.format(prefix, short(dataset), label))
            assert s.paper['steps_to_baseline'] == steps
            assert s.paper['max_acc'] == acc


def test_table6_nesterov_settings():
    for policy, text in TABLE6.items():
        for label, (steps, acc) in parse_steps_table(text).items():
            s = registry.get('inc-c100-{}-{}'.format(policy, label))
            assert (s.optimizer, s.lr, s.batch_size, s.epochs) == ('nesterov', 0.14, 256, 150)
            assert s.paper == {'steps_to_baseline': steps, 'max_acc': acc}
            assert s.mn_layers == (('inc2/1', 'inc3/0') if label == 'MN' else ())
    assert registry.get('inc-c100-nag1-BN').schedule == ('step', 0.1, (0.5, 0.75))
    assert registry.get('inc-c100-nag2-MN').schedule == ('step', 0.2, (0.3, 0.6, 0.8))


def test_densenet_settings():
    for depth, bn, mn in ((40, 25.10, 24.63), (100, 21.93, 20.97)):
        for label, err in (('BN', bn), ('MN', mn)):
            s = registry.get('dense{}-c100-{}'.format(depth, label))
            assert (s.model, s.optimizer, s.lr, s.weight_decay, s.batch_size, s.epochs) == (
                'densenet{}'.format(depth), 'nesterov', 0.1, 1e-4, 64, 200)
            assert s.schedule == ('step', 0.1, (0.5, 0.75))
            assert s.paper['best_error'] == err
            assert s.mn_layers == (('trans1', 'trans2', 'final') if label == 'MN' else ())
            if label == 'MN':
                assert (s.n_components, s.em_iters) == (5, 2)


def test_every_row_is_registered_and_baselines_exist():
    counts = {}
    for s in registry.SETTINGS.values():
        counts[s.table] = counts.get(s.table, 0) + 1
        if s.baseline:
            base = registry.get(s.baseline)
            assert not base.is_mn and base.dataset == s.dataset and base.model == s.model
            assert (base.lr, base.weight_decay) == (s.lr, s.weight_decay)
    assert counts == {'Table 2': 8 + 12, 'Table 4': 5 + 6, 'Table 6': 4, 'Section 4.4': 4,
                      'GBN': 6, 'Section 4.5': 2, 'Small batch': 6}


def test_table7_numbers():
    assert registry.TABLE7[(64, 196)][1] == 16.40 and registry.TABLE7[(128, 448)][5] == 6.38
    assert registry.TABLE7_DEPTH == {196: 20, 448: 40}


def test_unknown_name_suggests_close_ones():
    with pytest.raises(KeyError, match='cnn-c10-BN-2'):
        registry.get('BN-2')


def suggestions(name):
    """The names `registry.get(name)` suggests, in its order."""
    with pytest.raises(KeyError) as info:
        registry.get(name)
    text = str(info.value.args[0])
    assert '\n' not in text and 'unknown setting {!r}'.format(name) in text
    return [n.strip(" '") for n in text.split('did you mean ', 1)[1].split('?')[0].split(',')]


@pytest.mark.parametrize('typo, first', [
    ('cnn-c100-BN-3x', 'cnn-c100-BN-3'),         # issue 22: cnn-c10-* came first
    ('cnn-c100-bn-3', 'cnn-c100-BN-3'),          # case
    ('inc-c100-nag1-MN2', 'inc-c100-nag1-MN'),
    ('inc-c10-MN4', 'inc-c10-MN-4'),
    ('dense40-c10-MN', 'dense40-c100-MN'),
    ('densenet100-c100-BN', 'dense100-c100-BN'),
    ('dcgan-cifar10-MN', 'dcgan-c10-MN'),
    ('dcgan-c10-mn', 'dcgan-c10-MN'),
])
def test_unknown_name_suggests_the_most_similar_first(typo, first):
    names = suggestions(typo)
    assert names[0] == first and len(names) <= 5
    assert all(n in registry.SETTINGS for n in names)


def test_a_name_like_nothing_suggests_nothing():
    with pytest.raises(KeyError) as info:
        registry.get('zzzz')
    text = info.value.args[0]
    assert 'did you mean' not in text and 'mixnorm-exp list' in text


def test_assumed_choices_are_noted():
    """The rows whose values the paper does not give say so in their notes (`mixnorm-exp list`
    prints them): Table 6's K, EM iter. and weight decay, DCGAN's batch size, GBN's alpha, the
    DenseNet MN rows' initial gamma."""
    for name in ('inc-c100-nag1-MN', 'inc-c100-nag2-MN'):
        notes = registry.get(name).notes
        assert all(word in notes for word in ('K', 'EM iter.', 'weight decay', 'assumed'))
    for name in ('inc-c100-nag1-BN', 'inc-c100-nag2-BN'):
        notes = registry.get(name).notes
        assert 'weight decay' in notes and '5e-4' in notes and 'assumed' in notes
    for name in ('dcgan-c10-BN', 'dcgan-c10-MN'):
        assert 'batch size 64' in registry.get(name).notes
    for name in ('cnn-c10-GBN-cvar-2', 'cnn-c100-GBN-cvar25-2'):
        assert 'alpha' in registry.get(name).notes and 'our choice' in registry.get(name).notes
    for name in ('dense40-c100-MN', 'dense100-c100-MN'):
        assert 'initial_gamma=1/sqrt(K)' in registry.get(name).notes
    for s in registry.SETTINGS.values():
        if s.table in ('Table 2', 'Table 4'):
            assert not s.notes, s.name             # every value is the paper's
