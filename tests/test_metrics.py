"""Tests of daenr_fast.metrics against independent oracles (scikit-image, scipy, explicit loops)."""
import warnings

import numpy as np
import pytest
import scipy.stats
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from daenr_fast import metrics as M


def _rng(seed=0):
    return np.random.default_rng(seed)


def _structured_images(b, h, w, seed=0):
    """Smooth gradients, a disc and a sinusoidal grating in [-1, 1]."""
    rng = _rng(seed)
    rr, cc = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    out = np.empty((b, h, w))
    for i in range(b):
        theta, freq = rng.uniform(0, np.pi), rng.uniform(1, 6)
        grating = np.sin(freq * np.pi * (rr * np.cos(theta) + cc * np.sin(theta)))
        disc = ((rr - rng.uniform(-0.5, 0.5)) ** 2 + (cc - rng.uniform(-0.5, 0.5)) ** 2 < 0.2).astype(float)
        out[i] = np.clip(0.5 * grating + disc - 0.5 + 0.3 * rr, -1, 1)
    return out


def _skimage_ssim(x, y):
    return np.array(
        [
            structural_similarity(
                (a + 1) / 2, (b + 1) / 2, data_range=1, gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False,
            )
            for a, b in zip(x, y)
        ]
    )


# ----------------------------------------------------------------------------------------------- images
def test_mse_matches_numpy_formula_and_accepts_both_layouts():
    rng = _rng(1)
    x = rng.uniform(-1, 1, (4, 1, 9, 7))
    y = rng.uniform(-1, 1, (4, 1, 9, 7))
    expected = np.sum((x - y) ** 2) / x.size
    assert M.mse(x, y) == pytest.approx(expected, rel=1e-12)
    assert M.mse(torch.tensor(x[:, 0]), torch.tensor(y[:, 0])) == pytest.approx(expected, rel=1e-12)
    per = M.mse(x, y, per_image=True)
    assert per.shape == (4,)
    np.testing.assert_allclose(per, [np.sum((a - b) ** 2) / a.size for a, b in zip(x, y)], rtol=1e-12)
    assert isinstance(M.mse(x, y), float)


def test_identical_images_known_values():
    x = _structured_images(3, 32, 32)
    assert M.mse(x, x) == 0.0
    assert M.ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(M.ssim(x, x, per_image=True), 1.0, atol=1e-12)
    assert M.psnr(x, x) == np.inf


def test_psnr_matches_skimage_per_image_then_mean():
    rng = _rng(2)
    x = rng.uniform(-1, 1, (5, 1, 32, 32))
    y = np.clip(x + rng.normal(0, 0.1 * np.arange(1, 6)[:, None, None, None], x.shape), -1, 1)
    expected = np.array([peak_signal_noise_ratio(a[0], b[0], data_range=2) for a, b in zip(x, y)])
    np.testing.assert_allclose(M.psnr(x, y, per_image=True), expected, rtol=1e-12)
    assert M.psnr(x, y) == pytest.approx(expected.mean(), rel=1e-12)
    # data_range is honoured: PSNR shifts by 20 log10(ratio).
    assert M.psnr(x, y, data_range=1.0) == pytest.approx(expected.mean() - 20 * np.log10(2), rel=1e-12)


@pytest.mark.parametrize("shape", [(32, 32), (11, 11), (17, 23), (33, 31)])
@pytest.mark.parametrize("kind", ["random", "structured"])
def test_ssim_matches_skimage(shape, kind):
    rng = _rng(3)
    b = 4
    if kind == "random":
        x = rng.uniform(-1, 1, (b, *shape))
        y = np.clip(x + rng.normal(0, 0.5, x.shape), -1, 1)
    else:
        x = _structured_images(b, *shape, seed=4)
        y = np.clip(0.8 * x + 0.1 + rng.normal(0, 0.05, x.shape), -1, 1)
    expected = _skimage_ssim(x, y)
    got = M.ssim(x[:, None], y[:, None], per_image=True)
    assert got.shape == (b,)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert M.ssim(x, y) == pytest.approx(expected.mean(), abs=1e-5)


