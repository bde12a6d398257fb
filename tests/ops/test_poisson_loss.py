"""poisson_loss on every backend against the float64 reference: loss and gradient for every activation, reduction
and dtype each backend takes, the Stirling term, empty, non-contiguous and large inputs (past float16's range:
infinities), the float16 gradient rounded once after the upstream scale, the fused target check, determinism;
equality with torch.nn.PoissonNLLLoss; gradcheck in float64; custom-op checks; validation (one test per rule)."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from daenr_fast.ops import OPS, poisson_loss, reference
from daenr_fast.ops.poisson_loss import ACTIVATIONS
from ops.conftest import (POISSON_EXTREMES_TOL, POISSON_SUM_TOL, TOLERANCES, Tolerance, assert_all_close_to,
                          poisson_inputs, require_backend, run, run_reference, skip_if_slow_on_interpreter)

OP = "poisson_loss"
TOL = TOLERANCES[OP]
REDUCTIONS = [("mean", False), ("sum", False), ("none", False), ("mean", True), ("sum", True)]
SHAPES = [  # (shape, full)
    ((0, 5), False), ((1, 1), False), ((19, 70), False), ((37, 53), False), ((64, 103), False), ((64, 103), True),
    ((3, 4, 5), False),
]
GPU_SHAPES = [(256, 8000)]


def ids(value):
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)


def check_against_reference(backend, z, s, **opts):
    """Loss and dloss/dz (upstream 0.5 + U[0,1)) of ``backend`` against the float64 truth; returns the loss."""
    want_loss, (want_grad, _) = run_reference(lambda a, b: reference.poisson_loss(a, b, **opts), (z, s), [0],
                                              upstream="positive")
    loss, (grad, _) = run(lambda a, b: poisson_loss(a, b, backend=backend, **opts), (z, s), [0], upstream="positive")
    assert loss.dtype == grad.dtype == z.dtype
    assert_all_close_to(["loss", "grad z"], [loss, grad], [want_loss, want_grad], TOL[z.dtype])
    return loss


@pytest.mark.parametrize("shape,full", SHAPES, ids=ids)
@pytest.mark.parametrize("reduction,per_neuron", REDUCTIONS, ids=ids)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_matches_float64_reference(backend, device, dtype, activation, reduction, per_neuron, shape, full):
    z, s = poisson_inputs(shape, activation, dtype, device)
    loss = check_against_reference(backend, z, s, activation=activation, eps=1e-8, reduction=reduction,
                                   per_neuron=per_neuron, full=full)
    assert loss.shape == (shape if reduction == "none" else ((shape[-1],) if per_neuron else ()))


@pytest.mark.cuda
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=ids)
@pytest.mark.parametrize("reduction,per_neuron", REDUCTIONS, ids=ids)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gpu_sizes_match_float64_reference(backend, device, dtype, activation, reduction, per_neuron, shape):
    z, s = poisson_inputs(shape, activation, dtype, device)
    check_against_reference(backend, z, s, activation=activation, reduction=reduction, per_neuron=per_neuron)


@pytest.mark.parametrize("shape", [(29, 31), (21, 9)], ids=ids)
@pytest.mark.parametrize("reduction,per_neuron", [("sum", False), ("none", False), ("mean", True), ("sum", True)],
                         ids=ids)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_full_loss_adds_stirling_term(backend, device, activation, reduction, per_neuron, shape):
    z, s = poisson_inputs(shape, activation, device=device, seed=2)
    check_against_reference(backend, z, s, activation=activation, reduction=reduction, per_neuron=per_neuron,
                            full=True)


def torch_poisson_nll(z, s, activation, eps, reduction, full):
    if activation == "exp":
        return torch.nn.PoissonNLLLoss(log_input=True, full=full, reduction=reduction)(z, s)
    rate = {"identity": z, "elu1": F.elu(z) + 1, "softplus": F.softplus(z)}[activation]
    return torch.nn.PoissonNLLLoss(log_input=False, full=full, eps=eps, reduction=reduction)(rate, s)


@pytest.mark.parametrize("activation,reduction,full",
                         list(itertools.product(ACTIVATIONS, ["mean", "sum", "none"], [False, True])), ids=ids)
def test_equals_torch_poisson_nll_loss(backend, device, activation, reduction, full):
    z, s = poisson_inputs((33, 47), activation, device=device, seed=3)
    eps = 1e-6
    want = torch_poisson_nll(z.double(), s.double(), activation, eps, reduction, full)
    got = poisson_loss(z, s, activation=activation, eps=eps, reduction=reduction, full=full, backend=backend)
    assert_all_close_to(["loss"], [got], [want], TOL[torch.float32])


@pytest.mark.dtypes(torch.float64)
@pytest.mark.parametrize("reduction,per_neuron", REDUCTIONS, ids=ids)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck_float64(backend, device, dtype, activation, reduction, per_neuron):
    z, s = poisson_inputs((4, 5), activation, dtype, device, seed=4)
    z.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: poisson_loss(a, s, activation=activation, reduction=reduction, per_neuron=per_neuron,
                               full=True, backend=backend), (z,))


@pytest.mark.parametrize("shape,per_neuron", [((256, 8000), False), ((256, 8000), True), ((3000, 7), True)],
                         ids=ids)
def test_large_inputs_span_many_tiles(backend, device, shape, per_neuron):
    """A float32 sum of 2e6 elements keeps the elements' accuracy (partial sums finished in double)."""
    skip_if_slow_on_interpreter(OP, device, backend, shape[0] * shape[1])
    z, s = poisson_inputs(shape, "elu1", device=device, seed=5)
    opts = dict(activation="elu1", reduction="sum", per_neuron=per_neuron)
    want_loss, (want_grad, _) = run_reference(lambda a, b: reference.poisson_loss(a, b, **opts), (z, s), [0],
                                              upstream="positive")
    loss, (grad, _) = run(lambda a, b: poisson_loss(a, b, backend=backend, **opts), (z, s), [0], upstream="positive")
    assert_all_close_to(["loss"], [loss], [want_loss], POISSON_SUM_TOL)
    assert_all_close_to(["grad z"], [grad], [want_grad], TOL[torch.float32])


