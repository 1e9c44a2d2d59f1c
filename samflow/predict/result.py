"""Segmentation: what `samflow.segment` returns, with its conversions (COCO, supervision, an overlay picture)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from samflow.engine.types import Masks
from samflow.errors import SamflowError
from samflow.ops import rle
from samflow.predict.prompts import Prompts

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from samflow.predict.segmenter import Prediction


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """float32 (N, 4) XYXY boxes of bool (N, H, W) masks, on pixel edges (x1 = last column + 1); zeros if empty."""
    n = masks.shape[0]
    boxes = np.zeros((n, 4), dtype=np.float32)
    cols, rows = masks.any(axis=1), masks.any(axis=2)  # (N, W), (N, H)
    for i in np.flatnonzero(cols.any(axis=1)):
        xs, ys = np.flatnonzero(cols[i]), np.flatnonzero(rows[i])
        boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


@dataclass(frozen=True, eq=False)
class Segmentation:
    """N segmented objects of one image, one per prompt set.

    masks bool (N, H, W): the best mask of each object; scores float32 (N,): their predicted IoU; boxes float32
    (N, 4): XYXY boxes around the masks; labels: the text prompt of each object, or None.
    candidates bool (N, K, H, W) with candidate_scores (N, K): all K masks per object (K = 3 with multimask, the
    ambiguity-aware answers); logits float32 (N, K, 4h, 4w): low-res logits, which `segment(..., mask_input=this)`
    takes back to refine. image: the uint8 (H, W, 3) picture segmented. confidence float32 (N,) or None: how
    sure the text route was of each object (the detector's score, or CLIP's), None for the other prompts.
    best int (N,) or None: which candidate `masks` holds, where it is not the highest-scored one (the adapter route's
    presence check picks by CLIP).
    """

    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    labels: list[str | None]
    candidates: np.ndarray
    candidate_scores: np.ndarray
    logits: np.ndarray
    image: np.ndarray
    prompts: Prompts
    confidence: np.ndarray | None = None
    best: np.ndarray | None = None

    def __repr__(self) -> str:
        h, w = self.image.shape[:2]
        return (f"Segmentation({len(self)} object(s) on {w}x{h}, scores={[round(float(s), 3) for s in self.scores]}, "
                f"areas={self.areas.tolist()}, labels={self.labels})")

    @classmethod
    def from_prediction(cls, prediction: Prediction, image: np.ndarray) -> Segmentation:
        best = np.argmax(prediction.scores, axis=1)
        rows = np.arange(prediction.masks.shape[0])
        masks = prediction.masks[rows, best]
        return cls(masks=masks, scores=prediction.scores[rows, best], boxes=mask_boxes(masks),
                   labels=list(prediction.labels), candidates=prediction.masks,
                   candidate_scores=prediction.scores, logits=prediction.logits, image=image,
                   prompts=prediction.prompts)

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def areas(self) -> np.ndarray:
        """int64 (N,): pixels in each best mask."""
        return self.masks.reshape(len(self), -1 if len(self) else 0).sum(axis=1)  # zero objects: (0,)

    @property
    def best_index(self) -> np.ndarray:
        """int (N,): which candidate `masks` holds for each object (`best`, else the highest-scored one)."""
        return np.argmax(self.candidate_scores, axis=1) if self.best is None else np.asarray(self.best)

    def best_logits(self) -> np.ndarray:
        """float32 (N, 1, 4h, 4w): the low-res logits of each best mask (a `mask_input` for the next call)."""
        return self.logits[np.arange(len(self)), self.best_index][:, None]

    def to_masks(self) -> Masks:
        """All candidates as the graph payload `Masks` (N, K, H, W) with their scores."""
        return Masks(self.candidates, self.candidate_scores)

    def to_coco(self, image_id: int = 1, category_id: int = 1, first_id: int = 1) -> list[dict[str, Any]]:
        """COCO annotations (compressed RLE, area, XYWH bbox, score), one per object; a text label is kept as
        `label`, a text route's confidence as `confidence`."""
        segmentations = rle.encode(self.masks) if len(self) else []
        bboxes = rle.bbox(segmentations) if len(self) else np.zeros((0, 4))
        annotations = []
        for i, seg in enumerate(segmentations):
            ann = {"id": first_id + i, "image_id": image_id, "category_id": category_id, "segmentation": seg,
                   "area": int(self.areas[i]), "bbox": [float(v) for v in bboxes[i]], "iscrowd": 0,
                   "score": float(self.scores[i])}
            if self.labels[i] is not None:
                ann["label"] = self.labels[i]
            if self.confidence is not None:
                ann["confidence"] = float(self.confidence[i])
            annotations.append(ann)
        return annotations

    def to_supervision(self) -> Any:
        """A `supervision.Detections` (xyxy, mask, confidence, class_id, data["class_name"])."""
        try:
            import supervision as sv
        except ImportError:
            raise SamflowError("to_supervision needs the supervision package: pip install supervision") from None
        names = [label or "object" for label in self.labels]
        classes = {name: i for i, name in enumerate(dict.fromkeys(names))}
        return sv.Detections(xyxy=self.boxes.astype(np.float32), mask=self.masks, confidence=self.scores,
                             class_id=np.array([classes[name] for name in names], dtype=int),
                             data={"class_name": np.array(names)})

    def overlay(self, alpha: float = 0.5, prompts: bool = True) -> PILImage:
        """A PIL picture: the image with each object's mask tinted, and (with `prompts`) its points and boxes."""
        from PIL import Image

        from samflow.ops.draw import draw_overlay

        p = self.prompts.broadcast() if prompts else None
        return Image.fromarray(draw_overlay(self.image, self.masks[:, None], p.coords if p else None,
                                            p.labels if p else None, p.boxes if p else None, alpha=alpha))
