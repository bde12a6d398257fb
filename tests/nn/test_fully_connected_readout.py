"""FullyConnectedReadout: every constructor argument and the forward input are checked, errors name the user's
argument (never a torch IndexError/RuntimeError), and valid calls still compute ``W vec(x) + b``."""
import math

import numpy as np
import pytest
import torch

from daenr_fast.nn import FullyConnectedReadout


def test_forward_is_a_linear_map_of_the_flattened_input():
    head = FullyConnectedReadout((4, 8, 6), 5)
    x = torch.randn(3, 4, 8, 6)
    torch.testing.assert_close(head(x), x.flatten(1) @ head.linear.weight.T + head.bias)
    assert head.masks().shape == (5, 8, 6)


@pytest.mark.parametrize("kwargs,error,message", [
    ({"in_shape": (4, 8)}, ValueError, r"in_shape must be \(C, H, W\) with positive integer sizes, got \(4, 8\)"),
    ({"in_shape": (4, 8, 8, 1)}, ValueError, r"in_shape must be \(C, H, W\)"),
    ({"in_shape": None}, TypeError, r"in_shape must be \(C, H, W\)"),
    ({"in_shape": (4, 2.7, 8)}, TypeError, r"in_shape\[1\] must be an integer >= 1, got 2.7"),
    ({"in_shape": (4, -8, 8)}, ValueError, r"in_shape\[1\] must be an integer >= 1, got -8"),
    ({"outdims": 2.7}, TypeError, r"outdims must be an integer >= 1, got 2.7"),
    ({"outdims": 0}, ValueError, r"outdims must be an integer >= 1, got 0"),
    ({"outdims": "5"}, TypeError, r"outdims must be an integer"),
    ({"init_noise": -1.0}, ValueError, r"init_noise must be a finite real number >= 0.0, got -1.0"),
    ({"init_noise": math.inf}, ValueError, r"init_noise must be a finite real number"),
    ({"dropout": 1.0}, ValueError, r"dropout must be a probability in \[0, 1\), got 1.0"),
    ({"dropout": -0.1}, ValueError, r"dropout must be a finite real number >= 0.0"),
    ({"l1_weight": math.nan}, ValueError, r"l1_weight must be a finite real number"),
    ({"l2_weight": -1}, ValueError, r"l2_weight must be a finite real number >= 0.0"),
])
def test_bad_constructor_argument_is_named(kwargs, error, message):
    args = {"in_shape": (4, 8, 8), "outdims": 5, **kwargs}
    with pytest.raises(error, match=message):
        FullyConnectedReadout(**args)


def test_defaults_keep_the_plain_linear_map_and_the_l1_penalty():
    head = FullyConnectedReadout((4, 8, 6), 5).train()
    x = torch.randn(3, 4, 8, 6)
    torch.testing.assert_close(head(x), x.flatten(1) @ head.linear.weight.T + head.bias)
    torch.testing.assert_close(head.regularizer(), head.linear.weight.abs().sum())


def test_dropout_in_training_only_and_weighted_penalties():
    torch.manual_seed(0)
    head = FullyConnectedReadout((4, 8, 6), 5, dropout=0.5, l1_weight=0.2, l2_weight=0.3)
    x = torch.randn(3, 4, 8, 6)
    assert not torch.equal(head.train()(x), head(x))
    torch.testing.assert_close(head.eval()(x), x.flatten(1) @ head.linear.weight.T + head.bias)
    w = head.linear.weight
    torch.testing.assert_close(head.regularizer(), 0.2 * w.abs().sum() + 0.3 * 0.5 * w.pow(2).sum())


def test_numpy_integers_are_integers():
    head = FullyConnectedReadout(np.array([4, 8, 8]), np.int64(5))
    assert head.in_shape == (4, 8, 8) and head.outdims == 5


@pytest.mark.parametrize("x,error,message", [
    (torch.randn(2, 4, 8, 7), ValueError, r"x must have shape \(B, C, H, W\) = \(B, 4, 8, 8\) to match in_shape, "
                                          r"got \(2, 4, 8, 7\)"),
    (torch.randn(2, 256), ValueError, r"x must have shape .* got \(2, 256\)"),
    (torch.randn(2, 2, 16, 8), ValueError, r"x must have shape .* got \(2, 2, 16, 8\)"),  # same size, wrong layout
    ([[1.0]], TypeError, r"x must be a torch.Tensor of shape \(B, C, H, W\) = \(B, 4, 8, 8\), got list"),
    (torch.randn(2, 4, 8, 8, dtype=torch.float64), TypeError, r"x has dtype torch.float64 but the readout's "
                                                              r"parameters have torch.float32"),
])
def test_bad_input_names_x_and_the_expected_shape(x, error, message):
    head = FullyConnectedReadout((4, 8, 8), 5)
    with pytest.raises(error, match=message):
        head(x)