@pytest.mark.parametrize("shape", [(40, 30), (70, 90)], ids=ids)
def test_non_contiguous_inputs(backend, device, dtype, shape):
    z, s = poisson_inputs(shape, "softplus", dtype, device, seed=6)
    zt, st = z.t(), s.t()
    assert not zt.is_contiguous()
    check_against_reference(backend, zt, st, activation="softplus", per_neuron=True)


def test_empty_input_gives_the_reference_values(backend, device):
    """No elements: the sums are 0, the means NaN (0/0), as the reference."""
    for shape in ((0, 4), (0, 7)):
        z, s = poisson_inputs(shape, "elu1", device=device)
        for reduction, per_neuron in REDUCTIONS:
            opts = dict(activation="elu1", reduction=reduction, per_neuron=per_neuron)
            got = poisson_loss(z, s, backend=backend, **opts)
            assert_all_close_to([f"loss {reduction} {per_neuron}"], [got], [reference.poisson_loss(z, s, **opts)],
                                Tolerance())


@pytest.mark.dtypes(torch.float16, torch.bfloat16)
def test_half_precision_accumulates_in_float32(backend, device, dtype):
    z, s = poisson_inputs((17, 40), "softplus", dtype, device, seed=3)
    check_against_reference(backend, z, s, activation="softplus", reduction="mean")


@pytest.mark.dtypes(torch.float16)
def test_float16_gradient_is_rounded_once_after_the_upstream_scale(backend, device, dtype):
    """exp(z) - s = exp(11.5) is past float16's 65504; times the upstream 0.25 it is not, and that is what comes back
    (the saved gradient is float32; a float16 one would already be infinite)."""
    z = torch.tensor([[11.5, 0.5]], dtype=dtype, device=device, requires_grad=True)
    s = torch.tensor([[2.0, 1.0]], dtype=dtype, device=device)
    loss = poisson_loss(z, s, activation="exp", reduction="none", backend=backend)
    (grad,) = torch.autograd.grad(loss, z, torch.full_like(loss, 0.25))
    want = (torch.exp(z.detach().double()) - s.double()) * 0.25
    assert grad.dtype == torch.float16 and torch.isinf(loss[0, 0]) and torch.isfinite(grad).all()
    torch.testing.assert_close(grad.double(), want.to(torch.float16).double(), rtol=1e-3, atol=0)


def test_unit_and_scaled_backward_without_retained_graph(backend, device):
    """The saved gradient is scaled in place (or returned as it is for a unit scale) when the graph is freed."""
    z, s = poisson_inputs((7, 9), "elu1", device=device)
    _, (want, _) = run(lambda a, b: reference.poisson_loss(a, b, "elu1"), (z, s), [0], upstream="ones")
    for scale in (1.0, 3.0):
        zz = z.clone().requires_grad_()
        poisson_loss(zz, s, activation="elu1", backend=backend).backward(torch.tensor(scale, device=device))
        torch.testing.assert_close(zz.grad, scale * want)


def test_retained_graph_gives_the_same_gradient_twice(backend, device):
    z, s = poisson_inputs((7, 9), "softplus", device=device)
    zz = z.clone().requires_grad_()
    loss = poisson_loss(zz, s, activation="softplus", per_neuron=True, backend=backend)
    g = torch.rand(9, generator=torch.Generator().manual_seed(8)).to(device)
    loss.backward(g, retain_graph=True)
    first = zz.grad.clone()
    loss.backward(g)
    torch.testing.assert_close(zz.grad, 2 * first)


