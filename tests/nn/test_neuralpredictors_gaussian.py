"""Drop-in exactness of daenr_fast.nn.FullGaussian2d against the real neuralpredictors (tests/requirements-compat.txt):
construction under one seed, outputs and every gradient (sampled positions drawn from the same seed), every
gauss_type, shared features and grids, the grid mean predictor, regularizers, state_dicts both ways, and a 100-step
Adam training run.

Skipped when neuralpredictors is not installed, except under ``CI`` (set in CI), where its absence is a failure.
"""
import importlib
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from daenr_fast import nn as dnn


def _require(name):
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name)


npr = _require("neuralpredictors.layers.readouts")

# neuralpredictors warns at every construction without mean_activity, for gamma_readout and for average=
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BACKENDS = ["torch", None]  # None: the default dispatch (the compiled cpu extension when it builds)
IN_SHAPE = (5, 6, 9)  # non-square: a swapped H/W would show
N = 11
MATCH_IDS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]  # 7 unique ids for 11 neurons
SOURCE_GRID = np.random.default_rng(0).normal(size=(N, 3))
CONFIGS = {
    "full": {},
    "uncorrelated": {"gauss_type": "uncorrelated"},
    "isotropic": {"gauss_type": "isotropic"},
    "no_batch_sample": {"batch_sample": False},
    "no_align_corners": {"align_corners": False},
    "no_bias": {"bias": False},
    "wide": {"init_mu_range": 1.0, "init_sigma": 0.6},  # positions often clamped to the border
    "mean_activity": {"mean_activity": torch.linspace(0.1, 2.0, N)},
    "shared_features": {"shared_features": {"match_ids": MATCH_IDS}},
    "shared_grid": {"shared_grid": {"match_ids": MATCH_IDS}},
    "shared_both_isotropic": {"shared_features": {"match_ids": MATCH_IDS}, "shared_grid": {"match_ids": MATCH_IDS},
                              "gauss_type": "isotropic"},
    "grid_mean_predictor": {"grid_mean_predictor": {"hidden_layers": 1, "hidden_features": 8, "final_tanh": True},
                            "source_grid": SOURCE_GRID},
    "grid_mean_predictor_linear": {"grid_mean_predictor": {}, "source_grid": SOURCE_GRID},
    "reg_weight": {"feature_reg_weight": 0.37},
    "gamma_readout": {"gamma_readout": 2.5},
}
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-11, atol=1e-13)}


def _kwargs(config):
    kwargs = {"bias": True, "init_sigma": 0.4, "init_mu_range": 0.8, **CONFIGS[config]}
    if "mean_activity" in kwargs:
        kwargs["mean_activity"] = kwargs["mean_activity"].clone()  # neuralpredictors keeps the tensor as its bias
    return kwargs


def make_pair(config, backend=None, seed=0, dtype=torch.float32, kwargs=None):
    """(theirs, ours) built from the same seed; ours must come out identical without any copying."""
    kwargs = _kwargs(config) if kwargs is None else kwargs
    theirs_kwargs = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in kwargs.items()}
    torch.manual_seed(seed)
    theirs = npr.FullGaussian2d(IN_SHAPE, N, **theirs_kwargs).to(dtype)
    torch.manual_seed(seed)
    ours = dnn.FullGaussian2d(IN_SHAPE, N, backend=backend, **kwargs).to(dtype)
    return theirs, ours


def assert_same_state(theirs, ours, **tol):
    want, got = theirs.state_dict(), ours.state_dict()
    assert list(got) == list(want)
    for key in want:
        assert got[key].shape == want[key].shape and got[key].dtype == want[key].dtype, key
        torch.testing.assert_close(got[key], want[key], **tol, msg=lambda m: f"{key}: {m}")


