"""vq_lookup is exact: on every backend, float32 and float64, the chosen index is the float64 reference's and the
distance its float64 distance rounded once, whatever the codebook's offset from the origin and its spread.

* Grid: codes ``offset + spread * N(0,1)`` (offsets 0, 1, 100, 1e4, 1e20; spreads 1e-3 .. 1, and for the large
  offsets also spreads relative to the offset, up to ones whose squared distances overflow float32), D in
  {3, 32, 64}, K in {1, 7, 256}; half the rows sit close to a code (the expanded square cancels there), half
  anywhere in the cloud. Inputs are drawn in float64 and rounded to the tested dtype; the reference sees the
  rounded values.
* Index: equal to the reference's, except in rows whose best and second-best float64 distances differ, but by less
  than ``RESOLUTION`` (relative): there the chosen code's distance must be the best one within ``RESOLUTION``.
  Exact ties (equal float64 distances) must go to the lowest index like the reference's.
* Distance: within ``DIST_RTOL`` (relative) of the reference's; +inf exactly where the reference's float32 distance
  overflows.
* NaN rule, infinite components, duplicate codes (every row ties exactly: the lowest index wins).

Backends: ``torch`` and ``cpu`` on CPU tensors; ``triton`` on CPU tensors under ``TRITON_INTERPRET=1``; ``cuda`` and
``triton`` on CUDA tensors with a GPU.
"""
from __future__ import annotations

import os

import pytest
import torch

from daenr_fast import _dispatch
from daenr_fast.ops import OPS, reference, vq_lookup

OP = "vq_lookup"

#: relative gap below which two float64 distances count as a near-tie: the backends rescore in float64 (error
#: <= D 2^-53 relative each), so only such pairs may be ordered differently from the reference.
RESOLUTION = 1e-12
#: relative tolerance of a returned distance: one float32 rounding (plus the float64 sums' differences) for float32
#: outputs; float64 outputs differ from the reference only by summation order.
DIST_RTOL = {torch.float32: 2.0 ** -23, torch.float64: 1e-13}

OFFSETS = (0.0, 1.0, 100.0, 1e4, 1e20)
SPREADS = (1e-3, 1e-2, 1e-1, 1.0)
DIMS = (3, 32, 64)
CODES = (1, 7, 256)
ROWS = 64


def spread_grid() -> list[tuple[float, float]]:
    """(offset, absolute spread): every spread as is, and, for offsets >= 100, also relative to the offset (at
    1e20 the relative spreads 1e-1 and 1 make squared distances beyond the float32 maximum)."""
    cases = [(o, s) for o in OFFSETS for s in SPREADS]
    return cases + [(o, s * o) for o in OFFSETS if o >= 100 for s in SPREADS]


def _targets() -> list:
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    gpu = torch.cuda.is_available()
    no_interp = pytest.mark.skip(reason="the triton backend on CPU tensors needs TRITON_INTERPRET=1 "
                                        "(set in the environment of the pytest command)")
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    return [
        pytest.param(("torch", "cpu"), id="torch"),
        pytest.param(("cpu", "cpu"), id="cpu"),
        pytest.param(("triton", "cpu"), id="triton-interpreter", marks=[pytest.mark.triton] + ([] if interp else [no_interp])),
        pytest.param(("cuda", "cuda"), id="cuda", marks=[pytest.mark.cuda] + ([] if gpu else [no_gpu])),
        pytest.param(("triton", "cuda"), id="triton-gpu", marks=[pytest.mark.triton, pytest.mark.cuda] + (
            [] if gpu and not interp else [no_gpu if not gpu else pytest.mark.skip(
                reason="TRITON_INTERPRET=1: the compiled Triton cases run in a pytest process without it")])),
    ]


@pytest.fixture(params=_targets())
def target(request):
    backend, device = request.param
    ok, why = _dispatch.backend_status(OP, backend, torch.device(device))
    if not ok:
        pytest.skip(f"backend {backend!r} is unavailable here: {why}")
    return backend, torch.device(device)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request, target):
    backend, _ = target
    if request.param not in OPS[OP].dtypes[backend]:
        pytest.skip(f"backend {backend!r} takes no {request.param}")
    return request.param


