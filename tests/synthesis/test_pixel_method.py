"""The pixel baseline: the smoothing and the constraint."""
import pytest
import torch

from daenr_fast.synthesis.pixel_method import PixelMethod, gaussian_blur


def test_gaussian_blur_keeps_constants_and_smooths():
    flat = torch.full((2, 1, 8, 8), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat)
    impulse = torch.zeros(1, 1, 15, 15)
    impulse[0, 0, 7, 7] = 1.0
    out = gaussian_blur(impulse, 1.0)
    assert out.shape == impulse.shape
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(out.max()) < 0.2 and torch.allclose(out, out.flip(-1)) and torch.allclose(out, out.transpose(-1, -2))


def test_projection_bounds_range_and_contrast(opened):
    method = PixelMethod(opened("cnn-fr"))
    x = torch.randn(4, 1, 32, 32) * 3
    x[0] = method.level + 0.01 * torch.randn(1, 32, 32)          # inside: unchanged
    before = x.clone()
    method.project(x)
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    norms = (x - method.level).flatten(1).norm(dim=1)
    assert bool((norms <= method.budget * (1 + 1e-5)).all())
    assert torch.allclose(x[0], before[0])
    assert float(norms[1]) == pytest.approx(method.budget, rel=1e-5)