def test_deterministic(backend, device):
    z, s = poisson_inputs((512, 3000), "elu1", device=device)
    skip_if_slow_on_interpreter(OP, device, backend, z.numel())
    runs = [poisson_loss(z, s, activation="elu1", per_neuron=per_neuron, backend=backend)
            for per_neuron in (False, True) for _ in range(2)]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[2], runs[3])


def test_cpu_result_does_not_depend_on_thread_count():
    require_backend(OP, "cpu", torch.device("cpu"))
    z, s = poisson_inputs((300, 2100), "elu1", seed=7)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = poisson_loss(z, s, activation="elu1", backend="cpu")
        torch.set_num_threads(2)
        two = poisson_loss(z, s, activation="elu1", backend="cpu")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_rate_extremes_stay_finite(backend, device):
    z = torch.tensor([-200.0, -90.0, -30.0, 0.0, 19.9, 20.1, 80.0], device=device)
    s = torch.tensor([0.0, 1.0, 2.0, 3.0, 0.0, 5.0, 1.0], device=device)
    for activation in ("elu1", "softplus"):
        opts = dict(activation=activation, reduction="none")
        want_loss, (want_grad, _) = run_reference(lambda a, b: reference.poisson_loss(a, b, **opts), (z, s), [0])
        loss, (grad, _) = run(lambda a, b: poisson_loss(a, b, backend=backend, **opts), (z, s), [0])
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        assert_all_close_to(["loss", "grad z"], [loss, grad], [want_loss, want_grad], POISSON_EXTREMES_TOL)


def test_no_gradient_is_computed_without_grad_mode(backend, device):
    z, s = poisson_inputs((8, 9), "exp", device=device)
    loss, grad, _ = OPS[OP].overload(z, s, ACTIVATIONS.index("exp"), 1e-8, 1, True, False, False, backend)
    assert grad.numel() == 0
    with torch.no_grad():
        assert not poisson_loss(z.requires_grad_(), s, activation="exp", backend=backend).requires_grad


def test_integer_targets_are_accepted(backend, device):
    z, s = poisson_inputs((6, 7), "elu1", device=device)
    torch.testing.assert_close(poisson_loss(z, s.long(), activation="elu1", backend=backend),
                               poisson_loss(z, s, activation="elu1", backend=backend))


def test_custom_op_passes_opcheck(backend, device):
    z, s = poisson_inputs((5, 6), "elu1", device=device)
    code = ACTIVATIONS.index("elu1")
    for mode in (0, 1, 2):
        torch.library.opcheck(OPS[OP].overload, (z.clone().requires_grad_(), s, code, 1e-8, mode, True, True, True,
                                                 backend))


def test_torch_compile_fullgraph(backend, device):
    z, s = poisson_inputs((16, 12), "softplus", device=device)

    def fn(a, b):
        return poisson_loss(a, b, activation="softplus", per_neuron=True, backend=backend).sum() * 2

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    want_loss, (want_grad, _) = run(fn, (z, s), [0], upstream="positive")
    loss, (grad, _) = run(compiled, (z, s), [0], upstream="positive")
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(grad, want_grad)


# ------------------------------------------------------------------------------------------------ validation

def test_negative_target_reports_count_and_first_index(backend, device):
    z, s = poisson_inputs((4, 6), "elu1", device=device)
    s[2, 3], s[3, 0] = -1.0, -2.0
    with pytest.raises(ValueError, match=r"target .* 2 negative or non-finite entries, the first at index \(2, 3\)"):
        poisson_loss(z, s, activation="elu1", backend=backend)


def test_non_finite_target_reports_count_and_first_index(backend, device):
    z, s = poisson_inputs((3, 5), "elu1", device=device)
    s[1, 4], s[2, 2] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"2 negative or non-finite entries, the first at index \(1, 4\)"):
        poisson_loss(z, s, activation="elu1", backend=backend)


@pytest.mark.parametrize("shape,bad,message", [
    ((5, 300), {(1, 299): -1.0, (4, 7): float("nan"), (3, 3): float("inf")},
     r"3 negative or non-finite entries, the first at index \(1, 299\)"),
    ((300, 500), {(120, 7): -1.0, (299, 0): float("nan")},
     r"2 negative or non-finite entries, the first at index \(120, 7\)"),
], ids=["5x300", "300x500"])
def test_invalid_targets_are_counted_across_tiles(backend, device, shape, bad, message):
    """The fused check counts the invalid targets of every tile and reports the first in memory order."""
    z, s = poisson_inputs(shape, "elu1", device=device)
    for index, value in bad.items():
        s[index] = value
    with pytest.raises(ValueError, match=message):
        poisson_loss(z, s, activation="elu1", backend=backend)


def test_validate_false_skips_the_target_check():
    z, s = poisson_inputs((3, 5), "elu1")
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
