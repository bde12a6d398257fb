"""vq_lookup on every backend against the float64 reference, judged by distance (near-ties may pick another index)
over a grid of shapes and every dtype each backend takes; near-ties and exact ties (to the lowest index, across
codebook blocks); float32 distances for half inputs; gradients of the distance; gradcheck in float64;
non-contiguous inputs; custom-op checks; validation (one test per rule)."""
import functools
import itertools

import pytest
import torch

from daenr_fast.ops import OPS, reference, vq_lookup
from ops.conftest import (TOLERANCES, assert_all_close_to, run, run_reference, skip_if_slow_on_interpreter,
                          vq_distance_tolerance, vq_exact_tie_inputs, vq_inputs, vq_near_tie_inputs,
                          vq_separated_inputs)

OP = "vq_lookup"
GRID = list(itertools.product([0, 1, 17, 4096], [1, 3, 256, 1024], [1, 3, 32, 64]))  # (M, K, D)
RAGGED = [(0, 3, 4), (17, 3, 3), (70, 130, 33), (65, 64, 64), (5, 200, 2)]  # blocks with ragged tails


def case(M, K, D, dtype, device):
    """Inputs of one shape and dtype and the reference's float64 distances."""
    z, e = vq_inputs(M, K, D, dtype, device)
    return z, e, reference_distances(M, K, D, torch.float32 if dtype == torch.float64 else dtype, device)


@functools.lru_cache(maxsize=None)
def reference_distances(M, K, D, dtype, device):
    """The reference's float64 distances of vq_inputs rounded to ``dtype``, computed once (float64 inputs are the
    float32 draws: they share the float32 ones)."""
    z, e = vq_inputs(M, K, D, dtype, device)
    return reference.vq_lookup(z.double(), e.double())[1]


def distance_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_by_distance(z, e, idx, dist, ref_dist):
    """idx names a nearest code within float32 rounding of the expanded form, and dist is its distance."""
    assert idx.dtype == torch.int64 and idx.shape == (z.shape[0],)
    assert dist.dtype == distance_dtype(z.dtype) and dist.shape == (z.shape[0],)
    assert ((idx >= 0) & (idx < e.shape[0])).all()
    chosen = ((z.double() - e.double()[idx]) ** 2).sum(1)
    tol = vq_distance_tolerance(z, e)
    assert (chosen - ref_dist <= tol).all(), "a code farther than the nearest one was chosen"
    assert ((dist.double() - ref_dist).abs() <= tol).all(), "returned distance differs from the nearest one"


#: The float64 reference (differences, not the matrix-product shortcut) of more distance terms than this takes
#: seconds on a CPU: the float16/bfloat16 roundings of such inputs (each needs its own reference) run on the GPU.
CPU_HALF_REFERENCE_LIMIT = 1e7


@pytest.mark.parametrize("M,K,D", GRID + RAGGED, ids=lambda v: str(v))
def test_matches_reference_by_distance(backend, device, dtype, M, K, D):
    skip_if_slow_on_interpreter(OP, device, backend, max(M, K))
    if device.type == "cpu" and dtype in (torch.float16, torch.bfloat16) and M * K * D > CPU_HALF_REFERENCE_LIMIT:
        pytest.skip(f"M*K*D above {CPU_HALF_REFERENCE_LIMIT:g}: the float64 reference of each half-precision "
                    "rounding is too slow on a CPU; the case runs on the GPU")
    z, e, ref_dist = case(M, K, D, dtype, device)
    idx, dist = vq_lookup(z, e, backend=backend)
    check_by_distance(z, e, idx, dist, ref_dist)


def test_near_ties_are_judged_by_distance(backend, device, dtype):
    """Twin codes 1e-4 apart: either twin is a right answer, its distance the nearest one."""
    z, e = vq_near_tie_inputs(300, 64, 16, dtype, device)
    idx, dist = vq_lookup(z, e, backend=backend)
    check_by_distance(z, e, idx, dist, reference.vq_lookup(z.double(), e.double())[1])


@pytest.mark.dtypes(torch.float16, torch.bfloat16)
def test_half_inputs_give_float32_distances(backend, device, dtype):
    z, e = vq_inputs(40, 50, 16, dtype, device, seed=3)
    idx, dist = vq_lookup(z, e, backend=backend)
    assert dist.dtype == torch.float32
    check_by_distance(z, e, idx, dist, reference.vq_lookup(z.double(), e.double())[1])


@pytest.mark.parametrize("repeats", [1, 30, 100, 300])
def test_exact_ties_go_to_the_lowest_index(backend, device, repeats):
    """The same ties in one block and in every block of a long codebook."""
    z, e, want_idx, want_dist = vq_exact_tie_inputs(repeats, device)
    skip_if_slow_on_interpreter(OP, device, backend, e.shape[0])
    idx, dist = vq_lookup(z, e, backend=backend)
    assert idx.tolist() == want_idx
    torch.testing.assert_close(dist, want_dist)


