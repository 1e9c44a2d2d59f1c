"""Detectors as nodes, and detections as SAM prompts.

- `detect.torchvision`: a torchvision detection model from a local weights file (nothing downloaded).
- `detect.file`: detections saved in a COCO results (or annotations) JSON, found per image by its file name.
- `detect.callable`: a Python function registered with `samflow.predict.detectors.register_detector`.
- `detect.text`: an open-vocabulary detector (OWL-ViT, OWLv2, Grounding DINO) from a local Hugging Face folder: the
  boxes of what texts name, each labelled with its text (needs transformers: `pip install "samflow[detect]"`).
- `detect.segment`: detections -> one mask per detection in one batched decoder call (optionally refined once by
  feeding the best mask back with its box), keeping each detection's class and confidence (`InstanceMasks`).

Every detector filters by score and class and outputs `Detections` (a `Boxes`, so `sam.decoder` takes it too).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from samflow.devices import resolve_device
from samflow.engine.context import ItemContext
from samflow.engine.node import Input, Node, NodeParams
from samflow.engine.registry import register
from samflow.engine.types import Image, ImageEmbedding, MaskLogits, Masks, Scores, TextEmbedding
from samflow.engine.types.detect import Detections, InstanceMasks
from samflow.engine.types.video import Frame
from samflow.errors import NodeError
from samflow.ops.image import IMAGE_SUFFIXES


class FilterParams(NodeParams):
    score_threshold: float = Field(0.5, ge=0, le=1, description="drop detections scoring below this")
    classes: list[str | int] | None = Field(None, description="keep only these classes (names or ids)")
    max_detections: int | None = Field(100, ge=1, description="keep at most this many, best first")
    class_names: list[str] | dict[int, str] | Literal["coco"] | None = Field(
        None, description="names of class ids: a list indexed by id, a mapping id -> name, or 'coco'")


def _name_map(class_names: list[str] | dict[int, str] | str | None) -> dict[int, str] | None:
    if class_names is None:
        return None
    if class_names == "coco":
        from samflow.models.detection import coco_category_names

        class_names = coco_category_names()
    if isinstance(class_names, list):
        return dict(enumerate(class_names))
    return {int(k): v for k, v in class_names.items()}


def finish(found: Detections, params: FilterParams, image: Image | None = None,
           names: dict[int, str] | None = None) -> Detections:
    """Name, clip, filter by score and class, and cap a detector's output (best scores first)."""
    if names and found.class_ids is not None:
        found = Detections(found.xyxy, found.scores, found.class_ids,
                           [names.get(int(c), str(int(c))) for c in found.class_ids])
    if image is not None and len(found):
        h, w = image.size
        xyxy = found.xyxy.copy()
        xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, w)
        xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, h)
        found = Detections(xyxy, found.scores, found.class_ids, found.names)
    keep = (found.xyxy[:, 2] > found.xyxy[:, 0]) & (found.xyxy[:, 3] > found.xyxy[:, 1])  # empty after clipping
    if found.scores is not None:
        keep &= found.scores >= params.score_threshold
    if params.classes is not None:
        wanted_ids = {c for c in params.classes if isinstance(c, int)}
        wanted_names = {c for c in params.classes if isinstance(c, str)}
        ids = found.class_ids if found.class_ids is not None else np.full(len(found), -1)
        labels = found.names if found.names is not None else [None] * len(found)
        keep &= np.array([int(i) in wanted_ids or n in wanted_names for i, n in zip(ids, labels)], dtype=bool)
    found = found.select(keep)
    if found.scores is not None:
        found = found.select(np.argsort(-found.scores, kind="stable"))
    if params.max_detections is not None and len(found) > params.max_detections:
        found = found.select(np.arange(params.max_detections))
    return found


class TorchvisionParams(FilterParams):
    model: str = Field("fasterrcnn_resnet50_fpn", description="a torchvision.models.detection builder name")
    weights: str = Field(description="local weights file (.pth state dict or .safetensors); nothing is downloaded")
    num_classes: int | None = Field(None, ge=2, description="classes of the weights (with background); default 91")
    class_names: list[str] | dict[int, str] | Literal["coco"] | None = Field(
        "coco", description="names of label ids: 'coco' (default), a list indexed by id, or a mapping")
    device: str | None = Field(None, description="cpu, cuda...; default cuda when available")
    model_kwargs: dict[str, Any] = Field(default_factory=dict,
                                         description="extra builder arguments, e.g. {min_size: 320}")


