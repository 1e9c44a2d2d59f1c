"""Operations of automatic mask generation: point grids, crop boxes, stability scores, boxes of masks, and the
removal of small islands and holes. Vectorised over masks; results equal `segment_anything.utils.amg`'s.

Conventions: masks are bool (N, H, W); boxes are XYXY with inclusive right/bottom pixel indices (as the official
`batched_mask_to_box`), int64; crop boxes are `[x0, y0, x1, y1]` with exclusive ends.
"""

from __future__ import annotations

import math
from itertools import product
from typing import Literal

import numpy as np
import torch

from samflow.errors import InputError

__all__ = [
    "box_xyxy_to_xywh",
    "boxes_near_crop_edge",
    "build_all_layer_point_grids",
    "build_point_grid",
    "connected_components",
    "generate_crop_boxes",
    "masks_to_boxes",
    "remove_small_regions",
    "stability_score",
    "uncrop_boxes_xyxy",
    "uncrop_points",
]


# ---------------------------------------------------------------------------------------------- prompts, crops


def build_point_grid(n_per_side: int) -> np.ndarray:
    """float64 (n*n, 2): x, y in [0, 1], cell centres of an n x n grid, x varying fastest."""
    if n_per_side < 1:
        raise InputError(f"points per side must be at least 1, got {n_per_side}")
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has int(n_per_side / scale_per_layer**i) points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: tuple[int, int], n_layers: int,
                        overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes XYXY and their layer indices: the whole image, then (2**i)**2 overlapping crops in layer i.

    Layer i's crops overlap by int(overlap_ratio * short_side * 2 / 2**i) pixels; order is x-major, as official.
    """
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + im_w) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + im_h) / per_side)
        x0s = [int((crop_w - overlap) * i) for i in range(per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(layer)
    return boxes, layers


def uncrop_boxes_xyxy(boxes: torch.Tensor, crop_box: list[int]) -> torch.Tensor:
    x0, y0 = crop_box[:2]
    return boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)


def uncrop_points(points: torch.Tensor, crop_box: list[int]) -> torch.Tensor:
    x0, y0 = crop_box[:2]
    return points + torch.tensor([x0, y0], device=points.device)


def box_xyxy_to_xywh(box: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    out = box.clone() if isinstance(box, torch.Tensor) else box.copy()
    out[..., 2] = out[..., 2] - out[..., 0]
    out[..., 3] = out[..., 3] - out[..., 1]
    return out


def boxes_near_crop_edge(boxes: torch.Tensor, crop_box: list[int], orig_box: list[int],
                         atol: float = 20.0) -> torch.Tensor:
    """bool (N,): boxes (crop frame) with a side within `atol` of a crop edge that is not an image edge.

    A mask cut by the crop border is incomplete: a crop of another layer sees the whole object.
    """
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    boxes = uncrop_boxes_xyxy(boxes, crop_box).float()
    near_crop = torch.isclose(boxes, crop[None], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, orig[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)


# ------------------------------------------------------------------------------------------------- masks


def stability_score(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """float32 (...): IoU of the masks thresholded at `mask_threshold + offset` and `- offset`.

    The high mask lies inside the low one, so the IoU is a ratio of pixel counts. Counts are exact integers (the
    official sums rows in int16, which only differs for rows wider than 32767 pixels); 0/0 gives NaN, as there.
    """
    high = (logits > (mask_threshold + offset)).sum(dim=(-1, -2), dtype=torch.int64)
    low = (logits > (mask_threshold - offset)).sum(dim=(-1, -2), dtype=torch.int64)
    # Counts below 2**24 are exact in float32: the division is the official one.
    return high.to(torch.float32) / low.to(torch.float32)


def masks_to_boxes(masks: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """int64 (..., 4) XYXY of bool masks (..., H, W), right/bottom inclusive; [0, 0, 0, 0] for an empty mask.

    Torch in, torch out; numpy in, numpy out (numpy's bool reductions are much faster on the CPU).
    """
    if isinstance(masks, np.ndarray):
        *lead, h, w = masks.shape
        if masks.size == 0:
            return np.zeros((*lead, 4), dtype=np.int64)
        rows, cols = masks.any(axis=-1), masks.any(axis=-2)
        top, left = rows.argmax(axis=-1), cols.argmax(axis=-1)
        bottom = h - 1 - rows[..., ::-1].argmax(axis=-1)
        right = w - 1 - cols[..., ::-1].argmax(axis=-1)
        boxes = np.stack([left, top, right, bottom], axis=-1).astype(np.int64)
        return boxes * rows.any(axis=-1, keepdims=True)
    *lead, h, w = masks.shape
    if masks.numel() == 0:
        return torch.zeros(*lead, 4, dtype=torch.int64, device=masks.device)
    rows = masks.any(dim=-1)  # (..., H)
    cols = masks.any(dim=-2)  # (..., W)
    # argmax on bool finds the first True; on the flipped axis the last one.
    top = rows.to(torch.uint8).argmax(dim=-1)
    bottom = h - 1 - rows.flip(-1).to(torch.uint8).argmax(dim=-1)
    left = cols.to(torch.uint8).argmax(dim=-1)
    right = w - 1 - cols.flip(-1).to(torch.uint8).argmax(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    return boxes * rows.any(dim=-1, keepdim=True)


# ----------------------------------------------------------------------------------- connected components


def _row_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True in raster order: row, start column, end column (exclusive)."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    rows_s, starts = np.nonzero(np.diff(padded, axis=1) == 1)
    _, ends = np.nonzero(np.diff(padded, axis=1) == -1)
    return rows_s, starts, ends


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """8-connected components of a bool (H, W) mask, numbered as OpenCV numbers them (raster order of first
    pixel), without OpenCV.

    Returns (component of each run, size of each component, runs): runs are (row, start, end) arrays in raster
    order; component ids run 0..n-1 (OpenCV's labels minus one). Union-find over runs, not pixels: a run of row r
    touches a run of row r + 1 when their column spans, widened by one for diagonals, overlap.
    """
    rows, starts, ends = _row_runs(np.asarray(mask, dtype=bool))
    n = rows.size
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), (rows, starts, ends)
    stride = mask.shape[1] + 2
    start_keys = rows * stride + starts
    last_keys = rows * stride + ends - 1
    # Runs of the next row touching run i: last column >= start - 1 and start column <= last + 1.
    lo = np.searchsorted(last_keys, (rows + 1) * stride + starts - 1, side="left")
    hi = np.searchsorted(start_keys, (rows + 1) * stride + ends, side="right")
    degree = np.maximum(hi - lo, 0)
    src = np.repeat(np.arange(n), degree)
    dst = np.arange(degree.sum()) - np.repeat(np.cumsum(degree) - degree, degree) + np.repeat(lo, degree)
    parent = np.arange(n)
    # Hook and compress: each root hooks onto the smaller root across an edge, then paths are halved until
    # every run points at its root. A root is the smallest run of its tree, so roots sort in raster order.
    while True:
        root_src, root_dst = parent[src], parent[dst]
        if np.array_equal(root_src, root_dst):
            break
        low = np.minimum(root_src, root_dst)
        np.minimum.at(parent, root_src, low)
        np.minimum.at(parent, root_dst, low)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    _, component = np.unique(parent, return_inverse=True)
    sizes = np.bincount(component, weights=ends - starts).astype(np.int64)
    return component, sizes, (rows, starts, ends)


def _paint(shape: tuple[int, int], runs: tuple[np.ndarray, ...], selected: np.ndarray) -> np.ndarray:
    h, w = shape
    rows, starts, ends = (r[selected] for r in runs)
    edges = np.zeros(h * (w + 1), dtype=np.int32)
    np.add.at(edges, rows * (w + 1) + starts, 1)
    np.add.at(edges, rows * (w + 1) + ends, -1)
    return (np.cumsum(edges).reshape(h, w + 1)[:, :w] > 0)


def remove_small_regions(mask: np.ndarray, area_thresh: float,
                         mode: Literal["holes", "islands"]) -> tuple[np.ndarray, bool]:
    """Fill holes (mode "holes") or drop islands ("islands") smaller than `area_thresh` pixels in a bool (H, W)
    mask, 8-connected. Returns the mask and whether anything was small; the same result as the official
    `remove_small_regions`, which uses OpenCV (when every island is small the largest stays, the first in raster
    order on a tie, as OpenCV numbers them)."""
    if mode not in ("holes", "islands"):
        raise InputError(f"mode must be 'holes' or 'islands', not {mode!r}")
    mask = np.asarray(mask, dtype=bool)
    holes = mode == "holes"
    working = ~mask if holes else mask
    component, sizes, runs = connected_components(working)
    small = sizes < area_thresh
    if not small.any():
        return mask, False
    if holes:
        return mask | _paint(mask.shape, runs, small[component]), True
    keep = ~small
    if not keep.any():
        keep[int(np.argmax(sizes))] = True
    return _paint(mask.shape, runs, keep[component]), True
