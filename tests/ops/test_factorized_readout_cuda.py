"""factorized_readout on a CUDA GPU: the cuda and triton backends against a float64 truth, forward and all four
gradients, float32 / float16 / bfloat16, small, ragged and paper-sized shapes; empty batch, non-contiguous inputs,
determinism. Skipped without a GPU.

Tolerances are max |error| / max |float64 truth| per tensor (the truth is computed from the same rounded inputs):

=========  =======  ===========================================================================================
dtype      bound    why
=========  =======  ===========================================================================================
float32    1e-4     float32 products and accumulation (Triton: ``input_precision="ieee"``, no TF32), up to ~1e5
                    terms per output
float16    2e-3     exact products, float32 accumulation, one rounding of the result (2^-11 relative); Triton's
                    grad x contracts gy*w (formed in float32) in 3xTF32
bfloat16   1.6e-2   as float16 with bfloat16's rounding of the result (2^-8 relative)
=========  =======  ===========================================================================================

Run in a pytest process without ``TRITON_INTERPRET=1`` (the interpreter tests set it for their whole process);
the triton cases skip themselves when it is set.
"""
import os

import pytest
import torch

from daenr_fast import _dispatch
from daenr_fast.ops import factorized_readout, reference

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

OP = "factorized_readout"
BACKENDS = ["cuda", "triton"]
REL_TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = list(REL_TOL)

SHAPES = [  # (B, C, H, W, N)
    (1, 1, 1, 1, 1), (3, 5, 7, 7, 17), (2, 1, 1, 7, 3), (3, 48, 1, 7, 1), (65, 3, 9, 11, 130),
    (64, 48, 16, 16, 103), (128, 64, 16, 16, 1000), (32, 64, 28, 56, 8000),
]


def require(backend):
    if backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1 in this process: run the CUDA tests in a pytest process of their own")
    ok, why = _dispatch.backend_status(OP, backend, torch.device("cuda"))
    if not ok:  # on a GPU machine an unavailable backend is a failure, not a skip
        pytest.fail(f"the {backend} backend is unavailable on this GPU machine: {why}")


def make_inputs(B, C, H, W, N, dtype, bias=True, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, device="cuda").to(dtype)

    return randn(B, C, H, W), randn(N, H, W), randn(N, C), (randn(N) if bias else None), randn(B, N)


def run(fn, x, m, w, b, gy):
    """Output and (gx, gm, gw, gb) of fn by autograd (gb None without a bias; zeros for an empty batch)."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, m, w, b)]
    y = fn(*leaves)
    y.backward(gy)
    grads = [None if t is None else (t.grad if t.grad is not None else torch.zeros_like(t)) for t in leaves]
    return y.detach(), grads


def truth(x, m, w, b, gy):
    return run(reference.factorized_readout, *(None if t is None else t.double() for t in (x, m, w, b, gy)))


def rel_err(got, want):
    if want.numel() == 0:
        return 0.0
    return ((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def check(backend, inputs, dtype):
    y_true, g_true = truth(*inputs)
    y, g = run(lambda *a: factorized_readout(*a, backend=backend), *inputs)
    assert y.dtype == dtype and y.shape == y_true.shape
    errors = {"y": rel_err(y, y_true)}
    for name, got, want in zip(["x", "spatial", "features", "bias"], g, g_true):
        if want is None:
            assert got is None
            continue
        assert got.dtype == dtype and got.shape == want.shape, name
        errors[f"grad {name}"] = rel_err(got, want)
    bad = {k: v for k, v in errors.items() if not v <= REL_TOL[dtype]}  # `not <=` also catches NaN
    assert not bad, f"{backend} {dtype}: relative errors above {REL_TOL[dtype]}: {bad}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_float64_truth(backend, dtype, shape):
    require(backend)
    check(backend, make_inputs(*shape, dtype, bias=sum(shape) % 2 == 0), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias", [True, False])
def test_bias_and_no_bias(backend, bias):
    require(backend)
    check(backend, make_inputs(9, 6, 5, 13, 37, torch.float32, bias=bias), torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    require(backend)
    x, m, w, b, gy = make_inputs(0, 5, 7, 7, 3, torch.float32)
    y, (gx, gm, gw, gb) = run(lambda *a: factorized_readout(*a, backend=backend), x, m, w, b, gy)
    assert y.shape == (0, 3) and gx.shape == x.shape
    for grad in (gm, gw, gb):
        assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    require(backend)
    x, m, w, b, gy = make_inputs(6, 5, 8, 9, 7, torch.float32)
    x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)
    m_nc = torch.stack([m, m], dim=-1)[..., 0]
    w_nc = w.t().contiguous().t()
    assert not (x_nc.is_contiguous() or m_nc.is_contiguous() or w_nc.is_contiguous())
    y_true, g_true = truth(x, m, w, b, gy)
    y, g = run(lambda *a: factorized_readout(*a, backend=backend), x_nc, m_nc, w_nc, b, gy)
    assert rel_err(y, y_true) <= REL_TOL[torch.float32]
    for got, want in zip(g, g_true):
        assert rel_err(got, want) <= REL_TOL[torch.float32]


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic(backend):
    """Split reductions are summed in a fixed order: two runs agree bit for bit."""
    require(backend)
    inputs = make_inputs(5, 7, 11, 13, 29, torch.float32)
    first = run(lambda *a: factorized_readout(*a, backend=backend), *inputs)
    second = run(lambda *a: factorized_readout(*a, backend=backend), *inputs)
    assert torch.equal(first[0], second[0])
    for a, b in zip(first[1], second[1]):
        assert torch.equal(a, b)


def test_default_dispatch_picks_a_gpu_backend():
    x, m, w, b, _ = make_inputs(2, 3, 4, 5, 6, torch.float32)
    chosen = _dispatch.resolve_backend(OP, None, x.device, x.dtype, x.numel() * m.shape[0])
    assert chosen == next(b for b in _dispatch.gpu_order(OP, x.dtype, x.numel() * m.shape[0])
                          if b == "torch" or _dispatch.backend_status(OP, b, x.device)[0])
    assert chosen in ("cuda", "triton")  # a call this small is one the fused kernels win
    assert rel_err(factorized_readout(x, m, w, b), reference.factorized_readout(*(t.double() for t in (x, m, w, b)))) \
        <= REL_TOL[torch.float32]
