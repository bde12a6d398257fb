"""daenr_fast.nn.FullGaussian2d on its own (the comparison with neuralpredictors is in
test_neuralpredictors_gaussian.py): the readout equals the reference formulation on every CPU backend, sampling
in training and the mean in eval, the in-place clamp of ``_mu``, ``return_weighted_features``, argument checks,
positional arguments, dtype/device mismatches, float64, torch.func over the module."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from daenr_fast import nn as dnn
from daenr_fast.ops import reference

pytestmark = pytest.mark.filterwarnings("ignore:Readout is NOT initialized")

BACKENDS = ["torch", "cpu"]
IN_SHAPE = (4, 5, 7)
N = 9


def make(backend=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    return dnn.FullGaussian2d(IN_SHAPE, N, kwargs.pop("bias", True), backend=backend, **kwargs)


def x_of(batch=3, dtype=torch.float32, seed=1):
    return torch.randn(batch, *IN_SHAPE, generator=torch.Generator().manual_seed(seed)).to(dtype)


def formulation(module, x, grid):
    """grid_sample at ``grid`` (B,N,1,2), weighted by the module's features, plus its bias."""
    sampled = F.grid_sample(x, grid.expand(x.shape[0], -1, -1, -1), align_corners=module.align_corners)
    y = (sampled[..., 0] * module.features.reshape(IN_SHAPE[0], N)).sum(1)
    return y if module.bias is None else y + module.bias


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gauss_type", ["full", "uncorrelated", "isotropic"])
@pytest.mark.parametrize("batch_sample", [True, False])
def test_training_forward_samples_positions_and_matches_the_formulation(backend, gauss_type, batch_sample):
    module = make(backend, gauss_type=gauss_type, batch_sample=batch_sample, init_sigma=0.3, init_mu_range=0.7)
    x = x_of()
    torch.manual_seed(5)
    y = module(x)
    torch.manual_seed(5)
    grid = module.sample_grid(x.shape[0] if batch_sample else 1, sample=True)
    torch.testing.assert_close(y, formulation(module, x, grid), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(module(x), y)  # a new sample


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_reads_at_the_mean_and_sample_overrides_the_mode(backend):
    module = make(backend, init_sigma=0.5).eval()
    x = x_of()
    y = module(x)
    torch.testing.assert_close(module(x), y, rtol=0, atol=0)
    torch.testing.assert_close(y, formulation(module, x, module.mu.clamp(-1, 1)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(module.train()(x, sample=False), y, rtol=0, atol=0)
    assert not torch.allclose(module.eval()(x, sample=True), y)


def test_forward_clamps_mu_in_place():
    module = make()
    with torch.no_grad():
        module._mu[0, :3, 0, 0] = torch.tensor([-3.0, 2.0, 0.5])
    module(x_of())
    assert module._mu[0, :3, 0, 0].tolist() == [-1.0, 1.0, 0.5]


@pytest.mark.parametrize("backend", BACKENDS)
def test_shift_and_out_idx(backend):
    module = make(backend).eval()
    x = x_of()
    shift = torch.tensor([[0.2, -0.1], [1.5, 0.0], [0.0, 3.0]])
    y = module(x, shift=shift)
    grid = module.mu.clamp(-1, 1) + shift[:, None, None, :]
    torch.testing.assert_close(y, formulation(module, x, grid), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(module(x, out_idx=[1, 4]), module(x)[:, [1, 4]])
    mask = np.zeros(N, dtype=bool)
    mask[[0, 8]] = True
    torch.testing.assert_close(module(x, out_idx=mask), module(x)[:, [0, 8]])


def test_return_weighted_features_gives_the_weighted_samples():
    plain = make(backend="torch").eval()
    weighted = make(backend="torch", return_weighted_features=True).eval()
    x = x_of()
    samples = weighted(x)
    assert samples.shape == (3, IN_SHAPE[0], N)
    torch.testing.assert_close(samples.sum(1) + plain.bias, plain(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_module_matches_the_reference_op(backend):
    module = make(backend).double().eval()
    x = x_of(dtype=torch.float64)
    want = reference.gaussian_readout(x, module.mu[0, :, 0].clamp(-1, 1), module.features.reshape(IN_SHAPE[0], N),
                                      module.bias)
    torch.testing.assert_close(module(x), want, rtol=1e-12, atol=1e-12)


def test_backends_agree_on_outputs_and_gradients():
    x = x_of()
    results = []
    for backend in BACKENDS:
        module = make(backend)
        torch.manual_seed(2)
        y = module(x)
        y.square().sum().backward()
        results.append((y.detach(), [p.grad for p in module.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)


def test_func_grad_over_the_module_parameters():
    module = make("cpu").eval()
    x = x_of()
    params = dict(module.named_parameters())

    def loss(p):
        return torch.func.functional_call(module, p, (x,)).square().sum()

    got = torch.func.grad(loss)({k: v.detach() for k, v in params.items()})
    loss(params).backward()
    for name, p in params.items():
        torch.testing.assert_close(got[name], p.grad, msg=lambda m: f"{name}: {m}")


def test_positional_arguments_follow_neuralpredictors():
    module = dnn.FullGaussian2d(IN_SHAPE, N, False, 0.5, 0.3, False, False, "isotropic")
    assert (module.bias, module.init_mu_range, module.init_sigma, module.batch_sample, module.align_corners,
            module.gauss_type) == (None, 0.5, 0.3, False, False, "isotropic")
    assert module.sigma.shape == (1, N, 1, 1)
    assert module.feature_reg_weight == 1.0


@pytest.mark.parametrize("kwargs, error, match", [
    ({"in_shape": (4, 5)}, ValueError, "in_shape"),
    ({"outdims": 2.5}, TypeError, "outdims"),
    ({"outdims": 0}, ValueError, "outdims"),
    ({"bias": "yes"}, TypeError, "bias"),
    ({"batch_sample": 1}, TypeError, "batch_sample"),
    ({"align_corners": None}, TypeError, "align_corners"),
    ({"init_sigma": float("nan")}, ValueError, "init_sigma"),
    ({"feature_reg_weight": "big"}, TypeError, "feature_reg_weight"),
    ({"return_weighted_features": 1}, TypeError, "return_weighted_features"),
    ({"shared_features": [1, 2]}, TypeError, "shared_features"),
    ({"shared_grid": {"match_ids": list(range(N)), "grid": None}}, TypeError, "grid"),
    ({"mean_activity": [1.0] * N}, TypeError, "mean_activity"),
])
def test_constructor_arguments_are_checked_by_name(kwargs, error, match):
    args = {"in_shape": IN_SHAPE, "outdims": N, "bias": True, **kwargs}
    with pytest.raises(error, match=match):
        dnn.FullGaussian2d(**args)


def test_x_of_another_dtype_or_shape_is_refused():
    module = make()
    with pytest.raises(TypeError, match="float64"):
        module(x_of(dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        module(x_of()[0])


def test_no_warning_beyond_neuralpredictors_own():
    module = make(mean_activity=torch.ones(N))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module(x_of())
