"""FactorizedReadout against the two-einsum formulation of the factorized readout, and its argument checks.

The comparisons with the real neuralpredictors package are in test_neuralpredictors_compat.py."""
import pytest
import torch

from daenr_fast.nn import FactorizedReadout, FullFactorized2d, FullSXF, SpatialXFeatureLinear


def neuralpredictors_forward(x, spatial, features, bias, normalize=True):
    """FullFactorized2d.forward: L2-normalised mask, then the two einsums ncwh,owh->nco and nco,oc->no."""
    if normalize:
        norm = spatial.pow(2).sum(dim=1, keepdim=True)
        norm = norm.sum(dim=2, keepdim=True).sqrt().expand_as(spatial) + 1e-6
        spatial = spatial / norm
    y = torch.einsum("ncwh,owh->nco", x, spatial)
    y = torch.einsum("nco,oc->no", y, features)
    return y + bias if bias is not None else y


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("normalize", [True, False])
def test_outputs_and_gradients_match_neuralpredictors(backend, normalize):
    torch.manual_seed(0)
    readout = FactorizedReadout((48, 16, 16), 103, bias=True, normalize=normalize, init_noise=0.1, backend=backend)
    with torch.no_grad():
        readout.bias.normal_()
    x = torch.randn(13, 48, 16, 16, requires_grad=True)
    y = readout(x)
    g = torch.randn_like(y)
    y.backward(g)
    ours = [x.grad.clone(), readout.spatial.grad.clone(), readout._features.grad.clone(), readout.bias.grad.clone()]

    sp = readout.spatial.detach().clone().requires_grad_()
    ft = readout._features.detach().clone().requires_grad_()
    bs = readout.bias.detach().clone().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    y_np = neuralpredictors_forward(x2, sp, ft, bs, normalize)
    y_np.backward(g)
    torch.testing.assert_close(y, y_np, rtol=1e-4, atol=1e-5)
    for got, want in zip(ours, [x2.grad, sp.grad, ft.grad, bs.grad]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_state_dict_names_match_neuralpredictors():
    readout = FactorizedReadout((4, 5, 6), 7, bias=True)
    assert set(readout.state_dict()) == {"spatial", "_features", "bias"}
    assert readout.spatial.shape == (7, 5, 6) and readout._features.shape == (7, 4) and readout.bias.shape == (7,)
    other = SpatialXFeatureLinear((4, 5, 6), 7, bias=True)
    other.load_state_dict(readout.state_dict())
    x = torch.randn(2, 4, 5, 6)
    torch.testing.assert_close(other(x), readout(x))
    assert issubclass(FullSXF, FullFactorized2d) and issubclass(SpatialXFeatureLinear, FullFactorized2d)
    assert FullSXF is not FullFactorized2d  # distinct subclasses, as in neuralpredictors


def test_no_bias():
    readout = FactorizedReadout((4, 5, 6), 7, bias=False)
    assert readout.bias is None and "bias" not in readout.state_dict()
    assert readout(torch.randn(3, 4, 5, 6)).shape == (3, 7)


def test_initialize_with_mean_activity():
    mean = torch.arange(7, dtype=torch.float32)
    readout = FactorizedReadout((4, 5, 6), 7, bias=True, mean_activity=mean)
    torch.testing.assert_close(readout.bias.detach(), mean)
    readout.initialize(torch.ones(7))
    torch.testing.assert_close(readout.bias.detach(), torch.ones(7))
    with pytest.raises(ValueError, match="mean_activity must have 7 entries"):
        readout.initialize(torch.ones(3))


def test_regularizer_sum_and_mean():
    readout = FactorizedReadout((4, 5, 6), 7, bias=True, init_noise=0.3, spatial_and_feature_reg_weight=2.5)
    ms = readout.normalized_spatial.detach()
    f = readout.features.detach()
    expected = sum(ms[n].abs().sum() * f[n].abs().sum() for n in range(7)) * 2.5
    torch.testing.assert_close(readout.regularizer(), expected)
    torch.testing.assert_close(readout.regularizer("mean"), expected / (7 * 4 * 5 * 6))
    with pytest.warns(UserWarning, match="average= is deprecated"):
        torch.testing.assert_close(readout.regularizer(average=True), expected / (7 * 4 * 5 * 6))
    with pytest.raises(ValueError, match="reduction must be 'sum' or 'mean'"):
        readout.regularizer("none")


def test_positive_constraints():
    readout = FactorizedReadout((4, 5, 6), 7, init_noise=0.5, positive_weights=True, positive_spatial=True)
    readout(torch.randn(2, 4, 5, 6))
    assert (readout.features >= 0).all()
    assert (readout.normalized_spatial >= 0).all()
    constrained = FactorizedReadout((4, 5, 6), 7, init_noise=0.5, constrain_pos=True, normalize=False)
    constrained(torch.randn(2, 4, 5, 6))
    assert (constrained.features >= 0).all() and (constrained.spatial >= 0).all()


def test_forward_ignores_unknown_kwargs_and_refuses_shift():
    readout = FactorizedReadout((4, 5, 6), 7)
    x = torch.randn(2, 4, 5, 6)
    torch.testing.assert_close(readout(x, data_key="session1", pupil_center=None), readout(x))
    with pytest.raises(NotImplementedError, match="pass shift=None"):  # as neuralpredictors
        readout(x, shift=torch.zeros(2, 2))


def test_bad_construction_and_input():
    with pytest.raises(ValueError, match="in_shape must be"):
        FactorizedReadout((4, 5), 7)
    with pytest.raises(ValueError, match="outdims must be"):
        FactorizedReadout((4, 5, 6), 0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\) = \(B, 4, 5, 6\)"):
        FactorizedReadout((4, 5, 6), 7)(torch.randn(2, 4, 6, 5))


@pytest.mark.filterwarnings("ignore:gamma_readout is deprecated")
@pytest.mark.parametrize("kwargs, error, match", [
    ({"outdims": 2.7}, TypeError, "outdims must be an integer"),
    ({"outdims": True}, TypeError, "outdims must be an integer"),
    ({"outdims": -3}, ValueError, "outdims must be an integer >= 1"),
    ({"in_shape": (4, 5.5, 6)}, TypeError, r"in_shape\[1\] must be an integer"),
    ({"in_shape": (4, 0, 6)}, ValueError, r"in_shape\[1\] must be an integer >= 1"),
    ({"init_noise": -1e-3}, ValueError, "init_noise must be a finite real number >= 0"),
    ({"init_noise": float("nan")}, ValueError, "init_noise must be a finite"),
    ({"spatial_and_feature_reg_weight": float("inf")}, ValueError, "spatial_and_feature_reg_weight must be"),
    ({"gamma_readout": -1.0}, ValueError, "gamma_readout must be"),
    ({"bias": "yes"}, TypeError, "bias must be True or False"),
    ({"normalize": None}, TypeError, "normalize must be True or False"),
    ({"l1_pairs": "diagonal"}, ValueError, "l1_pairs must be one of"),
    ({"mean_activity": torch.ones(3)}, ValueError, "mean_activity must have 7 entries"),
    ({"unknown_option": 1}, TypeError, "unknown_option"),
])
def test_bad_arguments_are_refused_by_name(kwargs, error, match):
    args = {"in_shape": (4, 5, 6), "outdims": 7, **kwargs}
    with pytest.raises(error, match=match):
        FactorizedReadout(**args)


def test_numpy_integers_are_integers():
    np = pytest.importorskip("numpy")
    readout = FullFactorized2d((np.int64(4), 5, 6), np.int64(7), np.bool_(True))
    assert readout.outdims == 7 and type(readout.outdims) is int and readout.bias is not None


def test_native_options_fix_the_neuralpredictors_quirks():
    ids = [0, 1, 0, 2, 1, 2, 0]
    kwargs = {"in_shape": (4, 5, 6), "outdims": 7, "init_noise": 0.5, "positive_weights": True,
              "shared_features": {"match_ids": ids}}
    native = FactorizedReadout(**kwargs)
    with torch.no_grad():
        native.scales.normal_()
    native(torch.randn(2, 4, 5, 6))
    assert (native.features >= 0).all() and (native.scales >= 0).all()  # clamped before the forward
    quirky = FullFactorized2d(bias=True, **kwargs)
    quirky(torch.randn(2, 4, 5, 6))
    assert (quirky.features < 0).any()  # neuralpredictors: positive_weights acts only when .weight is read
    as_np = FactorizedReadout(l1_pairs="all", positive_features_in_forward=False, copy_mean_activity=False,
                              **kwargs)
    as_np.load_state_dict(quirky.state_dict())
    torch.testing.assert_close(as_np.regularizer(), quirky.regularizer())
