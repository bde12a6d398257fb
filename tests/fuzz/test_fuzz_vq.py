"""Fuzzing vq_lookup: every backend here against the float64 reference, indices by distance, distances and their
gradients.

Drawn: the dtype (each backend's list), M (0 and 1 often), K >= 1, D (0 and 1 often), codebooks with an offset
of 0 to 1e4 from the origin (the same in every dimension, either sign) and a spread of 1e-3 to 10, duplicated
codes (exact ties, also from expanded layouts), z near chosen codes (jitter 0 to 1 spread), midway between two
codes, in a cloud around the codebook (up to 10 spreads), near the origin, or small integers for both (exact ties in any
arithmetic), special entries, the layouts of z, codebook and the upstream gradient, which inputs need a gradient.

Checks, with e the codebook and z the inputs as given (float64 copies), d(m, k) = ||z_m - e_k||^2 in float64,
mu the codebook's mean and, for the accumulation dtype (float32 for half and single inputs, float64 for float64):

    tol_m = (2 D + 8) u(acc) (||z_m - mu||^2 + max_k ||e_k - mu||^2) + (D + 1) tiny(acc)

(a few roundings of each of D terms of the distance, measured from the codebook, so an offset far from the origin
costs nothing: the contract for codebooks far from the origin):

* the chosen code is a nearest one within rounding: d(m, idx_m) <= min_k d(m, k) + 2 tol_m;
* the returned distance is the chosen code's: |dist_m - d(m, idx_m)| <= tol_m (+ one float32 rounding);
* ties go to the lowest index: no lower index holds a code equal to the chosen one, and with small integer inputs
  (every value exact) idx is the reference's index;
* gradients (autograd through the op against autograd through the reference, at the op's indices where a
  near-tie made it choose another code): dz = 2 g (z - e_idx) within 16 u(acc) of |2 g (z - e_idx)| per element,
  de (a sum over the M rows) within (16 + M) u(acc) of the sum of those; then one rounding to the input dtype.
Two runs agree bitwise.
"""
import pytest
import torch

pytest.importorskip("hypothesis")

from hypothesis import given, strategies as st  # noqa: E402

from daenr_fast.ops import reference, vq_lookup  # noqa: E402

from .bounds import F64, acc_dtype, assert_close, tiny, u  # noqa: E402
from .inputs import (Arg, assert_repeatable, backend_params, dims, draw_arg, draw_layout, examples,  # noqa: E402
                     fuzz_dtypes, interpreted, require, run, values)

pytestmark = pytest.mark.fuzz
OP = "vq_lookup"
#: (max M, K, D) for compiled backends and for the Triton interpreter (K past 64 and D past 32: several tiles).
SIZES = {False: (64, 96, 40), True: (20, 70, 34)}
OFFSETS = (0.0, 1.0, 100.0, 1e3, 1e4)
Z_MODES = ("near", "midway", "cloud", "origin", "integers")
SMALL_INTEGER = 16


