"""figures/figure{2,3,4,5,9}.py and mixnorm_chainer.reproduce.plotting, on fabricated run
directories."""
import numpy
import pytest

from mixnorm_chainer.reproduce import plotting

from figure_scripts import check_png, load_script, make_run

# -- helpers ---------------------------------------------------------------------------------

def direct_rolling(x, window, align):
    mean, std = [], []
    for i in range(len(x)):
        if align == 'center':
            lo, hi = i - window // 2, i + (window - 1) // 2 + 1
        else:
            lo, hi = i - window + 1, i + 1
        w = x[max(lo, 0):min(hi, len(x))]
        w = w[numpy.isfinite(w)]
        mean.append(numpy.mean(w) if w.size else numpy.nan)
        std.append(numpy.std(w) if w.size else numpy.nan)
    return numpy.array(mean), numpy.array(std)


@pytest.mark.parametrize('align', ['center', 'trailing'])
@pytest.mark.parametrize('window', [1, 2, 3, 10, 57, 500])
def test_rolling_mean_std_matches_numpy(window, align):
    rng = numpy.random.default_rng(window)
    x = 60 + 5 * rng.normal(size=57) + numpy.linspace(30, 0, 57)   # offset: cancellation check
    mean, std = plotting.rolling_mean_std(x, window, align)
    ref_mean, ref_std = direct_rolling(x, window, align)
    numpy.testing.assert_allclose(mean, ref_mean, rtol=0, atol=1e-9)
    numpy.testing.assert_allclose(std, ref_std, rtol=0, atol=1e-5)   # see docstring
    assert numpy.isfinite(mean).all() and numpy.isfinite(std).all()


def test_rolling_mean_std_edges_nans_and_errors():
    x = numpy.array([1.0, numpy.nan, 3.0, 5.0, numpy.nan, numpy.nan, numpy.nan, 2.0])
    for align in ('center', 'trailing'):
        mean, std = plotting.rolling_mean_std(x, 3, align)
        ref_mean, ref_std = direct_rolling(x, 3, align)
        numpy.testing.assert_allclose(mean, ref_mean, atol=1e-12)
        numpy.testing.assert_allclose(std, ref_std, atol=1e-12)
    mean, _ = plotting.rolling_mean_std(x, 3, 'center')
    assert numpy.isnan(mean[5]) and numpy.isfinite(mean[[0, 4, 6]]).all()
    # Window longer than the series: every point sees all of it (centred, len <= window // 2).
    mean, std = plotting.rolling_mean_std([1.0, 2.0, 3.0], 10)
    numpy.testing.assert_allclose(mean, 2.0)
    numpy.testing.assert_allclose(std, numpy.std([1.0, 2.0, 3.0]))
    counts = numpy.array([5, 5, 5, 5, 4, 5, 5, 5, 5, 5] * 30, dtype=float)   # exact when flat
    mean, std = plotting.rolling_mean_std(counts, 3)
    flat = (counts == 5) & (numpy.roll(counts, 1) == 5) & (numpy.roll(counts, -1) == 5)
    assert (mean[flat] == 5).all() and (std[flat] == 0).all() and (std[~flat] > 0.4).all()
    assert plotting.rolling_mean_std([], 3)[0].size == 0
    with pytest.raises(ValueError):
        plotting.rolling_mean_std([1.0], 0)
    with pytest.raises(ValueError):
        plotting.rolling_mean_std([1.0], 2, align='left')


def test_load_run_and_pairing(tmp_path):
    dirs = [make_run(tmp_path, 'cnn-c100-BN-2'), make_run(tmp_path, 'cnn-c100-BN-4'),
            make_run(tmp_path, 'cnn-c100-MN-2', modules=['conv3']),
            make_run(tmp_path, 'cnn-c100-MN-4'),
            make_run(tmp_path, 'cnn-c100-BN-2', dataset='digits'),
            make_run(tmp_path, 'cnn-c100-MN-6', dataset='digits')]
    runs = [plotting.load_run(d) for d in dirs]
    assert runs[0].recording is None and len(runs[0].log) == 12
    assert set(runs[2].recording) == {'iterations', 'components/conv3'}
    assert runs[4].dataset == 'digits' and plotting.dataset_text(runs[4]).startswith('digits (')
    pairs = plotting.pair_with_baselines(runs)
    by_mn = {(mn.name, mn.dataset): base for mn, base in pairs}
    assert by_mn[('cnn-c100-MN-2', 'cifar100')] is runs[0]
    assert by_mn[('cnn-c100-MN-4', 'cifar100')] is runs[1]
    assert by_mn[('cnn-c100-MN-6', 'digits')] is runs[4]          # same name, other dataset
    assert len(pairs) == 3
    panels = plotting.group_panels(runs, lambda r: (r.dataset, r.setting['lr']))
    assert list(panels) == [('cifar100', 0.01), ('cifar100', 0.05), ('digits', 0.01)]
    assert panels[('cifar100', 0.01)] == [(runs[0], [runs[2]])]


