"""Payloads of detector pipelines: `Detections` (boxes with scores and classes) and `InstanceMasks` (masks that
keep their detection's class and confidence), with conversions to supervision's `Detections`.

Both subclass the core payloads (`Boxes`, `Masks`), so a detector's output wires into any node that takes boxes
(`sam.decoder`) and instance masks into any node that takes masks (`masks.write`, `masks.overlay`, `lift.depth`).
supervision is optional: it is imported only when a conversion is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from samflow.engine.types.base import as_array, payload_type, read_json_file
from samflow.engine.types.masks import Masks
from samflow.engine.types.prompts import Boxes
from samflow.errors import InputError


def _optional(values: Any, dtype: Any, n: int, what: str) -> np.ndarray | None:
    """`values` as a 1-D array of length n, or None."""
    if values is None:
        return None
    array = as_array(values, dtype, what).reshape(-1)
    if array.shape[0] != n:
        raise InputError(f"{what}: {array.shape[0]} values for {n} detections")
    return array


def _names(values: Sequence[str] | np.ndarray | None, n: int, what: str) -> list[str] | None:
    if values is None:
        return None
    names = [str(v) for v in values]
    if len(names) != n:
        raise InputError(f"{what}: {len(names)} names for {n} detections")
    return names


@payload_type
@dataclass(eq=False)
class Detections(Boxes):
    """Detector output, one row per object. `xyxy: float32 (N, 4)` in image pixels; `scores: float32 (N,)`
    confidences or None; `class_ids: int64 (N,)` or None; `names: list[str]` (N) class names or None."""

    scores: np.ndarray | None = None
    class_ids: np.ndarray | None = None
    names: list[str] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self)
        self.scores = _optional(self.scores, np.float32, n, "Detections.scores")
        self.class_ids = _optional(self.class_ids, np.int64, n, "Detections.class_ids")
        self.names = _names(self.names, n, "Detections.names")

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), [])

    @classmethod
    def coerce(cls, value: Any) -> Detections:
        """Accept Detections, Boxes (no scores or classes), a list of boxes, or
        `{"boxes": [...], "scores": [...], "class_ids": [...], "names": [...]}` (or a JSON file of it)."""
        if isinstance(value, Detections):
            return value
        if isinstance(value, Boxes):
            return cls(value.xyxy)
        value = read_json_file(value, "detections")
        if isinstance(value, Mapping):
            boxes = value.get("boxes", value.get("xyxy"))
            if boxes is None:
                raise InputError("a detections mapping needs 'boxes' (a list of [x0, y0, x1, y1])")
            return cls(as_array(boxes, np.float32, "boxes").reshape(-1, 4), value.get("scores"),
                       value.get("class_ids"), value.get("names"))
        return cls(as_array(value, np.float32, "boxes").reshape(-1, 4))

    def select(self, keep: np.ndarray) -> Detections:
        """The detections where `keep` (bool (N,) or indices) holds, in that order."""
        keep = np.asarray(keep)
        index = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
        return Detections(self.xyxy[index], None if self.scores is None else self.scores[index],
                          None if self.class_ids is None else self.class_ids[index],
                          None if self.names is None else [self.names[i] for i in index])

    @property
    def nbytes(self) -> int:
        extra = sum(a.nbytes for a in (self.scores, self.class_ids) if a is not None)
        return int(self.xyxy.nbytes + extra)

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "boxes": self.xyxy.tolist(),
                "scores": None if self.scores is None else self.scores.tolist(),
                "class_ids": None if self.class_ids is None else self.class_ids.tolist(), "names": self.names}

    def to_supervision(self) -> Any:
        """supervision.Detections with these boxes, confidences, class ids and `data["class_name"]`."""
        sv = _supervision()
        data = {"class_name": np.array(self.names)} if self.names is not None else {}
        return sv.Detections(xyxy=self.xyxy.astype(np.float32), confidence=self.scores,
                             class_id=None if self.class_ids is None else self.class_ids.astype(int), data=data)

    @classmethod
    def from_supervision(cls, detections: Any) -> Detections:
        names = detections.data.get("class_name") if getattr(detections, "data", None) else None
        return cls(np.asarray(detections.xyxy, np.float32), detections.confidence, detections.class_id,
                   None if names is None else list(names))


@payload_type
@dataclass(eq=False)
class InstanceMasks(Masks):
    """Masks of detected objects, one prompt set per detection. As `Masks` (`data: bool (N, K, H, W)`, `scores:
    float32 (N, K)` SAM's predicted IoU), plus the detection each set came from: `boxes: float32 (N, 4)`,
    `confidence: float32 (N,)` the detector's score, `class_ids: int64 (N,)`, `names: list[str]` (each may be
    None)."""

    boxes: np.ndarray | None = None
    confidence: np.ndarray | None = None
    class_ids: np.ndarray | None = None
    names: list[str] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self)
        if self.boxes is not None:
            self.boxes = as_array(self.boxes, np.float32, "InstanceMasks.boxes").reshape(-1, 4)
            if self.boxes.shape[0] != n:
                raise InputError(f"InstanceMasks.boxes: {self.boxes.shape[0]} boxes for {n} mask sets")
        self.confidence = _optional(self.confidence, np.float32, n, "InstanceMasks.confidence")
        self.class_ids = _optional(self.class_ids, np.int64, n, "InstanceMasks.class_ids")
        self.names = _names(self.names, n, "InstanceMasks.names")

    @classmethod
    def from_detections(cls, masks: Masks, detections: Detections) -> InstanceMasks:
        """Attach each detection to its mask set (set n is detection n)."""
        if len(masks) != len(detections):
            raise InputError(f"{len(masks)} mask sets for {len(detections)} detections")
        return cls(masks.data, masks.scores, boxes=detections.xyxy, confidence=detections.scores,
                   class_ids=detections.class_ids, names=detections.names)

    def records(self, file_name: Any = None) -> list[dict[str, Any]]:
        records = super().records(file_name)
        for record in records:
            n = record["set"]
            record["label"] = self.names[n] if self.names is not None else None
            record["class_id"] = int(self.class_ids[n]) if self.class_ids is not None else None
            record["confidence"] = float(self.confidence[n]) if self.confidence is not None else None
            record["box"] = self.boxes[n].tolist() if self.boxes is not None else None
        return records

    def to_supervision(self) -> Any:
        return to_supervision(self)


def to_supervision(masks: Masks) -> Any:
    """supervision.Detections of the best mask of each set: `mask` (N, H, W), `xyxy` the detection's box (the
    mask's bounding box for plain Masks), `confidence` the detector's score (SAM's best score for plain Masks),
    `class_id` and `data["class_name"]` when known, `data["sam_score"]` SAM's predicted IoU."""
    sv = _supervision()
    best = masks.best()
    sam_score = masks.scores.max(axis=1) if masks.scores is not None else None
    boxes = getattr(masks, "boxes", None)
    if boxes is None:
        boxes = _mask_boxes(best)
    confidence = getattr(masks, "confidence", None)
    class_ids = getattr(masks, "class_ids", None)
    names = getattr(masks, "names", None)
    data: dict[str, np.ndarray] = {}
    if names is not None:
        data["class_name"] = np.array(names)
    if sam_score is not None:
        data["sam_score"] = sam_score.astype(np.float32)
    return sv.Detections(xyxy=np.asarray(boxes, np.float32).reshape(-1, 4), mask=best,
                         confidence=confidence if confidence is not None else sam_score,
                         class_id=None if class_ids is None else class_ids.astype(int), data=data)


def _mask_boxes(masks: np.ndarray) -> np.ndarray:
    """float32 (N, 4) x0, y0, x1, y1 (exclusive ends) of each (H, W) mask; zeros for an empty mask."""
    boxes = np.zeros((masks.shape[0], 4), np.float32)
    for n, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size:
            boxes[n] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def _supervision() -> Any:
    try:
        import supervision
    except ImportError as exc:
        raise InputError("converting to supervision.Detections needs the supervision package "
                         "(pip install supervision)") from exc
    return supervision


__all__ = ["Detections", "InstanceMasks", "to_supervision"]
