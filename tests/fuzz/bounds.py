"""Tolerances of the fuzz suite, scaled by the magnitudes of each case, and the comparison that applies them.

``u(dtype)`` is the unit roundoff (half the machine epsilon): 2^-11 float16, 2^-8 bfloat16, 2^-24 float32, 2^-53
float64. Kernels compute half and single inputs in float32 and float64 inputs in float64 (:func:`acc_dtype`), so a
result is allowed the error analysis of its computation in that dtype (given per op in the test files, in terms of
sums of absolute values computed in float64), plus one rounding to the output dtype (``u(out) * |want|``), plus
the output dtype's smallest normal number (flushed or underflowed results). Where an intermediate value of the
computation (a partial sum, a product) may leave the accumulation dtype's range, nothing is required (the caller
passes those elements as ``free``). The Triton interpreter converts float32 to bfloat16 by truncation (numpy has
no bfloat16), so interpreted bfloat16 outputs are allowed a whole ulp (``truncated``).
"""
from __future__ import annotations

import torch

F64 = torch.float64


def u(dtype: torch.dtype) -> float:
    """Unit roundoff of ``dtype``."""
    return torch.finfo(dtype).eps / 2


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype kernels compute ``dtype`` inputs in (the design: float32 accumulation for half types)."""
    return F64 if dtype == F64 else torch.float32


def tiny(dtype: torch.dtype) -> float:
    """Smallest normal number of ``dtype``."""
    return torch.finfo(dtype).smallest_normal


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, tol, dtype: torch.dtype, free=None,
                 truncated: bool = False, alternatives=()) -> None:
    """``got`` within ``tol + u(dtype) |want| + tiny(dtype)`` of the float64 ``want`` elementwise, ``dtype`` being
    the output dtype (``2 u(dtype)`` if ``truncated``); where ``want`` overflows ``dtype`` beyond that bound, ``got``
    must be the infinity of its sign (either is accepted within the bound of the overflow threshold), and NaN
    exactly where ``want`` is NaN. Elements where the bool tensor ``free`` is set may hold anything; an element
    that matches the same element of one of ``alternatives`` (other acceptable values of ``want``) passes too."""
    assert tuple(got.shape) == tuple(want.shape), f"{name}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    got = got.detach().to("cpu", F64)
    tol = torch.as_tensor(tol, dtype=F64).detach().cpu()
    ok = torch.zeros(got.shape, dtype=torch.bool) if free is None else torch.as_tensor(free).cpu().expand(got.shape)
    for candidate in (want, *alternatives):
        ok = ok | _matches(got, candidate.detach().to("cpu", F64), tol, dtype, truncated)
    want = want.detach().to("cpu", F64)
    bound = tol + (2 if truncated else 1) * u(dtype) * want.abs() + tiny(dtype)
    if bool(ok.all()):
        return
    bad = (~ok).nonzero()
    worst = ((got - want).abs() / bound).nan_to_num(nan=float("inf"))[~ok]
    lines = [f"{name}: {bad.shape[0]} of {ok.numel()} elements off (dtype {dtype}); worst |got-want|/bound "
             f"{worst.max().item():.3g}"]
    for index in bad[:5].tolist():
        at = tuple(index)
        lines.append(f"  at {at}: got {got[at].item()!r}, want {want[at].item()!r}, "
                     f"bound {bound.expand_as(want)[at].item():.3g}")
    raise AssertionError("\n".join(lines))


def _matches(got, want, tol, dtype, truncated):
    """Elementwise: ``got`` is ``want`` within the bound of :func:`assert_close`."""
    bound = tol + (2 if truncated else 1) * u(dtype) * want.abs() + tiny(dtype)
    limit = torch.finfo(dtype).max
    is_inf = got == torch.where(want >= 0, float("inf"), float("-inf"))
    within = (got - want).abs() <= bound
    must_overflow = want.abs() - bound > limit
    may_overflow = want.abs() + bound > limit
    return torch.where(want.isnan(), got.isnan(), torch.where(must_overflow, is_inf, within | (may_overflow & is_inf)))
