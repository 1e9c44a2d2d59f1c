"""Writing masks: `masks.write` (a PNG per mask and a JSON record) and `masks.overlay` (a picture of them)."""

from __future__ import annotations

from pydantic import Field

from samflow.engine.context import ItemContext
from samflow.engine.node import Input, Node, NodeParams
from samflow.engine.registry import register
from samflow.engine.types import Boxes, Image, Masks, Points
from samflow.ops.draw import PALETTE, draw_overlay  # noqa: F401  (PALETTE: re-exported)


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
        layers = masks.best()[:, None] if self.params.best_only else masks.data
        picture = Image(draw_overlay(image.data, layers, points.coords if points is not None else None,
                                     points.labels if points is not None else None,
                                     boxes.xyxy if boxes is not None else None, self.params.alpha))
        path = ctx.output_path(self.params.file, who=self.type_id)
        from PIL import Image as PILImage

        PILImage.fromarray(picture.data).save(path)
        return {"image": picture}
