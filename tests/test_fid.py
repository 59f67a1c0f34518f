"""FID (mixnorm_chainer.reproduce.fid): Frechet distance, Gaussian fits, extractors, scorer,
converter."""
# isort: off
import mixnorm_chainer  # noqa: F401
# isort: on
import chainer
import numpy as np
import pytest

from mixnorm_chainer.reproduce import fid, fid_extractors, fid_inception


def eig_reference(mu1, sigma1, mu2, sigma2):
    """Independent FID: Tr sqrtm(S1 S2) = sum sqrt(eigvals(S1 S2)) (real parts, S1 S2 ~ PSD)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    ev = np.linalg.eigvals(sigma1 @ sigma2).real
    tr_sqrt = np.sqrt(np.clip(ev, 0.0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_sqrt)


def fid_roundoff(mu1, sigma1, mu2, sigma2):
    """How far rounding can move a Frechet distance computed in float64 (absolute): its terms
    ``|mu1|^2 + |mu2|^2 + tr S1 + tr S2`` cancel against ``2 mu1.mu2 + 2 tr sqrtm(S1 S2)``
    (300 eps of their size), and every ~0 eigenvalue of S1 S2 (fewer samples than dimensions,
    constant features) comes out as +-eps ||S1 S2|| and enters through its square root,
    ``sqrt(eps ||S1 S2||)`` each (for the scorer test below: 15 such, 1.3e-7 in all; float32
    features one rounding apart move its FID by 1e-8, on another machine 6.4e-9, 2.3e-6 of it).
    """
    mu1, mu2, sigma1, sigma2 = (np.asarray(a, np.float64) for a in (mu1, mu2, sigma1, sigma2))
    eps = np.finfo(np.float64).eps
    terms = mu1 @ mu1 + mu2 @ mu2 + np.trace(sigma1) + np.trace(sigma2)
    ev = np.abs(np.linalg.eigvals(sigma1 @ sigma2))
    top = ev.max()
    near_zero = np.count_nonzero(ev <= len(ev) * eps * top)
    return 300 * eps * terms + near_zero * np.sqrt(eps * top)


def random_stats(rng, n, d, scale=1.0, shift=0.0):
    f = rng.randn(n, d) @ rng.randn(d, d) * scale + shift
    return fid.feature_statistics(f)


# ------------------------------------------------------------------ Frechet distance


@pytest.mark.parametrize('d', [1, 3, 16, 64])
def test_frechet_distance_matches_eigenvalue_reference(d):
    rng = np.random.RandomState(d)
    s1 = random_stats(rng, 4 * d + 10, d)
    s2 = random_stats(rng, 4 * d + 10, d, scale=1.5, shift=0.3)
    got = fid.frechet_distance(*s1, *s2)
    want = eig_reference(*s1, *s2)
    assert isinstance(got, float)
    assert want > 0.1
    assert got == pytest.approx(want, rel=1e-8, abs=1e-8)
    # symmetric in its two Gaussians
    assert fid.frechet_distance(*s2, *s1) == pytest.approx(got, rel=1e-8)


def test_frechet_distance_matches_pytorch_fid_when_installed():
    fid_score = pytest.importorskip('pytorch_fid.fid_score', exc_type=ImportError)
    rng = np.random.RandomState(0)
    s1, s2 = random_stats(rng, 100, 20), random_stats(rng, 100, 20, shift=0.5)
    assert fid.frechet_distance(*s1, *s2) == pytest.approx(
        float(fid_score.calculate_frechet_distance(*s1, *s2)), rel=1e-8)


def test_frechet_distance_zero_for_identical_statistics():
    rng = np.random.RandomState(1)
    mu, sigma = random_stats(rng, 200, 32)
    assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) <= fid_roundoff(mu, sigma, mu, sigma)


def test_frechet_distance_closed_forms():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 with s the standard deviations; scalars accepted
    assert fid.frechet_distance(0.0, 4.0, 1.0, 1.0) == pytest.approx(1.0 + (2.0 - 1.0) ** 2)
    assert fid.frechet_distance([3.0], [[9.0]], [-1.0], [[0.25]]) == pytest.approx(
        16.0 + (3.0 - 0.5) ** 2)
    # diagonal: sum over dimensions
    rng = np.random.RandomState(2)
    m1, m2 = rng.randn(5), rng.randn(5)
    v1, v2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    want = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert fid.frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(want, rel=1e-10)


def test_frechet_distance_near_singular_covariances_are_finite():
    """Fewer samples than dimensions plus dead (constant) features: rank-deficient S1, S2."""
    rng = np.random.RandomState(3)
    a, b = rng.randn(5, 64), rng.randn(7, 64) + 0.2
    a[:, :10] = 0.0
    b[:, 5:20] = 1.0
    s1, s2 = fid.feature_statistics(a), fid.feature_statistics(b)
    assert np.linalg.matrix_rank(s1[1]) < 64
    got = fid.frechet_distance(*s1, *s2)
    assert np.isfinite(got)
    assert got == pytest.approx(eig_reference(*s1, *s2), rel=1e-5)


def test_frechet_distance_eps_fallback_when_sqrtm_fails(monkeypatch):
    rng = np.random.RandomState(4)
    s1, s2 = random_stats(rng, 50, 6), random_stats(rng, 50, 6, shift=1.0)
    real_sqrtm = fid.scipy.linalg.sqrtm
    calls = []

    def flaky_sqrtm(a):
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(fid.scipy.linalg, 'sqrtm', flaky_sqrtm)
    eps = 1e-3
    got = fid.frechet_distance(*s1, *s2, eps=eps)
    assert len(calls) == 2
    off = eps * np.eye(6)
    np.testing.assert_allclose(calls[1], (s1[1] + off) @ (s2[1] + off))
    want = eig_reference(s1[0], s1[1] + off, s2[0], s2[1] + off) - 2 * 6 * eps  # traces w/o eps
    assert got == pytest.approx(want, rel=1e-8)

    monkeypatch.setattr(fid.scipy.linalg, 'sqrtm', lambda a: np.full_like(a, np.inf))
    with pytest.raises(ValueError, match='not finite'):
        fid.frechet_distance(*s1, *s2)


def test_frechet_distance_imaginary_residue(monkeypatch):
    rng = np.random.RandomState(5)
    s1, s2 = random_stats(rng, 50, 4), random_stats(rng, 50, 4)
    real_sqrtm = fid.scipy.linalg.sqrtm
    want = fid.frechet_distance(*s1, *s2)
    monkeypatch.setattr(fid.scipy.linalg, 'sqrtm', lambda a: real_sqrtm(a) + 1e-9j)
    assert fid.frechet_distance(*s1, *s2) == pytest.approx(want, rel=1e-10)   # dropped
    monkeypatch.setattr(fid.scipy.linalg, 'sqrtm', lambda a: real_sqrtm(a) + 0.5j)
    with pytest.raises(ValueError, match='imaginary component 0.5'):
        fid.frechet_distance(*s1, *s2)


def test_frechet_distance_rejects_bad_shapes_and_values():
    mu, sigma = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match='different lengths'):
        fid.frechet_distance(mu, sigma, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match='sigma2 has shape'):
        fid.frechet_distance(mu, sigma, mu, np.eye(2))
    with pytest.raises(ValueError, match='sigma1 has shape'):
        fid.frechet_distance(mu, np.ones((3, 4)), mu, sigma)
    with pytest.raises(ValueError, match='vectors'):
        fid.frechet_distance(np.zeros((3, 1)), sigma, mu, sigma)
    with pytest.raises(ValueError, match='NaN'):
        fid.frechet_distance(np.array([0, np.nan, 0]), sigma, mu, sigma)


def test_feature_statistics():
    rng = np.random.RandomState(6)
    f = rng.randn(30, 5).astype(np.float32)
    mu, sigma = fid.feature_statistics(f)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64 and sigma.shape == (5, 5)
    np.testing.assert_allclose(mu, f.astype(np.float64).mean(0), rtol=1e-12)
    centred = f.astype(np.float64) - mu
    np.testing.assert_allclose(sigma, centred.T @ centred / 29, rtol=1e-12)
    with pytest.raises(ValueError, match='at least 2'):
        fid.feature_statistics(f[:1])
    with pytest.raises(ValueError, match=r'\(N, D\)'):
        fid.feature_statistics(f[0])


# ------------------------------------------------------------------ resizing and pooling


def loop_bilinear(x, out_h, out_w):
    """Pixel-by-pixel bilinear resize (half-pixel centres, edge clamp), the definition."""
    n, c, h, w = x.shape
    y = np.zeros((n, c, out_h, out_w))

    def coords(i, n_in, n_out):
        s = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(s)), n_in - 1)
        return i0, min(i0 + 1, n_in - 1), s - i0

    for i in range(out_h):
        r0, r1, a = coords(i, h, out_h)
        for j in range(out_w):
            c0, c1, b = coords(j, w, out_w)
            y[:, :, i, j] = ((1 - a) * (1 - b) * x[:, :, r0, c0] + (1 - a) * b * x[:, :, r0, c1]
                             + a * (1 - b) * x[:, :, r1, c0] + a * b * x[:, :, r1, c1])
    return y


@pytest.mark.parametrize('size_in,size_out', [((5, 7), (11, 4)), ((8, 8), (32, 32)),
                                               ((13, 9), (6, 6))])
def test_resize_bilinear_matches_definition(size_in, size_out):
    x = np.random.RandomState(7).uniform(-1, 1, (2, 3) + size_in)
    np.testing.assert_allclose(fid_extractors.resize_bilinear(x, size_out),
                               loop_bilinear(x, *size_out), atol=1e-12)
    assert fid_extractors.resize_bilinear(x, size_in) is x


def test_resize_bilinear_matches_torch_interpolate():
    torch = pytest.importorskip('torch', exc_type=ImportError)
    x = np.random.RandomState(8).uniform(-1, 1, (2, 3, 28, 21)).astype(np.float32)
    for size in ((299, 299), (32, 32), (10, 17)):
        want = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode='bilinear',
                                               align_corners=False).numpy()
        np.testing.assert_allclose(fid_extractors.resize_bilinear(x, size), want, atol=2e-5)


def test_avg_pool_excludes_padding_and_max_pool_pads_with_minus_inf():
    x = np.random.RandomState(9).uniform(-2, -1, (1, 2, 5, 6)).astype(np.float32)
    xp_ = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ones = np.pad(np.ones_like(x), ((0, 0), (0, 0), (1, 1), (1, 1)))
    xm = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    s = sum(xp_[:, :, i:i + 5, j:j + 6] for i in range(3) for j in range(3))
    cnt = sum(ones[:, :, i:i + 5, j:j + 6] for i in range(3) for j in range(3))
    mx = np.max([xm[:, :, i:i + 5, j:j + 6] for i in range(3) for j in range(3)], axis=0)
    np.testing.assert_allclose(fid_inception._avg_pool_3x3_exclude_pad(x).array, s / cnt, rtol=1e-6)
    np.testing.assert_allclose(fid_inception._max_pool(x, 3, 1, 1).array, mx, rtol=0)
    # 3x3/2 without padding, floor mode (torch's default; chainer's cover_all=False)
    zeros = np.zeros((1, 1, 147, 147), np.float32)
    assert fid_inception._max_pool(zeros, 3, 2).shape == (1, 1, 73, 73)


# ------------------------------------------------------------------ extractors and scorer


def digits_like(n, seed=0, size=16, channels=1, shift=0.0):
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[:size, :size] / size
    imgs = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3)
        img = np.where((xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2, 1.0, -1.0)
        imgs.append(img + 0.1 * rng.randn(size, size))
    x = np.clip(np.array(imgs)[:, None] + shift, -1, 1).astype(np.float32)
    return np.repeat(x, channels, axis=1)


def test_small_extractor_is_deterministic_and_labelled():
    x = digits_like(20, size=28)
    e1, e2 = fid.get_extractor('small'), fid.get_extractor('small')
    f1 = e1(x)
    assert f1.shape == (20, 64) and f1.dtype == np.float64
    assert e1.comparable is False and 'small' in e1.name and e1.dim == 64
    np.testing.assert_array_equal(f1, e2(x))                         # same seed, same features
    # batching: float32 sums in another order (BLAS blocking follows the batch size); each
    # within 2.6 float32 roundings of max|f| of the float64 features (measured), small features
    # included (means of few positive ReLU outputs: 5e-5 of themselves)
    eps32 = np.finfo(np.float32).eps
    np.testing.assert_allclose(e1(x, batch_size=3), f1, rtol=0,
                               atol=32 * eps32 * np.abs(f1).max())
    np.testing.assert_allclose(e1(np.repeat(x, 3, axis=1)), f1, rtol=1e-6)   # gray -> RGB
    assert np.abs(fid.get_extractor('small', seed=1)(x) - f1).max() > 1e-3
    assert np.all(f1.std(axis=0) >= 0) and np.count_nonzero(f1.std(axis=0)) > 32
    assert e1(digits_like(3, size=9)).shape == (3, 64)               # any input size
    assert e1(chainer.Variable(x[:2])).shape == (2, 64)


@pytest.mark.parametrize('bad,match', [
    (np.zeros((2, 2, 8, 8), np.float32), 'channels'),
    (np.zeros((2, 8, 8), np.float32), 'shape'),
    (np.zeros((0, 1, 8, 8), np.float32), 'empty'),
    (np.full((2, 1, 8, 8), 255.0, np.float32), r'\[-1, 1\]'),
    (np.zeros((2, 1, 8, 8), np.uint8), 'floats'),
    (np.full((2, 1, 8, 8), np.nan, np.float32), 'NaN'),
])
def test_extractor_rejects_bad_images(bad, match):
    with pytest.raises(ValueError, match=match):
        fid.get_extractor('small')(bad)


def test_get_extractor_errors():
    with pytest.raises(ValueError, match='unknown FID extractor'):
        fid.get_extractor('vgg')
    with pytest.raises(ValueError) as info:
        fid.get_extractor('inception')
    msg = str(info.value)
    assert fid.PYTORCH_FID_WEIGHTS_FILE in msg and fid.PYTORCH_FID_WEIGHTS_URL in msg
    assert 'python -m mixnorm_chainer.reproduce.fid convert' in msg and "'small'" in msg


def test_scorer_zero_on_real_and_grows_with_shift():
    real = digits_like(100, seed=0)
    scorer = fid.FIDScorer(fid.get_extractor('small'), real, batch_size=64)
    mu, sigma = scorer.real_stats
    assert mu.shape == (64,) and sigma.shape == (64, 64)
    assert abs(scorer(real)) <= fid_roundoff(mu, sigma, mu, sigma)
    other = scorer(digits_like(100, seed=1))                  # same distribution, new samples
    shifted = [scorer(digits_like(100, seed=1, shift=s)) for s in (0.2, 0.5, 1.0)]
    assert 0 < other < shifted[0] < shifted[1] < shifted[2]
    # a kind string works too and gives the same numbers: a near-zero FID (50 of the same
    # images: 0.0028 out of terms of 81), equal up to its roundoff; the default batch size (100,
    # not 64) changes the float32 features by a rounding on some machines (BLAS blocking)
    assert abs(fid.FIDScorer('small', real)(real[:50]) - scorer(real[:50])) <= fid_roundoff(
        *scorer.stats(real[:50]), mu, sigma)


# ------------------------------------------------------------------ FID Inception-V3


@pytest.mark.slow
def test_fid_inception_forward_shape_and_npz_round_trip(tmp_path):
    shapes = fid_inception.fid_inception_shapes()
    assert len(shapes) == 470
    assert sum(np.prod(s) for s in shapes.values()) == 21_820_000   # pytorch-fid's minus fc
    rng = np.random.RandomState(10)
    arrays = {k: rng.uniform(0.5, 1.5, s).astype(np.float32) if k.endswith('avg_var')
              else (rng.randn(*s) * (0.1 if k.endswith(('avg_mean', 'beta')) else 1)
                    * (np.sqrt(2.0 / np.prod(s[1:])) if k.endswith('/W') else 1)
                    ).astype(np.float32)
              for k, s in shapes.items()}
    path = tmp_path / 'w.npz'
    np.savez(path, **arrays)
    ext = fid.get_extractor('inception', weights=str(path), batch_size=1)
    assert ext.comparable is True and ext.dim == 2048 and ext.input_size == 299
    np.testing.assert_array_equal(ext.model.Mixed_6e.branch7x7dbl_5.bn.avg_var,
                                  arrays['Mixed_6e/branch7x7dbl_5/bn/avg_var'])
    x = digits_like(2, size=32)
    f = ext(x)
    assert f.shape == (2, 2048) and f.dtype == np.float64 and np.all(np.isfinite(f))
    assert np.all(f >= 0) and f.std() > 0                 # pool3 of ReLU outputs
    with chainer.using_config('train', False), chainer.using_config('enable_backprop', False):
        direct = ext.model(fid_extractors.resize_bilinear(np.repeat(x[1:], 3, axis=1),
                                                          (299, 299))).array
    np.testing.assert_allclose(f[1:], direct, rtol=1e-5, atol=1e-6)


def test_fid_inception_npz_errors(tmp_path):
    arrays = {k: np.zeros(s, np.float32) for k, s in fid_inception.fid_inception_shapes().items()}
    missing = dict(arrays)
    del missing['Mixed_7c/branch_pool/conv/W']
    np.savez(tmp_path / 'missing.npz', **missing)
    with pytest.raises(ValueError, match='1 missing keys'):
        fid.get_extractor('inception', weights=str(tmp_path / 'missing.npz'))
    arrays['Conv2d_1a_3x3/conv/W'] = np.zeros((32, 3, 5, 5), np.float32)
    np.savez(tmp_path / 'shape.npz', **arrays)
    with pytest.raises(ValueError, match='Conv2d_1a_3x3/conv/W has shape'):
        fid.get_extractor('inception', weights=str(tmp_path / 'shape.npz'))


def test_state_dict_name_mapping():
    state = fid_inception.fid_inception_shapes()
    torch_like = {}
    inverse = {v: k for k, v in fid_inception.TORCH_TO_CHAINER.items()}
    for key, shape in state.items():
        module, param = key.rsplit('/', 2)[0], '/'.join(key.rsplit('/', 2)[1:])
        torch_like[module.replace('/', '.') + '.' + inverse[param]] = np.ones(shape)
    torch_like['Mixed_5b.branch1x1.bn.num_batches_tracked'] = np.array(0)
    torch_like['fc.weight'] = np.ones((1008, 2048))
    out = fid_inception.state_dict_to_npz_arrays(torch_like)
    assert set(out) == set(state)
    assert 'Mixed_5b.branch1x1.conv.weight' in torch_like
    assert 'Mixed_5b/branch1x1/conv/W' in out and 'Mixed_5b/branch1x1/bn/avg_var' in out
    with pytest.raises(ValueError, match='1 unexpected'):
        fid_inception.state_dict_to_npz_arrays({**torch_like,
                                                'AuxLogits.conv0.conv.weight': np.ones(1)})
    with pytest.raises(ValueError, match='unexpected key'):
        fid_inception.state_dict_to_npz_arrays({**torch_like,
                                                'Mixed_5b.branch1x1.conv.bias': np.ones(1)})
    del torch_like['Mixed_7c.branch_pool.bn.running_var']
    with pytest.raises(ValueError, match='1 missing'):
        fid_inception.state_dict_to_npz_arrays(torch_like)


@pytest.mark.slow
def test_converted_torch_reference_matches_chainer_forward(tmp_path):
    """Random-weight torch port of pytorch-fid's FID Inception -> converter -> Chainer net."""
    torch = pytest.importorskip('torch', exc_type=ImportError)
    import fid_torch_reference

    net = fid_torch_reference.randomized(seed=0)
    pth = tmp_path / fid.PYTORCH_FID_WEIGHTS_FILE
    torch.save(net.inception.state_dict(), pth)   # same keys as the published file
    assert fid.main(['convert', str(pth), str(tmp_path / 'fid.npz')]) == 0
    ext = fid.get_extractor('inception', weights=str(tmp_path / 'fid.npz'))
    x = digits_like(2, size=28, seed=3)                      # gray 28x28 in [-1, 1]
    got = ext(x)
    with torch.no_grad():                                    # pytorch-fid takes [0, 1] RGB
        want = net(torch.from_numpy((np.repeat(x, 3, axis=1) + 1) / 2)).double().numpy()
    assert want.shape == (2, 2048) and np.abs(want).max() > 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())


@pytest.mark.gpu
def test_small_extractor_and_scorer_on_gpu_match_cpu():
    import cupy

    real, fake = digits_like(60, seed=0), digits_like(60, seed=1, shift=0.3)
    cpu = fid.get_extractor('small')
    gpu = fid.get_extractor('small')
    f = gpu(cupy.asarray(fake))                                   # follows the images' device
    assert isinstance(f, np.ndarray) and f.dtype == np.float64
    np.testing.assert_allclose(f, cpu(fake), rtol=1e-4, atol=1e-5)
    on_dev = fid.get_extractor('small', device='@cupy:0')          # numpy in, model on the GPU
    np.testing.assert_allclose(on_dev(fake), cpu(fake), rtol=1e-4, atol=1e-5)
    want = fid.FIDScorer(cpu, real)(fake)
    assert fid.FIDScorer(gpu, cupy.asarray(real))(cupy.asarray(fake)) == pytest.approx(
        want, rel=1e-3)
