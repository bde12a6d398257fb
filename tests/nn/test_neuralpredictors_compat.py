"""Drop-in exactness against the real neuralpredictors (tests/requirements-compat.txt): FullFactorized2d,
SpatialXFeatureLinear, FullSXF and PoissonLoss, module by module, plus a 100-step training run.

Skipped when neuralpredictors is not installed, except when ``CI`` or ``DAENR_FAST_EXPECT_COMPILED`` (set by .ci/run)
is set: there its absence is a failure. Our side runs with backend="torch" and with the default dispatch (the
compiled cpu extension), and under ``DAENR_FAST_EXPECT_COMPILED`` also with backend="cpu" named, which fails
loudly if the extension is unavailable.
The tests run against the installed version, 0.3.0 from PyPI or the main branch: where the two differ (see
daenr_fast/nn/factorized_readout.py), the behaviour of the installed one is detected and compared, and the
documented difference checked otherwise.
"""
import importlib
import inspect
import os

import pytest
import torch
import torch.nn.functional as F


IN_CI = bool(os.environ.get("CI") or os.environ.get("DAENR_FAST_EXPECT_COMPILED"))


def _require(name):
    if IN_CI:
        return importlib.import_module(name)
    return pytest.importorskip(name)


_require("neuralpredictors")
npr = _require("neuralpredictors.layers.readouts")
npm = _require("neuralpredictors.measures.modules")

from daenr_fast import nn as dnn  # noqa: E402

# neuralpredictors warns at every construction without mean_activity (and for avg=True, deprecated arguments)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BACKENDS = ["torch", None] + (["cpu"] if os.environ.get("DAENR_FAST_EXPECT_COMPILED") else [])  # None: default
NAMES = ["FullFactorized2d", "SpatialXFeatureLinear", "FullSXF"]
NP_FACTORIZED = inspect.signature(npr.FullFactorized2d).parameters
NP_HAS_POSITIVE_SPATIAL = "positive_spatial" in NP_FACTORIZED  # main; the 0.3.0 release swallows it in **kwargs
NP_IS_MAIN = NP_HAS_POSITIVE_SPATIAL
NP_POISSON = inspect.signature(npm.PoissonLoss).parameters
NP_HAS_FULL_LOSS = "full_loss" in NP_POISSON  # main only
IN_SHAPE = (5, 6, 7)  # non-square: a swapped H/W would show
N = 11
MATCH_IDS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]  # 7 unique ids for 11 neurons

CONFIGS = {
    "default": {},
    "no_bias": {"bias": False},
    "unnormalized": {"normalize": False},
    "constrain_pos": {"constrain_pos": True},
    "constrain_pos_unnormalized": {"constrain_pos": True, "normalize": False},
    "positive_weights": {"positive_weights": True},
    "init_noise": {"init_noise": 0.3},
    "mean_activity": {"mean_activity": torch.linspace(0.1, 2.0, N)},
    "shared": {"shared_features": {"match_ids": MATCH_IDS}},
    "shared_constrain_pos": {"shared_features": {"match_ids": MATCH_IDS}, "constrain_pos": True},
    "shared_positive_weights": {"shared_features": {"match_ids": MATCH_IDS}, "positive_weights": True},
    "reg_weight": {"spatial_and_feature_reg_weight": 0.37},
    "gamma_readout": {"gamma_readout": 2.5},
}
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-11, atol=1e-13)}


def _kwargs(config):
    kwargs = {"init_noise": 0.2, "bias": True, **CONFIGS[config]}
    if "mean_activity" in kwargs:
        kwargs["mean_activity"] = kwargs["mean_activity"].clone()  # neuralpredictors keeps the tensor as its bias
    return kwargs


