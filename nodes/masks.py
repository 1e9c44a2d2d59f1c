"""Writing masks: `masks.write` (a PNG per mask and a JSON record) and `masks.overlay` (a picture of them)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from samflow.node import Input, Node, NodeParams
from samflow.registry import register
from samflow.scheduler import ItemContext
from samflow.types import Boxes, Image, Masks, Points

# Distinct colours for prompt sets (tab10), cycled when there are more sets.
PALETTE = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)], dtype=np.float32)


class WriteParams(NodeParams):
    dir: str = Field("masks", description="folder inside the item's output folder")
    name: str = Field("mask", description="file name prefix: NAME_<set>_<index>.png and NAME.json")
    best_only: bool = Field(False, description="write only the best-scoring mask of each prompt set")


@register("masks.write")
class WriteMasks(Node):
    """Write each mask as a PNG (0/255) and a JSON record (set, index, score, area, box) per item."""

    Params = WriteParams
    inputs = {"masks": Input(Masks)}
    outputs = {}

    def run(self, ctx: ItemContext, masks: Masks) -> dict:
        if self.params.best_only and masks.data.shape[1] > 1:
            masks = Masks(masks.best(), masks.scores.max(axis=1) if masks.scores is not None else None)
        folder = ctx.output_path(self.params.dir, who=self.type_id)
        folder.mkdir(exist_ok=True)
        masks.save(folder, self.params.name)
        return {}


class OverlayParams(NodeParams):
    file: str = Field("overlay.png", description="PNG written inside the item's output folder")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="mask opacity")
    best_only: bool = Field(True, description="draw only the best-scoring mask of each prompt set")


@register("masks.overlay")
class OverlayMasks(Node):
    """Draw masks in colour over the image, with the point and box prompts, and write it as a PNG."""

    Params = OverlayParams
    inputs = {"image": Input(Image), "masks": Input(Masks), "points": Input(Points, optional=True),
              "boxes": Input(Boxes, optional=True)}
    outputs = {"image": Image}

    def run(self, ctx: ItemContext, image: Image, masks: Masks, points: Points | None = None,
            boxes: Boxes | None = None) -> dict[str, Image]:
        picture = Image(draw_overlay(image.data, masks, points, boxes, self.params.alpha, self.params.best_only))
        path = ctx.output_path(self.params.file, who=self.type_id)
        from PIL import Image as PILImage

        PILImage.fromarray(picture.data).save(path)
        return {"image": picture}


def draw_overlay(rgb: np.ndarray, masks: Masks, points: Points | None = None, boxes: Boxes | None = None,
                 alpha: float = 0.5, best_only: bool = True) -> np.ndarray:
    """uint8 (H, W, 3): `rgb` with each prompt set's mask(s) tinted in its colour, prompts drawn on top."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    if masks.data.shape[2:] != rgb.shape[:2]:
        raise ValueError(f"masks are {masks.data.shape[2:]} but the image is {rgb.shape[:2]}")
    out = rgb.astype(np.float32)
    layers = masks.best()[:, None] if best_only else masks.data
    for n in range(layers.shape[0]):
        colour = PALETTE[n % len(PALETTE)]
        for mask in layers[n]:
            out[mask] = out[mask] * (1 - alpha) + colour * alpha
    picture = PILImage.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    radius = max(2, min(rgb.shape[:2]) // 80)
    for n, box in enumerate(boxes.xyxy if boxes is not None else []):
        draw.rectangle([float(v) for v in box], outline=tuple(int(c) for c in PALETTE[n % len(PALETTE)]),
                       width=max(1, radius // 2))
    if points is not None:
        for coords, labels in zip(points.coords, points.labels, strict=True):
            for (x, y), label in zip(coords, labels, strict=True):
                fill = (40, 220, 40) if label == 1 else (230, 30, 30)
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill, outline=(255, 255, 255))
    return np.asarray(picture)

