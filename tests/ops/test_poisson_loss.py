"""poisson_loss: torch and cpu backends against the reference, forward and gradient, every activation, reduction
and the Stirling term; equality with torch.nn.PoissonNLLLoss; gradcheck in float64; custom-op checks; validation
(one test per rule)."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from daenr_fast.ops import poisson_loss, reference
from daenr_fast.ops.poisson_loss import ACTIVATIONS, _poisson_op

BACKENDS = ["torch", "cpu"]
REDUCTIONS = [("mean", False), ("sum", False), ("none", False), ("mean", True), ("sum", True)]
SHAPES = [(0, 5), (1, 1), (37, 53), (64, 103), (3, 4, 5)]
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}


def make_inputs(shape, activation, dtype=torch.float32, seed=0):
    """z in a range valid for the activation (positive rates for identity), Poisson counts drawn at that rate."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    if activation == "identity":
        z = z.abs() + 0.05
    rate = reference.poisson_rate(z, activation).clamp(max=50)
    s = torch.poisson(rate, generator=g)
    return z.to(dtype), s.to(dtype)


def loss_and_grad(fn, z, s, seed=1):
    """Loss and dz for a random upstream gradient (seed None: a unit one)."""
    zz = z.clone().requires_grad_()
    loss = fn(zz, s)
    if seed is None:
        g = torch.ones(loss.shape)
    else:
        g = torch.rand(loss.shape, generator=torch.Generator().manual_seed(seed)) + 0.5
    loss.backward(g.to(loss.dtype))
    grad = zz.grad if zz.grad is not None else torch.zeros_like(zz)
    return loss.detach(), grad


def scaled_close(got, want, tol):
    """assert_close with atol relative to the largest magnitude of the truth (sums of many terms)."""
    scale = max(1.0, want.nan_to_num().abs().max().item()) if want.numel() else 1.0
    torch.testing.assert_close(got, want.to(got.dtype), rtol=tol["rtol"], atol=tol["atol"] * scale, equal_nan=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("reduction,per_neuron", REDUCTIONS, ids=lambda v: str(v))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference_forward_and_grad(backend, activation, reduction, per_neuron, shape):
    z, s = make_inputs(shape, activation)
    opts = dict(activation=activation, reduction=reduction, per_neuron=per_neuron)
    l_ref, g_ref = loss_and_grad(lambda a, b: reference.poisson_loss(a.double(), b.double(), eps=1e-8, **{
        "activation": activation, "reduction": reduction, "per_neuron": per_neuron}), z, s)
    loss, grad = loss_and_grad(lambda a, b: poisson_loss(a, b, backend=backend, **opts), z, s)
    expected_shape = shape if reduction == "none" else ((shape[-1],) if per_neuron else ())
    assert loss.shape == expected_shape and loss.dtype == z.dtype
    scaled_close(loss, l_ref, TOL[torch.float32])
    scaled_close(grad, g_ref, TOL[torch.float32])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("reduction,per_neuron", [("sum", False), ("none", False), ("mean", True)])
def test_full_loss_adds_stirling_term(backend, activation, reduction, per_neuron):
    z, s = make_inputs((29, 31), activation, seed=2)
    opts = dict(activation=activation, reduction=reduction, per_neuron=per_neuron, full=True)
    l_ref, g_ref = loss_and_grad(lambda a, b: reference.poisson_loss(a.double(), b.double(), **opts), z, s)
    loss, grad = loss_and_grad(lambda a, b: poisson_loss(a, b, backend=backend, **opts), z, s)
    scaled_close(loss, l_ref, TOL[torch.float32])
    scaled_close(grad, g_ref, TOL[torch.float32])


def torch_poisson_nll(z, s, activation, eps, reduction, full):
    if activation == "exp":
        return torch.nn.PoissonNLLLoss(log_input=True, full=full, reduction=reduction)(z, s)
    rate = {"identity": z, "elu1": F.elu(z) + 1, "softplus": F.softplus(z)}[activation]
    return torch.nn.PoissonNLLLoss(log_input=False, full=full, eps=eps, reduction=reduction)(rate, s)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation,reduction,full",
                         list(itertools.product(ACTIVATIONS, ["mean", "sum", "none"], [False, True])))
def test_equals_torch_poisson_nll_loss(backend, activation, reduction, full):
    z, s = make_inputs((33, 47), activation, seed=3)
    eps = 1e-6
    want = torch_poisson_nll(z.double(), s.double(), activation, eps, reduction, full)
    got = poisson_loss(z, s, activation=activation, eps=eps, reduction=reduction, full=full, backend=backend)
    scaled_close(got, want, TOL[torch.float32])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("reduction,per_neuron", REDUCTIONS, ids=lambda v: str(v))