def check(device, backend, data):
    require(OP, backend, device)
    draw = data.draw
    dtype = draw(st.sampled_from(fuzz_dtypes(OP, backend, device)), label="dtype")
    max_m, max_k, max_d = SIZES[interpreted(backend, device)]
    M = draw(dims(max_m), label="M")
    K = draw(st.one_of(st.just(1), st.integers(2, max_k)), label="K")
    D = draw(dims(max_d), label="D")
    mode = draw(st.sampled_from(Z_MODES), label="z mode")
    seed = draw(st.integers(0, 2**31 - 1), label="seed")
    g = torch.Generator().manual_seed(seed)

    if mode == "integers":
        offset, k = 0.0, 0
        e_spec = draw(values(kinds=("integers",), log10_scale=(0, 0), specials=False), label="codebook values")
    else:
        offset = draw(st.sampled_from(OFFSETS), label="offset") * draw(st.sampled_from((1, -1)), label="sign")
        k = draw(st.integers(-3, 1), label="log10 spread")
        e_spec = draw(values(kinds=("normal", "uniform", "integers", "constant", "sparse"), log10_scale=(k, k),
                             offsets=(offset,)), label="codebook values")
    spread = 10.0 ** k
    codebook = draw_arg(draw, (K, D), dtype, e_spec, large=1e6)
    copies = draw(st.lists(st.tuples(st.integers(0, K - 1), st.integers(0, K - 1)), max_size=4), label="duplicates")
    if not codebook.layout.broadcast[0]:
        rows = codebook.layout.strided(codebook.leaf)
        for src, dst in copies:
            rows[dst] = rows[src]

    e64 = codebook.view(False, float64=True).detach()
    if mode in ("near", "midway") and M:
        jitter = draw(st.sampled_from((0.0, 1e-3, 0.1, 1.0)), label="jitter") * spread
        pick = torch.randint(K, (2, M), generator=g)
        centre = e64[pick[0]] if mode == "near" else (e64[pick[0]] + e64[pick[1]]) / 2
        z_values = centre + jitter * torch.randn(M, D, generator=g, dtype=F64)
        z = Arg.holding(z_values, draw_layout(draw, (M, D)), dtype)
    else:
        if mode == "integers":
            z_spec = values(kinds=("integers",), log10_scale=(0, 0), specials=False)
        else:
            z_spec = values(kinds=("normal", "uniform", "constant", "sparse"), log10_scale=(k, k + 1),
                            offsets=(offset if mode == "cloud" else 0.0,))
        z = draw_arg(draw, (M, D), dtype, draw(z_spec, label="z values"), large=1e6)
    needs = [draw(st.booleans(), label="z needs grad"), draw(st.booleans(), label="codebook needs grad")]
    out_dtype = F64 if dtype == F64 else torch.float32
    upstream = draw_arg(draw, (M,), out_dtype, draw(values(log10_scale=(-3, 3)), label="upstream values"), large=1e3)

    op = lambda a, b: vq_lookup(a, b, backend=backend)  # noqa: E731
    got = run(op, [z, codebook], needs, upstream, device=device)
    assert_repeatable(got, run(op, [z, codebook], needs, upstream, device=device))
    (idx, dist), grads = got
    assert idx.dtype == torch.int64 and tuple(idx.shape) == (M,)
    assert dist.dtype == out_dtype and tuple(dist.shape) == (M,)
    idx = idx.cpu()
    assert bool(((idx >= 0) & (idx < K)).all()), f"indices out of [0, {K}): {idx.tolist()}"

    z64 = z.view(False, float64=True).detach()
    d_all = ((z64[:, None, :] - e64[None]) ** 2).sum(-1)
    d_chosen = d_all.gather(1, idx[:, None])[:, 0]
    mu = e64.mean(0)
    acc = acc_dtype(dtype)
    spread_m = ((z64 - mu) ** 2).sum(1) + ((e64 - mu) ** 2).sum(1).max()
    tol = (2 * D + 8) * u(acc) * spread_m + (D + 1) * tiny(acc)
    far = d_chosen > d_all.min(1).values + 2 * tol
    assert not bool(far.any()), (f"{backend}: a code farther than the nearest one was chosen at rows "
                                 f"{far.nonzero()[:5, 0].tolist()}: distance {d_chosen[far][:5].tolist()}, "
                                 f"nearest {d_all.min(1).values[far][:5].tolist()}, tol {tol[far][:5].tolist()}")
    assert_close(f"{backend} dist", dist, d_chosen, tol, out_dtype)
    same = (e64[None, :, :] == e64[idx][:, None, :]).all(-1) & (torch.arange(K)[None] < idx[:, None])
    assert not bool(same.any(1).any()), (f"{backend}: an exact tie did not go to the lowest index at rows "
                                         f"{same.any(1).nonzero()[:5, 0].tolist()}")
    exact = bool((z64.abs() <= SMALL_INTEGER).all() and (e64.abs() <= SMALL_INTEGER).all()
                 and (z64 == z64.round()).all() and (e64 == e64.round()).all())
    if exact and M:
        assert torch.equal(idx, d_all.argmin(1)), f"{backend}: small integer inputs, indices {idx.tolist()}, " \
                                                  f"lowest nearest {d_all.argmin(1).tolist()}"

    def ref(a, b):
        ref_idx, ref_dist = reference.vq_lookup(a, b)
        if not torch.equal(ref_idx, idx):  # a near-tie: the reference's distance at the op's choice
            ref_dist = ((a - b[idx]) ** 2).sum(1)
        return ref_idx, ref_dist

    _, grads_ref = run(ref, [z, codebook], needs, upstream, float64=True)
    g2 = 2 * upstream.view(False, float64=True).abs()
    terms = g2[:, None] * (z64 - e64[idx]).abs()
    sizes = [terms, torch.zeros_like(e64).index_add(0, idx, terms)]
    floors = [g2[:, None].expand(M, D), torch.zeros_like(e64).index_add(0, idx, g2[:, None].expand(M, D))]
    for name, got_t, want, size, floor, n in zip(("dz", "dcodebook"), grads, grads_ref, sizes, floors, (0, M)):
        if want is None:
            assert got_t is None, name
            continue
        assert got_t.dtype == dtype, name
        assert_close(f"{backend} {name}", got_t, want, (16 + n) * u(acc) * size + tiny(acc) * floor, dtype)


@pytest.mark.parametrize("device,backend", backend_params(OP, interpreter=False))
@examples(1.5)
@given(data=st.data())
def test_matches_reference(device, backend, data):
    check(device, backend, data)


@pytest.mark.parametrize("device,backend", backend_params(OP, interpreter=True))
@examples(0.75)
@given(data=st.data())
def test_matches_reference_interpreted(device, backend, data):
    check(device, backend, data)