def make_pair(config, backend=None, name="FullFactorized2d", seed=0, dtype=torch.float32, kwargs=None):
    """(theirs, ours) built from the same seed; ours must come out identical without any copying."""
    kwargs = _kwargs(config) if kwargs is None else kwargs
    theirs_kwargs = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in kwargs.items()}
    torch.manual_seed(seed)
    theirs = getattr(npr, name)(IN_SHAPE, N, **theirs_kwargs).to(dtype)
    torch.manual_seed(seed)
    ours = getattr(dnn, name)(IN_SHAPE, N, backend=backend, **kwargs).to(dtype)
    return theirs, ours


def assert_same_state(theirs, ours, **tol):
    a, b = theirs.state_dict(), ours.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype, key
        torch.testing.assert_close(b[key], a[key], **tol, msg=key)


def release_repr(module):
    """neuralpredictors' repr as the 0.3.0 release writes it: main prints (C x W x H) for in_shape (C, H, W)."""
    text = repr(module)
    if NP_IS_MAIN:
        c, h, w = IN_SHAPE
        text = text.replace(f"({c} x {w} x {h} ->", f"({c} x {h} x {w} ->")
    return text


def run(module, x, g):
    """Output, then the gradients of x and of every parameter for the upstream gradient g."""
    x = x.clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    y = module(x)
    y.backward(g)
    grads = {name: p.grad for name, p in module.named_parameters()}
    return y.detach(), x.grad, grads


# ----------------------------------------------------------------------------------------------- FullFactorized2d


@pytest.mark.parametrize("name", NAMES)
def test_class_structure_matches(name):
    theirs, ours = getattr(npr, name), getattr(dnn, name)
    if name != "FullFactorized2d":
        assert issubclass(theirs, npr.FullFactorized2d) and theirs is not npr.FullFactorized2d
        assert issubclass(ours, dnn.FullFactorized2d) and ours is not dnn.FullFactorized2d
    for arg, param in NP_FACTORIZED.items():
        if arg in ("kwargs", "self"):
            continue
        assert arg in inspect.signature(ours).parameters, arg
    ours_params = inspect.signature(ours).parameters
    assert ours_params["bias"].default is inspect.Parameter.empty  # bias is required, as in neuralpredictors
    for arg in ("normalize", "init_noise", "constrain_pos", "positive_weights", "shared_features", "mean_activity",
                "gamma_readout"):
        assert ours_params[arg].default == NP_FACTORIZED[arg].default, arg
    public = {m for m in dir(theirs) if not m.startswith("_")} - set(dir(torch.nn.Module))
    assert public <= set(dir(ours)), public - set(dir(ours))


