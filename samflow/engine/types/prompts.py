"""Prompts on graph edges: points, boxes and CLIP text embeddings."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from samflow.engine.types.base import Payload, as_array, payload_type, read_json_file
from samflow.errors import InputError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


@payload_type
@dataclass(eq=False)
class Points(Payload):
    """Point prompts. `coords: float32 (N, P, 2)` x, y in image pixels; `labels: int32 (N, P)`, 1 foreground,
    0 background. A (P, 2) / (P,) pair is read as one set (N = 1)."""

    coords: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        coords = as_array(self.coords, np.float32, "Points.coords")
        labels = as_array(self.labels, np.int32, "Points.labels")
        if coords.ndim == 2:
            coords = coords[None]
        if labels.ndim == 1:
            labels = labels[None]
        if coords.ndim != 3 or coords.shape[-1] != 2 or labels.shape != coords.shape[:2]:
            raise InputError(f"Points need coords (N, P, 2) and labels (N, P); got {coords.shape} and {labels.shape}")
        self.coords, self.labels = coords, labels

    @classmethod
    def coerce(cls, value: Any) -> Points:
        """Accept Points, `[[x, y], ...]` (all foreground), `{"points": [[x, y]...], "labels": [...]}`, or a JSON
        file holding either."""
        if isinstance(value, Points):
            return value
        value = read_json_file(value, "points")
        if isinstance(value, Mapping):
            coords = value.get("points", value.get("coords"))
            if coords is None:
                raise InputError("a points mapping needs a 'points' list of [x, y]")
            labels = value.get("labels")
        else:
            coords, labels = value, None
        coords = as_array(coords, np.float32, "points")
        if labels is None:
            labels = np.ones(coords.shape[:-1], dtype=np.int32)
        return cls(coords, labels)

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.coords.nbytes + self.labels.nbytes)

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "points": self.coords.tolist(), "labels": self.labels.tolist()}


@payload_type
@dataclass(eq=False)
class Boxes(Payload):
    """Box prompts or detections. `xyxy: float32 (N, 4)` in image pixels."""

    xyxy: np.ndarray

    def __post_init__(self) -> None:
        xyxy = as_array(self.xyxy, np.float32, "Boxes.xyxy")
        if xyxy.ndim == 1:
            xyxy = xyxy[None]
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise InputError(f"Boxes need xyxy (N, 4), got {xyxy.shape}")
        self.xyxy = xyxy

    @classmethod
    def coerce(cls, value: Any) -> Boxes:
        if isinstance(value, Boxes):
            return value
        value = read_json_file(value, "boxes")
        if isinstance(value, Mapping):
            value = value.get("boxes")
        return cls(as_array(value, np.float32, "boxes"))

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.xyxy.nbytes)

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "boxes": self.xyxy.tolist()}



@payload_type
@dataclass(eq=False)
class TextEmbedding(Payload):
    """CLIP embeddings of text prompts, one prompt set per text.

    `data: float32 (N, D)` L2-normalised; `texts`: the N strings; `model_key`: fingerprint of the CLIP weights that
    made them; `model` refers to the CLIP model itself (`samflow.models.text.ClipModel`) so consumers (a prompt
    adapter, `clip.rank`) can check and reuse it; it is never serialised.
    """

    data: np.ndarray
    texts: list[str]
    model_key: str
    model: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.data = as_array(self.data, np.float32, "TextEmbedding.data")
        if self.data.ndim == 1:
            self.data = self.data[None]
        if self.data.ndim != 2 or len(self.texts) != self.data.shape[0]:
            raise InputError(f"TextEmbedding needs data (N, D) and N texts; got {self.data.shape} and "
                             f"{len(self.texts)} texts")

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "texts": list(self.texts), "dim": int(self.data.shape[1]),
                "model_key": self.model_key}
