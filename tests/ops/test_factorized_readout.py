"""factorized_readout on every backend against the float64 reference: forward and all four gradients, every dtype
each backend takes, small, ragged and empty shapes (paper- and Sensorium-sized ones on a GPU), non-contiguous
inputs, gradcheck, determinism, torch.compile; the Triton kernels called directly (ragged blocks, split
reductions, float16, the launcher's checks); dispatch; validation (one test per rule)."""
import itertools

import pytest
import torch

from daenr_fast import _dispatch
from daenr_fast.ops import factorized_readout, reference
from ops.conftest import (READOUT_BFLOAT16_VS_FLOAT32, TOLERANCES, assert_all_close_to, readout_inputs,
                          require_backend, run, run_reference, skip_if_slow_on_interpreter, upstream_gradient)

OP = "factorized_readout"
TOL = TOLERANCES[OP]
NAMES = ["y", "grad x", "grad spatial", "grad features", "grad bias"]

SHAPES = [  # (B, C, H, W, N)
    (0, 5, 7, 7, 3), (1, 1, 1, 1, 1), (2, 1, 1, 7, 3), (3, 48, 1, 7, 1), (1, 5, 16, 1, 3), (3, 5, 7, 6, 17),
    (3, 5, 7, 7, 17), (4, 6, 5, 9, 11), (9, 6, 5, 13, 37), (3, 5, 7, 16, 103), (64, 1, 7, 7, 103), (65, 3, 9, 11, 130),
    (64, 48, 16, 16, 103),
]
GPU_SHAPES = [(128, 64, 16, 16, 1000), (32, 64, 28, 56, 8000)]  # (B, C, H, W, N)


def shape_id(shape):
    return "x".join(map(str, shape))


def check_against_reference(backend, dtype, inputs):
    """Output and every gradient of ``backend`` against the float64 truth of the same inputs."""
    want_y, want_grads = run_reference(reference.factorized_readout, inputs)
    y, grads = run(lambda *a: factorized_readout(*a, backend=backend), inputs)
    assert y.shape == want_y.shape and y.dtype == dtype
    assert_all_close_to(NAMES, [y] + grads, [want_y] + want_grads, TOL[dtype], dtype=dtype)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_matches_float64_reference(backend, device, dtype, shape, bias):
    skip_if_slow_on_interpreter(OP, device, backend, float(torch.tensor(shape).prod()))
    check_against_reference(backend, dtype, readout_inputs(*shape, dtype=dtype, device=device, bias=bias))


@pytest.mark.cuda
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=shape_id)
def test_gpu_sizes_match_float64_reference(backend, device, dtype, shape):
    """The model sizes that the CPU backends and the interpreter are too slow for (half of them without a bias)."""
    check_against_reference(backend, dtype, readout_inputs(*shape, dtype=dtype, device=device,
                                                           bias=sum(shape) % 2 == 0))


@pytest.mark.dtypes(torch.float64)
def test_gradcheck_float64(backend, device, dtype):
    inputs = [t.requires_grad_() for t in readout_inputs(3, 4, 5, 6, 7, dtype=dtype, device=device)]
    assert torch.autograd.gradcheck(lambda *a: factorized_readout(*a, backend=backend), inputs)


def test_non_contiguous_inputs(backend, device, dtype):
    x, m, w, b = readout_inputs(6, 5, 8, 9, 7, dtype=dtype, device=device)
    x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, permuted strides
    m_nc = torch.stack([m, m], dim=-1)[..., 0]
    w_nc = w.t().contiguous().t()
    b_nc = torch.stack([b, b], dim=1)[:, 0]
    assert not (x_nc.is_contiguous() or m_nc.is_contiguous() or w_nc.is_contiguous() or b_nc.is_contiguous())
    want_y, want_grads = run_reference(reference.factorized_readout, (x, m, w, b))
    y, grads = run(lambda *a: factorized_readout(*a, backend=backend), (x_nc, m_nc, w_nc, b_nc))
    assert_all_close_to(NAMES, [y] + grads, [want_y] + want_grads, TOL[dtype], dtype=dtype)