@pytest.mark.parametrize("config", CONFIGS)
def test_same_seed_gives_the_same_parameters_buffers_and_order(config):
    theirs, ours = make_pair(config)
    assert_same_state(theirs, ours, rtol=0, atol=0)
    assert [n for n, _ in theirs.named_parameters()] == [n for n, _ in ours.named_parameters()]
    assert repr(ours) == release_repr(theirs)
    assert ours.spatial_and_feature_reg_weight == theirs.spatial_and_feature_reg_weight


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", CONFIGS)
def test_forward_gradients_and_in_place_clamps_match(config, backend, dtype):
    theirs, ours = make_pair(config, backend, dtype=dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, *IN_SHAPE, generator=gen, dtype=dtype)
    g = torch.randn(4, N, generator=gen, dtype=dtype)
    tol = TOL[dtype]
    for step in range(2):  # the second pass sees the parameters the first clamped in place
        y_t, gx_t, grads_t = run(theirs, x, g)
        y_o, gx_o, grads_o = run(ours, x, g)
        torch.testing.assert_close(y_o, y_t, **tol)
        torch.testing.assert_close(gx_o, gx_t, **tol)
        assert list(grads_o) == list(grads_t)
        for key in grads_t:
            torch.testing.assert_close(grads_o[key], grads_t[key], **tol, msg=f"step {step}: {key}")
        assert_same_state(theirs, ours, **tol)
        with torch.no_grad():  # move the parameters as a step would, so clamps have something to do
            for p_t, p_o in zip(theirs.parameters(), ours.parameters()):
                if p_t.grad is not None:
                    p_t.sub_(0.5 * p_t.grad.sign() * p_t.abs().mean())
                    p_o.copy_(p_t)
    torch.testing.assert_close(ours.features, theirs.features, **tol)
    torch.testing.assert_close(ours.normalized_spatial, theirs.normalized_spatial, **tol)
    weight_t = theirs.weight  # reading weight clamps the features (positive_weights)
    if NP_IS_MAIN:  # main lays the mask out as (W, H): the same memory under a transposed shape
        assert weight_t.shape == (N, IN_SHAPE[0], IN_SHAPE[2], IN_SHAPE[1])
        weight_t = weight_t.reshape(N, *IN_SHAPE)
    torch.testing.assert_close(ours.weight, weight_t, **tol)
    assert_same_state(theirs, ours, **tol)
    y_t, _, _ = run(theirs, x, g)
    y_o, _, _ = run(ours, x, g)
    torch.testing.assert_close(y_o, y_t, **tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_positive_spatial(backend):
    """main: |normalized spatial|; the 0.3.0 release swallows positive_spatial, so compare with a release readout
    whose mask holds |spatial| (the same forward; the mask gradient times sign(spatial))."""
    kwargs = {"bias": True, "init_noise": 0.2}
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, *IN_SHAPE, generator=gen, dtype=torch.float64)
    g = torch.randn(3, N, generator=gen, dtype=torch.float64)
    torch.manual_seed(0)
    ours = dnn.FullFactorized2d(IN_SHAPE, N, positive_spatial=True, backend=backend, **kwargs).double()
    if NP_HAS_POSITIVE_SPATIAL:
        torch.manual_seed(0)
        theirs = npr.FullFactorized2d(IN_SHAPE, N, positive_spatial=True, **kwargs).double()
        sign = torch.ones_like(ours.spatial)
    else:
        theirs = npr.FullFactorized2d(IN_SHAPE, N, **kwargs).double()
        theirs.load_state_dict(ours.state_dict())
        with torch.no_grad():
            theirs.spatial.abs_()
        sign = ours.spatial.detach().sign()
    y_t, gx_t, grads_t = run(theirs, x, g)
    y_o, gx_o, grads_o = run(ours, x, g)
    tol = TOL[torch.float64]
    torch.testing.assert_close(y_o, y_t, **tol)
    torch.testing.assert_close(gx_o, gx_t, **tol)
    torch.testing.assert_close(grads_o["spatial"], grads_t["spatial"] * sign, **tol)
    for key in ("_features", "bias"):
        torch.testing.assert_close(grads_o[key], grads_t[key], **tol)
    torch.testing.assert_close(ours.regularizer(), theirs.regularizer(), **tol)
    with pytest.warns(UserWarning, match="only constrain_pos"):
        dnn.FullFactorized2d(IN_SHAPE, N, True, positive_spatial=True, constrain_pos=True)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("config", CONFIGS)
def test_regularizer_and_l1_values_and_gradients(config, reduction):
    theirs, ours = make_pair(config, dtype=torch.float64)
    tol = TOL[torch.float64]
    for method in ("regularizer", "l1"):
        for kwargs in ({"reduction": reduction}, {"average": reduction == "mean"}):
            theirs.zero_grad(set_to_none=True)
            ours.zero_grad(set_to_none=True)
            r_t = getattr(theirs, method)(**kwargs)
            r_o = getattr(ours, method)(**kwargs)
            torch.testing.assert_close(r_o, r_t, **tol)
            r_t.backward()
            r_o.backward()
            for (key, p_t), p_o in zip(theirs.named_parameters(), ours.parameters()):
                if p_t.grad is None:
                    assert p_o.grad is None, key
                else:
                    torch.testing.assert_close(p_o.grad, p_t.grad, **tol, msg=key)
    with pytest.raises(ValueError):
        theirs.regularizer(reduction=None)
    with pytest.raises(ValueError, match="reduction=None"):
        ours.regularizer(reduction=None)