@register("detect.torchvision")
class TorchvisionDetector(Node):
    """Detect objects with a torchvision detection model (Faster R-CNN, RetinaNet, FCOS, SSD...) from local weights."""

    Params = TorchvisionParams
    inputs = {"image": Input(Image)}
    outputs = {"detections": Detections}

    def model(self, ctx: ItemContext) -> Any:

        p = self.params
        device = resolve_device(p.device)
        key = ("torchvision", p.model, str(Path(p.weights).resolve()), p.num_classes, device,
               json.dumps(p.model_kwargs, sort_keys=True, default=str))

        def load() -> Any:
            from samflow.models.detection import build_torchvision_detector

            return build_torchvision_detector(p.model, p.weights, p.num_classes, device, **p.model_kwargs)

        return ctx.models.get(key, load)

    def run(self, ctx: ItemContext, image: Image) -> dict[str, Detections]:
        from samflow.models.detection import run_detector

        boxes, scores, labels = run_detector(self.model(ctx), image.data)
        names = _name_map(self.params.class_names)
        if self.params.class_names == "coco" and self.params.num_classes not in (None, 91):
            names = None  # COCO names do not fit a head trained on other classes
        return {"detections": finish(Detections(boxes, scores, labels), self.params, image, names)}


class FileParams(FilterParams):
    file: str = Field(description="COCO results JSON ([{image_id, category_id, bbox, score}]) or COCO annotations")
    images: str | None = Field(None, description="COCO annotations JSON whose images/categories give each file's id "
                                                 "and the class names")
    image_id: int | str | None = Field(None, description="use this image id for every item (default: from the file "
                                                         "name; a video frame's index)")
    score_threshold: float = Field(0.0, ge=0, le=1, description="drop detections scoring below this")


@register("detect.file")
class FileDetector(Node):
    """Detections saved by a detector (COCO results JSON), found for each image by its file name or id."""

    Params = FileParams
    inputs = {"image": Input(Image, doc="the image (its file name finds its detections)")}
    outputs = {"detections": Detections}

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._file: Any = None
        self._lock = threading.Lock()

    def detection_file(self) -> Any:
        if self._file is None:
            with self._lock:
                if self._file is None:
                    from samflow.data.coco_results import DetectionFile

                    self._file = DetectionFile(self.params.file, self.params.images)
        return self._file

    def run(self, ctx: ItemContext, image: Image) -> dict[str, Detections]:
        p = self.params
        source = self.detection_file()
        if p.image_id is not None:
            image_id = p.image_id
        elif isinstance(image, Frame) and image.path is not None and image.path.suffix.lower() not in IMAGE_SUFFIXES:
            image_id = image.index  # a frame decoded from a video: detections are saved per frame index
        else:
            image_id = source.image_id(image.path)
        found = source.detections(image_id, _name_map(p.class_names))
        return {"detections": finish(found, p, image)}


class CallableParams(FilterParams):
    function: str = Field(description="name given to samflow.predict.detectors.register_detector")
    score_threshold: float = Field(0.0, ge=0, le=1, description="drop detections scoring below this")


@register("detect.callable")
class CallableDetector(Node):
    """Run a Python detector function registered from code (`samflow.predict.detectors.register_detector`)."""

    Params = CallableParams
    inputs = {"image": Input(Image)}
    outputs = {"detections": Detections}

    def run(self, ctx: ItemContext, image: Image) -> dict[str, Detections]:
        from samflow.predict.detectors import as_detections, get_detector

        name = self.params.function
        found = as_detections(get_detector(name)(image.data), where=f"detector {name!r}")
        return {"detections": finish(found, self.params, image, _name_map(self.params.class_names))}


