"""``initial_gamma='1/sqrt(K)'``: the rule's value, its error message, the output scale it fixes
(Eq. 34's second moment is ~K for hard-assigned components with gamma = 1) and its survival
through serialization. experiments/densenet_nag_check.py measures the effect on training."""
import chainer
import chainer.links as L
import numpy
import pytest

from mixnorm_chainer import MixtureNormalization, mixture_normalization
from mixnorm_chainer.models import DenseNet

from script_loader import load_script

C = 4
RULE = '1/sqrt(K)'


def separated(K, seed=0, m=2048):
    """Rows of K well-separated unit Gaussians (means 12 apart per channel, weights
    proportional to 1..K), and the one-hot responsibilities of the component that drew them."""
    rng = numpy.random.default_rng(seed)
    labels = rng.choice(K, size=m, p=numpy.arange(1, K + 1) / (K * (K + 1) / 2))
    means = 12.0 * numpy.stack([rng.permutation(K) for _ in range(C)], axis=1)
    x = means[labels] + rng.normal(size=(m, C))
    return x, numpy.eye(K)[labels]


def second_moment(y):
    return float((numpy.asarray(y, numpy.float64) ** 2).mean())


@pytest.mark.parametrize('K', [1, 2, 3, 4, 5])
def test_rule_sets_gamma_to_inverse_sqrt_K(K):
    link = MixtureNormalization(C, n_components=K, initial_gamma=RULE)
    numpy.testing.assert_allclose(link.gamma.array, numpy.full(C, K ** -0.5), rtol=1e-6)
    numpy.testing.assert_array_equal(link.beta.array, numpy.zeros(C))


def test_rule_at_K1_is_the_default_and_BN_init():
    ruled = MixtureNormalization(C, n_components=1, initial_gamma=RULE)
    default = MixtureNormalization(C, n_components=1)
    bn = L.BatchNormalization(C)
    for other in (default, bn):
        numpy.testing.assert_array_equal(ruled.gamma.array, other.gamma.array)
        numpy.testing.assert_array_equal(ruled.beta.array, other.beta.array)


def test_unknown_rule_is_a_one_line_value_error():
    with pytest.raises(ValueError, match=r"initial_gamma .*'1/sqrt\(K\)'.*got '1/K'") as info:
        MixtureNormalization(C, n_components=3, initial_gamma='1/K')
    assert '\n' not in str(info.value)


@pytest.mark.parametrize('K', [1, 3, 5])
def test_eq34_second_moment_is_K_for_hard_assignments(K):
    """One-hot nu: each component's xhat has unit second moment and is divided by
    sqrt(lambda_k), so E[y^2] = sum_k lambda_k / lambda_k * sigma^2/(sigma^2+eps) ~= K."""
    x, nu = separated(K)
    y = mixture_normalization(x, numpy.ones(C), numpy.zeros(C), nu).array
    assert second_moment(y) == pytest.approx(K, rel=1e-3)
    y = mixture_normalization(x, numpy.full(C, K ** -0.5), numpy.zeros(C), nu).array
    assert second_moment(y) == pytest.approx(1, rel=1e-3)


@pytest.mark.parametrize('K', [3, 5])
def test_link_output_second_moment_default_vs_rule(K):
    """The training-mode link (its own GMM fit) on the same data: ~K with gamma = 1, ~1 with
    the rule, and BN's 1 for the K = 1 link."""
    x = separated(K)[0].astype(numpy.float32)
    with chainer.using_config('train', True):
        default = MixtureNormalization(C, n_components=K, seed=0)
        y_default = default(x).array
        y_rule = MixtureNormalization(C, n_components=K, seed=0, initial_gamma=RULE)(x).array
        y_one = MixtureNormalization(C, n_components=1, seed=0)(x).array
    assert default.n_effective_components == K
    assert second_moment(y_default) == pytest.approx(K, rel=0.02)
    assert second_moment(y_rule) == pytest.approx(1, rel=0.02)
    assert second_moment(y_one) == pytest.approx(1, rel=1e-3)


def test_rule_survives_save_and_load_into_a_default_link(tmp_path):
    saved = MixtureNormalization(C, n_components=4, initial_gamma=RULE)
    path = str(tmp_path / 'mn.npz')
    chainer.serializers.save_npz(path, saved)
    loaded = MixtureNormalization(C, n_components=4)
    assert float(loaded.gamma.array[0]) == 1.0
    chainer.serializers.load_npz(path, loaded)
    numpy.testing.assert_allclose(loaded.gamma.array, numpy.full(C, 0.5), rtol=1e-6)


def test_densenet_passes_the_rule_to_its_mn_layers_only():
    numpy.random.seed(0)
    net = DenseNet(7, 4, 10, mn_layers=('trans1', 'final'), n_components=4, initial_gamma=RULE,
                   seed=0)
    for name, link in net.norm_layers().items():
        expected = 0.5 if name in ('trans1', 'final') else 1.0
        assert isinstance(link, MixtureNormalization) == (expected == 0.5), name
        numpy.testing.assert_allclose(link.gamma.array, expected, rtol=1e-6, err_msg=name)


def test_densenet_nag_check_script_runs_and_reports_the_output_scale(capsys):
    """The experiment script on a tiny DenseNet: its tables hold E[y^2] ~ K for MN with the
    default gamma and ~1 with 1/sqrt(K) (the numbers docs/training-speed.md quotes)."""
    script = load_script('experiments/densenet_nag_check.py')
    script.main(['--depth', '7', '--size', '8', '--steps', '2', '--seeds', '0',
                 '--variants', 'bn,final5,final5g'])
    out = capsys.readouterr().out
    rows = {line.split('|')[1].strip(): line for line in out.splitlines()
            if line.startswith('| ') and '[' in line}
    moments = {k: rows[k].split('|')[5].strip() for k in rows if k.startswith('MN')}
    low, high = map(float, moments['MN final K=5'].split('-'))
    assert 4.5 < low <= high < 5.01
    low, high = map(float, moments['MN final K=5 g=1/sqrt(K)'].split('-'))
    assert 0.9 < low <= high < 1.05
    assert '0/1' in rows['BN']


@pytest.mark.slow
def test_nag_check_script_on_the_table6_inception_rows(capsys):
    """``--model inception``: the registry's Table 6 rows; E[y^2] at the MN positions is ~1 for
    BN and between 1 and K=5 for MN with gamma 1 (K_eff per layer)."""
    script = load_script('experiments/densenet_nag_check.py')
    script.main(['--model', 'inception', '--size', '16', '--steps', '1', '--seeds', '0',
                 '--variants', 'bn,table6'])
    out = capsys.readouterr().out
    assert 'lr 0.14' in out and 'wd 0.0005' in out
    rows = {}
    for line in out.splitlines():          # the first table: one row per variant and seed
        if line.startswith('| ') and 'variant' not in line:
            rows.setdefault(line.split('|')[1].strip(), line.split('|'))
    low, high = map(float, rows['BN'][8].strip().split('-'))
    assert 0.99 < low <= high < 1.01
    low, high = map(float, rows['MN inc2/1+inc3/0 K=5'][8].strip().rstrip('*').split('-'))
    assert 1.5 < low <= high < 5.01