def test_missing_or_ambiguous_baseline_is_a_clear_error(tmp_path, capsys):
    mn = make_run(tmp_path, 'cnn-c10-MN-2')
    other = make_run(tmp_path, 'cnn-c10-BN-2', dataset='digits')
    with pytest.raises(plotting.FigureError, match=r'needs its BN baseline cnn-c10-BN-2 trained '
                       r'on cifar10; given only on digits'):
        plotting.pair_with_baselines([plotting.load_run(mn), plotting.load_run(other)])
    with pytest.raises(SystemExit) as e:
        load_script(2).main(['--run', mn, '--out', str(tmp_path / 'f2.png')])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'cnn-c10-BN-2' in err and '--run' in err and 'mixnorm-exp run cnn-c10-BN-2' in err
    base = plotting.load_run(make_run(tmp_path, 'cnn-c10-BN-2'))
    twin = plotting.load_run(make_run(tmp_path / 'again', 'cnn-c10-BN-2'))
    with pytest.raises(plotting.FigureError, match='several baselines'):
        plotting.pair_with_baselines([plotting.load_run(mn), base, twin])
    with pytest.raises(FileNotFoundError, match='no setting.json'):
        plotting.load_run(str(tmp_path / 'nowhere'))


# -- the scripts -----------------------------------------------------------------------------

def test_figure2(tmp_path, capsys):
    dirs = [make_run(tmp_path, n, final_error=e, noise=s, seed=i) for i, (n, e, s) in enumerate(
        [('cnn-c10-BN-2', 14, 2.0), ('cnn-c10-MN-2', 12, 0.5),
         ('cnn-c10-BN-4', 20, 3.0), ('cnn-c10-MN-4', 17, 1.0)])]
    dirs.append(make_run(tmp_path, 'inc-c10-BN-1'))                  # other model: ignored
    out = str(tmp_path / 'fig2.png')
    summary = load_script(2).main(['--run', *dirs, '--out', out, '--window', '4'])
    check_png(out)
    text = capsys.readouterr()
    assert 'ignoring inc-c10-BN-1' in text.err and '2 panel(s)' in text.out
    assert len(summary) == 4
    s = {v['label']: v for v in summary.values()}
    assert s['MN-2']['mean_rolling_std'] < s['BN-2']['mean_rolling_std']
    ep, acc = plotting.load_run(dirs[0]).series(plotting.ACC_KEY)
    assert s['BN-2']['best'] == pytest.approx(plotting.error_percent(acc).min())


def test_figure3_and_what_it_needs(tmp_path, capsys):
    names = ['cnn-c100-BN-2', 'cnn-c100-MN-2', 'cnn-c100-MN-5', 'cnn-c100-MN-6',
             'cnn-c100-MN-7', 'cnn-c100-MN-8']
    dirs = [make_run(tmp_path, n, final_error=40 - i, seed=i) for i, n in enumerate(names)]
    fig3 = load_script(3)
    out = str(tmp_path / 'fig3.png')
    summary = fig3.main(['--run', *dirs, '--out', out, '--window', '3'])
    check_png(out)
    assert {v['name'] for v in summary.values()} == set(names)
    run = {plotting.load_run(d).name: plotting.load_run(d) for d in dirs}
    pairs = plotting.pair_with_baselines(list(run.values()))
    base, members = fig3.best_group(pairs, 'cifar100', 'em_iters')
    assert base.name == 'cnn-c100-BN-2'
    assert [m.setting['em_iters'] for m in members] == [2, 4, 8]
    base, members = fig3.best_group(pairs, 'cifar100', 'mn_layers')
    assert sorted(m.label for m in members) == ['MN-2', 'MN-7', 'MN-8']
    assert [fig3.curve_label(m, 'mn_layers') for m in members] == ['conv2', 'conv2+conv3',
                                                                   'conv3']
    capsys.readouterr()
    only_em = dirs[:4]
    with pytest.raises(SystemExit):
        fig3.main(['--run', *only_em, '--out', out])
    assert 'differing only in their MN layers' in capsys.readouterr().err
    fig3.main(['--run', *only_em, '--out', out, '--partial'])
    check_png(out)


