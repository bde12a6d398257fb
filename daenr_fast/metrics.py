"""Evaluation metrics of DAE-NR (paper section 4.1).

Every function accepts torch tensors (any device, detached internally) or array-likes, computes in float64 and
returns numpy arrays or python floats.

Images are on the model's [-1, 1] scale with shape ``(B, 1, H, W)`` or ``(B, H, W)``:

* :func:`mse`, :func:`psnr`, :func:`ssim` (each optionally ``per_image``).

Neural responses use ``T`` images (stimuli), ``n`` neurons and ``R`` repeated trials of the same images:
predictions and trial-averaged responses are ``(T, n)``, repeated trials are ``(R, T, n)``.

* :func:`pearson_per_neuron` (the paper's PCC with its p-value) and :func:`significant_neurons`;
* :func:`single_trial_correlation`, :func:`oracle_correlation`, :func:`fev`, :func:`feve` (the definitions of
  neuralpredictors' ``measures``);
* for simulated data with known noise-free rates: :func:`correlation_to_truth`, :func:`noise_ceiling_fraction`
  and :func:`rf_peak_distance`.

Correlation conventions (all correlation functions): a neuron whose prediction or target is constant (all
values exactly equal) has correlation 0 (and p-value 1); no warning is emitted. NaN inputs propagate to NaN.

Bad inputs (wrong number of dimensions, mismatched shapes) raise ``ValueError`` naming the argument and the
expected shape.
"""
from __future__ import annotations

import numpy as np
import scipy.stats
import torch
import torch.nn.functional as F

__all__ = [
    "mse",
    "psnr",
    "ssim",
    "pearson_per_neuron",
    "significant_neurons",
    "single_trial_correlation",
    "oracle_correlation",
    "fev",
    "feve",
    "correlation_to_truth",
    "noise_ceiling_fraction",
    "rf_peak_distance",
]

# SSIM constants (Wang et al. 2004; the defaults of skimage.metrics.structural_similarity).
SSIM_WIN_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