def run(module, x, seed, **kwargs):
    """Output and the gradients of sum(y * g) for x and every parameter, the positions drawn after ``seed``."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(seed)
    y = module(x, **kwargs)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(99), dtype=y.dtype)
    (y * g).sum().backward()
    grads = {name: (None if p.grad is None else p.grad.clone()) for name, p in module.named_parameters()}
    return y.detach(), x.grad, grads


def assert_same_run(theirs, ours, x, seed=5, tol=None, **kwargs):
    tol = tol or TOL[x.dtype]
    y_t, gx_t, g_t = run(theirs, x, seed, **kwargs)
    y_o, gx_o, g_o = run(ours, x, seed, **kwargs)
    torch.testing.assert_close(y_o, y_t, **tol, msg=lambda m: f"output: {m}")
    torch.testing.assert_close(gx_o, gx_t, **tol, msg=lambda m: f"grad x: {m}")
    assert list(g_o) == list(g_t)
    for name in g_t:
        assert (g_o[name] is None) == (g_t[name] is None), name
        if g_t[name] is not None:
            torch.testing.assert_close(g_o[name], g_t[name], **tol, msg=lambda m: f"grad {name}: {m}")
    assert_same_state(theirs, ours, **tol)  # the in-place clamp of _mu


def _input(dtype=torch.float32, batch=4, shape=IN_SHAPE, seed=3):
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# ------------------------------------------------------------------------------------------- construction

def test_signature_matches_the_release():
    import inspect

    theirs = inspect.signature(npr.FullGaussian2d).parameters
    ours = inspect.signature(dnn.FullGaussian2d).parameters
    names = [k for k, p in theirs.items() if p.kind != p.VAR_KEYWORD]
    assert list(ours)[:len(names)] == names
    for name in names:
        if name != "feature_reg_weight":  # None (main) = 1.0 (the release): both unset means 1.0
            assert ours[name].default == theirs[name].default, name


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_same_seed_gives_the_same_parameters_buffers_and_order(config):
    theirs, ours = make_pair(config)
    assert_same_state(theirs, ours, rtol=0, atol=0)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert repr(ours) == repr(theirs)
    assert ours.feature_reg_weight == theirs.feature_reg_weight
    for attr in ("_predicted_grid", "_shared_grid", "_original_grid", "_shared_features", "_original_features",
                 "grid_shape", "sigma_shape", "outdims", "batch_sample", "align_corners", "gauss_type"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr


# ------------------------------------------------------------------------------------------- forward, gradients

@pytest.mark.parametrize("backend", BACKENDS, ids=["torch", "default"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("mode", ["train", "eval", "sample_true_in_eval", "sample_false_in_train"])
def test_outputs_gradients_and_clamps_match(config, backend, mode):
    theirs, ours = make_pair(config, backend)
    training = mode.startswith("train") or mode.endswith("train")
    theirs.train(training)
    ours.train(training)
    kwargs = {"sample": True} if mode == "sample_true_in_eval" else {"sample": False} if "false" in mode else {}
    assert_same_run(theirs, ours, _input(), **kwargs)


@pytest.mark.parametrize("backend", BACKENDS, ids=["torch", "default"])
@pytest.mark.parametrize("config", ["full", "no_batch_sample", "no_align_corners"])
def test_float64(config, backend):
    theirs, ours = make_pair(config, backend, dtype=torch.float64)
    assert_same_run(theirs, ours, _input(torch.float64))


@pytest.mark.parametrize("backend", BACKENDS, ids=["torch", "default"])
@pytest.mark.parametrize("config", ["full", "no_batch_sample", "shared_features"])
def test_shift_moves_positions_off_the_map(config, backend):
    theirs, ours = make_pair(config, backend)
    shift = torch.tensor([[0.0, 0.0], [0.7, -0.2], [-1.6, 0.4], [2.5, 2.5]])  # the last leaves the map
    assert_same_run(theirs, ours, _input(), shift=shift)


@pytest.mark.parametrize("backend", BACKENDS, ids=["torch", "default"])
@pytest.mark.parametrize("out_idx", [[0, 3, 4, 10], np.array([5, 1, 1]),
                                     np.array([True, False] * 5 + [True]), torch.tensor([2, 7])],
                         ids=["list", "array", "mask", "tensor"])
@pytest.mark.parametrize("config", ["full", "no_batch_sample", "shared_features"])
def test_out_idx(config, out_idx, backend):
    theirs, ours = make_pair(config, backend)
    assert_same_run(theirs, ours, _input(), out_idx=out_idx)


def test_other_map_size_warns_and_reads_as_neuralpredictors():
    theirs, ours = make_pair("full")
    x = _input(shape=(IN_SHAPE[0], 8, 5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_same_run(theirs, ours, x)
    assert any("expected input dimension" in str(w.message) for w in caught)


def test_grid_and_mu_dispersion():
    theirs, ours = make_pair("full")
    torch.testing.assert_close(ours.grid, theirs.grid, rtol=0, atol=0)
    torch.testing.assert_close(ours.mu_dispersion, theirs.mu_dispersion, rtol=0, atol=0)
    assert ours.grid.shape == (1, N, 1, 2)


def test_a_mean_activity_of_another_dtype_becomes_the_bias_and_promotes_the_output():
    mean = torch.linspace(0.1, 2.0, N, dtype=torch.float64)
    torch.manual_seed(0)
    theirs = npr.FullGaussian2d(IN_SHAPE, N, True, mean_activity=mean.clone())
    torch.manual_seed(0)
    ours = dnn.FullGaussian2d(IN_SHAPE, N, True, mean_activity=mean.clone())
    assert ours.bias.dtype == theirs.bias.dtype == torch.float64
    assert_same_run(theirs, ours, _input())


def test_mean_activity_becomes_the_bias_storage():
    mean = torch.linspace(0.5, 1.5, N)
    ours = dnn.FullGaussian2d(IN_SHAPE, N, True, mean_activity=mean)
    assert ours.bias.data_ptr() == mean.data_ptr()
    ours.initialize()  # again from the constructor's mean_activity
    torch.testing.assert_close(ours.bias.detach(), mean)


# ------------------------------------------------------------------------------------------- regularizer

@pytest.mark.parametrize("config", ["full", "shared_features", "reg_weight", "gamma_readout"])
@pytest.mark.parametrize("reduction", ["sum", "mean", None])
def test_regularizer_values_and_gradients(config, reduction):
    theirs, ours = make_pair(config)
    for module in (theirs, ours):
        module._features.data.normal_(generator=torch.Generator().manual_seed(1))
    want, got = theirs.regularizer(reduction), ours.regularizer(reduction)
    torch.testing.assert_close(got, want)
    for average in (True, False):
        torch.testing.assert_close(ours.regularizer(average=average), theirs.regularizer(average=average))
    got.sum().backward()
    want.sum().backward()
    for (name, p_t), p_o in zip(theirs.named_parameters(), ours.parameters()):
        assert (p_o.grad is None) == (p_t.grad is None), name
        if p_t.grad is not None:
            torch.testing.assert_close(p_o.grad, p_t.grad, msg=lambda m: f"{name}: {m}")


# ------------------------------------------------------------------------------------------- state_dicts, sharing

@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_state_dict_round_trips_both_ways(config):
    theirs, _ = make_pair(config, seed=1)
    _, ours = make_pair(config, seed=2)
    ours.load_state_dict(theirs.state_dict())
    assert_same_state(theirs, ours, rtol=0, atol=0)
    theirs_again, _ = make_pair(config, seed=3)
    theirs_again.load_state_dict(ours.state_dict())
    assert_same_state(theirs_again, ours, rtol=0, atol=0)
    theirs.eval()
    ours.eval()
    assert_same_run(theirs, ours, _input())


@pytest.mark.parametrize("backend", BACKENDS, ids=["torch", "default"])
def test_features_and_grid_shared_between_two_readouts(backend):
    ids = {"a": MATCH_IDS, "b": MATCH_IDS[::-1]}

    def build(cls, **extra):
        torch.manual_seed(0)
        first = cls(IN_SHAPE, N, True, shared_features={"match_ids": ids["a"]}, shared_grid={"match_ids": ids["a"]},
                    **extra)
        second = cls(IN_SHAPE, N, True,
                     shared_features={"match_ids": ids["b"], "shared_features": first.shared_features},
                     shared_grid={"match_ids": ids["b"], "shared_grid": first.shared_grid}, **extra)
        return first, second

    theirs = build(npr.FullGaussian2d)
    ours = build(dnn.FullGaussian2d, backend=backend)
    assert ours[1].shared_features is ours[0].shared_features and ours[1].shared_grid is ours[0].shared_grid
    for t, o in zip(theirs, ours):
        assert repr(o) == repr(t)
        assert_same_state(t, o, rtol=0, atol=0)
        assert o.regularizer() == t.regularizer() or float(o.regularizer()) == float(t.regularizer())
    for t, o in zip(theirs, ours):
        assert_same_run(t, o, _input())


def test_neuralpredictors_multi_readout_builds_ours():
    multi = _require("neuralpredictors.layers.readouts.multi_readout")

    class Ours(multi.MultiReadoutSharedParametersBase):
        _base_readout = dnn.FullGaussian2d

    class Theirs(multi.MultiReadoutSharedParametersBase):
        _base_readout = npr.FullGaussian2d

    shapes = {"s1": IN_SHAPE, "s2": IN_SHAPE}
    neurons = {"s1": N, "s2": N}
    kwargs = dict(bias=True, share_features=True, share_grid=True, gauss_type="uncorrelated",
                  shared_match_ids={"s1": np.array(MATCH_IDS), "s2": np.array(MATCH_IDS[::-1])})
    torch.manual_seed(0)
    theirs = Theirs(shapes, neurons, **kwargs)
    torch.manual_seed(0)
    ours = Ours(shapes, neurons, **kwargs)
    assert_same_state(theirs, ours, rtol=0, atol=0)
    x = _input()
    for key in shapes:
        torch.manual_seed(4)
        want = theirs(x, data_key=key)
        torch.manual_seed(4)
        got = ours(x, data_key=key)
        torch.testing.assert_close(got, want, **TOL[torch.float32])
    torch.testing.assert_close(ours.regularizer("s2"), theirs.regularizer("s2"))


# ------------------------------------------------------------------------------------------- refused arguments

@pytest.mark.parametrize("kwargs, error, match", [
    ({"bogus": 1}, TypeError, "bogus"),
    ({"shared_transform": torch.nn.Linear(2, 2)}, NotImplementedError, "shared_transform"),
    ({"feature_reg_weight": 1.0, "gamma_readout": 2.0}, ValueError, "not both"),
    ({"grid_mean_predictor": {"hidden_layers": 1}}, ValueError, "source_grid"),
    ({"grid_mean_predictor": {}, "source_grid": SOURCE_GRID[:4]}, ValueError, "source_grid"),
    ({"grid_mean_predictor": {"layers": 2}, "source_grid": SOURCE_GRID}, TypeError, "layers"),
    ({"grid_mean_predictor": {}, "source_grid": SOURCE_GRID, "shared_grid": {"match_ids": MATCH_IDS}},
     ValueError, "both"),
    ({"source_grid": SOURCE_GRID}, ValueError, "source_grid"),
    ({"shared_grid": {}}, ValueError, "match_ids"),
    ({"shared_grid": {"match_ids": MATCH_IDS[:3]}}, ValueError, "match_ids"),
    ({"shared_features": {"shared_features": torch.zeros(1, 5, 1, 3)}}, ValueError, "match_ids"),
    ({"shared_features": {"match_ids": MATCH_IDS, "shared_features": torch.zeros(1, 5, 1, 3)}}, ValueError,
     r"\(1, 5, 1, 7\)"),
    ({"gauss_type": "diagonal"}, ValueError, "gauss_type"),
    ({"init_mu_range": 1.5}, ValueError, "init_mu_range"),
    ({"init_sigma": 0.0}, ValueError, "init_sigma"),
    ({"mean_activity": torch.ones(3)}, ValueError, "mean_activity"),
])
def test_what_neuralpredictors_swallows_or_fails_on_is_refused_by_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        dnn.FullGaussian2d(IN_SHAPE, N, True, **kwargs)


def test_forward_refuses_unknown_keywords_and_other_channel_counts():
    ours = dnn.FullGaussian2d(IN_SHAPE, N, True)
    ours(_input(), data_key="session")  # selects a readout of a multi-readout: nothing to do here
    with pytest.raises(TypeError, match="detach"):
        ours(_input(), detach=True)
    with pytest.raises(ValueError, match="channels"):
        ours(_input(shape=(4, 6, 9)))


# ------------------------------------------------------------------------------------------- training

class Core(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3)
        self.conv2 = torch.nn.Conv2d(8, IN_SHAPE[0], 3)

    def forward(self, x):
        return F.elu(self.conv2(F.elu(self.conv1(x))))


def _train(readout, core, images, targets, steps):
    model = torch.nn.ModuleDict({"core": core, "readout": readout})
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(steps):
        batch = slice((step * 16) % 64, (step * 16) % 64 + 16)
        torch.manual_seed(1000 + step)  # the positions sampled at this step
        rates = F.elu(readout(core(images[batch]))) + 1
        loss = (rates - targets[batch] * torch.log(rates + 1e-8)).mean() + 0.1 * readout.regularizer()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses), model


@pytest.mark.parametrize("backend", BACKENDS, ids=["torch", "default"])
@pytest.mark.parametrize("config", ["full", "isotropic", "shared_both_isotropic", "no_batch_sample"])
def test_training_100_adam_steps_gives_the_same_losses(backend, config):
    gen = torch.Generator().manual_seed(10)
    images = torch.randn(64, 1, IN_SHAPE[1] + 4, IN_SHAPE[2] + 4, generator=gen)
    targets = torch.poisson(torch.rand(64, N, generator=gen) * 3, generator=gen)
    torch.manual_seed(11)
    core = Core()
    core_copy = Core()
    core_copy.load_state_dict(core.state_dict())
    theirs, ours = make_pair(config, backend)
    want, model_t = _train(theirs, core, images, targets, 100)
    got, model_o = _train(ours, core_copy, images, targets, 100)
    rel = ((got - want).abs() / want.abs()).max().item()
    assert rel < 1e-5, f"max relative loss difference over 100 steps: {rel:.3g}"
    assert want[-1] < 0.9 * want[0]  # it did train
    for (key, p_t), p_o in zip(model_t.named_parameters(), model_o.parameters()):
        drift = ((p_o - p_t).abs().max() / p_t.abs().max().clamp_min(1e-12)).item()
        assert drift < 1e-4, f"{key}: parameters after 100 steps differ by {drift:.3g} of their largest entry"