def test_empty_batch(backend, device):
    """B = 0: an empty output, and the weight gradients are zeros (nothing flows back)."""
    x, m, w, b = readout_inputs(0, 5, 7, 7, 3, device=device)
    y, (gx, gm, gw, gb) = run(lambda *a: factorized_readout(*a, backend=backend), (x, m, w, b))
    assert y.shape == (0, 3) and gx.shape == x.shape
    for grad, param in ((gm, m), (gw, w), (gb, b)):
        assert grad.shape == param.shape and torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("shape", [(3, 0, 4, 4, 5), (3, 2, 0, 4, 5), (3, 0, 0, 0, 5)], ids=str)
def test_empty_channels_or_pixels(backend, device, shape):
    """C = 0 or H*W = 0: y is the bias alone, and every gradient but the bias's is zero (or empty)."""
    x, m, w, b = readout_inputs(*shape, device=device)
    y, (gx, gm, gw, gb) = run(lambda *a: factorized_readout(*a, backend=backend), (x, m, w, b))
    torch.testing.assert_close(y, b.detach().expand(shape[0], -1))
    for grad, param in ((gx, x), (gm, m), (gw, w)):
        assert grad.shape == param.shape and torch.count_nonzero(grad) == 0
    assert gb.shape == b.shape


def test_deterministic(backend, device):
    """Split reductions are summed in a fixed order: two runs agree bit for bit."""
    inputs = readout_inputs(5, 7, 11, 13, 29, device=device)
    first = run(lambda *a: factorized_readout(*a, backend=backend), inputs)
    second = run(lambda *a: factorized_readout(*a, backend=backend), inputs)
    assert torch.equal(first[0], second[0])
    for a, b in zip(first[1], second[1]):
        assert torch.equal(a, b)


def test_torch_backend_in_bfloat16_accumulates_in_float32():
    x, m, w, b = readout_inputs(8, 48, 16, 16, 20)
    y32 = reference.factorized_readout(x, m, w, b)
    y16 = factorized_readout(x.bfloat16(), m.bfloat16(), w.bfloat16(), b.bfloat16(), backend="torch")
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y32, rtol=READOUT_BFLOAT16_VS_FLOAT32.rtol,
                               atol=READOUT_BFLOAT16_VS_FLOAT32.atol)


def test_torch_compile_fullgraph_matches_eager(backend, device):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            _, m, w, b = readout_inputs(1, 5, 6, 6, 4, device=device)
            self.m, self.w, self.b = (torch.nn.Parameter(t) for t in (m, w, b))

        def forward(self, x):
            return torch.nn.functional.elu(factorized_readout(x, self.m, self.w, self.b, backend=backend)) + 1

    model = Model()
    x = torch.randn(7, 5, 6, 6, generator=torch.Generator().manual_seed(3)).to(device)
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


# ------------------------------------------------------------------------------- the Triton kernels called directly

SMALL = list(itertools.product([0, 1, 3], [1, 5], [(1, 1), (7, 7)], [1, 3, 17]))  # (B, C, (H, W), N)


def check_kernels(device, shape, bias=True, splits=None):
    """kernel.forward / kernel.backward (float32) against the float64 truth; the bias gradient is always
    returned and is the batch sum of the upstream gradient."""
    from daenr_fast.kernels import factorized_readout as kernel

    x, m, w, b = readout_inputs(*shape, device=device, bias=bias)
    want_y, want_grads = run_reference(reference.factorized_readout, (x, m, w, b))
    gy = upstream_gradient((shape[0], shape[4])).to(device)
    y = kernel.forward(x, m, w, b, splits=splits)
    grads = list(kernel.backward(gy, x, m, w, splits=splits))
    tol = TOL[torch.float32]
    assert_all_close_to(NAMES[:4], [y] + grads[:3], [want_y] + want_grads[:3], tol, dtype=torch.float32)
    assert_all_close_to(["grad bias (sum of gy)"], grads[3:], [gy.double().sum(0)], tol, dtype=torch.float32)
    if bias:
        assert_all_close_to(NAMES[4:], grads[3:], want_grads[3:], tol)