# ---------------------------------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------------------------------
def _as_float64(a, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().to(device="cpu", dtype=torch.float64).numpy()
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array or tensor; got {type(a).__name__}") from exc


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _images(x, name: str) -> np.ndarray:
    """Validate an image batch and return it as float64 ``(B, H, W)``."""
    a = _as_float64(x, name)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim != 3:
        raise ValueError(f"{name} must have shape (B, 1, H, W) or (B, H, W); got {_shape_str(a.shape)}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image; got shape {_shape_str(a.shape)}")
    return a


def _image_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    a, b = _images(x, "x"), _images(y, "y")
    if a.shape != b.shape:
        raise ValueError(
            f"y must have the same shape as x, (B, H, W) = {_shape_str(a.shape)} (a channel axis of size 1 "
            f"is allowed); got {_shape_str(b.shape)}"
        )
    return a, b


def _matrix(a, name: str, expected: str = "(T, n)", min_rows: int = 1) -> np.ndarray:
    m = _as_float64(a, name)
    if m.ndim != 2:
        raise ValueError(f"{name} must have shape {expected}; got {_shape_str(m.shape)}")
    if m.shape[0] < min_rows:
        raise ValueError(f"{name} must have shape {expected} with T >= {min_rows}; got {_shape_str(m.shape)}")
    return m


def _trials(a, name: str = "trials", min_repeats: int = 1) -> np.ndarray:
    t = _as_float64(a, name)
    if t.ndim != 3:
        raise ValueError(f"{name} must have shape (R, T, n); got {_shape_str(t.shape)}")
    if t.shape[0] < min_repeats or t.shape[1] < 1:
        raise ValueError(
            f"{name} must have shape (R, T, n) with R >= {min_repeats} repeats and T >= 1; "
            f"got {_shape_str(t.shape)}"
        )
    return t


def _same_shape(a: np.ndarray, name: str, expected: tuple, expected_str: str) -> None:
    if a.shape != tuple(expected):
        raise ValueError(f"{name} must have shape {expected_str} = {_shape_str(expected)}; got {_shape_str(a.shape)}")


def _corr_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between matching columns of ``a`` and ``b`` (both ``(N, n)``); constant columns give 0."""
    constant = (a.max(axis=0) == a.min(axis=0)) | (b.max(axis=0) == b.min(axis=0))
    am = a - a.mean(axis=0)
    bm = b - b.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        am = am / np.linalg.norm(am, axis=0)
        bm = bm / np.linalg.norm(bm, axis=0)
        r = (am * bm).sum(axis=0)
    r = np.where(constant, 0.0, np.clip(r, -1.0, 1.0))
    return r


# ---------------------------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------------------------
def mse(x, y, per_image: bool = False):
    r"""Mean squared error on the [-1, 1] scale.

    ``MSE = mean_{b,i,j} (x[b,i,j] - y[b,i,j])^2`` over all pixels of all images.

    Args:
        x, y: images ``(B, 1, H, W)`` or ``(B, H, W)``.
        per_image: return the ``(B,)`` array ``mean_{i,j} (x[b] - y[b])^2`` instead.
    Returns:
        float, or ``(B,)`` array. (As every image has the same size, the float is the mean of the array.)
    """
    a, b = _image_pair(x, y)
    per = ((a - b) ** 2).mean(axis=(1, 2))
    return per if per_image else float(per.mean())


def psnr(x, y, data_range: float = 2.0, per_image: bool = False):
    r"""Peak signal-to-noise ratio in dB, computed per image and then averaged.

    ``PSNR_b = 10 log10(data_range^2 / MSE_b)`` with ``MSE_b`` the mean squared error of image ``b``; the result
    is ``mean_b PSNR_b``. ``data_range`` is 2 for images on [-1, 1]. An image reproduced exactly has
    ``PSNR_b = inf``, so the average is ``inf`` too (no warning).

    Args:
        x, y: images ``(B, 1, H, W)`` or ``(B, H, W)``.
        data_range: peak-to-peak range of the pixel values (> 0).
        per_image: return the ``(B,)`` array of ``PSNR_b``.
    Returns:
        float, or ``(B,)`` array.
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0; got {data_range}")
    per_mse = mse(x, y, per_image=True)
    with np.errstate(divide="ignore"):
        per = 10.0 * np.log10(float(data_range) ** 2 / per_mse)
    return per if per_image else float(per.mean())


def _gaussian_window() -> torch.Tensor:
    # Same kernel as scipy.ndimage.gaussian_filter(sigma=1.5, truncate=3.5): radius 5, normalised to sum 1.
    radius = (SSIM_WIN_SIZE - 1) // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return w / w.sum()


def ssim(x, y, per_image: bool = False):
    r"""Structural similarity (Gaussian-window SSIM), computed per image and then averaged.

    Images are mapped from [-1, 1] to [0, 1] by ``(v + 1) / 2`` (data range 1; values are not clipped). With a
    normalised 11x11 Gaussian window ``w`` (sigma 1.5) applied as a valid (unpadded) filter, for each window
    position::

        mu_x = w * x,   mu_y = w * y
        s_xx = w * x^2 - mu_x^2,   s_yy = w * y^2 - mu_y^2,   s_xy = w * (x y) - mu_x mu_y   (population moments)
        S = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_xx + s_yy + C2))

    with ``C1 = (0.01)^2`` and ``C2 = (0.03)^2``. ``SSIM_b`` is the mean of ``S`` over the valid region
    ``(H - 10) x (W - 10)``, and the result is ``mean_b SSIM_b``. This equals
    ``skimage.metrics.structural_similarity(a, b, data_range=1, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)`` per image. Computed in float64 with one separable grouped convolution
    over the whole batch.

    Args:
        x, y: images ``(B, 1, H, W)`` or ``(B, H, W)`` with ``H, W >= 11``.
        per_image: return the ``(B,)`` array of ``SSIM_b``.
    Returns:
        float, or ``(B,)`` array.
    """
    a, b = _image_pair(x, y)
    if a.shape[1] < SSIM_WIN_SIZE or a.shape[2] < SSIM_WIN_SIZE:
        raise ValueError(
            f"x and y must have shape (B, 1, H, W) or (B, H, W) with H, W >= {SSIM_WIN_SIZE} for SSIM; "
            f"got {_shape_str(a.shape)}"
        )
    tx = (torch.from_numpy(a) + 1.0) / 2.0
    ty = (torch.from_numpy(b) + 1.0) / 2.0
    # Five maps per image, filtered together: x, y, x^2, y^2, xy -> (B, 5, H, W).
    maps = torch.stack([tx, ty, tx * tx, ty * ty, tx * ty], dim=1)
    w = _gaussian_window()
    k = SSIM_WIN_SIZE
    maps = F.conv2d(maps, w.view(1, 1, k, 1).expand(5, 1, k, 1), groups=5)
    maps = F.conv2d(maps, w.view(1, 1, 1, k).expand(5, 1, 1, k), groups=5)
    mu_x, mu_y, e_xx, e_yy, e_xy = maps.unbind(dim=1)
    s_xx = e_xx - mu_x * mu_x
    s_yy = e_yy - mu_y * mu_y
    s_xy = e_xy - mu_x * mu_y
    c1 = SSIM_K1**2
    c2 = SSIM_K2**2
    s_map = ((2 * mu_x * mu_y + c1) * (2 * s_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (s_xx + s_yy + c2))
    per = s_map.mean(dim=(1, 2)).numpy()
    return per if per_image else float(per.mean())


# ---------------------------------------------------------------------------------------------------------------
# neurons
# ---------------------------------------------------------------------------------------------------------------
def pearson_per_neuron(pred, target):
    r"""Pearson correlation per neuron (the paper's PCC) and its two-sided p-value.

    ``r_k = sum_t (p_tk - mean p_k)(y_tk - mean y_k) / sqrt(sum_t (p_tk - mean p_k)^2 sum_t (y_tk - mean y_k)^2)``
    with ``p = pred`` and ``y = target`` (normally the trial-averaged test responses).

    The p-value is that of ``scipy.stats.pearsonr``: under the null hypothesis of independent normal data, ``r``
    follows ``scipy.stats.beta(T/2 - 1, T/2 - 1, loc=-1, scale=2)`` and ``p = 2 * cdf(-|r|)``; with ``T = 2``,
    ``p = 1``.

    Constant columns (all values of ``pred[:, k]`` or of ``target[:, k]`` equal) have no defined correlation;
    they are reported as ``r = 0``, ``p = 1`` (not significant), without warnings.

    Args:
        pred: predictions ``(T, n)``, ``T >= 2``.
        target: responses ``(T, n)``.
    Returns:
        ``(r, p)``, two ``(n,)`` arrays.
    """
    p_ = _matrix(pred, "pred", min_rows=2)
    y = _matrix(target, "target")
    _same_shape(y, "target", p_.shape, "(T, n) like pred")
    r = _corr_columns(p_, y)
    t = p_.shape[0]
    if t == 2:
        pval = np.where(np.isnan(r), np.nan, 1.0)
    else:
        ab = t / 2.0 - 1.0
        pval = 2.0 * scipy.stats.beta.cdf(-np.abs(r), ab, ab, loc=-1.0, scale=2.0)
        pval = np.minimum(pval, 1.0)
    constant = (p_.max(axis=0) == p_.min(axis=0)) | (y.max(axis=0) == y.min(axis=0))
    pval = np.where(constant, 1.0, pval)
    return r, pval


def significant_neurons(p, alpha: float = 0.05) -> np.ndarray:
    """Boolean mask of significant neurons: ``p <= alpha`` (NaN p-values are not significant).

    Args:
        p: p-values, any shape (normally ``(n,)`` from :func:`pearson_per_neuron`).
        alpha: significance level, ``0 <= alpha <= 1``.
    Returns:
        bool array of the shape of ``p``; ``mask.sum()`` is the number of significant neurons.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    pv = _as_float64(p, "p")
    with np.errstate(invalid="ignore"):
        return pv <= alpha


def single_trial_correlation(pred, trials) -> np.ndarray:
    r"""Single-trial correlation per neuron.

    The prediction for each image is paired with every single-trial response to it: ``pred`` is repeated for
    each of the ``R`` trials and ``r_k`` is the Pearson correlation over all ``R * T`` (prediction, response)
    pairs of neuron ``k``. Constant columns give 0.

    Args:
        pred: predictions ``(T, n)``.
        trials: single-trial responses ``(R, T, n)``.
    Returns:
        ``(n,)`` array.
    """
    tr = _trials(trials)
    p_ = _matrix(pred, "pred")
    _same_shape(p_, "pred", tr.shape[1:], "(T, n) matching trials (R, T, n)")
    r, t, n = tr.shape
    rep = np.broadcast_to(p_, tr.shape).reshape(r * t, n)
    return _corr_columns(rep, tr.reshape(r * t, n))


def oracle_correlation(trials) -> np.ndarray:
    r"""Leave-one-out oracle correlation per neuron (neuralpredictors' ``compute_oracle_corr``).

    Each trial ``y[r, t, k]`` is paired with the mean of the other trials of the same image,
    ``o[r, t, k] = (sum_{r'} y[r', t, k] - y[r, t, k]) / (R - 1)``; the oracle is the Pearson correlation of
    ``y`` and ``o`` over all ``R * T`` trials. It estimates how well the best stimulus-driven predictor can
    correlate with single trials. Constant columns give 0.

    Args:
        trials: single-trial responses ``(R, T, n)``, ``R >= 2``.
    Returns:
        ``(n,)`` array.
    """
    tr = _trials(trials, min_repeats=2)
    r, t, n = tr.shape
    loo = (tr.sum(axis=0, keepdims=True) - tr) / (r - 1)
    return _corr_columns(loo.reshape(r * t, n), tr.reshape(r * t, n))


def _variances(tr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Total variance (over all R*T values) and noise variance (mean over images of the across-trial variance)."""
    r, t, n = tr.shape
    total = tr.reshape(r * t, n).var(axis=0, ddof=1)
    noise = tr.var(axis=0, ddof=1).mean(axis=0)
    return total, noise


def fev(trials) -> np.ndarray:
    r"""Fraction of explainable variance per neuron (neuralpredictors' ``fev`` / ``explainable_var``).

    ``FEV_k = (Var_total - Var_noise) / Var_total`` with ``Var_total`` the variance (ddof 1) of all ``R * T``
    responses of neuron ``k`` and ``Var_noise`` the mean over images of the across-trial variance (ddof 1).
    A neuron with zero total variance (constant responses) has nothing to explain: ``FEV = 0``. Values can be
    negative for neurons whose trial-to-trial noise dominates.

    Args:
        trials: single-trial responses ``(R, T, n)``, ``R >= 2``.
    Returns:
        ``(n,)`` array.
    """
    tr = _trials(trials, min_repeats=2)
    total, noise = _variances(tr)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (total - noise) / total
    return np.where(total == 0, 0.0, out)


def feve(pred, trials, min_fev: float | None = None) -> np.ndarray:
    r"""Fraction of explainable variance explained per neuron (neuralpredictors' ``fev`` FEVe).

    ``FEVe_k = 1 - (MSE_k - Var_noise) / (Var_total - Var_noise)`` with ``MSE_k`` the mean over all ``R * T``
    trials of ``(y[r, t, k] - pred[t, k])^2`` and the variances of :func:`fev`.

    Rule for unexplainable neurons: where the explainable variance ``Var_total - Var_noise`` is ``<= 0``
    (``FEV <= 0``) FEVe is undefined and returned as NaN; so it is where ``FEV < min_fev`` if ``min_fev`` is
    given (neuralpredictors-based evaluations commonly exclude neurons with FEV below 0.15). Average with
    ``np.nanmean``.

    Args:
        pred: predictions ``(T, n)``.
        trials: single-trial responses ``(R, T, n)``, ``R >= 2``.
        min_fev: optional FEV threshold below which neurons are NaN.
    Returns:
        ``(n,)`` array.
    """
    tr = _trials(trials, min_repeats=2)
    p_ = _matrix(pred, "pred")
    _same_shape(p_, "pred", tr.shape[1:], "(T, n) matching trials (R, T, n)")
    total, noise = _variances(tr)
    explainable = total - noise
    err = ((tr - p_[None]) ** 2).mean(axis=(0, 1))
    undefined = ~(explainable > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 1.0 - (err - noise) / explainable
        if min_fev is not None:
            undefined |= ~(explainable / total >= min_fev)
    return np.where(undefined, np.nan, out)


# ---------------------------------------------------------------------------------------------------------------
# simulated data (known noise-free rates and receptive fields)
# ---------------------------------------------------------------------------------------------------------------
def correlation_to_truth(pred, rates) -> np.ndarray:
    """Pearson correlation per neuron between predictions ``(T, n)`` and the noise-free rates ``(T, n)``.

    Constant columns give 0. Returns an ``(n,)`` array.
    """
    p_ = _matrix(pred, "pred")
    q = _matrix(rates, "rates")
    _same_shape(q, "rates", p_.shape, "(T, n) like pred")
    return _corr_columns(p_, q)


def noise_ceiling_fraction(pred, trials, rates) -> np.ndarray:
    r"""Fraction of the noise ceiling reached per neuron.

    ``f_k = corr(pred_k, ybar_k) / corr(rates_k, ybar_k)`` with ``ybar = trials.mean(0)`` the trial-averaged
    response: the model's PCC divided by the PCC the true noise-free rate reaches on the same noisy data. 1 means
    the model predicts the averaged responses as well as the truth does; values above 1 are possible by
    chance on finite data. Where the ceiling ``corr(rates_k, ybar_k)`` is ``<= 0`` or undefined (e.g. constant
    rates), ``f_k`` is NaN; no warnings are emitted.

    Args:
        pred: predictions ``(T, n)``.
        trials: single-trial responses ``(R, T, n)``.
        rates: noise-free rates ``(T, n)``.
    Returns:
        ``(n,)`` array.
    """
    tr = _trials(trials)
    p_ = _matrix(pred, "pred")
    _same_shape(p_, "pred", tr.shape[1:], "(T, n) matching trials (R, T, n)")
    q = _matrix(rates, "rates")
    _same_shape(q, "rates", tr.shape[1:], "(T, n) matching trials (R, T, n)")
    mean = tr.mean(axis=0)
    ceiling = _corr_columns(q, mean)
    model = _corr_columns(p_, mean)
    valid = ceiling > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(valid, model / np.where(valid, ceiling, 1.0), np.nan)


def rf_peak_distance(masks, centers, image_size=None) -> np.ndarray:
    r"""Distance in pixels between each readout mask's peak and the neuron's true receptive-field centre.

    The peak of mask ``k`` is the index ``(i, j)`` of ``max |masks[k]|`` (the first one in row-major order on
    ties). If the masks are on a coarser/finer grid than the image the centres refer to, pass ``image_size``
    (``S`` or ``(S_h, S_w)``): a mask of size ``h x w`` covering the image maps index ``i`` to image coordinate
    ``(i + 0.5) * S_h / h - 0.5`` (pixel centres aligned), and likewise ``j`` with ``S_w / w``. Without
    ``image_size`` mask indices are image pixel coordinates.

    ``d_k = sqrt((row_k - centers[k, 0])^2 + (col_k - centers[k, 1])^2)``.

    Args:
        masks: spatial masks ``(n, H, W)``, finite.
        centers: true centres ``(n, 2)`` as (row, col) in image pixels.
        image_size: optional int or (height, width) of the image the centres refer to.
    Returns:
        ``(n,)`` array of distances.
    """
    m = _as_float64(masks, "masks")
    if m.ndim != 3 or m.shape[1] < 1 or m.shape[2] < 1:
        raise ValueError(f"masks must have shape (n, H, W); got {_shape_str(m.shape)}")
    if not np.isfinite(m).all():
        raise ValueError("masks must be finite (found NaN or inf)")
    c = _as_float64(centers, "centers")
    _same_shape(c, "centers", (m.shape[0], 2), "(n, 2) with n from masks (n, H, W)")
    n, h, w = m.shape
    flat = np.abs(m).reshape(n, h * w).argmax(axis=1)
    rows, cols = np.divmod(flat, w)
    rows = rows.astype(np.float64)
    cols = cols.astype(np.float64)
    if image_size is not None:
        size = np.atleast_1d(np.asarray(image_size, dtype=np.float64))
        if size.shape not in ((1,), (2,)) or not (size > 0).all():
            raise ValueError(f"image_size must be a positive int or (height, width); got {image_size!r}")
        s_h, s_w = (size[0], size[0]) if size.shape == (1,) else (size[0], size[1])
        rows = (rows + 0.5) * s_h / h - 0.5
        cols = (cols + 0.5) * s_w / w - 0.5
    return np.hypot(rows - c[:, 0], cols - c[:, 1])