@pytest.mark.dtypes(torch.float64)
def test_float64_matches_reference_indices(backend, device, dtype):
    z, e = vq_inputs(300, 70, 5, dtype, device, seed=1)
    ref_idx, ref_dist = reference.vq_lookup(z, e)
    idx, dist = vq_lookup(z, e, backend=backend)
    assert dist.dtype == torch.float64
    assert torch.equal(idx, ref_idx)
    assert_all_close_to(["dist"], [dist], [ref_dist], TOLERANCES[OP][torch.float64])


@pytest.mark.parametrize("upstream", ["positive", "ones"])
def test_distance_gradients_match_reference(backend, device, upstream):
    z, e = vq_separated_inputs(50, 12, 6, device=device)
    want_dist, want_grads = run_reference(lambda a, b: reference.vq_lookup(a, b)[1], (z, e), upstream=upstream)
    dist, grads = run(lambda a, b: vq_lookup(a, b, backend=backend)[1], (z, e), upstream=upstream)
    assert_all_close_to(["grad z", "grad codebook"], grads, want_grads, TOLERANCES[OP][torch.float32],
                        dtype=torch.float32)


@pytest.mark.dtypes(torch.float64)
def test_gradcheck_float64(backend, device, dtype):
    z, e = vq_separated_inputs(9, 4, 3, dtype, device)
    assert torch.autograd.gradcheck(lambda a, b: vq_lookup(a, b, backend=backend)[1],
                                    (z.requires_grad_(), e.requires_grad_()))


def test_non_contiguous_inputs(backend, device):
    z, e = vq_inputs(17, 256, 32, device=device)
    zt = z.t().contiguous().t()
    es = torch.cat([e, e], 1)[:, ::2]
    assert not zt.is_contiguous() and not es.is_contiguous()
    ref_dist = reference.vq_lookup(zt.double(), es.double())[1]
    idx, dist = vq_lookup(zt, es, backend=backend)
    check_by_distance(zt, es, idx, dist, ref_dist)


def test_custom_op_passes_opcheck(backend, device):
    z, e = vq_separated_inputs(20, 5, 4, device=device)
    # opcheck's AOT tests sum all outputs into the first one's dtype (int64 here) and fail for that reason alone;
    # AOT tracing is covered by test_torch_compile_fullgraph.
    torch.library.opcheck(OPS[OP].overload, (z.requires_grad_(), e.requires_grad_(), backend),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_torch_compile_fullgraph(backend, device):
    z, e = vq_separated_inputs(30, 7, 4, device=device)

    def fn(a, b):
        idx, dist = vq_lookup(a, b, backend=backend)
        return dist.sum() + b[idx].sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    results = []
    for f in (fn, compiled):
        zz, ee = z.clone().requires_grad_(), e.clone().requires_grad_()
        out = f(zz, ee)
        out.backward()
        results.append((out.detach(), zz.grad, ee.grad))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want)


# ------------------------------------------------------------------------------------------------ validation

def test_z_must_be_a_tensor():
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        vq_lookup([[0.0]], torch.zeros(1, 1))


def test_z_must_be_two_dimensional():
    with pytest.raises(ValueError, match=r"z must have shape \(M,D\)"):
        vq_lookup(torch.zeros(2, 3, 4), torch.zeros(5, 3))


def test_codebook_must_be_two_dimensional():
    with pytest.raises(ValueError, match=r"codebook must have shape \(K,D\)"):
        vq_lookup(torch.zeros(2, 3), torch.zeros(3))


def test_codebook_dimension_must_match_z():
    with pytest.raises(ValueError, match="codebook must have shape .* D=3"):
        vq_lookup(torch.zeros(2, 3), torch.zeros(5, 4))


def test_codebook_must_not_be_empty():
    with pytest.raises(ValueError, match="codebook must hold at least one code"):
        vq_lookup(torch.zeros(2, 3), torch.zeros(0, 3))


def test_dtypes_must_match():
    with pytest.raises(TypeError, match="codebook has dtype torch.float64 but z has torch.float32"):
        vq_lookup(torch.zeros(2, 3), torch.zeros(5, 3, dtype=torch.float64))


def test_integer_inputs_are_refused():
    with pytest.raises(TypeError, match="z must be a floating tensor"):
        vq_lookup(torch.zeros(2, 3, dtype=torch.long), torch.zeros(5, 3))


def test_devices_must_match():
    with pytest.raises(ValueError, match="codebook is on meta but z is on cpu"):
        vq_lookup(torch.zeros(2, 3), torch.zeros(5, 3, device="meta"))


def test_cpu_backend_refuses_half_precision():
    with pytest.raises(TypeError, match="backend 'cpu' supports dtypes float32, float64"):
        vq_lookup(torch.zeros(2, 3, dtype=torch.float16), torch.zeros(5, 3, dtype=torch.float16), backend="cpu")
