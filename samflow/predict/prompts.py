"""Prompts as application code and HTTP clients give them, checked and brought to one batched layout.

`Prompts.build(points=..., point_labels=..., boxes=..., text=..., mask_input=...)` accepts the loose forms people
write (`[[x, y]]`, a single box `[x0, y0, x1, y1]`, a string) and returns N prompt sets, one per object:
- points (P, 2) are one object clicked P times; (N, P, 2) are N objects;
- boxes (4,) is one object, (N, 4) N objects; text "a mug" one object, a list of N strings N objects;
- a part given once (N = 1) is shared by every object, as SamPredictor broadcasts it.
Every mistake is an InputError that says what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from samflow.engine.types import Boxes, MaskLogits, Points
from samflow.errors import InputError
from samflow.ops.arrays import finite_array


@dataclass(frozen=True, eq=False)
class Prompts:
    """N prompt sets. coords float64 (N, P, 2) x, y in image pixels with labels int32 (N, P) (1 foreground, 0
    background); boxes float64 (N, 4) XYXY; texts: N strings; mask_input float32 (N, 1, 4h, 4w) low-res logits.
    Any part may be None; at least one of points, boxes and texts is given."""

    coords: np.ndarray | None = None
    labels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    texts: list[str] | None = None
    mask_input: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of prompt sets (objects)."""
        return max(_sizes(self), default=1)

    @property
    def single_click(self) -> bool:
        """One point per set and nothing else: the ambiguous case SAM answers best with three masks."""
        return (self.coords is not None and self.coords.shape[1] == 1 and self.boxes is None
                and self.texts is None and self.mask_input is None)

    def broadcast(self) -> Prompts:
        """The same prompts with every part repeated to N sets."""
        n = self.n

        def rep(a: np.ndarray | None) -> np.ndarray | None:
            return a if a is None or a.shape[0] == n else np.repeat(a, n, axis=0)

        texts = self.texts if self.texts is None or len(self.texts) == n else self.texts * n
        return Prompts(rep(self.coords), rep(self.labels), rep(self.boxes), texts, rep(self.mask_input))

    def labels_per_set(self) -> list[str | None]:
        """The text of each set, or None for sets without one."""
        n = self.n
        if self.texts is None:
            return [None] * n
        return list(self.texts) if len(self.texts) == n else self.texts * n

    @classmethod
    def build(cls, points: Any = None, point_labels: Any = None, boxes: Any = None, text: str | Sequence[str] |
              None = None, mask_input: Any = None) -> Prompts:
        coords, labels = _points(points, point_labels)
        prompts = cls(coords, labels, _boxes(boxes), _texts(text), _mask_input(mask_input))
        if prompts.coords is None and prompts.boxes is None and prompts.texts is None:
            raise InputError("give at least one prompt: points (with point_labels), boxes or text")
        sizes = _sizes(prompts)
        if len(sizes - {1}) > 1:
            raise InputError(f"prompt sets disagree in number: points {_n(coords)}, boxes {_n(prompts.boxes)}, "
                             f"texts {len(prompts.texts) if prompts.texts else None}, mask_input "
                             f"{_n(prompts.mask_input)} (give each for N objects, or once for all)")
        return prompts


def _n(a: np.ndarray | None) -> int | None:
    return None if a is None else int(a.shape[0])


def _sizes(p: Prompts) -> set[int]:
    sizes = {int(a.shape[0]) for a in (p.coords, p.boxes, p.mask_input) if a is not None}
    if p.texts is not None:
        sizes.add(len(p.texts))
    return sizes


def _points(points: Any, labels: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    if isinstance(points, Points):
        if labels is not None:
            raise InputError("point_labels are part of a Points payload; do not give them twice")
        points, labels = points.coords, points.labels
    if points is None or (np.size(points) == 0 and np.size(labels if labels is not None else []) == 0):
        if labels is not None and np.size(labels):
            raise InputError("point_labels given without points")
        return None, None
    coords = finite_array(points, "points")
    if coords.ndim not in (2, 3) or coords.shape[-1] != 2 or coords.shape[-2] == 0:
        raise InputError(f"points must be [[x, y], ...] (P, 2) or (N, P, 2); got shape {coords.shape}")
    if coords.ndim == 2:
        coords = coords[None]
    if labels is None:
        lab = np.ones(coords.shape[:2], dtype=np.int32)
    else:
        lab = finite_array(labels, "point_labels")
        if lab.ndim == 1 and coords.shape[0] == 1:
            lab = lab[None]
        if lab.shape != coords.shape[:2]:
            raise InputError(f"point_labels must have one label per point: shape {coords.shape[:2]}, got {lab.shape}")
        bad = sorted(set(np.unique(lab).tolist()) - {0.0, 1.0, -1.0})
        if bad:
            raise InputError(f"point_labels must be 1 (foreground) or 0 (background); got {bad}")
        lab = lab.astype(np.int32)
    return coords, lab


def _boxes(boxes: Any) -> np.ndarray | None:
    if isinstance(boxes, Boxes):
        boxes = boxes.xyxy
    if boxes is None or np.size(boxes) == 0:
        return None
    b = finite_array(boxes, "boxes")
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4:
        raise InputError(f"boxes must be [x0, y0, x1, y1] (4,) or (N, 4); got shape {np.shape(boxes)}")
    bad = np.nonzero((b[:, 0] > b[:, 2]) | (b[:, 1] > b[:, 3]))[0]
    if bad.size:
        raise InputError(f"box {int(bad[0])} is {b[bad[0]].tolist()}: expected x0 <= x1 and y0 <= y1 (XYXY)")
    return b


def _texts(text: str | Sequence[str] | None) -> list[str] | None:
    if text is None:
        return None
    texts = [text] if isinstance(text, str) else list(text)
    if not texts:
        return None
    for t in texts:
        if not isinstance(t, str):
            raise InputError(f"text prompts must be strings, got {type(t).__name__}")
        if not t.strip():
            raise InputError("a text prompt is empty")
    return [t.strip() for t in texts]


def _mask_input(mask_input: Any) -> np.ndarray | None:
    if mask_input is None:
        return None
    best = getattr(mask_input, "best_logits", None)  # a Segmentation from an earlier call
    if callable(best):
        mask_input = best()
    elif isinstance(mask_input, MaskLogits):
        mask_input = mask_input.best()
    m = finite_array(mask_input, "mask_input").astype(np.float32)
    if m.ndim == 3:
        m = m[None]
    if m.ndim != 4 or m.shape[1] != 1:
        raise InputError(f"mask_input must be low-res logits (1, h, w) or (N, 1, h, w); got shape {m.shape}")
    return m
