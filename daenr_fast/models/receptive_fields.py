"""Receptive-field estimates from data, for the fixed-mask (FM) readout and the Gaussian readout's initial positions.

Two estimators of each neuron's RF centre (row, col) in image pixels.

**STA envelope peak** (:func:`envelope_peak_centers`; the fixed-mask baseline of Klindt et al. 2017). With the
images z-scored over the whole training set (one mean and one standard deviation), the spike-triggered sum
``w_n = sum_b s[b,n] x_b`` (S,S) has its median subtracted, is squared, and is blurred by a Gaussian window of
:data:`ENVELOPE_TAPS` = 25 taps with standard deviation :data:`ENVELOPE_SIGMA` = 24/5 = 4.8 pixels (zero padding,
same size): ``e_n = G * (w_n - median(w_n))^2``. The centre is the pixel where ``e_n`` peaks. It sees only
phase-sensitive (linear) RFs: for a complex cell the STA is flat and the peak falls where the noise puts it.

**Ridge fit** (:func:`estimate_rf_centers`). Ridge regression of the responses on two fixed features of the
images, both linear in the weights, on a 2x2-pooled grid (16 x 16 for 32 x 32 images, which halves the noise of
the maps and the size of the regression):

* linear:  s_n ~ pool(x - xbar) . w_n        (simple-cell-like, phase-sensitive RFs)
* energy:  s_n ~ pool((x - xbar)^2) . v_n    (complex-cell-like, phase-invariant RFs: local contrast energy)

with the features flattened to (N,P). For X = U diag(d) V^T the ridge solution and its hat matrix are

    W(lam) = V diag(d / (d^2 + lam)) U^T Y,   H(lam) = U diag(d^2 / (d^2 + lam)) U^T,

and lam is chosen per feature set by generalised cross-validation,
``GCV(lam) = ||Y - H Y||_F^2 / (N - tr H)^2``. For each neuron the feature set with the smaller
leave-one-out (GCV) error wins; its weight map is smoothed with a small Gaussian and the peak of ``|map|`` is
the RF centre, mapped back to image pixels (row, col) by ``(i + 1/2) * pool - 1/2``.

:mod:`daenr_fast.nn.fixed_mask_readout` turns centres into masks on the (coarser) grid of an encoder layer.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

#: pooling factor of the regression grid
POOL = 2
#: ridge penalties tried, as multiples of the mean squared singular value of the design matrix
RIDGE_GRID = tuple(10.0 ** k for k in range(-4, 3))
#: taps of the envelope's Gaussian window, sampled at t in linspace(-2.5, 2.5, 25) of exp(-t^2/2)
ENVELOPE_TAPS = 25
#: its standard deviation in pixels: the unit of t is (25 - 1) / 5 pixels
ENVELOPE_SIGMA = (ENVELOPE_TAPS - 1) / 5.0


def check_fit_inputs(images, responses, image_size: int, outdims: int) -> None:
    """The training data a readout's ``fit`` takes: images (N,1,S,S) with S = ``image_size`` and responses
    (N, outdims); anything else raises a ``ValueError`` naming the argument and the expected shape."""
    size = image_size
    if not isinstance(images, Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (1, size, size):
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must have shape (N, 1, {size}, {size}) (image_size={size}), got {got}")
    if not isinstance(responses, Tensor) or tuple(responses.shape) != (images.shape[0], outdims):
        got = tuple(responses.shape) if isinstance(responses, Tensor) else type(responses).__name__
        raise ValueError(f"responses must have shape (N, outdims) = ({images.shape[0]}, {outdims}) to "
                         f"match images, got {got}")


def _ridge_gcv(x: Tensor, y: Tensor):
    """Ridge of y (N,n) on x (N,P), both centred; lam by GCV. Returns (weights (P,n), per-neuron GCV error (n,))."""
    n_samples = x.shape[0]
    u, d, vh = torch.linalg.svd(x, full_matrices=False)
    uty = u.T @ y
    scale = d.pow(2).mean()
    best = None
    for mult in RIDGE_GRID:
        lam = mult * scale
        shrink = d.pow(2) / (d.pow(2) + lam)
        residual = y - u @ (shrink[:, None] * uty)
        dof = shrink.sum()
        per_neuron = residual.pow(2).sum(0) / (n_samples - dof).clamp_min(1.0) ** 2
        if best is None or per_neuron.sum() < best[0].sum():
            weights = vh.T @ ((d / (d.pow(2) + lam))[:, None] * uty)
            best = (per_neuron, weights)
    return best[1], best[0]


def _smooth(maps: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of maps (n,S,S) with standard deviation ``sigma`` pixels (zero padding)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=maps.dtype)
    k = torch.exp(-t.pow(2) / (2 * sigma ** 2))
    k = (k / k.sum()).to(maps.device)
    out = maps[:, None]
    out = torch.nn.functional.conv2d(out, k.view(1, 1, -1, 1), padding=(radius, 0))
    out = torch.nn.functional.conv2d(out, k.view(1, 1, 1, -1), padding=(0, radius))
    return out[:, 0]


@torch.no_grad()
def receptive_field_maps(images: Tensor, responses: Tensor, smooth_sigma: float = 1.0, pool: int = POOL) -> Tensor:
    """Per-neuron RF maps (n,S/pool,S/pool): smoothed ``|weights|`` of the better of the linear and energy fits.

    Args:
        images: (N,1,S,S) or (N,S,S) training stimuli.
        responses: (N,n) training responses.
        smooth_sigma: blur (in pooled pixels) applied to each map before the peak is taken.
        pool: pooling factor of the regression grid.
    """
    if images.dim() == 3:
        images = images[:, None]
    if images.dim() != 4 or responses.dim() != 2 or images.shape[0] != responses.shape[0]:
        raise ValueError(f"images must be (N,1,S,S) and responses (N,n) with the same N, got "
                         f"{tuple(images.shape)} and {tuple(responses.shape)}")
    n_images = images.shape[0]
    x = images.double()
    x = x - x.mean(0)
    y = responses.double() - responses.double().mean(0)
    linear = torch.nn.functional.avg_pool2d(x, pool)
    energy = torch.nn.functional.avg_pool2d(x.pow(2), pool)
    size = linear.shape[-1]
    w_lin, err_lin = _ridge_gcv(linear.reshape(n_images, -1) - linear.reshape(n_images, -1).mean(0), y)
    w_en, err_en = _ridge_gcv(energy.reshape(n_images, -1) - energy.reshape(n_images, -1).mean(0), y)
    weights = torch.where((err_lin <= err_en)[None, :], w_lin, w_en)
    maps = weights.T.reshape(-1, size, size).abs()
    return _smooth(maps, smooth_sigma).float()


def estimate_rf_centers(images: Tensor, responses: Tensor, pool: int = POOL) -> Tensor:
    """RF centres (n,2) as (row, col) in image pixels: peaks of :func:`receptive_field_maps`."""
    return (map_peaks(receptive_field_maps(images, responses, pool=pool)) + 0.5) * pool - 0.5


def map_peaks(maps: Tensor) -> Tensor:
    """(row, col) of the maximum of each map (n,H,W) -> (n,2) float, in the maps' own pixel units."""
    flat = maps.flatten(1).argmax(1)
    width = maps.shape[-1]
    return torch.stack([flat // width, flat % width], 1).float()


@torch.no_grad()
def sta_envelopes(images: Tensor, responses: Tensor) -> Tensor:
    """RF envelopes (n,S,S) ``G * (w_n - median(w_n))^2`` of the spike-triggered sums (see the module docstring).

    Args:
        images: (N,1,S,S) or (N,S,S) training stimuli.
        responses: (N,n) training responses.
    """
    if images.dim() == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.dim() != 3 or responses.dim() != 2 or images.shape[0] != responses.shape[0]:
        raise ValueError(f"images must be (N,1,S,S) and responses (N,n) with the same N, got "
                         f"{tuple(images.shape)} and {tuple(responses.shape)}")
    x = images.double()
    x = (x - x.mean()) / x.std().clamp_min(1e-12)
    sta = torch.einsum("bn,bhw->nhw", responses.double(), x)
    dev = sta - sta.flatten(1).median(1).values[:, None, None]
    radius = ENVELOPE_TAPS // 2
    t = torch.arange(-radius, radius + 1, dtype=torch.float64) / ENVELOPE_SIGMA
    window = torch.exp(-(t[:, None].pow(2) + t[None, :].pow(2)) / 2)
    env = torch.nn.functional.conv2d(dev.pow(2)[:, None], window[None, None], padding=radius)
    return env[:, 0].float()


def envelope_peak_centers(images: Tensor, responses: Tensor) -> Tensor:
    """RF centres (n,2) as (row, col) in image pixels: the peaks of :func:`sta_envelopes` (integer pixels)."""
    return map_peaks(sta_envelopes(images, responses))