def test_regularizer_sums_over_all_neuron_pairs_and_native_over_each_neuron():
    theirs, ours = make_pair("default", dtype=torch.float64)
    spatial = ours.normalized_spatial.detach().flatten(1).abs().sum(1)
    features = ours.features.detach().abs().sum(1)
    torch.testing.assert_close(theirs.regularizer(), spatial.sum() * features.sum())
    native = dnn.FactorizedReadout(IN_SHAPE, N).double()
    native.load_state_dict(ours.state_dict())
    torch.testing.assert_close(native.regularizer(), (spatial * features).sum())
    native_all = dnn.FactorizedReadout(IN_SHAPE, N, l1_pairs="all").double()
    native_all.load_state_dict(ours.state_dict())
    torch.testing.assert_close(native_all.regularizer(), theirs.regularizer())


@pytest.mark.parametrize("config", ["default", "no_bias", "shared", "mean_activity"])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trips_both_ways(config, name):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, *IN_SHAPE, generator=gen)
    theirs, ours = make_pair(config, name=name, seed=4)
    other_theirs, other_ours = make_pair(config, name=name, seed=5)
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn(p.shape, generator=gen))
    ours.load_state_dict(theirs.state_dict())  # neuralpredictors -> ours (strict)
    torch.testing.assert_close(ours(x), theirs(x), rtol=2e-5, atol=2e-6)
    other_theirs.load_state_dict(ours.state_dict())  # ours -> neuralpredictors (strict)
    torch.testing.assert_close(other_theirs(x), theirs(x), rtol=0, atol=0)
    other_ours.load_state_dict(other_theirs.state_dict())
    assert_same_state(theirs, other_ours, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_features_shared_between_two_readouts(backend):
    """The first readout learns the features of each match id; the second reuses that very parameter."""
    gen = torch.Generator().manual_seed(6)
    ids_b = [9, 5, 6, 2, 1, 4, 3]
    x = torch.randn(3, *IN_SHAPE, generator=gen)
    pairs = []
    for lib, extra in ((npr, {}), (dnn, {"backend": backend})):
        torch.manual_seed(7)
        a = lib.FullFactorized2d(IN_SHAPE, N, True, init_noise=0.2, shared_features={"match_ids": MATCH_IDS}, **extra)
        b = lib.FullFactorized2d(IN_SHAPE, len(ids_b), True, init_noise=0.2,
                                 shared_features={"match_ids": ids_b, "shared_features": a.shared_features}, **extra)
        assert b._features is a._features and not b._original_features
        pairs.append((a, b))
    (ta, tb), (oa, ob) = pairs
    assert repr(ob) == release_repr(tb)
    assert_same_state(ta, oa, rtol=0, atol=0)
    assert_same_state(tb, ob, rtol=0, atol=0)  # b's initialize re-drew the shared features in both libraries
    for a, b in pairs:
        a.zero_grad()
        b.zero_grad()
        (a(x).pow(2).sum() + b(x).sum() + a.regularizer() + b.regularizer("mean")).backward()
    for (key, p_t), p_o in zip(list(ta.named_parameters()) + list(tb.named_parameters()),
                               list(oa.parameters()) + list(ob.parameters())):
        torch.testing.assert_close(p_o.grad, p_t.grad, rtol=2e-5, atol=2e-6, msg=key)


@pytest.mark.parametrize("backend", BACKENDS)
def test_neuralpredictors_multi_readout_builds_ours(backend):
    """neuralpredictors' own shared-parameter multi-readout, with our class as its base readout."""
    in_shapes = {"a": IN_SHAPE, "b": IN_SHAPE}
    neurons = {"a": N, "b": 7}
    match = {"a": MATCH_IDS, "b": [9, 5, 6, 2, 1, 4, 3]}
    mean = {"a": torch.rand(N), "b": torch.rand(7)}
    built = []
    for base in (npr.FullFactorized2d, dnn.FullFactorized2d):
        torch.manual_seed(8)
        extra = {} if base is npr.FullFactorized2d else {"backend": backend}
        built.append(npr.MultiReadoutSharedParametersBase(
            in_shapes, neurons, base_readout=base, mean_activity_dict={k: v.clone() for k, v in mean.items()},
            share_features=True, shared_match_ids=match, bias=True, init_noise=0.2, **extra))
    theirs, ours = built
    assert_same_state(theirs, ours, rtol=0, atol=0)
    x = torch.randn(2, *IN_SHAPE)
    for key in in_shapes:
        torch.testing.assert_close(ours(x, data_key=key), theirs(x, data_key=key), rtol=2e-5, atol=2e-6)
        torch.testing.assert_close(ours.regularizer(key), theirs.regularizer(key), rtol=1e-5, atol=0)


def test_initialize_and_mean_activity_as_neuralpredictors():
    mean = torch.linspace(0.5, 1.5, N)
    theirs, ours = make_pair("default", kwargs={"bias": True, "mean_activity": mean.clone()})
    for module in (theirs, ours):
        assert module.bias.data_ptr() == module.mean_activity.data_ptr()  # the given tensor is the bias storage
        torch.testing.assert_close(module.bias.detach(), mean)
    for seed, arg in ((1, None), (2, torch.full((N,), 3.0))):
        for module in (theirs, ours):
            torch.manual_seed(seed)
            module.initialize(arg)
        assert_same_state(theirs, ours, rtol=0, atol=0)
    for module in (theirs, ours):
        module.initialize_bias()
        assert (module.bias == 0).all()
    native = dnn.FactorizedReadout(IN_SHAPE, N, mean_activity=mean)
    assert native.bias.data_ptr() != mean.data_ptr()  # copy_mean_activity=True
    torch.testing.assert_close(native.bias.detach(), mean)


def test_positional_arguments_match_up_to_positive_weights():
    args = (IN_SHAPE, N, True, False, 0.3, True, True)  # bias, normalize, init_noise, constrain_pos, positive_weights
    torch.manual_seed(0)
    theirs = npr.FullFactorized2d(*args)
    torch.manual_seed(0)
    ours = dnn.FullFactorized2d(*args)
    assert (ours.normalize, ours.init_noise, ours.constrain_pos, ours.positive_weights) == (False, 0.3, True, True)
    assert_same_state(theirs, ours, rtol=0, atol=0)
    with pytest.raises(TypeError):  # the 8th optional position is shared_features in 0.3.0, positive_spatial on main
        dnn.FullFactorized2d(*args, None)


def test_gamma_readout_and_reg_weight():
    for kwargs in ({}, {"gamma_readout": 0.5}, {"spatial_and_feature_reg_weight": 0.25}):
        theirs, ours = make_pair("default", kwargs={"bias": True, **kwargs})
        assert ours.spatial_and_feature_reg_weight == theirs.spatial_and_feature_reg_weight
    with pytest.warns(UserWarning, match="gamma_readout is deprecated"):
        dnn.FullFactorized2d(IN_SHAPE, N, True, gamma_readout=0.5)
    with pytest.raises(ValueError, match="spatial_and_feature_reg_weight .* or gamma_readout"):
        dnn.FullFactorized2d(IN_SHAPE, N, True, gamma_readout=0.5, spatial_and_feature_reg_weight=0.25)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"feature_reg_weight": 1.0}, TypeError, "unexpected keyword argument.*feature_reg_weight"),
    ({"shared_grid": {"match_ids": MATCH_IDS}}, TypeError, "shared_grid"),
    ({"shared_features": {"match_id": MATCH_IDS}}, TypeError, "'match_id'"),
    ({"shared_features": {"shared_features": torch.zeros(7, 5)}}, ValueError, "needs shared_features\\['match_ids"),
    ({"shared_features": {"match_ids": MATCH_IDS[:-1]}}, ValueError, "match_ids"),
    ({"shared_features": {"match_ids": MATCH_IDS, "shared_features": torch.zeros(6, 5)}}, ValueError,
     r"\(7, 5\)"),
])
def test_what_neuralpredictors_swallows_or_asserts_is_refused_by_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        dnn.FullFactorized2d(IN_SHAPE, N, True, **kwargs)


