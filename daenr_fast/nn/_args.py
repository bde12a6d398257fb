"""Constructor-argument checks shared by the modules: each raises a ``TypeError``/``ValueError`` naming the argument.

Integers are integers (``2.7`` is refused, never truncated; ``True`` is not a count; NumPy integers are accepted),
flags are booleans (Python or NumPy), numbers are finite reals.
"""
from __future__ import annotations

import math
import numbers

import numpy as np


def count(name: str, value, minimum: int = 1) -> int:
    """``value`` as an ``int`` >= ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def flag(name: str, value) -> bool:
    """``value`` as a ``bool``; only ``True``/``False`` (Python or NumPy) are flags."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def real(name: str, value, minimum: float | None = None) -> float:
    """``value`` as a finite ``float`` (>= ``minimum`` when given)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite real number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be a finite real number >= {minimum}, got {value!r}")
    return float(value)


def shape(name: str, value, length: int, layout: str) -> tuple[int, ...]:
    """``value`` as a tuple of ``length`` positive integers; ``layout`` names them, e.g. ``"(C, H, W)"``."""
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be {layout} with positive integer sizes, got {value!r}") from None
    if len(items) != length:
        raise ValueError(f"{name} must be {layout} with positive integer sizes, got {value!r}")
    for i, item in enumerate(items):
        count(f"{name}[{i}]", item)
    return tuple(int(item) for item in items)
