"""`sam.auto`: every object in an image, from a grid of point prompts (SAM's automatic mask generator).

A thin adapter over samflow.predict.amg.SamAutomaticMaskGenerator (Sam2AutomaticMaskGenerator for a SAM 2
embedding: SAM 2's generator with these params; `min_mask_region_area` then fills holes and drops islands of the
low-res masks, as SAM 2 does). The whole-image embedding comes in on the `embedding` port (so it is computed once,
or served from the cache, by `sam.encoder`); crop embeddings (`crop_n_layers > 0`) go through the same cache under
the encoder's keys.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, model_validator

from samflow.engine.context import ItemContext
from samflow.engine.node import Input, Node, NodeParams
from samflow.engine.registry import register
from samflow.engine.types import Boxes, Image, ImageEmbedding, Masks, Scores
from samflow.errors import NodeError
from samflow.predict.prompts import MAX_CROP_LAYERS, MAX_POINTS_PER_SIDE, check_auto_grid

MAX_POINTS_PER_BATCH = 1024  # prompts decoded together (memory grows with it)


class AutoParams(NodeParams):
    points_per_side: int = Field(32, ge=1, le=MAX_POINTS_PER_SIDE, description="grid of points_per_side**2 click "
                                                                               "prompts")
    points_per_batch: int = Field(64, ge=1, le=MAX_POINTS_PER_BATCH, description="prompts decoded together")
    pred_iou_thresh: float = Field(0.88, ge=0, le=1, description="keep masks whose predicted IoU is above this")
    stability_score_thresh: float = Field(0.95, ge=0, le=1, description="keep masks whose stability score is at "
                                                                       "least this")
    stability_score_offset: float = Field(1.0, ge=0, description="logit shift used by the stability score")
    box_nms_thresh: float = Field(0.7, ge=0, le=1, description="box IoU above which duplicates are dropped")
    crop_n_layers: int = Field(0, ge=0, le=MAX_CROP_LAYERS, description="also prompt on 4, 16... overlapping crops "
                                                                       "(layers)")
    crop_nms_thresh: float = Field(0.7, ge=0, le=1, description="box NMS threshold between crops")
    crop_overlap_ratio: float = Field(512 / 1500, ge=0, lt=1, description="crop overlap, fraction of the side")
    crop_n_points_downscale_factor: int = Field(1, ge=1, le=MAX_POINTS_PER_SIDE,
                                                description="points per side shrink per crop layer")
    min_mask_region_area: int = Field(0, ge=0, description="fill holes and drop islands smaller than this")

    @model_validator(mode="after")
    def _bounded_grid(self) -> AutoParams:
        check_auto_grid(self.points_per_side, self.crop_n_layers, self.crop_n_points_downscale_factor)
        return self


@register("sam.auto")
class SamAuto(Node):
    """Segment everything: grid prompts, then IoU/stability filtering and NMS (one mask per object).

    Outputs N masks as `Masks` (N, 1, H, W) with their predicted IoUs as scores (N, 1), the stability scores, and
    the masks' boxes (XYXY, exclusive right/bottom), best predicted first within each crop layer.
    """

    Params = AutoParams
    inputs = {"embedding": Input(ImageEmbedding, doc="from sam.encoder, of the same image"),
              "image": Input(Image, doc="the pictures crops are cut from")}
    outputs = {"masks": Masks, "scores": Scores, "stability": Scores, "boxes": Boxes}

    def run(self, ctx: ItemContext, embedding: ImageEmbedding, image: Image) -> dict[str, Any]:
        from samflow.predict.amg import SamAutomaticMaskGenerator, cached_embedder
        from samflow.predict.embeddings import from_payload

        if embedding.model is None:
            raise NodeError("the embedding carries no model; produce it with sam.encoder")
        if tuple(embedding.original_size) != image.size:
            raise NodeError(f"the embedding is of a {tuple(embedding.original_size)} image but the image is "
                            f"{image.size}: wire both ports to the same picture")
        generator = SamAutomaticMaskGenerator(embedding.model, **self.params.model_dump(),
                                              embed=cached_embedder(embedding.model, ctx.cache))
        encoded = from_payload(embedding)  # with the family, HQ-SAM's early features, SAM 2's high-res features
        found = generator.generate_masks(image.data, encoded)
        boxes = found.boxes.astype(np.float32)
        boxes[:, 2:] += 1  # inclusive pixel indices -> pixel edges
        return {"masks": Masks(found.masks()[:, None], found.predicted_iou[:, None]),
                "scores": Scores(found.predicted_iou[:, None]),
                "stability": Scores(found.stability_score[:, None]),
                "boxes": Boxes(boxes.reshape(-1, 4))}
