"""factorized_readout: torch and cpu backends against the reference, forward and every gradient; validation."""

import pytest
import torch

from daenr_fast import _dispatch
from daenr_fast.ops import factorized_readout, reference

CPU_BACKENDS = ["torch", "cpu"]
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-10, atol=1e-10)}

SHAPES = [  # (B, C, H, W, N)
    (0, 5, 7, 7, 3), (1, 1, 1, 1, 1), (3, 5, 7, 16, 103), (64, 48, 16, 16, 103), (3, 48, 1, 7, 1),
    (1, 5, 16, 1, 3), (64, 1, 7, 7, 103),
]


def make_inputs(B, C, H, W, N, dtype=torch.float32, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    m = torch.randn(N, H, W, generator=g, dtype=dtype)
    w = torch.randn(N, C, generator=g, dtype=dtype)
    b = torch.randn(N, generator=g, dtype=dtype) if bias else None
    return x, m, w, b


def run(fn, inputs, grad_out_seed=1):
    leaves = [t.clone().requires_grad_() if t is not None else None for t in inputs]
    y = fn(*leaves)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(grad_out_seed)).to(y.dtype)
    y.backward(g)
    return y.detach(), [t.grad if t is not None else None for t in leaves]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("bias", [True, False])
def test_matches_reference_forward_and_grads(backend, shape, bias):
    """float32 backends against the float64 reference, within float32 accumulation error of the largest value."""
    inputs = make_inputs(*shape, bias=bias)
    y_ref, g_ref = run(reference.factorized_readout, [t.double() if t is not None else None for t in inputs])
    y, g = run(lambda *a: factorized_readout(*a, backend=backend), inputs)
    assert y.shape == (shape[0], shape[4]) and y.dtype == torch.float32
    for name, got, want in zip(["y", "x", "spatial", "features", "bias"], [y] + g, [y_ref] + g_ref):
        if want is None:
            assert got is None, name
        else:
            scale = float(want.abs().max()) if want.numel() else 1.0
            torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5 * max(scale, 1.0),
                                       msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_float64(backend):
    inputs = make_inputs(4, 6, 5, 9, 11, dtype=torch.float64)
    y_ref, g_ref = run(reference.factorized_readout, inputs)
    y, g = run(lambda *a: factorized_readout(*a, backend=backend), inputs)
    torch.testing.assert_close(y, y_ref, **TOL[torch.float64])
    for got, want in zip(g, g_ref):
        torch.testing.assert_close(got, want, **TOL[torch.float64])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck_float64(backend):
    inputs = [t.requires_grad_() for t in make_inputs(3, 4, 5, 6, 7, dtype=torch.float64)]
    assert torch.autograd.gradcheck(lambda *a: factorized_readout(*a, backend=backend), inputs)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_contiguous_inputs(backend):
    x, m, w, b = make_inputs(6, 5, 8, 9, 7)
    x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, permuted strides
    m_nc = torch.stack([m, m], dim=-1)[..., 0]
    w_nc = w.t().contiguous().t()
    b_nc = torch.stack([b, b], dim=1)[:, 0]
    assert not (x_nc.is_contiguous() or m_nc.is_contiguous() or w_nc.is_contiguous() or b_nc.is_contiguous())
    y_ref, g_ref = run(reference.factorized_readout, (x, m, w, b))
    y, g = run(lambda *a: factorized_readout(*a, backend=backend), (x_nc, m_nc, w_nc, b_nc))
    torch.testing.assert_close(y, y_ref, **TOL[torch.float32])
    for got, want in zip(g, g_ref):
        torch.testing.assert_close(got, want, **TOL[torch.float32])


def test_batch_zero_returns_empty():
    x, m, w, b = make_inputs(0, 5, 4, 4, 9)
    for backend in CPU_BACKENDS:
        y = factorized_readout(x, m, w, b, backend=backend)
        assert y.shape == (0, 9)


def test_half_precision_torch_backend_accumulates_in_float32():
    x, m, w, b = make_inputs(8, 48, 16, 16, 20)
    y32 = reference.factorized_readout(x, m, w, b)
    y16 = factorized_readout(x.bfloat16(), m.bfloat16(), w.bfloat16(), b.bfloat16(), backend="torch")
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y32, rtol=3e-2, atol=0.5)