def test_ssim_accepts_float32_torch_and_is_symmetric():
    x = _structured_images(2, 32, 32, seed=5)
    y = np.clip(x[::-1] * 0.5, -1, 1)
    tx, ty = torch.tensor(x, dtype=torch.float32)[:, None], torch.tensor(y, dtype=torch.float32)[:, None]
    expected = _skimage_ssim(x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(M.ssim(tx, ty, per_image=True), expected, atol=1e-5)
    assert M.ssim(ty, tx) == pytest.approx(M.ssim(tx, ty), abs=1e-12)


@pytest.mark.parametrize("fn", [M.mse, M.psnr, M.ssim])
def test_image_metrics_reject_bad_shapes(fn):
    x = np.zeros((2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"y must have the same shape as x"):
        fn(x, np.zeros((2, 1, 16, 15)))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, H, W\) or \(B, H, W\); got \(16, 16\)"):
        fn(np.zeros((16, 16)), np.zeros((16, 16)))
    with pytest.raises(ValueError, match=r"y must have shape \(B, 1, H, W\) or \(B, H, W\); got \(2, 3, 16, 16\)"):
        fn(x, np.zeros((2, 3, 16, 16)))


def test_ssim_rejects_images_smaller_than_window():
    with pytest.raises(ValueError, match=r"H, W >= 11"):
        M.ssim(np.zeros((1, 10, 32)), np.zeros((1, 10, 32)))


# ---------------------------------------------------------------------------------------------- neurons
@pytest.mark.parametrize("t", [3, 5, 200])
def test_pearson_per_neuron_matches_scipy(t):
    rng = _rng(t)
    n = 6
    target = rng.normal(size=(t, n))
    pred = 0.4 * np.arange(n) * target + rng.normal(size=(t, n))
    r, p = M.pearson_per_neuron(torch.tensor(pred), target)
    assert r.shape == p.shape == (n,)
    for k in range(n):
        res = scipy.stats.pearsonr(pred[:, k], target[:, k])
        assert r[k] == pytest.approx(res.statistic, abs=1e-12)
        assert p[k] == pytest.approx(res.pvalue, rel=1e-9, abs=1e-300)


def test_pearson_known_values_and_two_samples():
    x = np.linspace(0, 1, 50)[:, None] * np.array([1.0, 1.0, 1.0])
    pred = np.column_stack([3 * x[:, 0] + 2, -x[:, 1], x[:, 2] ** 3])
    r, p = M.pearson_per_neuron(pred, x)
    assert r[0] == pytest.approx(1.0, abs=1e-12) and p[0] == pytest.approx(0.0, abs=1e-12)
    assert r[1] == pytest.approx(-1.0, abs=1e-12) and p[1] == pytest.approx(0.0, abs=1e-12)
    assert 0.9 < r[2] < 1.0
    r2, p2 = M.pearson_per_neuron([[0.0, 1.0], [1.0, 0.0]], [[0.0, 0.0], [2.0, 2.0]])
    np.testing.assert_allclose(r2, [1.0, -1.0])
    np.testing.assert_allclose(p2, [1.0, 1.0])  # as scipy.stats.pearsonr for two samples


def test_pearson_constant_columns_give_zero_and_one_without_warnings():
    rng = _rng(7)
    target = rng.normal(size=(20, 3))
    target[:, 1] = 0.1  # constant target
    pred = rng.normal(size=(20, 3))
    pred[:, 2] = 5.0  # constant prediction
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r, p = M.pearson_per_neuron(pred, target)
        c = M.correlation_to_truth(pred, target)
    np.testing.assert_array_equal(r[1:], [0.0, 0.0])
    np.testing.assert_array_equal(p[1:], [1.0, 1.0])
    np.testing.assert_array_equal(c[1:], [0.0, 0.0])
    assert r[0] == pytest.approx(scipy.stats.pearsonr(pred[:, 0], target[:, 0]).statistic, abs=1e-12)


def test_significant_neurons_uses_p_le_alpha():
    p = np.array([0.0, 0.01, 0.05, 0.0500001, 0.5, np.nan])
    np.testing.assert_array_equal(M.significant_neurons(p), [True, True, True, False, False, False])
    np.testing.assert_array_equal(M.significant_neurons(p, alpha=0.01), [True, True, False, False, False, False])
    assert M.significant_neurons(torch.tensor([0.2, 0.001])).sum() == 1
    with pytest.raises(ValueError, match="alpha"):
        M.significant_neurons(p, alpha=1.5)


def _noisy_trials(r=5, t=40, n=4, noise=1.0, seed=8):
    rng = _rng(seed)
    rates = np.exp(rng.normal(size=(t, n)))
    trials = rates[None] + noise * rng.normal(size=(r, t, n))
    return rates, trials


def test_single_trial_correlation_matches_concatenated_scipy():
    rates, trials = _noisy_trials()
    pred = rates + 0.3 * _rng(9).normal(size=rates.shape)
    got = M.single_trial_correlation(pred, trials)
    for k in range(rates.shape[1]):
        xs = np.concatenate([pred[:, k] for _ in range(trials.shape[0])])
        ys = np.concatenate([trials[i, :, k] for i in range(trials.shape[0])])
        assert got[k] == pytest.approx(scipy.stats.pearsonr(xs, ys).statistic, abs=1e-12)
    # Noise-free repeats predicted exactly: r = 1.
    np.testing.assert_allclose(M.single_trial_correlation(rates, np.stack([rates] * 3)), 1.0, atol=1e-12)


def test_oracle_correlation_matches_leave_one_out_loop():
    _, trials = _noisy_trials(r=4, t=30, n=3)
    got = M.oracle_correlation(trials)
    r_, t_, n_ = trials.shape
    for k in range(n_):
        ys, os_ = [], []
        for i in range(r_):
            for j in range(t_):
                others = [trials[q, j, k] for q in range(r_) if q != i]
                ys.append(trials[i, j, k])
                os_.append(sum(others) / len(others))
        assert got[k] == pytest.approx(np.corrcoef(ys, os_)[0, 1], abs=1e-12)
    rates = _noisy_trials()[0]
    np.testing.assert_allclose(M.oracle_correlation(np.stack([rates] * 2)), 1.0, atol=1e-12)


def _fev_loop(trials, pred=None):
    r_, t_, n_ = trials.shape
    fev_out, feve_out = [], []
    for k in range(n_):
        vals = trials[:, :, k].ravel()
        total = np.sum((vals - vals.mean()) ** 2) / (vals.size - 1)
        noise = np.mean([np.sum((trials[:, j, k] - trials[:, j, k].mean()) ** 2) / (r_ - 1) for j in range(t_)])
        fev_out.append(1 - noise / total)
        if pred is not None:
            err = np.mean([(trials[i, j, k] - pred[j, k]) ** 2 for i in range(r_) for j in range(t_)])
            feve_out.append(1 - (err - noise) / (total - noise))
    return np.array(fev_out), np.array(feve_out)


def test_fev_and_feve_match_explicit_formulas():
    rates, trials = _noisy_trials(r=6, t=25, n=5, noise=0.8)
    pred = rates + 0.5 * _rng(10).normal(size=rates.shape)
    exp_fev, exp_feve = _fev_loop(trials, pred)
    np.testing.assert_allclose(M.fev(trials), exp_fev, rtol=1e-10)
    np.testing.assert_allclose(M.feve(torch.tensor(pred), trials), exp_feve, rtol=1e-10)


def test_fev_feve_known_values():
    rates = _noisy_trials()[0]
    clean = np.stack([rates] * 3)
    np.testing.assert_allclose(M.fev(clean), 1.0, atol=1e-12)
    np.testing.assert_allclose(M.feve(rates, clean), 1.0, atol=1e-12)
    # Predicting the grand mean of noise-free data: MSE = (N-1)/N * Var_total, so FEVe = 1/N with N = R*T.
    grand_mean = np.broadcast_to(clean.mean(axis=(0, 1)), rates.shape)
    np.testing.assert_allclose(M.feve(grand_mean, clean), 1 / (3 * 40), rtol=1e-9)


def test_feve_rule_for_unexplainable_neurons():
    t = 10
    trials = np.zeros((2, t, 3))
    trials[0, :, 0], trials[1, :, 0] = 0.0, 1.0  # pure noise: every image has the same mean -> FEV < 0
    trials[:, :, 1] = 4.0  # constant neuron: FEV = 0
    trials[:, :, 2] = np.arange(t) + np.array([[0.0], [0.1]])  # strongly driven
    pred = np.tile(np.arange(t, dtype=float)[:, None], (1, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = M.fev(trials)
        fe = M.feve(pred, trials)
        fe_thr = M.feve(pred, trials, min_fev=1.01)
    assert f[0] < 0 and f[1] == 0.0 and f[2] > 0.99
    assert np.isnan(fe[0]) and np.isnan(fe[1]) and np.isfinite(fe[2])
    assert np.isnan(fe_thr).all()


# ------------------------------------------------------------------------------------------- simulation
def test_correlation_to_truth_matches_scipy():
    rates, trials = _noisy_trials()
    pred = trials[0]
    got = M.correlation_to_truth(pred, rates)
    expected = [scipy.stats.pearsonr(pred[:, k], rates[:, k]).statistic for k in range(rates.shape[1])]
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_noise_ceiling_fraction():
    rates, trials = _noisy_trials(r=3, t=60, n=4, noise=2.0)
    rates[:, 3] = 1.0  # constant truth: ceiling undefined
    pred = rates + _rng(11).normal(size=rates.shape)
    mean = trials.mean(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = M.noise_ceiling_fraction(pred, trials, rates)
        same = M.noise_ceiling_fraction(rates, trials, rates)
    for k in range(3):
        num = scipy.stats.pearsonr(pred[:, k], mean[:, k]).statistic
        den = scipy.stats.pearsonr(rates[:, k], mean[:, k]).statistic
        assert got[k] == pytest.approx(num / den, rel=1e-10)
    assert np.isnan(got[3])
    np.testing.assert_allclose(same[:3], 1.0, atol=1e-12)


def test_rf_peak_distance_same_grid_and_abs_peak():
    masks = np.zeros((3, 16, 16))
    masks[0, 4, 7] = 1.0
    masks[1, 10, 2] = -3.0  # negative peak wins by absolute value
    masks[1, 0, 0] = 2.0
    masks[2] = 0.1
    masks[2, 15, 15] = 0.5
    centers = np.array([[4.0, 7.0], [13.0, 6.0], [12.0, 11.0]])
    np.testing.assert_allclose(M.rf_peak_distance(torch.tensor(masks), centers), [0.0, 5.0, 5.0])


def test_rf_peak_distance_rescales_mask_grid():
    masks = np.zeros((2, 8, 4))
    masks[0, 2, 1] = 1.0
    masks[1, 7, 3] = 1.0
    # 8x4 mask covering a 32x16 image: factor 4 both ways; index i -> 4 i + 1.5.
    centers = np.array([[9.5, 5.5], [29.5 - 3.0, 13.5 + 4.0]])
    np.testing.assert_allclose(M.rf_peak_distance(masks, centers, image_size=(32, 16)), [0.0, 5.0])
    # Scalar image size: square image of 32 covering a 8x4 mask -> factors 4 and 8.
    np.testing.assert_allclose(
        M.rf_peak_distance(masks[:1], [[9.5, 1.5 * 8 - 0.5]], image_size=32), [0.0], atol=1e-12
    )


# ---------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: M.pearson_per_neuron(np.zeros((5, 3)), np.zeros((5, 4))), r"target must have shape \(T, n\)"),
        (lambda: M.pearson_per_neuron(np.zeros(5), np.zeros(5)), r"pred must have shape \(T, n\); got \(5\)"),
        (lambda: M.pearson_per_neuron(np.zeros((1, 3)), np.zeros((1, 3))), r"pred .* T >= 2"),
        (lambda: M.single_trial_correlation(np.zeros((5, 3)), np.zeros((5, 3))), r"trials must have shape \(R, T, n\)"),
        (lambda: M.single_trial_correlation(np.zeros((4, 3)), np.zeros((2, 5, 3))), r"pred must have shape \(T, n\)"),
        (lambda: M.oracle_correlation(np.zeros((1, 5, 3))), r"trials .* R >= 2"),
        (lambda: M.fev(np.zeros((5, 3))), r"trials must have shape \(R, T, n\)"),
        (lambda: M.feve(np.zeros((5, 2)), np.zeros((2, 5, 3))), r"pred must have shape \(T, n\)"),
        (lambda: M.correlation_to_truth(np.zeros((5, 3)), np.zeros((6, 3))), r"rates must have shape \(T, n\)"),
        (lambda: M.noise_ceiling_fraction(np.zeros((5, 3)), np.zeros((2, 5, 3)), np.zeros((5, 2))),
         r"rates must have shape \(T, n\)"),
        (lambda: M.rf_peak_distance(np.zeros((2, 8)), np.zeros((2, 2))), r"masks must have shape \(n, H, W\)"),
        (lambda: M.rf_peak_distance(np.zeros((2, 8, 8)), np.zeros((3, 2))), r"centers must have shape \(n, 2\)"),
        (lambda: M.rf_peak_distance(np.zeros((2, 8, 8)), np.zeros((2, 2)), image_size=(1, 2, 3)), r"image_size"),
    ],
)
def test_neuron_metrics_reject_bad_shapes(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()
