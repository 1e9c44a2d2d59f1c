"""What MCC-style single-view reconstruction (Multiview Compressive Coding, Wu et al. 2023) consumes for one
object: an RGB crop, the per-pixel XYZ of the seen points with every unmasked (or depthless) pixel at infinity,
and the mask, all cropped to the object's box grown by a margin (MCC's demo uses 40 px)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samflow.errors import InputError


@dataclass
class MccObject:
    """rgb: uint8 (h, w, 3); xyz: float32 (h, w, 3) metres, camera frame, +inf where not seen; mask: bool (h, w);
    box: (x0, y0, x1, y1) of the crop in the image, exclusive ends; seen: count of finite points."""

    rgb: np.ndarray
    xyz: np.ndarray
    mask: np.ndarray
    box: tuple[int, int, int, int]
    seen: int


def seen_xyz(depth_m: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """float32 (H, W, 3): every pixel lifted through the pinhole (NaN depth gives NaN)."""
    h, w = depth_m.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([(u - cx) * depth_m / fx, (v - cy) * depth_m / fy, depth_m], axis=-1).astype(np.float32)


def mcc_object(rgb: np.ndarray, xyz: np.ndarray, mask: np.ndarray, padding: int = 40) -> MccObject:
    """Crop one object's inputs; an empty mask is an error (there is nothing to reconstruct)."""
    if mask.shape != xyz.shape[:2] or rgb.shape[:2] != mask.shape:
        raise InputError(f"mask {mask.shape}, XYZ {xyz.shape[:2]} and image {rgb.shape[:2]} differ in size")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise InputError("the mask is empty: no object to export")
    h, w = mask.shape
    x0, y0 = max(int(cols[0]) - padding, 0), max(int(rows[0]) - padding, 0)
    x1, y1 = min(int(cols[-1]) + 1 + padding, w), min(int(rows[-1]) + 1 + padding, h)
    crop_mask = mask[y0:y1, x0:x1]
    crop_xyz = xyz[y0:y1, x0:x1].copy()
    seen = crop_mask & np.isfinite(crop_xyz).all(axis=-1)
    crop_xyz[~seen] = np.inf  # MCC's convention for "not a seen point of the object"
    return MccObject(rgb[y0:y1, x0:x1].copy(), crop_xyz, crop_mask.copy(), (x0, y0, x1, y1), int(seen.sum()))