def test_torch_compile_fullgraph_matches_eager():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            x, self_m, w, b = make_inputs(1, 5, 6, 6, 4)
            self.m = torch.nn.Parameter(self_m)
            self.w = torch.nn.Parameter(w)
            self.b = torch.nn.Parameter(b)

        def forward(self, x):
            return torch.nn.functional.elu(factorized_readout(x, self.m, self.w, self.b)) + 1

    model = Model()
    x = torch.randn(7, 5, 6, 6)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    y_eager = model(x)
    y_eager.sum().backward()
    grads_eager = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    y_comp = compiled(x)
    y_comp.sum().backward()
    torch.testing.assert_close(y_comp, y_eager)
    for p, g in zip(model.parameters(), grads_eager):
        torch.testing.assert_close(p.grad, g)


def test_dispatch_default_cpu_tensor_uses_cpu_extension():
    assert _dispatch.resolve_backend("factorized_readout", None, torch.device("cpu")) == "cpu"


def test_env_variable_selects_backend(monkeypatch):
    monkeypatch.setenv("DAENR_FAST_BACKEND", "torch")
    assert _dispatch.resolve_backend("factorized_readout", None, torch.device("cpu")) == "torch"
    monkeypatch.setenv("DAENR_FAST_BACKEND", "cuda")
    x, m, w, b = make_inputs(2, 3, 4, 4, 5)
    with pytest.raises(_dispatch.BackendUnavailable, match="cuda"):
        factorized_readout(x, m, w, b)


def test_explicit_unavailable_backend_fails_loudly():
    x, m, w, b = make_inputs(2, 3, 4, 4, 5)
    with pytest.raises(_dispatch.BackendUnavailable, match="'cuda' is unavailable"):
        factorized_readout(x, m, w, b, backend="cuda")


def test_unknown_backend_name():
    x, m, w, b = make_inputs(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match="backend must be one of"):
        factorized_readout(x, m, w, b, backend="tpu")


# ------------------------------------------------------------------------------------------- bad inputs

def test_rejects_wrong_ndim_x():
    _, m, w, b = make_inputs(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match=r"x must have shape \(B,C,H,W\)"):
        factorized_readout(torch.randn(2, 3, 16), m, w, b)


def test_rejects_wrong_ndim_spatial():
    x, _, w, b = make_inputs(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match=r"spatial must have shape \(N,H,W\)"):
        factorized_readout(x, torch.randn(5, 16), w, b)


def test_rejects_mismatched_hw():
    x, _, w, b = make_inputs(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match=r"spatial must have shape \(N,H,W\)=\(N,4,4\)"):
        factorized_readout(x, torch.randn(5, 4, 3), w, b)


def test_rejects_mismatched_channels():
    x, m, _, b = make_inputs(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match=r"features must have shape \(N,C\)=\(5,3\)"):
        factorized_readout(x, m, torch.randn(5, 4), b)


def test_rejects_mismatched_neurons():
    x, m, _, b = make_inputs(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match=r"features must have shape \(N,C\)=\(5,3\)"):
        factorized_readout(x, m, torch.randn(6, 3), b)


def test_rejects_bad_bias_shape():
    x, m, w, _ = make_inputs(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match=r"bias must have shape \(N,\)=\(5,\)"):
        factorized_readout(x, m, w, torch.randn(4))


def test_rejects_mixed_dtypes():
    x, m, w, b = make_inputs(2, 3, 4, 4, 5)
    with pytest.raises(TypeError, match="spatial has dtype torch.float64"):
        factorized_readout(x, m.double(), w, b)


def test_rejects_integer_dtype():
    _, m, w, b = make_inputs(2, 3, 4, 4, 5)
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        factorized_readout(torch.ones(2, 3, 4, 4, dtype=torch.int64), m, w, b)


def test_rejects_non_tensor():
    _, m, w, b = make_inputs(2, 3, 4, 4, 5)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        factorized_readout([[1.0]], m, w, b)


def test_rejects_mixed_devices():
    x, m, w, b = make_inputs(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match="features is on meta"):
        factorized_readout(x, m, w.to("meta"), b)


def test_cpu_backend_rejects_half():
    x, m, w, b = (t.half() for t in make_inputs(2, 3, 4, 4, 5))
    with pytest.raises(TypeError, match="backend 'cpu' supports dtypes float32, float64"):
        factorized_readout(x, m, w, b, backend="cpu")
