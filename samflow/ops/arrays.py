"""Checks on the arrays users hand in: numbers, finite, with errors that name the argument."""

from __future__ import annotations

import numpy as np

from samflow.errors import InputError

__all__ = ["finite_array"]


def finite_array(value: object, name: str) -> np.ndarray:
    """`value` as a float64 array; InputError naming `name` when it is not numeric or holds NaN or infinity."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numeric, got {type(value).__name__}") from None
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return arr