def test_shift_is_refused_as_in_neuralpredictors():
    theirs, ours = make_pair("default")
    x = torch.randn(2, *IN_SHAPE)
    for module in (theirs, ours):
        with pytest.raises(NotImplementedError):
            module(x, shift=torch.zeros(2, 2))
        torch.testing.assert_close(module(x, data_key="s1", pupil_center=None), module(x))


# ----------------------------------------------------------------------------------------------- PoissonLoss


def test_poisson_loss_arguments_and_defaults():
    ours = inspect.signature(dnn.PoissonLoss).parameters
    for arg, param in NP_POISSON.items():
        assert arg in ours, arg
        if arg != "bias" or NP_HAS_FULL_LOSS:  # the 0.3.0 release defaults bias to 1e-12, main to 1e-8
            assert ours[arg].default == param.default, arg
    assert list(ours)[:4] == ["bias", "per_neuron", "avg", "full_loss"]
    assert ours["bias"].default == 1e-8 and ours["avg"].default is True
    with pytest.raises(ValueError, match="bias must be"):
        dnn.PoissonLoss(bias=-1)


def _poisson_inputs(shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rate = torch.rand(shape, generator=gen, dtype=torch.float64) * 3 + 0.01
    target = torch.poisson(rate * 1.3, generator=gen)
    target.view(-1)[:3] = 0.0
    return rate.to(dtype), target.to(dtype)


def _stirling(target, per_neuron, avg):
    """The 0.3.0 release has no full_loss: main adds torch.nn.PoissonNLLLoss(full=True)'s Stirling term, reduced as
    the loss (over everything, or over the leading dimensions per neuron)."""
    rate = torch.ones_like(target)
    term = (F.poisson_nll_loss(rate, target, log_input=False, full=True, reduction="none")
            - F.poisson_nll_loss(rate, target, log_input=False, full=False, reduction="none"))
    term = term.reshape(-1, term.shape[-1]) if per_neuron else term.reshape(-1)
    return term.mean(dim=0) if avg else term.sum(dim=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(16, 9), (4, 3, 9), (9,)])
