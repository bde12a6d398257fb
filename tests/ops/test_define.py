"""The op-definition mechanism: the eager path, the custom op and the torch.func Function give the same values
and gradients; the registry is the one list of ops; dispatch only picks backends that take the call's dtype."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from daenr_fast import _dispatch
from daenr_fast.ops import OPS, factorized_readout, poisson_loss, vq_lookup
from daenr_fast.ops._define import BACKENDS, OpDef, define, tracing


class Tagged(torch.Tensor):
    """A tensor subclass with the default __torch_function__ (so the custom op path is taken)."""


def readout_inputs():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_()
            for shape in ((3, 4, 5, 6), (7, 5, 6), (7, 4), (7,))]


def test_registry_lists_every_public_op_with_dtypes_per_backend():
    from daenr_fast import ops
    from daenr_fast.ops import reference

    assert set(OPS) == set(ops.__all__) - {"OPS"} and {"factorized_readout", "poisson_loss", "vq_lookup"} <= set(OPS)
    for name, op in OPS.items():
        assert callable(getattr(ops, name)) and callable(getattr(reference, name)), name
        assert op.name == name and set(op.backends) == set(BACKENDS) == set(op.dtypes)
        assert torch.float32 in op.dtypes["cpu"] and torch.float64 in op.dtypes["torch"]
        assert getattr(torch.ops.daenr_fast, name).default is op.overload


def test_gpu_preference_table_covers_exactly_the_registered_ops():
    assert set(_dispatch.GPU_PREFERENCE) == set(OPS)


def test_a_second_definition_of_an_op_is_refused():
    spec = OPS["vq_lookup"].spec
    with pytest.raises(ValueError, match="defined twice"):
        define(spec)


def test_op_definitions_with_unknown_or_mismatched_backends_are_refused():
    base = dict(name="x", schema="(Tensor a, str backend) -> Tensor", fake=None, setup_context=None, backward=None)
    with pytest.raises(ValueError, match="unknown backends"):
        OpDef(kernels={"tpu": abs}, dtypes={"tpu": ()}, **base)
    with pytest.raises(ValueError, match="same backends"):
        OpDef(kernels={"torch": abs}, dtypes={"torch": (), "cpu": ()}, **base)


def test_tracing_is_false_for_plain_tensors_and_parameters():
    assert not tracing(torch.zeros(2), torch.nn.Parameter(torch.zeros(2)), None)


def test_tracing_is_true_under_fake_tensors_functorch_and_subclasses():
    assert tracing(torch.zeros(2).as_subclass(Tagged))
    with FakeTensorMode():
        assert tracing()
    seen = []
    torch.func.grad(lambda t: (seen.append(tracing(t)), t.sum())[1])(torch.zeros(2))
    assert seen == [True]


def test_torch_func_transforms_take_the_function_with_setup_context():
    x, m, w, b = (t.detach() for t in readout_inputs())
    names = []

    def loss(w):
        y = factorized_readout(x, m, w, b, backend="torch")
        names.append(type(y.grad_fn).__name__)
        return y.sum()

    torch.func.grad(loss)(w)
    assert names and "FactorizedReadoutFunction" in names[0]


def test_calls_without_gradients_skip_autograd():
    x, m, w, b = (t.detach() for t in readout_inputs())
    assert factorized_readout(x, m, w, b, backend="torch").grad_fn is None
    with torch.no_grad():
        assert factorized_readout(*readout_inputs(), backend="torch").grad_fn is None


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_readout_eager_path_matches_the_custom_op(backend):
    inputs = readout_inputs()
    y = factorized_readout(*inputs, backend=backend)
    assert type(y.grad_fn).__name__ == "FactorizedReadoutEagerBackward"
    grads = torch.autograd.grad(y.square().sum(), inputs)
    tagged = [t.detach().as_subclass(Tagged).requires_grad_() for t in inputs]
    y_op = factorized_readout(*tagged, backend=backend)
    assert "Eager" not in type(y_op.grad_fn).__name__
    grads_op = torch.autograd.grad(y_op.square().sum(), tagged)
    torch.testing.assert_close(y_op.as_subclass(torch.Tensor), y.detach(), rtol=0, atol=0)
    for a, b in zip(grads_op, grads):
        torch.testing.assert_close(a.as_subclass(torch.Tensor), b, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_readout_custom_op_called_directly_has_the_same_autograd(backend):
    inputs = readout_inputs()
    y = factorized_readout(*inputs, backend=backend)
    grads = torch.autograd.grad(y.square().sum(), inputs)
    y_op = OPS["factorized_readout"].overload(*inputs, backend)
    grads_op = torch.autograd.grad(y_op.square().sum(), inputs)
    torch.testing.assert_close(y_op, y, rtol=0, atol=0)
    for a, b in zip(grads_op, grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_poisson_eager_path_matches_the_custom_op(backend):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 9, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.poisson(torch.rand(6, 9, generator=g, dtype=torch.float64) * 3)
    loss = poisson_loss(z, s, activation="softplus", reduction="none", backend=backend)
    assert type(loss.grad_fn).__name__ == "PoissonLossEagerBackward"
    (grad,) = torch.autograd.grad(loss, z, torch.full_like(loss, 0.5))
    zt = z.detach().as_subclass(Tagged).requires_grad_()
    loss_op = poisson_loss(zt, s.as_subclass(Tagged), activation="softplus", reduction="none", backend=backend)
    assert "Eager" not in type(loss_op.grad_fn).__name__
    (grad_op,) = torch.autograd.grad(loss_op, zt, torch.full_like(loss_op, 0.5))
    torch.testing.assert_close(loss_op.as_subclass(torch.Tensor), loss.detach(), rtol=0, atol=0)
    torch.testing.assert_close(grad_op.as_subclass(torch.Tensor), grad, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_vq_eager_path_matches_the_custom_op(backend):
    g = torch.Generator().manual_seed(2)
    z = torch.randn(20, 3, generator=g, dtype=torch.float64, requires_grad=True)
    e = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    idx, dist = vq_lookup(z, e, backend=backend)
    assert type(dist.grad_fn).__name__ == "VqLookupEagerBackward"
    grads = torch.autograd.grad(dist.sum(), (z, e))
    zt, et = (t.detach().as_subclass(Tagged).requires_grad_() for t in (z, e))
    idx_op, dist_op = vq_lookup(zt, et, backend=backend)
    grads_op = torch.autograd.grad(dist_op.sum(), (zt, et))
    assert torch.equal(idx_op.as_subclass(torch.Tensor), idx)
    torch.testing.assert_close(dist_op.as_subclass(torch.Tensor), dist.detach(), rtol=0, atol=0)
    for a, b in zip(grads_op, grads):
        torch.testing.assert_close(a.as_subclass(torch.Tensor), b, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_on_cpu_without_a_backend_runs_on_the_reference(dtype):
    x, m, w, b = (t.detach().to(dtype) for t in readout_inputs())
    assert _dispatch.resolve_backend("factorized_readout", None, torch.device("cpu"), dtype) == "torch"
    y = factorized_readout(x, m, w, b)
    torch.testing.assert_close(y, factorized_readout(x, m, w, b, backend="torch"), rtol=0, atol=0)
    z = torch.rand(4, 5).to(dtype)
    assert poisson_loss(z, z).dtype == dtype
    idx, _ = vq_lookup(torch.randn(6, 3).to(dtype), torch.randn(4, 3).to(dtype))
    assert idx.shape == (6,)


@pytest.mark.parametrize("op", sorted(OPS))
def test_dispatch_never_picks_a_backend_that_cannot_take_the_dtype(op):
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        for device in ("cpu", "cuda"):
            try:
                chosen = _dispatch.resolve_backend(op, None, torch.device(device), dtype)
            except _dispatch.BackendUnavailable:
                continue
            assert dtype in OPS[op].dtypes[chosen], (op, dtype, device, chosen)
    assert _dispatch.resolve_backend(op, None, torch.device("cuda"), torch.float64) == "torch"


def test_an_explicit_backend_that_cannot_take_the_dtype_fails_loudly():
    x, m, w, b = (t.detach().half() for t in readout_inputs())
    with pytest.raises(TypeError, match="backend 'cpu' supports dtypes float32, float64; got torch.float16"):
        factorized_readout(x, m, w, b, backend="cpu")
    with pytest.raises(TypeError, match="backend 'cuda' supports dtypes float16, bfloat16, float32"):
        vq_lookup(torch.randn(3, 2, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64), backend="cuda")


def test_backend_status_names_the_dtypes_a_backend_takes():
    ok, why = _dispatch.backend_status("poisson_loss", "cpu", torch.device("cpu"), torch.bfloat16)
    assert not ok and "float32, float64" in why and "bfloat16" in why
