"""FixedMaskReadout: every constructor argument and the forward input are checked, errors name the user's
argument (never the op's internal names), and valid calls still compute the factorized readout."""
import math

import numpy as np
import pytest
import torch

from daenr_fast.nn import FixedMaskReadout
from daenr_fast.nn.fixed_mask_readout import gaussian_masks


def test_forward_is_the_masked_factorized_readout():
    head = FixedMaskReadout((4, 8, 8), 5)
    head.set_centers(torch.tensor([[3.0, 4.0], [10.0, 20.0], [16.0, 16.0], [30.0, 1.0], [0.0, 0.0]]))
    x = torch.randn(3, 4, 8, 8)
    expected = torch.einsum("nhw,bchw,nc->bn", head.mask, x, head.features) + head.bias
    torch.testing.assert_close(head(x), expected)


@pytest.mark.parametrize("kwargs,error,message", [
    ({"sigma": -2}, ValueError, r"sigma must be a finite real number > 0, got -2"),
    ({"sigma": 0}, ValueError, r"sigma must be a finite real number > 0"),
    ({"sigma": math.nan}, ValueError, r"sigma must be a finite real number, got nan"),
    ({"sigma": math.inf}, ValueError, r"sigma must be a finite real number"),
    ({"sigma": "3"}, TypeError, r"sigma must be a finite real number, got '3'"),
    ({"outdims": 2.7}, TypeError, r"outdims must be an integer >= 1, got 2.7"),
    ({"outdims": 0}, ValueError, r"outdims must be an integer >= 1, got 0"),
    ({"outdims": True}, TypeError, r"outdims must be an integer"),
    ({"in_shape": (4, 8, 8.5)}, TypeError, r"in_shape\[2\] must be an integer >= 1, got 8.5"),
    ({"in_shape": (4.0, 8, 8)}, TypeError, r"in_shape\[0\] must be an integer"),
    ({"in_shape": (0, 8, 8)}, ValueError, r"in_shape\[0\] must be an integer >= 1, got 0"),
    ({"in_shape": (4, 8)}, ValueError, r"in_shape must be \(C, H, W\)"),
    ({"in_shape": 8}, TypeError, r"in_shape must be \(C, H, W\)"),
    ({"in_shape": (4, 8, 6)}, ValueError, r"in_shape must be a square feature map .* H == W, got \(4, 8, 6\)"),
    ({"image_size": 31.5}, TypeError, r"image_size must be an integer >= 1, got 31.5"),
    ({"image_size": -32}, ValueError, r"image_size must be an integer >= 1"),
    ({"init_noise": -1e-3}, ValueError, r"init_noise must be a finite real number >= 0.0"),
    ({"init_noise": math.nan}, ValueError, r"init_noise must be a finite real number"),
    ({"method": "peak"}, ValueError, r"unknown fixed-mask method 'peak'; valid: ridge-gaussian, envelope-peak"),
    ({"l1_weight": -1.0}, ValueError, r"l1_weight must be a finite real number >= 0.0"),
])
def test_bad_constructor_argument_is_named(kwargs, error, message):
    args = {"in_shape": (4, 8, 8), "outdims": 5, **kwargs}
    with pytest.raises(error, match=message):
        FixedMaskReadout(**args)


def test_envelope_peak_method_sets_one_hot_masks():
    head = FixedMaskReadout((4, 8, 8), 2, method="envelope-peak", l1_weight=0.5)
    head.set_centers(torch.tensor([[3.0, 4.0], [31.0, 0.0]]))
    expected = torch.zeros(2, 8, 8)
    expected[0, 0, 1] = expected[1, 7, 0] = 1.0
    assert torch.equal(head.mask, expected)
    torch.testing.assert_close(head.regularizer(), 0.5 * head.features.abs().sum())


def test_numpy_integers_are_integers():
    head = FixedMaskReadout((np.int64(4), 8, 8), np.int32(5), image_size=np.int64(32))
    assert head.in_shape == (4, 8, 8) and head.outdims == 5 and type(head.outdims) is int


@pytest.mark.parametrize("x,error,message", [
    (torch.randn(2, 3, 8, 8), ValueError, r"x must have shape \(B, C, H, W\) = \(B, 4, 8, 8\) to match in_shape, "
                                          r"got \(2, 3, 8, 8\)"),
    (torch.randn(2, 4, 8, 7), ValueError, r"x must have shape .* got \(2, 4, 8, 7\)"),
    (torch.randn(4, 8, 8), ValueError, r"x must have shape \(B, C, H, W\) = \(B, 4, 8, 8\)"),
    (np.zeros((2, 4, 8, 8), dtype=np.float32), TypeError, r"x must be a torch.Tensor of shape \(B, C, H, W\)"),
    (torch.randn(2, 4, 8, 8, dtype=torch.float64), TypeError, r"x has dtype torch.float64 but the readout's "
                                                              r"parameters have torch.float32"),
    (torch.ones(2, 4, 8, 8, dtype=torch.int64), TypeError, r"x has dtype torch.int64"),
])
def test_bad_input_names_x_and_the_expected_shape(x, error, message):
    head = FixedMaskReadout((4, 8, 8), 5)
    with pytest.raises(error, match=message) as info:
        head(x)
    assert "features" not in str(info.value) and "spatial" not in str(info.value)


def test_set_centers_and_fit_check_their_arguments():
    head = FixedMaskReadout((4, 8, 8), 5)
    with pytest.raises(ValueError, match=r"centers must be a tensor of shape \(outdims, 2\) = \(5, 2\), got \(5, 3\)"):
        head.set_centers(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="centers must be finite"):
        head.set_centers(torch.full((5, 2), math.nan))
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, 32, 32\) \(image_size=32\), "
                                         r"got \(6, 32, 32\)"):
        head.fit(torch.zeros(6, 32, 32), torch.zeros(6, 5))
    with pytest.raises(ValueError, match=r"responses must have shape \(N, outdims\) = \(6, 5\) to match images, "
                                         r"got \(6, 4\)"):
        head.fit(torch.zeros(6, 1, 32, 32), torch.zeros(6, 4))
    assert not bool(head.fitted)


def test_gaussian_masks_refuse_a_non_finite_sigma():
    with pytest.raises(ValueError, match="fm_sigma"):
        gaussian_masks(torch.zeros(1, 2), grid=8, sigma=math.nan)
