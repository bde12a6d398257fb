"""factorized_readout, triton backend on CPU under TRITON_INTERPRET=1: forward and all four gradients against
the reference (autograd), ragged shapes, split reductions, the public op, float16.

bfloat16 is covered on GPU only (tests/ops/test_factorized_readout_cuda.py): the interpreter runs ``tl.dot`` on
bfloat16 tiles as an integer matmul of their bit patterns (numpy has no bfloat16).
"""
import itertools
import os

os.environ["TRITON_INTERPRET"] = "1"  # before anything imports daenr_fast.kernels

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from daenr_fast.kernels import factorized_readout as kernel  # noqa: E402
from daenr_fast.ops import factorized_readout, reference  # noqa: E402

pytestmark = pytest.mark.triton

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4)}
# float16: max |error| / max |float64 truth|; float32 accumulation, so the output rounding (2^-11) dominates.
REL_TOL_FLOAT16 = 2e-3

SMALL = list(itertools.product([0, 1, 3], [1, 5], [(1, 1), (7, 7)], [1, 3, 17]))  # (B, C, (H, W), N)


def make_inputs(B, C, H, W, N, dtype=torch.float32, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=g).to(dtype)
    m = torch.randn(N, H, W, generator=g).to(dtype)
    w = torch.randn(N, C, generator=g).to(dtype)
    b = torch.randn(N, generator=g).to(dtype) if bias else None
    gy = torch.randn(B, N, generator=g).to(dtype)
    return x, m, w, b, gy


def reference_grads(x, m, w, b, gy):
    """Reference output and (gx, gm, gw, gb) by autograd; gb is None without a bias."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, m, w, b)]
    y = reference.factorized_readout(*leaves)
    y.backward(gy)
    grads = [t.grad if t is not None else None for t in leaves]
    if x.shape[0] == 0:  # autograd leaves .grad unset when nothing flowed back; the true gradients are zero
        grads = [torch.zeros_like(t) if t is not None else None for t in leaves]
    return y.detach(), grads


def check_kernels(x, m, w, b, gy, splits=None):
    y_ref, (gx_ref, gm_ref, gw_ref, gb_ref) = reference_grads(x, m, w, b, gy)
    y = kernel.forward(x, m, w, b, splits=splits)
    gx, gm, gw, gb = kernel.backward(gy, x, m, w, splits=splits)
    assert y.shape == y_ref.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, y_ref, **TOL[torch.float32])
    for name, got, want in [("x", gx, gx_ref), ("spatial", gm, gm_ref), ("features", gw, gw_ref)]:
        assert got.shape == want.shape and got.dtype == x.dtype, name
        torch.testing.assert_close(got, want, **TOL[torch.float32], msg=lambda s: f"grad {name}: {s}")
    torch.testing.assert_close(gb, gy.sum(0), **TOL[torch.float32])
    if gb_ref is not None:
        torch.testing.assert_close(gb, gb_ref, **TOL[torch.float32])


@pytest.mark.parametrize("B,C,HW,N", SMALL, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_kernels_match_reference(B, C, HW, N):
    bias = (B + C + N) % 2 == 0  # half of the shapes run without a bias
    check_kernels(*make_inputs(B, C, *HW, N, bias=bias))


@pytest.mark.parametrize("shape", [(66, 2, 1, 3, 5), (3, 2, 3, 23, 130), (5, 3, 16, 16, 20)], ids=lambda s: "x".join(map(str, s)))
def test_several_blocks_ragged(shape):
    """More than one program per output dimension, pixel blocks with a ragged tail."""
    check_kernels(*make_inputs(*shape))


@pytest.mark.parametrize("splits", [2, 3, 100])
def test_split_reductions(splits):
    """Channel (forward) and batch (weight gradients) splits sum to the same result; 100 clamps to the depth."""
    check_kernels(*make_inputs(7, 5, 4, 6, 9), splits=splits)


def test_split_plan():
    assert kernel._split(5, 2) == (3, 2)
    assert kernel._split(5, 3) == (2, 3)
    assert kernel._split(4, 3) == (2, 2)  # no empty split
    assert kernel._split(0, 1) == (1, 1)
    cpu = torch.device("cpu")
    assert kernel._split_count(4, 10, 2, cpu, None) == 1
    assert kernel._split_count(4, 10, 2, cpu, 100) == 10


@pytest.mark.parametrize("bias", [True, False])
def test_public_op_with_autograd(bias):
    x, m, w, b, gy = make_inputs(3, 5, 7, 6, 17, bias=bias)
    y_ref, g_ref = reference_grads(x, m, w, b, gy)
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, m, w, b)]
    y = factorized_readout(*leaves, backend="triton")
    y.backward(gy)
    torch.testing.assert_close(y.detach(), y_ref, **TOL[torch.float32])
    for name, leaf, want in zip(["x", "spatial", "features", "bias"], leaves, g_ref):
        if want is None:
            assert leaf is None
        else:
            torch.testing.assert_close(leaf.grad, want, **TOL[torch.float32], msg=lambda s: f"grad {name}: {s}")


def test_public_op_empty_batch():
    x, m, w, b, _ = make_inputs(0, 5, 7, 7, 3)
    y = factorized_readout(x, m, w, b, backend="triton")
    assert y.shape == (0, 3)


def _rel_err(got, want):
    return ((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()


def test_float16_against_float64_truth():
    x, m, w, b, gy = make_inputs(6, 5, 7, 7, 20, dtype=torch.float16)
    y_ref, g_ref = reference_grads(*(t.double() for t in (x, m, w, b, gy)))
    y = kernel.forward(x, m, w, b)
    grads = kernel.backward(gy, x, m, w)
    assert y.dtype == torch.float16 and all(g.dtype == torch.float16 for g in grads)
    assert _rel_err(y, y_ref) < REL_TOL_FLOAT16
    for name, got, want in zip(["x", "spatial", "features", "bias"], grads, g_ref):
        assert _rel_err(got, want) < REL_TOL_FLOAT16, name


def test_launcher_rejects_mixed_or_strided_inputs():
    x, m, w, b, _ = make_inputs(2, 3, 4, 5, 6)
    with pytest.raises(ValueError, match="contiguous"):
        kernel.forward(x, m.double(), w, b)
    with pytest.raises(ValueError, match="contiguous"):
        kernel.forward(x.transpose(2, 3), m.transpose(1, 2), w, b)
    with pytest.raises(TypeError, match="dtype"):
        kernel.forward(x.double(), m.double(), w.double(), b.double())