class TextDetectParams(NodeParams):
    detector: str = Field(description="local Hugging Face model folder (or its config.json) of a zero-shot "
                                      "detector: OWL-ViT, OWLv2 or Grounding DINO; nothing is downloaded")
    texts: str | list[str] | None = Field(None, description="what to find: a text or a list (each box is labelled "
                                                            "with the text it matched); or wire the text input")
    box_threshold: float | None = Field(None, ge=0, le=1, description="keep boxes scoring above this for a text "
                                                                      "(default 0.1 for OWL, 0.35 for Grounding DINO)")
    text_threshold: float | None = Field(None, ge=0, le=1, description="Grounding DINO: a token of the text must "
                                                                       "score above this (default 0.25)")
    max_detections: int | None = Field(100, ge=1, description="keep at most this many, best first")
    device: str | None = Field(None, description="cpu, cuda...; default cuda when available")

    @field_validator("texts")
    @classmethod
    def _bounded_texts(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is not None:
            from samflow.predict.text_detector import check_texts

            check_texts(value)
        return value


@register("detect.text")
class OpenVocabularyDetector(Node):
    """Find what texts name with an open-vocabulary detector; boxes labelled with their text (no box: none)."""

    Params = TextDetectParams
    inputs = {"image": Input(Image),
              "text": Input(TextEmbedding, optional=True, doc="texts from clip.text (their strings are used), "
                                                              "instead of the texts param")}
    outputs = {"detections": Detections}

    def run(self, ctx: ItemContext, image: Image, text: TextEmbedding | None = None) -> dict[str, Detections]:
        from samflow.predict.text_detector import detect_text, get_text_detector

        p = self.params
        texts = list(text.texts) if text is not None else p.texts
        if texts is None:
            raise NodeError("detect.text needs texts: set the texts param or wire the text input")
        detector = get_text_detector(p.detector, p.device, pool=ctx.models)
        found = detect_text(detector, image, texts, p.box_threshold, p.text_threshold, p.max_detections)
        return {"detections": found}


class SegmentParams(NodeParams):
    multimask: bool = Field(False, description="three masks per detection instead of one")
    refine: bool = Field(False, description="decode again with each box and its best mask's logits (one more "
                                            "batched call; gives one mask per detection)")


@register("detect.segment")
class SegmentDetections(Node):
    """One mask per detection from its box, in one batched decoder call; masks keep class, name and confidence."""

    Params = SegmentParams
    inputs = {"embedding": Input(ImageEmbedding, doc="from sam.encoder"),
              "detections": Input(Detections, doc="from a detect.* node")}
    outputs = {"masks": InstanceMasks, "scores": Scores, "logits": MaskLogits}

    def run(self, ctx: ItemContext, embedding: ImageEmbedding, detections: Detections) -> dict[str, Any]:
        from samflow.predict.embeddings import outputs_per_prompt, predict_sets, predictor_for

        if embedding.model is None:
            raise NodeError("the embedding carries no model; produce it with sam.encoder")
        multimask = self.params.multimask and not self.params.refine
        k = outputs_per_prompt(embedding.model, multimask)  # either family: SAM (and HQ, Mobile) or SAM 2
        if len(detections) == 0:  # SAM cannot decode an empty batch; nothing detected, nothing to segment
            h, w = embedding.original_size
            size = tuple(4 * s for s in embedding.features.shape[-2:])
            return _outputs(np.zeros((0, k, h, w), bool), np.zeros((0, k), np.float32),
                            np.zeros((0, k, *size), np.float32), detections)
        predictor = predictor_for(embedding)
        boxes = detections.xyxy
        masks, scores, logits = predict_sets(predictor, None, None, boxes, None, self.params.multimask)
        if self.params.refine:
            best = MaskLogits(logits, scores).best()
            masks, scores, logits = predict_sets(predictor, None, None, boxes, best, False)
        return _outputs(masks, scores, logits, detections)


def _outputs(masks: np.ndarray, scores: np.ndarray, logits: np.ndarray, detections: Detections) -> dict[str, Any]:
    instance = InstanceMasks.from_detections(Masks(masks, scores), detections)
    return {"masks": instance, "scores": Scores(scores), "logits": MaskLogits(logits, scores)}