@pytest.mark.parametrize("full_loss", [False, True])
@pytest.mark.parametrize("avg", [True, False])
@pytest.mark.parametrize("per_neuron", [False, True])
@pytest.mark.parametrize("bias", [None, 1e-12, 1e-3])
def test_poisson_loss_matches(bias, per_neuron, avg, full_loss, shape, backend):
    ours_kwargs = {"per_neuron": per_neuron, "avg": avg, "full_loss": full_loss}
    theirs_kwargs = {"per_neuron": per_neuron, "avg": avg}
    if NP_HAS_FULL_LOSS:
        theirs_kwargs["full_loss"] = full_loss
    if bias is not None:
        ours_kwargs["bias"] = theirs_kwargs["bias"] = bias
    elif not NP_HAS_FULL_LOSS:
        theirs_kwargs["bias"] = 1e-8  # our default is main's; the release's is 1e-12
    for dtype in (torch.float32, torch.float64):
        rate, target = _poisson_inputs(shape, dtype)
        out_t, out_o = rate.clone().requires_grad_(), rate.clone().requires_grad_()
        want = npm.PoissonLoss(**theirs_kwargs)(out_t, target)
        if full_loss and not NP_HAS_FULL_LOSS:
            want = want + _stirling(target, per_neuron, avg)
        got = dnn.PoissonLoss(backend=backend, **ours_kwargs)(out_o, target)
        assert got.shape == want.shape and got.dtype == want.dtype
        g = torch.rand(want.shape, dtype=dtype)
        want.backward(g)
        got.backward(g)
        tol = TOL[dtype]
        scale = max(1.0, want.abs().max().item())
        torch.testing.assert_close(got, want, rtol=tol["rtol"] * 4, atol=tol["atol"] * scale)
        torch.testing.assert_close(out_o.grad, out_t.grad, **tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_poisson_loss_fused_activation_equals_neuralpredictors_on_the_rate(backend):
    gen = torch.Generator().manual_seed(9)
    z = torch.randn(32, 13, generator=gen, dtype=torch.float64)
    target = torch.poisson(torch.ones(32, 13, dtype=torch.float64), generator=gen)
    z_t, z_o = z.clone().requires_grad_(), z.clone().requires_grad_()
    want = npm.PoissonLoss(bias=1e-8)(F.elu(z_t) + 1, target)
    got = dnn.PoissonLoss(activation="elu1", backend=backend)(z_o, target)
    want.backward()
    got.backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(z_o.grad, z_t.grad)


def test_poisson_loss_target_gets_no_gradient_and_bad_outputs_are_refused():
    rate, target = _poisson_inputs((5, 4), torch.float64)
    target = target.requires_grad_()
    dnn.PoissonLoss()(rate.requires_grad_(), target).backward()
    assert target.grad is None
    bad = rate.detach().clone()
    bad[0, 0] = -1.0
    if NP_HAS_FULL_LOSS:  # main asserts a finite loss
        with pytest.raises(AssertionError):
            npm.PoissonLoss()(bad, target.detach())
    else:  # the release returns nan
        assert not torch.isfinite(npm.PoissonLoss()(bad, target.detach()))
    with pytest.raises(ValueError, match="rates >= 0|not finite"):
        dnn.PoissonLoss()(bad, target.detach())
    assert not torch.isfinite(dnn.PoissonLoss(validate=False)(bad, target.detach()))


# ----------------------------------------------------------------------------------------------- training


class Core(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 6, 5)
        self.conv2 = torch.nn.Conv2d(6, IN_SHAPE[0], 3, padding=1)

    def forward(self, x):
        return F.elu(self.conv2(F.elu(self.conv1(x))))


def _train(readout, core, poisson, images, targets, fused_activation, steps):
    model = torch.nn.ModuleList([core, readout])
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for step in range(steps):
        batch = slice((step % 4) * 16, (step % 4 + 1) * 16)
        z = readout(core(images[batch]))
        rate = z if fused_activation else F.elu(z) + 1
        loss = poisson(rate, targets[batch]) + 0.05 * readout.regularizer()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float64), model