def test_gradcheck_float64(backend, activation, reduction, per_neuron):
    z, s = make_inputs((4, 5), activation, dtype=torch.float64, seed=4)
    z.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: poisson_loss(a, s, activation=activation, reduction=reduction, per_neuron=per_neuron,
                               full=True, backend=backend), (z,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,per_neuron", [((256, 8000), False), ((256, 8000), True), ((3000, 7), True)])
def test_large_inputs_span_many_tiles(backend, shape, per_neuron):
    z, s = make_inputs(shape, "elu1", seed=5)
    opts = dict(activation="elu1", reduction="sum", per_neuron=per_neuron)
    l_ref, g_ref = loss_and_grad(lambda a, b: reference.poisson_loss(a.double(), b.double(), **opts), z, s)
    loss, grad = loss_and_grad(lambda a, b: poisson_loss(a, b, backend=backend, **opts), z, s)
    scaled_close(loss, l_ref, dict(rtol=1e-5, atol=1e-6))
    scaled_close(grad, g_ref, TOL[torch.float32])


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    z, s = make_inputs((40, 30), "softplus", seed=6)
    zt, st = z.t(), s.t()
    assert not zt.is_contiguous()
    l_ref, g_ref = loss_and_grad(lambda a, b: reference.poisson_loss(a, b, "softplus", per_neuron=True), zt, st)
    loss, grad = loss_and_grad(lambda a, b: poisson_loss(a, b, activation="softplus", per_neuron=True,
                                                          backend=backend), zt, st)
    scaled_close(loss, l_ref, TOL[torch.float32])
    scaled_close(grad, g_ref, TOL[torch.float32])


@pytest.mark.parametrize("backend", BACKENDS)
def test_unit_and_scaled_backward_without_retained_graph(backend):
    z, s = make_inputs((7, 9), "elu1")
    _, g_ref = loss_and_grad(lambda a, b: reference.poisson_loss(a, b, "elu1"), z, s, seed=None)
    for scale in (1.0, 3.0):
        zz = z.clone().requires_grad_()
        poisson_loss(zz, s, activation="elu1", backend=backend).backward(torch.tensor(scale))
        torch.testing.assert_close(zz.grad, scale * g_ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_retained_graph_gives_the_same_gradient_twice(backend):
    z, s = make_inputs((7, 9), "softplus")
    zz = z.clone().requires_grad_()
    loss = poisson_loss(zz, s, activation="softplus", per_neuron=True, backend=backend)
    g = torch.rand(9, generator=torch.Generator().manual_seed(8))
    loss.backward(g, retain_graph=True)
    first = zz.grad.clone()
    loss.backward(g)
    torch.testing.assert_close(zz.grad, 2 * first)


def test_cpu_result_does_not_depend_on_thread_count():
    z, s = make_inputs((300, 2100), "elu1", seed=7)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = poisson_loss(z, s, activation="elu1", backend="cpu")
        torch.set_num_threads(2)
        two = poisson_loss(z, s, activation="elu1", backend="cpu")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_rate_extremes_stay_finite():
    z = torch.tensor([-200.0, -90.0, -30.0, 0.0, 19.9, 20.1, 80.0])
    s = torch.tensor([0.0, 1.0, 2.0, 3.0, 0.0, 5.0, 1.0])
    for activation in ("elu1", "softplus"):
        l_ref, g_ref = loss_and_grad(lambda a, b: reference.poisson_loss(a.double(), b.double(), activation,
                                                                         reduction="none"), z, s)
        loss, grad = loss_and_grad(lambda a, b: poisson_loss(a, b, activation=activation, reduction="none",
                                                              backend="cpu"), z, s)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        torch.testing.assert_close(loss, l_ref.float(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, g_ref.float(), rtol=1e-5, atol=1e-5)


def test_no_gradient_is_computed_without_grad_mode():
    z, s = make_inputs((8, 9), "exp")
    loss, grad, _ = _poisson_op(z, s, ACTIVATIONS.index("exp"), 1e-8, 1, True, False, False, "cpu")
    assert grad.numel() == 0
    with torch.no_grad():
        assert not poisson_loss(z.requires_grad_(), s, activation="exp").requires_grad


def test_integer_targets_are_accepted():
    z, s = make_inputs((6, 7), "elu1")
    torch.testing.assert_close(poisson_loss(z, s.long(), activation="elu1"),
                               poisson_loss(z, s, activation="elu1"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_op_passes_opcheck(backend):
    z, s = make_inputs((5, 6), "elu1")
    code = ACTIVATIONS.index("elu1")
    for mode in (0, 1, 2):
        torch.library.opcheck(_poisson_op, (z.clone().requires_grad_(), s, code, 1e-8, mode, True, True, True,
                                            backend))


def test_torch_compile_fullgraph():
    z, s = make_inputs((16, 12), "softplus")

    def fn(a, b):
        return poisson_loss(a, b, activation="softplus", per_neuron=True, backend="cpu").sum() * 2

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    l_ref, g_ref = loss_and_grad(fn, z, s)
    loss, grad = loss_and_grad(compiled, z, s)
    torch.testing.assert_close(loss, l_ref)
    torch.testing.assert_close(grad, g_ref)


# ------------------------------------------------------------------------------------------------ validation

@pytest.mark.parametrize("backend", BACKENDS)
def test_negative_target_reports_count_and_first_index(backend):
    z, s = make_inputs((4, 6), "elu1")
    s[2, 3], s[3, 0] = -1.0, -2.0
    with pytest.raises(ValueError, match=r"target .* 2 negative or non-finite entries, the first at index \(2, 3\)"):
        poisson_loss(z, s, activation="elu1", backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_target_reports_count_and_first_index(backend):
    z, s = make_inputs((3, 5), "elu1")
    s[1, 4], s[2, 2] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"2 negative or non-finite entries, the first at index \(1, 4\)"):
        poisson_loss(z, s, activation="elu1", backend=backend)


def test_validate_false_skips_the_target_check():
    z, s = make_inputs((3, 5), "elu1")
    s[0, 0] = -1.0
    assert torch.isfinite(poisson_loss(z, s, activation="elu1", validate=False))


def test_shape_mismatch_names_target():
    with pytest.raises(ValueError, match="target must have z's shape"):
        poisson_loss(torch.rand(3, 4), torch.rand(4, 3))


def test_target_on_another_device_names_target():
    with pytest.raises(ValueError, match="target is on meta"):
        poisson_loss(torch.rand(3, 4), torch.rand(3, 4, device="meta"))


def test_target_must_be_a_tensor():
    with pytest.raises(TypeError, match="target must be a torch.Tensor"):
        poisson_loss(torch.rand(3, 4), [[1.0] * 4] * 3)


def test_boolean_target_is_refused():
    with pytest.raises(TypeError, match="target must hold real counts"):
        poisson_loss(torch.rand(3, 4), torch.ones(3, 4, dtype=torch.bool))


def test_z_must_be_a_floating_tensor():
    with pytest.raises(TypeError, match="z must be a floating tensor"):
        poisson_loss(torch.ones(3, 4, dtype=torch.long), torch.ones(3, 4))


def test_z_must_be_a_tensor():
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        poisson_loss(1.0, torch.ones(()))


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="activation must be one of"):
        poisson_loss(torch.rand(2, 2), torch.rand(2, 2), activation="relu")


def test_unknown_reduction_is_named():
    with pytest.raises(ValueError, match="reduction must be one of"):
        poisson_loss(torch.rand(2, 2), torch.rand(2, 2), reduction="avg")


def test_per_neuron_needs_a_reducing_reduction():
    with pytest.raises(ValueError, match="per_neuron=True needs reduction"):
        poisson_loss(torch.rand(2, 2), torch.rand(2, 2), reduction="none", per_neuron=True)


def test_per_neuron_needs_a_dimension():
    with pytest.raises(ValueError, match="at least one dimension"):
        poisson_loss(torch.rand(()), torch.rand(()), per_neuron=True)


@pytest.mark.parametrize("eps", [-1e-8, float("nan"), float("inf")])
def test_eps_must_be_finite_and_non_negative(eps):
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        poisson_loss(torch.rand(2, 2), torch.rand(2, 2), eps=eps)


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="backend must be one of"):
        poisson_loss(torch.rand(2, 2), torch.rand(2, 2), backend="gpu")


def test_cpu_backend_refuses_half_precision():
    with pytest.raises(TypeError, match="backend 'cpu' supports dtypes float32, float64"):
        poisson_loss(torch.rand(2, 2, dtype=torch.float16), torch.rand(2, 2, dtype=torch.float16), backend="cpu")