def draw(M: int, K: int, D: int, offset: float, spread: float, dtype: torch.dtype, seed: int = 0):
    """Codes offset + spread N(0,1); the first half of the rows near a code (1e-2 spread away), the rest anywhere;
    drawn in float64, rounded to dtype."""
    g = torch.Generator().manual_seed(seed)
    e = offset + spread * torch.randn(K, D, generator=g, dtype=torch.float64)
    near = M // 2
    z = torch.cat([e[torch.randint(K, (near,), generator=g)]
                   + 1e-2 * spread * torch.randn(near, D, generator=g, dtype=torch.float64),
                   offset + spread * torch.randn(M - near, D, generator=g, dtype=torch.float64)])
    return z.to(dtype), e.to(dtype)


def all_distances(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """(M,K) float64 squared distances from the differences (small inputs only)."""
    return (z.double()[:, None, :] - e.double()[None]).square().sum(2)


def check_exact(z, e, idx, dist, what=""):
    """The assertions of the module docstring for one call."""
    out = torch.float64 if z.dtype == torch.float64 else torch.float32
    assert idx.dtype == torch.int64 and idx.shape == (z.shape[0],), what
    assert dist.dtype == out and dist.shape == (z.shape[0],), what
    idx, dist = idx.cpu(), dist.cpu()
    z, e = z.cpu(), e.cpu()
    ref_idx, ref_dist = reference.vq_lookup(z, e)
    d = all_distances(z, e)
    key = d.masked_fill(d.isnan(), torch.inf).sort(1).values
    best = key[:, 0]
    gap = key[:, 1] - best if e.shape[0] > 1 else torch.full_like(best, torch.inf)
    near = (gap > 0) & (gap <= RESOLUTION * best)
    wrong = (idx != ref_idx) & ~near
    assert not wrong.any(), (f"{what}: {int(wrong.sum())}/{len(idx)} rows chose another code than the reference, "
                             f"e.g. row {int(wrong.nonzero()[0])}: {int(idx[wrong][0])} instead of "
                             f"{int(ref_idx[wrong][0])}")
    chosen = d.gather(1, idx[:, None])[:, 0]
    assert ((chosen[near] - best[near]).abs() <= RESOLUTION * best[near]).all(), f"{what}: near-tie row off"
    inf = ref_dist.isinf()
    assert torch.equal(dist.isinf(), inf), f"{what}: +inf distances differ from the reference's"
    assert torch.equal(dist.isnan(), ref_dist.isnan()), f"{what}: NaN distances differ from the reference's"
    ok = ~inf & ~ref_dist.isnan()
    err = (dist[ok].double() - ref_dist[ok].double()).abs()
    bad = err > DIST_RTOL[out] * ref_dist[ok].double().abs()
    assert not bad.any(), (f"{what}: {int(bad.sum())} distances off by more than {DIST_RTOL[out]:g} relative, worst "
                           f"{float((err / ref_dist[ok].double().abs().clamp_min(1e-300)).max()):.3g}")


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("offset,spread", spread_grid(), ids=lambda v: f"{v:g}")
def test_offset_and_spread_grid(target, dtype, offset, spread, dim):
    backend, device = target
    for k in CODES:
        z, e = draw(ROWS, k, dim, offset, spread, dtype)
        idx, dist = vq_lookup(z.to(device), e.to(device), backend=backend)
        check_exact(z, e, idx, dist, f"K={k}")


def test_far_offset_distances_are_finite_and_correct(target, dtype):
    """Codes at 1e20 with spread 1e17: every squared coordinate overflows float32, the distances (~1e35) do not."""
    backend, device = target
    z, e = draw(ROWS, 33, 16, 1e20, 1e17, dtype, seed=5)
    idx, dist = vq_lookup(z.to(device), e.to(device), backend=backend)
    assert dist.isfinite().all()
    check_exact(z, e, idx, dist)


def test_a_distance_beyond_float32_is_inf(target):
    """Row 0's nearest distance (5e38) is above the float32 maximum: +inf; row 1's (2e38) is just below it and
    finite. The argmin is the exact one either way (float64 inputs hold these distances without overflow)."""
    backend, device = target
    e = torch.tensor([[1e19, -1e19], [-2e19, 3e19], [3e19, 1e19]])
    z = torch.tensor([[-1e19, 1e19], [0.0, 0.0]])
    idx, dist = vq_lookup(z.to(device), e.to(device), backend=backend)
    assert idx.tolist() == [1, 0]
    assert dist[0].isinf() and dist[1].isfinite()
    check_exact(z, e, idx, dist)


def test_gaps_below_float32_resolution_are_resolved(target):
    """Two codes whose distances to z differ by 1.5e-8 relative (a quarter of float32's resolution at 1): the
    nearer one (index 1) wins, although both distances round to 1.0 in float32."""
    backend, device = target
    e = torch.tensor([[1 - 2.0 ** -24, 1.5 * 2.0 ** -12, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    z = torch.zeros(3, 3)
    z[2, 2] = 2.0 ** -13  # moves both distances by the same amount
    idx, dist = vq_lookup(z.to(device), e.to(device), backend=backend)
    assert idx.tolist() == [1, 1, 1]
    check_exact(z, e, idx, dist)


def with_specials(dtype):
    """A codebook with a NaN code (index 2) and a +inf code (index 0); z rows: plain, one with a NaN, one with
    +inf in the inf code's coordinate (its distance to code 0 is NaN, to the others +inf)."""
    z, e = draw(20, 9, 5, 100.0, 0.05, dtype, seed=7)
    e[2, 3] = float("nan")
    e[0, 1] = float("inf")
    z[3, 0] = float("nan")
    z[4, 1] = float("inf")
    return z, e


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NaN inputs, interpreter
def test_nan_rule(target, dtype):
    """NaN and +inf codes are never chosen over finite ones; a NaN row gets index 0 and distance NaN; +inf
    distances are ordinary values (the lowest non-NaN one wins); an all-NaN codebook gives index 0, NaN."""
    backend, device = target
    z, e = with_specials(dtype)
    idx, dist = vq_lookup(z.to(device), e.to(device), backend=backend)
    idx, dist = idx.cpu(), dist.cpu()
    assert idx[3] == 0 and dist[3].isnan(), "a NaN row gets index 0 and distance NaN"
    assert idx[4] == 1 and dist[4].isinf(), "+inf distances are ordinary: the lowest non-NaN one wins"
    plain = torch.ones(len(idx), dtype=torch.bool)
    plain[[3, 4]] = False
    assert ((idx[plain] != 0) & (idx[plain] != 2)).all(), "a NaN or +inf code was chosen"
    check_exact(z, e, idx, dist)
    e[:, 1] = float("nan")
    idx, dist = vq_lookup(z.to(device), e.to(device), backend=backend)
    assert (idx.cpu() == 0).all() and dist.cpu().isnan().all(), "an all-NaN codebook: index 0, distance NaN"


@pytest.mark.parametrize("layout", ["halves", "adjacent", "across-blocks"])
def test_duplicate_codes_go_to_the_lowest_index(target, dtype, layout):
    """Every code twice, so every row ties exactly with its nearest code's twin: the lower index must win.
    ``across-blocks``: 300 codes then their copies, so twins sit in different codebook blocks of every kernel."""
    backend, device = target
    k = 300 if layout == "across-blocks" else 32
    z, base = draw(ROWS, k, 32, 100.0, 0.05, dtype, seed=11)
    e = base.repeat_interleave(2, 0) if layout == "adjacent" else torch.cat([base, base])
    idx, dist = vq_lookup(z.to(device), e.to(device), backend=backend)
    idx = idx.cpu()
    ref_idx, _ = reference.vq_lookup(z, e)
    lowest = (ref_idx % 2 == 0) if layout == "adjacent" else (ref_idx < k)
    assert lowest.all(), "the reference itself must pick the first twin"
    assert torch.equal(idx, ref_idx), f"{int((idx != ref_idx).sum())}/{len(idx)} rows chose the higher twin"
    check_exact(z, e, idx, dist)