@pytest.mark.parametrize("config", ["default", "shared_constrain_pos"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_training_100_adam_steps_gives_the_same_losses(backend, config):
    gen = torch.Generator().manual_seed(10)
    images = torch.randn(64, 1, IN_SHAPE[1] + 4, IN_SHAPE[2] + 4, generator=gen)
    targets = torch.poisson(torch.rand(64, N, generator=gen) * 3, generator=gen)
    torch.manual_seed(11)
    core = Core()
    theirs, ours = make_pair(config, backend)
    ours.load_state_dict(theirs.state_dict())  # same init via state_dict
    core_copy = Core()
    core_copy.load_state_dict(core.state_dict())
    want, model_t = _train(theirs, core, npm.PoissonLoss(bias=1e-8), images, targets, False, 100)
    got, model_o = _train(ours, core_copy, dnn.PoissonLoss(activation="elu1"), images, targets, True, 100)
    rel = ((got - want).abs() / want.abs()).max().item()
    assert rel < 1e-5, f"max relative loss difference over 100 steps: {rel:.3g}"
    assert want[-1] < 0.9 * want[0]  # it did train
    for (key, p_t), p_o in zip(model_t.named_parameters(), model_o.parameters()):
        drift = ((p_o - p_t).abs().max() / p_t.abs().max()).item()
        assert drift < 1e-4, f"{key}: parameters after 100 steps differ by {drift:.3g} of their largest entry"
