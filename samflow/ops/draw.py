"""Drawing masks and prompts over a picture (what `masks.overlay` and `Segmentation.overlay` show)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from samflow.errors import InputError

# Distinct colours for prompt sets (tab10), cycled when there are more sets.
PALETTE = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)], dtype=np.float32)


def draw_overlay(rgb: np.ndarray, layers: np.ndarray, point_coords: Sequence | None = None,
                 point_labels: Sequence | None = None, boxes: np.ndarray | None = None, alpha: float = 0.5
                 ) -> np.ndarray:
    """uint8 (H, W, 3): `rgb` with each prompt set's masks tinted in its colour, prompts drawn on top.

    `layers: bool (N, K, H, W)` (set n in colour n); `point_coords`/`point_labels`: per set, (P, 2) pixels and
    (P,) labels (1 positive, green; 0 negative, red); `boxes: (M, 4)` xyxy outlines.
    """
    from PIL import Image as PILImage
    from PIL import ImageDraw

    layers = np.asarray(layers, dtype=bool)
    if layers.ndim != 4 or layers.shape[2:] != rgb.shape[:2]:
        raise InputError(f"masks are {layers.shape[2:]} but the image is {rgb.shape[:2]}")
    out = rgb.astype(np.float32)
    for n in range(layers.shape[0]):
        colour = PALETTE[n % len(PALETTE)]
        for mask in layers[n]:
            out[mask] = out[mask] * (1 - alpha) + colour * alpha
    picture = PILImage.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    radius = max(2, min(rgb.shape[:2]) // 80)
    for n, box in enumerate(boxes if boxes is not None else []):
        draw.rectangle([float(v) for v in box], outline=tuple(int(c) for c in PALETTE[n % len(PALETTE)]),
                       width=max(1, radius // 2))
    if point_coords is not None and point_labels is not None:
        for coords, labels in zip(point_coords, point_labels, strict=True):
            for (x, y), label in zip(coords, labels, strict=True):
                fill = (40, 220, 40) if label == 1 else (230, 30, 30)
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill, outline=(255, 255, 255))
    return np.asarray(picture)
