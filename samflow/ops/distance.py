"""Exact Euclidean distance transform in numpy (no OpenCV/scipy), and the "farthest from the boundary" click.

The transform is separable: a 1-D pass gives each pixel its distance to the nearest zero in its column, then each row
takes the min over x' of (x - x')^2 + g(x')^2 — a min-plus product, done in row chunks to bound memory.
"""

from __future__ import annotations

import numpy as np

from samflow.errors import InputError

_CHUNK_ELEMENTS = 1 << 23  # ~32 MB of float32 per row chunk of the min-plus product


def _column_distance(mask: np.ndarray) -> np.ndarray:
    """For each pixel, the distance (in rows) to the nearest False pixel in its column; inf when none."""
    h, w = mask.shape
    rows = np.arange(h, dtype=np.float64)[:, None]
    zero = ~mask
    last = np.where(zero, rows, -np.inf)
    np.maximum.accumulate(last, axis=0, out=last)
    nxt = np.where(zero, rows, np.inf)
    nxt = np.minimum.accumulate(nxt[::-1], axis=0)[::-1]
    return np.minimum(rows - last, nxt - rows)


def distance_transform(mask: np.ndarray, *, border_is_background: bool = True) -> np.ndarray:
    """Float32 (H, W): Euclidean distance of each True pixel to the nearest False pixel (0 on False pixels).

    With `border_is_background`, the outside of the image counts as False, so distances are bounded by the
    distance to the image edge (the convention of the interactive-segmentation click protocol).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"distance_transform expects a 2-D mask, got shape {mask.shape}")
    mask = mask.astype(bool)
    if border_is_background:
        mask = np.pad(mask, 1)
    h, w = mask.shape
    g2 = _column_distance(mask) ** 2  # (H, W), inf where a column has no zero
    # float32 is exact here: squared distances are integers far below 2**24.
    g2 = g2.astype(np.float32)
    xs = np.arange(w, dtype=np.float32)
    dx2 = (xs[:, None] - xs[None, :]) ** 2  # (x, x')
    out = np.empty((h, w), dtype=np.float32)
    chunk = max(1, _CHUNK_ELEMENTS // (w * w))
    for start in range(0, h, chunk):
        g = g2[start : start + chunk]  # (c, x')
        np.min(g[:, None, :] + dx2[None], axis=2, out=out[start : start + chunk])
    dist = np.sqrt(out)
    dist[~np.isfinite(dist)] = np.float32(np.hypot(h, w))  # no background at all
    if border_is_background:
        dist = dist[1:-1, 1:-1]
    return dist


def farthest_point(region: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of the pixel of `region` farthest from its boundary (first in raster order on ties); None if empty."""
    region = np.asarray(region, dtype=bool)
    rows = np.flatnonzero(region.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(region.any(axis=0))
    # Only the bounding box matters: outside it everything is background, as the image border is.
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    dist = distance_transform(region[y0:y1, x0:x1])
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x + x0), int(y + y0)


__all__ = ["distance_transform", "farthest_point"]
