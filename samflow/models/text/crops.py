"""Masked object crops: what CLIP sees of one mask, identical in training, ranking and adapter training.

A crop is a square window centred on the mask's box, a little larger than the box and never smaller than a fixed
fraction of the image (so a small object stays small in its crop: CLIP can tell 'a small ring' from 'a ring'),
with every pixel outside the mask replaced by neutral grey (so the crop names the object, not its surroundings).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from samflow.errors import InputError

FILL = (0.5, 0.5, 0.5)  # neutral grey: no named colour, so it never reads as part of the object
MARGIN = 0.15  # the window is 15% larger than the box's long side
MIN_CONTEXT = 0.25  # and at least this fraction of the image's long side


def crop_windows(masks: np.ndarray, margin: float = MARGIN, min_context: float = MIN_CONTEXT) -> np.ndarray:
    """Square windows (N, 4) float XYXY around each mask of bool (N, H, W); an empty mask gets the whole image."""
    n, h, w = masks.shape
    windows = np.zeros((n, 4), dtype=np.float32)
    rows_any, cols_any = masks.any(axis=2), masks.any(axis=1)
    for i in range(n):
        rows, cols = np.flatnonzero(rows_any[i]), np.flatnonzero(cols_any[i])
        if rows.size == 0:
            windows[i] = (0, 0, w, h)
            continue
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        side = max(max(y1 - y0, x1 - x0) * (1 + margin), min_context * max(h, w))
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        windows[i] = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    return windows


def masked_crops(image: np.ndarray, masks: np.ndarray, size: int, *, margin: float = MARGIN,
                 min_context: float = MIN_CONTEXT, windows: np.ndarray | None = None) -> torch.Tensor:
    """Crops float32 (N, 3, size, size) in [0, 1] of `masks` bool (N, H, W) over `image` uint8 (H, W, 3).

    `windows` (N, 4) XYXY overrides the default windows (training jitters them). Windows may extend past the image:
    the outside is grey, like the background.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"masked_crops needs a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
        raise InputError(f"masks must be (N, H, W) with the image's size {image.shape[:2]}, got {masks.shape}")
    if windows is None:
        windows = crop_windows(masks, margin, min_context)
    h, w = image.shape[:2]
    fill = torch.tensor(FILL, dtype=torch.float32).view(3, 1, 1)
    pixels = torch.tensor(image).permute(2, 0, 1)  # a copy: images may be read-only views
    out = torch.empty((masks.shape[0], 3, size, size), dtype=torch.float32)
    for i, (x0, y0, x1, y1) in enumerate(np.round(windows).astype(int)):
        # Pad only the part of the window outside the image; crop then composite then resize (bounded memory).
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        canvas = fill.expand(3, y1 - y0, x1 - x0).clone()
        if cx1 > cx0 and cy1 > cy0:
            patch = pixels[:, cy0:cy1, cx0:cx1].float() / 255
            keep = torch.from_numpy(masks[i, cy0:cy1, cx0:cx1])
            canvas[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = torch.where(keep, patch, fill)
        out[i] = F.interpolate(canvas[None], (size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return out
