"""Input checks shared by the ops: run before any kernel, raise ``TypeError``/``ValueError`` naming the argument."""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(value, name: str, ndim: int, layout: str) -> torch.Tensor:
    """``value`` must be a floating tensor with ``ndim`` dimensions; ``layout`` names them, e.g. ``"(B,C,H,W)"``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float16/bfloat16/float32/float64), got {value.dtype}")
    if value.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dimensions), got {tuple(value.shape)}")
    return value


def check_dim(name: str, actual: int, expected: int, what: str) -> None:
    if actual != expected:
        raise ValueError(f"{name}: {what} must be {expected}, got {actual}")


def check_same_dtype_device(**tensors: torch.Tensor | None) -> None:
    """All given tensors (None skipped) share one dtype and one device."""
    items = [(k, v) for k, v in tensors.items() if v is not None]
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}; they must match")
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}; they must match")


def check_tensor_any_rank(value, name: str, layout: str) -> torch.Tensor:
    """``value`` must be a floating tensor (any number of dimensions); ``layout`` names them, e.g. ``"(..., N)"``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float16/bfloat16/float32/float64), got {value.dtype}")
    return value


def check_feature_map(x, in_shape: tuple[int, int, int], parameter: torch.Tensor) -> torch.Tensor:
    """A readout's input: ``x`` (B,C,H,W) with (C,H,W) = ``in_shape`` and the dtype and device of ``parameter``."""
    expected = f"(B, C, H, W) = (B, {', '.join(map(str, in_shape))})"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(in_shape):
        raise ValueError(f"x must have shape {expected} to match in_shape, got {tuple(x.shape)}")
    if x.dtype != parameter.dtype:
        raise TypeError(f"x has dtype {x.dtype} but the readout's parameters have {parameter.dtype}; "
                        f"convert one of them (x.to({parameter.dtype}) or readout.to(x.dtype))")
    if x.device != parameter.device:
        raise ValueError(f"x is on {x.device} but the readout's parameters are on {parameter.device}; "
                         f"move one of them")
    return x
