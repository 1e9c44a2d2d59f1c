"""The service's request and response bodies (they make its OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Point = tuple[float, float]
Box = tuple[float, float, float, float]


class Limits(BaseModel):
    max_upload_bytes: int
    max_json_bytes: int
    max_graph_bytes: int
    max_side: int
    max_pixels: int = Field(description="larger uploads are downscaled to this many pixels (or refused: oversize)")
    oversize: Literal["downscale", "refuse"]
    max_points: int
    max_boxes: int
    max_texts: int
    max_masks: int = Field(description="masks returned per request (objects x candidates)")
    max_mask_pixels: int = Field(description="masks returned x their pixels, per request")
    max_graph_nodes: int


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    device: str
    text_prompts: bool | None = Field(description="whether text prompts work: false without samflow.predict.text, "
                                                  "else the outcome of the latest text prompt (null: none yet)")
    images: int = Field(description="uploaded images held now")
    limits: Limits


class ImageInfo(BaseModel):
    id: str = Field(description="the image's id: a hash of the uploaded bytes (the same file gets the same id)")
    width: int = Field(description="width of the pixels segmented (prompt coordinates are in these pixels)")
    height: int
    scale: float = Field(1.0, description="segmented size / uploaded size: below 1 when the upload was larger "
                                          "than the service's max_pixels and was downscaled")
    original_width: int | None = Field(None, description="width as uploaded")
    original_height: int | None = None
    encoded: bool = Field(description="whether its embedding is ready (prompts then cost the decoder only)")
    encode_ms: float | None = Field(None, description="encoder time of this request; 0 when it was cached")


class SegmentRequest(BaseModel):
    """Prompts for one object (or one per box). Coordinates are pixels of the uploaded image, x before y."""

    model_config = ConfigDict(extra="forbid")

    points: list[Point] = Field(default_factory=list, description="clicks [[x, y], ...] on the object")
    labels: list[Literal[0, 1]] | None = Field(None, description="1 foreground, 0 background per point; default 1")
    boxes: list[Box] = Field(default_factory=list, description="[[x0, y0, x1, y1], ...]: one object per box")
    text: str | None = Field(None, max_length=300, description="a description of the object (text prompts)")
    multimask: bool | None = Field(True, description="three candidate masks per object (SAM's ambiguity "
                                                     "answers); false: one; null: three only for a single click")
    png: bool = Field(True, description="include each mask as a base64 PNG (0/255)")


class MaskOut(BaseModel):
    score: float = Field(description="the model's predicted IoU")
    area: int
    bbox: list[float] = Field(description="[x, y, width, height] (COCO)")
    rle: dict[str, Any] = Field(description="COCO RLE {size: [h, w], counts: str}")
    png_base64: str | None = None


class ObjectOut(BaseModel):
    label: str | None = Field(None, description="the text prompt, if any")
    best: int = Field(description="index of the best mask (for a text alone, the one the text route picked)")
    masks: list[MaskOut]
    confidence: float | None = Field(None, description="how sure the text route is of this object (the detector's "
                                                       "score, or CLIP's cosine); none for clicks and boxes")


class SegmentResponse(BaseModel):
    image_id: str
    width: int
    height: int
    objects: list[ObjectOut]
    decode_ms: float


class GraphRunRequest(BaseModel):
    """A YAML graph and its inputs: an Image input takes an uploaded image's id; Points, Boxes and other inputs
    take their JSON form (e.g. {"points": [[x, y]], "labels": [1]}); files on the server are never read: params that
    name one are refused (403 `server_path`) unless the operator allowed a folder that holds it."""

    model_config = ConfigDict(extra="forbid")

    graph: str = Field(description="the graph as YAML text (no anchors or aliases; at most max_graph_bytes)")
    inputs: dict[str, Any] = Field(default_factory=dict)
    overrides: dict[str, Any] = Field(default_factory=dict, description='node params: {"NODE.PARAM": value}')


class GraphRunResponse(BaseModel):
    outputs: dict[str, Any] = Field(description="each output as JSON; masks with COCO RLE, images as base64 PNG")
    nodes: dict[str, Any] = Field(description="per node: runs, seconds, cache hits")
    seconds: float
