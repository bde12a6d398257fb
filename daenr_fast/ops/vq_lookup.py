"""VQ nearest-codebook lookup: the op definition, its public function and its backends.

    idx[m]  = argmin_k ||z[m] - codebook[k]||^2      (ties to the lowest k)
    dist[m] = ||z[m] - codebook[idx[m]]||^2

z (M,D), codebook (K,D) -> idx (M,) int64, dist (M,) (float64 for float64 inputs, float32 otherwise). No backend
holds the M x K matrix (the torch backend holds at most ``_TORCH_CHUNK`` scores at a time).

Method (every backend). The expanded square ``||z||^2 - 2 z.e + ||e||^2`` cancels catastrophically when the codes
sit far from the origin, so it only *preselects*; the answer comes from exact distances:

1. Frame: a centre c (the mean of the finite codes, summed in float64, rounded to the working dtype w: float64
   for float64 inputs, float32 otherwise) and a power of two s that brings the largest |e - c| into [1/2, 1)
   (exponent clamped to the normal range of w). Codes ``E_k = fl_w(e_k - c) s``, rows ``Z = fl_w(z s - c s)``
   (one rounding each; the same as ``fl_w(z - c) s`` since s is a power of two, but scaling first means that a
   flush-to-zero GPU build can only drop values below the normal range of the *scaled* frame),
   ``en_k = ||E_k||^2``. Codes with a non-finite component get ``en_k = NaN``.
2. Scores ``x_k = en_k - 2 Z.E_k`` (a GEMM, blocked over the codebook) and, per row, the window
   ``W = a (en_max + 2 ||Z|| sqrt(en_max)) + b ||Z||^2`` with ``a = 2 ((1 + u_in)^2 (1 + gamma_{D+8}) - 1)``,
   ``b = 8 u`` (``gamma_n = n u / (1 - n u)``, u the unit roundoff of w, u_in the relative rounding of the GEMM's
   inputs: 0 for IEEE float32/float64 products, more under TF32/bf16 matmul modes).
3. Candidates: every code with ``x_k <= min_j x_j + 2 W``, or with a NaN score. Each is rescored exactly:
   ``sum_d (z_d - e_kd)^2`` from the original values, in float64. The lowest exact distance wins; exact ties go
   to the lowest index (blocked kernels visit codes in increasing order and keep strict improvements only;
   parallel merges compare (distance, index)).

Precision argument. With ``D_k = ||Z||^2 + x_k`` and the true scaled distance ``d_k = s^2 ||z - e_k||^2``:
centring rounds each component by at most u relative, which moves ``d_k`` by at most
``2u (||Z|| + ||E_k||)^2 (1 + 2u)``; the GEMM's error is at most ``((1 + u_in)^2 (1 + gamma_D) - 1)
sum_d |Z_d E_kd|`` (any summation order, FMA or not), ``en_k`` and the subtraction add
``2u (en_k + 2 |Z.E_k|)``. Since ``gamma_{D+8} >= gamma_D + 8u``, ``|D_k - d_k| <= W/2`` for every k (``a``,
``b`` are at least twice the bound; underflow in the scaled frame is absorbed because ``en_max >= 1/4`` unless all
codes coincide, where every code is a candidate). If k* is the true argmin and j the best score,
``x_{k*} <= x_j + W`` (the 2W used also covers rounding of the threshold), so the true argmin is always
rescored. The float64 rescoring has relative error ``<= D 2^-53``: the chosen index is the exact argmin
except between codes whose true distances differ by less than about ``1e-14`` relative -- far below the float32
resolution of the distances themselves -- and ``dist`` is the float64 distance rounded once to the output dtype.
Typically one or two codes per row are rescored (the window is about ``D u`` relative to the scores); when every
code is within the window (duplicates, all-equal codes) every one is rescored, which is exact and slower.

Range. The scores live in the scaled frame, so no square overflows there whatever the offset or spread; a row so
far from the codebook that ``||Z||^2`` overflows w gets an infinite window, so all its codes are rescored. The
float64 rescoring of float32/half inputs cannot overflow; ``dist`` is +inf only when the true distance exceeds
the float32 maximum (float64 inputs: when it exceeds the float64 maximum).

NaN rule (the reference's): a distance is NaN when z[m] or e_k has a NaN component (or infinities of the same
sign meet). NaN distances are never chosen; +inf distances are ordinary values. A row whose every distance is NaN
(z[m] has a NaN, or every code does) gets idx 0 and dist NaN.

``dist`` is differentiable:

    d dist[m] / d z[m]        =  2 (z[m] - codebook[idx[m]])
    d dist[m] / d codebook[k] = -2 (z[m] - codebook[k])   for k = idx[m]

The backward is written with differentiable torch operations, so second derivatives through ``dist`` are exact.
vmap over stacked inputs z (G,M,D) with one codebook folds G into M; stacked codebooks run one call per model.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from daenr_fast import _build, _dispatch, _validate
from daenr_fast.ops._define import STANDARD_DTYPES, OpDef, define

_TORCH_CHUNK = 1 << 22  # distances held at once by the torch backend


def vq_lookup(z: Tensor, codebook: Tensor, *, backend: Optional[str] = None) -> tuple[Tensor, Tensor]:
    """Nearest codebook entry of every row of ``z`` and its squared distance; see the module docstring.

    Args:
        z: vectors to quantize (M,D).
        codebook: codes (K,D), K >= 1, same dtype and device as z.
        backend: ``"torch"``, ``"cpu"``, ``"cuda"`` or ``"triton"``; None chooses (see :mod:`daenr_fast._dispatch`).

    Returns:
        (indices (M,) int64, squared distances (M,) float32, or float64 for float64 inputs).
    """
    _validate.check_tensor(z, "z", 2, "(M,D)")
    _validate.check_tensor(codebook, "codebook", 2, "(K,D)")
    _validate.check_same_dtype_device(z=z, codebook=codebook)
    if codebook.shape[1] != z.shape[1]:
        raise ValueError(f"codebook must have shape (K,D) with D={z.shape[1]} to match z (M,D)={tuple(z.shape)}, "
                         f"got {tuple(codebook.shape)}")
    if codebook.shape[0] == 0:
        raise ValueError("codebook must hold at least one code (K >= 1), got shape (0, D)")
    chosen = _dispatch.resolve_backend(OP.name, backend, z.device, z.dtype, work=z.numel() * codebook.shape[0])
    return OP(z.contiguous(), codebook.contiguous(), chosen)


def _dist_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------- backends

_UNIT_ROUNDOFF = {torch.float32: 2.0 ** -24, torch.float64: 2.0 ** -53}
_SCALE_EXPONENT = {torch.float32: 126, torch.float64: 1022}  # |log2 s| stays in the normal range of w


def _matmul_input_roundoff(device: torch.device) -> float:
    """Relative rounding of a float32 GEMM's inputs under torch's matmul precision settings (0 when IEEE)."""
    setting = torch.get_float32_matmul_precision()
    if device.type == "cpu":
        mkldnn = getattr(getattr(torch.backends.mkldnn, "matmul", None), "fp32_precision", "none")
        setting = {"bf16": "medium", "tf32": "high"}.get(mkldnn, setting)
    elif device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        setting = "high" if setting == "highest" else setting
    return {"medium": 2.0 ** -8, "high": 2.0 ** -10}.get(setting, 0.0)


def _window(work: torch.dtype, dim: int, input_roundoff: float = 0.0) -> tuple[float, float]:
    """(a, b) of the per-row window ``W = a (en_max + 2 ||Z|| sqrt(en_max)) + b ||Z||^2`` (module docstring)."""
    u = _UNIT_ROUNDOFF[work]
    n = (dim + 8) * u
    gamma = n / (1 - n) if n < 1 else math.inf
    return 2.0 * ((1 + input_roundoff) ** 2 * (1 + gamma) - 1), 8.0 * u


def _centred_codebook(codebook: Tensor, work: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The frame of step 1: the scaled centre c s (D,), codes E (K,D), en (K,; NaN for non-finite codes), stats (2,)
    = (s, en_max), all in ``work``; E is zero for the non-finite codes."""
    e = codebook.to(work)
    finite = e.isfinite().all(1, keepdim=True)
    total = codebook.to(torch.float64).where(finite, 0.0).sum(0)
    centre = (total / finite.sum().clamp_min(1)).to(work)
    offsets = (e - centre).where(finite, 0.0)
    limit = _SCALE_EXPONENT[work]
    spread = offsets.abs().amax() if offsets.numel() else offsets.new_zeros(())
    exponent = torch.frexp(spread).exponent.clamp(-limit, limit)
    scale = torch.ldexp(torch.ones((), dtype=work, device=e.device), -exponent)
    codes = offsets * scale
    sq = codes.to(torch.float64).square().sum(1)
    sqnorm = sq.to(work).where(finite[:, 0], torch.nan)
    return centre * scale, codes, sqnorm, torch.stack([scale, sq.amax().to(work)])


