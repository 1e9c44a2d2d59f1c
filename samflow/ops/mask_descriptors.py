"""Class-agnostic descriptors of masks: their shape (how much of their box and hull they fill, how round, how
elongated) and the colours under them. The presence head (samflow.models.text.presence_head) reads them beside
CLIP's score: a small CLIP reads colour well and shape poorly, and a mask's outline says its shape directly.

    mask_descriptors(image, masks)   # (M, len(DESCRIPTORS)) float32
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from samflow.errors import InputError

DESCRIPTORS = (
    "log_area",        # log of the mask's share of the image
    "box_fill",        # area / its axis-aligned box's area
    "box_aspect",      # short / long side of that box
    "eccentricity",    # of the pixel coordinates' covariance (0: round, 1: a line)
    "compactness",     # 4 pi area / boundary pixels^2 (capped at 2)
    "radial_spread",   # std / mean distance of boundary pixels from the centroid
    "axis_box_fill",   # area / the box along the covariance's axes
    "solidity",        # area / convex hull area (capped at 1.5): stars and rings are low
    "red", "green", "blue",  # mean colour under the mask, in [0, 1]
    "colour_spread",   # mean per-channel standard deviation under the mask
    "contrast",        # mean colour distance to a 3-pixel ring around the mask
)
MIN_PIXELS = 4  # a smaller mask gets all-zero descriptors
RING = 3


def _hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of integer points (N, 2) (Andrew's monotone chain, shoelace)."""
    pts = np.unique(points, axis=0)
    if len(pts) < 3:
        return 0.0

    def half(seq: np.ndarray) -> list[np.ndarray]:
        chain: list[np.ndarray] = []
        for p in seq:
            while len(chain) >= 2:
                (ax, ay), (bx, by) = chain[-2], chain[-1]
                if (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax) > 0:
                    break
                chain.pop()
            chain.append(p)
        return chain

    lower, upper = half(pts), half(pts[::-1])
    hull = np.array(lower[:-1] + upper[:-1], dtype=np.float64)
    x, y = hull[:, 0], hull[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` with a 4-neighbour outside it (the image border counts as outside)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _shape(mask: np.ndarray) -> list[float]:
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    area = float(len(ys))
    bh, bw = float(np.ptp(ys) + 1), float(np.ptp(xs) + 1)
    edge = _boundary(mask)
    by, bx = np.nonzero(edge)
    cy, cx = ys.mean(), xs.mean()
    cov = np.cov(np.stack([ys, xs]).astype(np.float64))
    values, vectors = np.linalg.eigh(cov)
    eccentricity = math.sqrt(max(0.0, 1.0 - values[0] / max(values[1], 1e-9)))
    radii = np.hypot(by - cy, bx - cx)
    along = np.stack([ys - cy, xs - cx], 1) @ vectors
    axis_box = (np.ptp(along[:, 0]) + 1) * (np.ptp(along[:, 1]) + 1)
    hull = _hull_area(np.stack([by, bx], 1)) + len(by) / 2  # pixel centres: add half the outline
    return [math.log(area / (h * w)), area / (bh * bw), min(bh, bw) / max(bh, bw), eccentricity,
            min(4 * math.pi * area / max(len(by), 1) ** 2, 2.0), float(radii.std() / max(radii.mean(), 1e-9)),
            float(area / axis_box), min(area / max(hull, 1.0), 1.5)]


def mask_descriptors(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """DESCRIPTORS of each of `masks` bool (M, H, W) over `image` uint8 (H, W, 3): float32 (M, len(DESCRIPTORS));
    masks under MIN_PIXELS pixels get zeros."""
    masks = np.asarray(masks, dtype=bool)
    image = np.asarray(image)
    if masks.ndim != 3 or image.ndim != 3 or image.shape[:2] != masks.shape[1:] or image.shape[2] != 3:
        raise InputError(f"mask_descriptors needs masks (M, H, W) and an RGB image (H, W, 3) of the same size; "
                         f"got masks {masks.shape} and image {image.shape}")
    out = np.zeros((len(masks), len(DESCRIPTORS)), np.float32)
    if not len(masks):
        return out
    pixels = image.reshape(-1, 3).astype(np.float32) / 255.0
    grown = F.max_pool2d(torch.from_numpy(masks).float()[:, None], 2 * RING + 1, stride=1, padding=RING)[:, 0]
    rings = (grown.numpy() > 0) & ~masks
    for i, mask in enumerate(masks):
        if mask.sum() < MIN_PIXELS:
            continue
        inside = pixels[mask.reshape(-1)]
        mean = inside.mean(0)
        ring = pixels[rings[i].reshape(-1)]
        contrast = float(np.linalg.norm(mean - ring.mean(0))) if len(ring) else 0.0
        out[i] = [*_shape(mask), *mean.tolist(), float(inside.std(0).mean()), contrast]
    return out


__all__ = ["DESCRIPTORS", "mask_descriptors"]
