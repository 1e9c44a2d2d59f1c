"""Decoder answers on graph edges: scores, low-resolution logits, masks at image size."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from samflow.engine.types.base import Payload, as_array, payload_type
from samflow.errors import InputError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


@payload_type
@dataclass(eq=False)
class Scores(Payload):
    """Predicted quality per mask. `values: float32 (N, K)`."""

    values: np.ndarray

    def __post_init__(self) -> None:
        self.values = as_array(self.values, np.float32, "Scores.values")

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "scores": self.values.tolist()}


@payload_type
@dataclass(eq=False)
class MaskLogits(Payload):
    """Low-resolution mask logits (SAM's 256 x 256), fit to feed a decoder's `masks` input.

    `data: float32 (N, K, h, w)`; `scores: float32 (N, K)` or None. With K > 1, a consumer takes the best-scoring.
    """

    data: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.data = as_array(self.data, np.float32, "MaskLogits.data")
        if self.data.ndim != 4:
            raise InputError(f"MaskLogits.data must be (N, K, h, w), got {self.data.shape}")

    def best(self) -> np.ndarray:
        """(N, 1, h, w): the best-scoring logits of each set (the first when there are no scores)."""
        if self.data.shape[1] == 1 or self.scores is None:
            return self.data[:, :1]
        index = np.argmax(self.scores, axis=1)
        return self.data[np.arange(self.data.shape[0]), index][:, None]

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "shape": list(self.data.shape)}

    def save(self, directory: Path, name: str) -> list[Path]:
        path = directory / f"{name}.npy"
        np.save(path, self.data)
        return [path]


@payload_type
@dataclass(eq=False)
class Masks(Payload):
    """Binary masks. `data: bool (N, K, H, W)` at the image's resolution; `scores: float32 (N, K)` or None."""

    data: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.ndim == 3:
            data = data[:, None]
        if data.ndim != 4:
            raise InputError(f"Masks.data must be (N, K, H, W), got {data.shape}")
        self.data = data.astype(bool, copy=False)
        if self.scores is not None:
            self.scores = as_array(self.scores, np.float32, "Masks.scores").reshape(data.shape[:2])

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def best(self) -> np.ndarray:
        """bool (N, H, W): the best-scoring mask of each set (the first when there are no scores)."""
        if self.data.shape[1] == 1 or self.scores is None:
            return self.data[:, 0]
        index = np.argmax(self.scores, axis=1)
        return self.data[np.arange(self.data.shape[0]), index]

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + (self.scores.nbytes if self.scores is not None else 0))

    def records(self, file_name: Callable[[int, int], str] | None = None) -> list[dict[str, Any]]:
        """One JSON-able record per mask: set index, mask index, score, area and bounding box."""
        out = []
        for n in range(self.data.shape[0]):
            for k in range(self.data.shape[1]):
                mask = self.data[n, k]
                ys, xs = np.nonzero(mask)
                bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if xs.size else None
                record: dict[str, Any] = {"set": n, "index": k, "area": int(xs.size), "bbox_xyxy": bbox,
                                          "score": float(self.scores[n, k]) if self.scores is not None else None}
                if file_name is not None:
                    record["file"] = file_name(n, k)
                out.append(record)
        return out

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "shape": list(self.data.shape), "masks": self.records()}

    def save(self, directory: Path, name: str) -> list[Path]:
        """A PNG per mask (`NAME_n_k.png`, 0/255) and `NAME.json` with one record per mask."""
        from PIL import Image as PILImage

        def file_name(n: int, k: int) -> str:
            return f"{name}_{n}_{k}.png"

        written = []
        for n in range(self.data.shape[0]):
            for k in range(self.data.shape[1]):
                path = directory / file_name(n, k)
                PILImage.fromarray(self.data[n, k].astype(np.uint8) * 255).save(path)
                written.append(path)
        record_path = directory / f"{name}.json"
        record_path.write_text(json.dumps(self.records(file_name), indent=2))
        return [*written, record_path]