def test_figure4_panels_and_table6(tmp_path, capsys):
    names = ['inc-c100-BN-1', 'inc-c100-MN-4', 'inc-c100-MN-2', 'inc-c100-BN-5',
             'inc-c100-MN-5', 'inc-c100-nag1-BN', 'inc-c100-nag1-MN', 'inc-c100-nag2-BN',
             'inc-c100-nag2-MN']
    dirs = [make_run(tmp_path, n, final_error=30 + (i % 3), seed=i) for i, n in enumerate(names)]
    out = str(tmp_path / 'fig4.png')
    summary = load_script(4).main(['--run', *dirs, '--out', out, '--window', '3'])
    check_png(out)
    assert '3 panel(s)' in capsys.readouterr().out
    assert len(summary) == len(names)
    panels = plotting.group_panels([plotting.load_run(d) for d in dirs],
                                   lambda r: (r.dataset, r.setting['lr'], r.setting['optimizer']))
    nag = panels[('cifar100', 0.14, 'nesterov')]
    assert [b.name for b, _ in nag] == ['inc-c100-nag1-BN', 'inc-c100-nag2-BN']
    labels = [label for *_, label in plotting.group_styles(nag)]
    assert len(set(labels)) == 4 and 'BN (lr /10 at 50%/75%)' in labels


def test_figure5(tmp_path):
    dirs = [make_run(tmp_path, n, final_error=e, seed=i) for i, (n, e) in enumerate(
        [('dense40-c100-BN', 26), ('dense40-c100-MN', 25), ('dense100-c100-BN', 22),
         ('dense100-c100-MN', 21)])]
    out = str(tmp_path / 'fig5.png')
    summary = load_script(5).main(['--run', *dirs, '--out', out])
    check_png(out)
    assert len(summary) == 4
    for s in summary.values():
        assert s['best_train_error'] < s['best_test_error'] and s['last_train_loss'] > 0
    with pytest.raises(SystemExit):
        load_script(5).main(['--run', dirs[1], '--out', out])


def test_figure9(tmp_path, capsys):
    modules = ['inc2/0/{}/{}'.format(b, i) for b, i in ((0, 1), (1, 2), (2, 4), (3, 1))] + [
        'inc3/0/{}/{}'.format(b, i) for b, i in ((0, 1), (1, 2), (1, 3), (2, 3), (2, 4), (3, 1))]
    dirs = [make_run(tmp_path, 'inc-c10-MN-4', modules=modules, recording_iters=400),
            make_run(tmp_path, 'inc-c100-MN-4', modules=modules[:3], recording_iters=300,
                     seed=1)]
    fig9 = load_script(9)
    out = str(tmp_path / 'fig9.png')
    summary = fig9.main(['--run', *dirs, '--out', out])
    check_png(out)
    s = summary[dirs[0]]
    assert s['K'] == 5 and s['window'] == 20 and list(s['modules']) == modules
    rec = plotting.load_run(dirs[0]).recording['components/' + modules[0]]
    assert s['modules'][modules[0]]['mean'] == pytest.approx(rec[2:].mean())
    assert all(1 <= m['min'] <= 5 for m in s['modules'].values())
    assert 'inc3/0/3/1' in capsys.readouterr().out
    fig9.main(['--run', dirs[1], '--out', out, '--window', '7', '--xaxis', 'iteration'])
    check_png(out)
    bn = make_run(tmp_path, 'inc-c10-BN-1')
    with pytest.raises(SystemExit):
        fig9.main(['--run', bn, '--out', out])
    assert 'has no recording.npz' in capsys.readouterr().err
