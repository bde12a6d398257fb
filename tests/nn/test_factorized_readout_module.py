"""FactorizedReadout against the neuralpredictors FullFactorized2d computation, written out here."""
import pytest
import torch

from daenr_fast.nn import FactorizedReadout, FullSXF, SpatialXFeatureLinear


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
    assert FullSXF is FactorizedReadout


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
    with pytest.raises(ValueError, match="shift must be None"):
        readout(x, shift=torch.zeros(2, 2))


def test_bad_construction_and_input():
    with pytest.raises(ValueError, match="in_shape must be"):
        FactorizedReadout((4, 5), 7)
    with pytest.raises(ValueError, match="outdims must be"):
        FactorizedReadout((4, 5, 6), 0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\) = \(B, 4, 5, 6\)"):
        FactorizedReadout((4, 5, 6), 7)(torch.randn(2, 4, 6, 5))