def _rescore(z: Tensor, e64: Tensor, lead: Tensor, rows: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
    """Exact float64 distances of the candidates -- ``lead[i]`` for every row i of z, and the pairs (rows, codes),
    any order, repeats allowed -- reduced per row by the rule: the lowest distance, then the lowest code; NaN never
    wins -> (idx, dist float64), one per row of z."""
    diff = z.to(torch.float64) - e64[lead]  # out of place: z may already be float64
    lead_dist = torch.linalg.vecdot(diff, diff)
    if not len(rows):  # rows with NaN/overflow and non-finite codes always bring pairs: lead_dist has no NaN
        return lead, lead_dist
    k = e64.shape[0]
    step = max(1, _TORCH_CHUNK // max(1, z.shape[1]))
    parts = []
    for r, c in zip(rows.split(step), codes.split(step)):
        diff = z[r].to(torch.float64) - e64[c]
        parts.append(torch.linalg.vecdot(diff, diff))
    d = torch.cat(parts)
    best = lead_dist.masked_fill(lead_dist.isnan(), torch.inf)
    best.scatter_reduce_(0, rows, d.masked_fill(d.isnan(), torch.inf), "amin")
    first = torch.where(lead_dist == best, lead, k)  # never true for NaN
    win = d == best[rows]
    first.scatter_reduce_(0, rows[win], codes[win], "amin")
    none = first == k  # every distance of the row is NaN
    return first.masked_fill(none, 0), best.masked_fill(none, torch.nan)


def _torch_forward(z, codebook):
    work = _dist_dtype(z.dtype)
    m, dim = z.shape
    k = codebook.shape[0]
    centre, codes, sqnorm, stats = _centred_codebook(codebook, work)
    scale, en_max = stats.tolist()
    a, b = _window(work, dim, _matmul_input_roundoff(z.device) if work == torch.float32 else 0.0)
    w0, w1 = a * en_max, 2 * a * math.sqrt(en_max)  # W = w0 + w1 ||Z|| + b ||Z||^2
    flagged = sqnorm.isnan().nonzero()[:, 0]  # non-finite codes: scored +inf, always rescored
    sqnorm = sqnorm.masked_fill(sqnorm.isnan(), torch.inf)
    all_codes = torch.arange(k, device=z.device)
    e64 = codebook.to(torch.float64)
    rows = max(1, _TORCH_CHUNK // k)
    scores = z.new_empty((min(rows, m), k), dtype=work)  # one buffer for every block
    idx, dist = [], []
    for start in range(0, m, rows):
        zc = (z[start:start + rows].to(work) * scale).sub_(centre)
        n = zc.shape[0]
        zn2 = torch.linalg.vecdot(zc, zc)  # rounding in w: inside the window's margin; +inf -> whole row
        window = zn2.sqrt().mul_(w1).add_(zn2, alpha=b).add_(w0)
        x = torch.addmm(sqnorm, zc, codes.t(), beta=1, alpha=-2, out=scores[:n])
        lead = x.argmin(1, keepdim=True)  # a NaN score leads: its row's threshold is NaN
        threshold = x.gather(1, lead)[:, 0] + 2 * window
        whole = ~threshold.isfinite()  # a NaN/overflowing row: all its codes are rescored
        threshold = threshold.masked_fill(whole, torch.nan)
        more = (x.scatter_(1, lead, torch.inf).amin(1) <= threshold).nonzero()[:, 0]  # rows with more candidates
        rm, cm = (x[more] <= threshold[more, None]).nonzero(as_tuple=True)
        rw = whole.nonzero()[:, 0]
        r = torch.cat([more[rm], rw.repeat_interleave(k),
                       torch.arange(n, device=z.device).repeat_interleave(len(flagged))])
        c = torch.cat([cm, all_codes.repeat(len(rw)), flagged.repeat(n)])
        i, d = _rescore(z[start:start + rows], e64, lead[:, 0], r, c)
        idx.append(i)
        dist.append(d)
    if not idx:
        return z.new_empty((0,), dtype=torch.int64), z.new_empty((0,), dtype=work)
    return torch.cat(idx), torch.cat(dist).to(work)


def _ext_forward(z, codebook):
    _build.load_extension(OP.name)  # a no-op once loaded; needed when the op is called directly (e.g. a saved graph)
    work = _dist_dtype(z.dtype)
    roundoff = _matmul_input_roundoff(z.device) if z.device.type == "cpu" and work == torch.float32 else 0.0
    a, b = _window(work, z.shape[1], roundoff)  # the CUDA kernel multiplies in IEEE float32 itself
    idx, dist = torch.ops.daenr_fast_ext.vq_lookup_forward(z, codebook, a, b)
    return idx, dist.to(work)


def _triton_forward(z, codebook):
    from daenr_fast.kernels import vq_lookup as kernel

    centre, codes, sqnorm, stats = _centred_codebook(codebook, torch.float32)
    ieee = z.dtype == torch.float32
    a, b = _window(torch.float32, z.shape[1], 0.0 if ieee else kernel.TF32_ROUNDOFF)
    return kernel.forward(z, codebook, centre, codes, sqnorm, stats, a, b, ieee=ieee)


# ----------------------------------------------------------------------------------------------- autograd

def _fake(z, codebook):
    m = z.shape[0]
    return z.new_empty((m,), dtype=torch.int64), z.new_empty((m,), dtype=_dist_dtype(z.dtype))


def _setup_context(ctx, inputs, output):
    z, codebook, _ = inputs
    idx, _ = output
    ctx.mark_non_differentiable(idx)
    ctx.save_for_backward(z, codebook, idx)


def _backward(ctx, _grad_idx, grad_dist):
    z, codebook, idx = ctx.saved_tensors
    acc = _dist_dtype(z.dtype)
    diff = z.to(acc) - codebook.to(acc)[idx]
    grad_z = 2 * grad_dist.to(acc)[:, None] * diff
    grad_codebook = torch.zeros(codebook.shape, dtype=acc, device=codebook.device).index_add(0, idx, -grad_z)
    return grad_z.to(z.dtype), grad_codebook.to(codebook.dtype), None


def _vmap(info, in_dims, z, codebook, backend):
    """Stacked z with one codebook: one call over all rows; stacked codebooks: one call per model."""
    size = info.batch_size
    z_dim, e_dim = in_dims[:2]
    if e_dim is None:
        z = z.movedim(z_dim, 0)
        idx, dist = OP.custom_op(z.reshape(-1, z.shape[-1]).contiguous(), codebook, backend)
        return (idx.view(size, -1), dist.view(size, -1)), (0, 0)
    codebook = codebook.movedim(e_dim, 0)
    z = z.movedim(z_dim, 0) if z_dim is not None else z.expand(size, *z.shape)
    out = [OP.custom_op(z[i].contiguous(), codebook[i].contiguous(), backend) for i in range(size)]
    return (torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])), (0, 0)


OP = define(OpDef(
    name="vq_lookup",
    schema="(Tensor z, Tensor codebook, str backend) -> (Tensor, Tensor)",
    kernels={"torch": _torch_forward, "cpu": _ext_forward, "cuda": _ext_forward, "triton": _triton_forward},
    dtypes=STANDARD_DTYPES,
    fake=_fake,
    setup_context=_setup_context,
    backward=_backward,
    vmap=_vmap,
))