@pytest.mark.parametrize("B,C,HW,N", SMALL, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_kernels_match_reference(triton_device, B, C, HW, N):
    check_kernels(triton_device, (B, C, *HW, N), bias=(B + C + N) % 2 == 0)  # half of the shapes without a bias


@pytest.mark.parametrize("shape", [(66, 2, 1, 3, 5), (3, 2, 3, 23, 130), (5, 3, 16, 16, 20)], ids=shape_id)
def test_kernels_with_several_ragged_blocks(triton_device, shape):
    """More than one program per output dimension, pixel blocks with a ragged tail."""
    check_kernels(triton_device, shape)


@pytest.mark.parametrize("splits", [2, 3, 100])
def test_kernel_split_reductions(triton_device, splits):
    """Channel (forward) and batch (weight gradients) splits sum to the same result; 100 clamps to the depth."""
    check_kernels(triton_device, (7, 5, 4, 6, 9), splits=splits)


def test_kernel_split_plan(triton_device):
    from daenr_fast.kernels import factorized_readout as kernel

    assert kernel._split(5, 2) == (3, 2)
    assert kernel._split(5, 3) == (2, 3)
    assert kernel._split(4, 3) == (2, 2)  # no empty split
    assert kernel._split(0, 1) == (1, 1)
    cpu = torch.device("cpu")
    assert kernel._split_count(4, 10, 2, cpu, None) == 1
    assert kernel._split_count(4, 10, 2, cpu, 100) == 10


def test_kernels_in_float16_against_float64_truth(triton_device):
    from daenr_fast.kernels import factorized_readout as kernel

    x, m, w, b = readout_inputs(6, 5, 7, 7, 20, dtype=torch.float16, device=triton_device)
    want_y, want_grads = run_reference(reference.factorized_readout, (x, m, w, b))
    gy = upstream_gradient((6, 20)).to(device=triton_device, dtype=torch.float16)
    y = kernel.forward(x, m, w, b)
    grads = kernel.backward(gy, x, m, w)
    assert_all_close_to(NAMES, [y, *grads], [want_y] + want_grads, TOL[torch.float16], dtype=torch.float16)


def test_launcher_rejects_mixed_or_strided_inputs(triton_device):
    from daenr_fast.kernels import factorized_readout as kernel

    x, m, w, b = readout_inputs(2, 3, 4, 5, 6, device=triton_device)
    with pytest.raises(ValueError, match="contiguous"):
        kernel.forward(x, m.double(), w, b)
    with pytest.raises(ValueError, match="contiguous"):
        kernel.forward(x.transpose(2, 3), m.transpose(1, 2), w, b)
    with pytest.raises(TypeError, match="dtype"):
        kernel.forward(x.double(), m.double(), w.double(), b.double())


# ------------------------------------------------------------------------------------------------------- dispatch

def test_dispatch_default_cpu_tensor_uses_cpu_extension():
    require_backend(OP, "cpu", torch.device("cpu"))
    assert _dispatch.resolve_backend(OP, None, torch.device("cpu")) == "cpu"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_default_dispatch_on_cuda_tensors_picks_a_fused_gpu_backend():
    x, m, w, b = readout_inputs(2, 3, 4, 5, 6, device=torch.device("cuda"))
    work = x.numel() * m.shape[0]
    chosen = _dispatch.resolve_backend(OP, None, x.device, x.dtype, work)
    assert chosen == next(name for name in _dispatch.gpu_order(OP, x.dtype, work)
                          if name == "torch" or _dispatch.backend_status(OP, name, x.device)[0])
    assert chosen in ("cuda", "triton")  # a call this small is one the fused kernels win
    want = reference.factorized_readout(*(t.double() for t in (x, m, w, b)))
    assert_all_close_to(["y"], [factorized_readout(x, m, w, b)], [want], TOL[torch.float32])


def test_env_variable_selects_backend(monkeypatch):
    monkeypatch.setenv("DAENR_FAST_BACKEND", "torch")
    assert _dispatch.resolve_backend(OP, None, torch.device("cpu")) == "torch"
    monkeypatch.setenv("DAENR_FAST_BACKEND", "cuda")
    x, m, w, b = readout_inputs(2, 3, 4, 4, 5)
    with pytest.raises(_dispatch.BackendUnavailable, match="cuda"):
        factorized_readout(x, m, w, b)


def test_explicit_unavailable_backend_fails_loudly():
    x, m, w, b = readout_inputs(2, 3, 4, 4, 5)
    with pytest.raises(_dispatch.BackendUnavailable, match="'cuda' is unavailable"):
        factorized_readout(x, m, w, b, backend="cuda")


def test_unknown_backend_name():
    x, m, w, b = readout_inputs(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match="backend must be one of"):
        factorized_readout(x, m, w, b, backend="tpu")


# ----------------------------------------------------------------------------------------------------- bad inputs

def test_rejects_wrong_ndim_x():
    _, m, w, b = readout_inputs(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match=r"x must have shape \(B,C,H,W\)"):
        factorized_readout(torch.randn(2, 3, 16), m, w, b)


def test_rejects_wrong_ndim_spatial():
    x, _, w, b = readout_inputs(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match=r"spatial must have shape \(N,H,W\)"):
        factorized_readout(x, torch.randn(5, 16), w, b)


def test_rejects_mismatched_hw():
    x, _, w, b = readout_inputs(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match=r"spatial must have shape \(N,H,W\)=\(N,4,4\)"):
        factorized_readout(x, torch.randn(5, 4, 3), w, b)


def test_rejects_mismatched_channels():
    x, m, _, b = readout_inputs(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match=r"features must have shape \(N,C\)=\(5,3\)"):
        factorized_readout(x, m, torch.randn(5, 4), b)


def test_rejects_mismatched_neurons():
    x, m, _, b = readout_inputs(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match=r"features must have shape \(N,C\)=\(5,3\)"):
        factorized_readout(x, m, torch.randn(6, 3), b)


def test_rejects_bad_bias_shape():
    x, m, w, _ = readout_inputs(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match=r"bias must have shape \(N,\)=\(5,\)"):
        factorized_readout(x, m, w, torch.randn(4))


def test_rejects_mixed_dtypes():
    x, m, w, b = readout_inputs(2, 3, 4, 4, 5)
    with pytest.raises(TypeError, match="spatial has dtype torch.float64"):
        factorized_readout(x, m.double(), w, b)


def test_rejects_integer_dtype():
    _, m, w, b = readout_inputs(2, 3, 4, 4, 5)
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        factorized_readout(torch.ones(2, 3, 4, 4, dtype=torch.int64), m, w, b)


def test_rejects_non_tensor():
    _, m, w, b = readout_inputs(2, 3, 4, 4, 5)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        factorized_readout([[1.0]], m, w, b)


def test_rejects_mixed_devices():
    x, m, w, b = readout_inputs(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match="features is on meta"):
        factorized_readout(x, m, w.to("meta"), b)


def test_cpu_backend_rejects_half():
    x, m, w, b = readout_inputs(2, 3, 4, 4, 5, dtype=torch.float16)
    with pytest.raises(TypeError, match="backend 'cpu' supports dtypes float32, float64"):
        factorized_readout(x, m, w, b, backend="cpu")
