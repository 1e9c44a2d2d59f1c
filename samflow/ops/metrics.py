"""Mask metrics shared by evaluation, training and ranking: one definition each, for numpy and torch alike."""

from __future__ import annotations

from typing import overload

import numpy as np
import torch

from samflow.errors import InputError

__all__ = ["mask_iou"]


@overload
def mask_iou(a: torch.Tensor, b: torch.Tensor | np.ndarray) -> torch.Tensor: ...


@overload
def mask_iou(a: np.ndarray, b: torch.Tensor) -> torch.Tensor: ...


@overload
def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray: ...


def mask_iou(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Intersection over union of masks `a` (..., H, W) and `b` (..., H, W) -> (...).

    The leading dimensions broadcast as numpy / torch broadcast them, so (N, 3, H, W) against (N, 1, H, W) gives
    (N, 3), and (N, H, W) against one (H, W) mask gives (N,). Masks are taken as bool (nonzero is inside).

    Definition for empty masks: the IoU of two empty masks is 1.0 (they agree perfectly, as a prediction of
    nothing for an object of nothing does); an empty mask against a non-empty one is 0.0. Every other pair is
    |a & b| / |a | b|.

    numpy in: float64 numpy out (a 0-d array for two single masks). torch in (either argument): float32 tensor
    out, on the tensor's device (a numpy argument is moved there).
    """
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        device = a.device if isinstance(a, torch.Tensor) else b.device  # type: ignore[union-attr]
        ta, tb = torch.as_tensor(a, device=device).bool(), torch.as_tensor(b, device=device).bool()
        _check_shapes(tuple(ta.shape), tuple(tb.shape))
        inter = (ta & tb).flatten(-2).sum(-1)
        union = (ta | tb).flatten(-2).sum(-1)
        return torch.where(union > 0, inter.float() / union.clamp(min=1).float(),
                           torch.ones((), dtype=torch.float32, device=device))
    na, nb = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    _check_shapes(na.shape, nb.shape)
    inter = np.logical_and(na, nb).sum(axis=(-2, -1))
    union = np.logical_or(na, nb).sum(axis=(-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _check_shapes(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    if len(a) < 2 or len(b) < 2:
        raise InputError(f"mask_iou needs masks of shape (..., H, W), got {a} and {b}")
    if a[-2:] != b[-2:]:
        raise InputError(f"mask_iou needs masks of one size (H, W), got {a[-2:]} and {b[-2:]}")
    try:
        np.broadcast_shapes(a[:-2], b[:-2])
    except ValueError:
        raise InputError(f"mask_iou cannot pair masks of shapes {a} and {b} (leading dimensions differ)") from None
