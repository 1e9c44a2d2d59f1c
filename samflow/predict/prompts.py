"""Prompts as application code and HTTP clients give them, checked and brought to one batched layout.

`Prompts.build(points=..., point_labels=..., boxes=..., text=..., mask_input=...)` accepts the loose forms people
write (`[[x, y]]`, a single box `[x0, y0, x1, y1]`, a string) and returns N prompt sets, one per object:
- points (P, 2) are one object clicked P times; (N, P, 2) are N objects;
- boxes (4,) is one object, (N, 4) N objects; text "a mug" one object, a list of N strings N objects;
- a part given once (N = 1) is shared by every object, as SamPredictor broadcasts it.
Every mistake is an InputError that says what was expected.

The one rule for prompts against an image (`fit_to_image`, applied by `samflow.segment`, the Segmenter, SamPredictor
`predict` / `predict_torch`, the graph's `sam.decoder` and so `samflow run` / `samflow video`):
- points must lie in the image, boundary included: 0 <= x <= W and 0 <= y <= H (padding points, label -1, are
  ignored by SAM and not checked);
- boxes are XYXY with x0 < x1 and y0 < y1 (a zero-width or zero-height box is refused); a box that overlaps the
  image is clipped to it, one that lies wholly outside it (no area inside) is refused.

Counts that come from outside are bounded (documented limits, InputError past them): `MAX_PROMPT_SETS` objects per
call (points, boxes, texts, mask inputs), `MAX_POINTS_PER_SET` clicks per object, `MAX_TEXT_CHARS` characters per
text prompt; the automatic generator's grid is bounded by `check_auto_grid` (`MAX_POINTS_PER_SIDE`,
`MAX_CROP_LAYERS`, `MAX_AUTO_PROMPTS`). SamPredictor, the official drop-in API for code, has no count limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from samflow.engine.types import Boxes, MaskLogits, Points
from samflow.errors import InputError
from samflow.ops.arrays import finite_array

MAX_PROMPT_SETS = 1024  # objects (prompt sets) per call: boxes, point sets, texts, mask inputs
MAX_POINTS_PER_SET = 256  # clicks on one object
MAX_TEXT_CHARS = 1000  # characters of one text prompt (CLIP reads 77 tokens of it)
MAX_POINTS_PER_SIDE = 256  # the automatic generator's grid: points_per_side
MAX_CROP_LAYERS = 4  # ... crop_n_layers (4**k crops in layer k)
MAX_AUTO_PROMPTS = 65_536  # ... grid prompts over every crop of every layer (256 x 256 without crops)


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

    def fit(self, size: tuple[int, int]) -> Prompts:
        """These prompts on an image of `size` (H, W) by the one rule (`fit_to_image`): points checked, boxes
        clipped; InputError for a point outside the image or a box wholly outside it."""
        coords, boxes = fit_to_image(self.coords, self.boxes, size, labels=self.labels)
        return self if boxes is self.boxes else replace(self, coords=coords, boxes=boxes)

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
    coords = None if points is None else finite_array(points, "points")
    lab = None if labels is None else finite_array(labels, "point_labels")
    if coords is None or (coords.size == 0 and (lab is None or lab.size == 0)):
        if lab is not None and lab.size:
            raise InputError("point_labels given without points")
        return None, None
    if coords.ndim not in (2, 3) or coords.shape[-1] != 2 or coords.shape[-2] == 0:
        raise InputError(f"points must be [[x, y], ...] (P, 2) or (N, P, 2); got shape {coords.shape}")
    if coords.ndim == 2:
        coords = coords[None]
    check_count(coords.shape[0], MAX_PROMPT_SETS, "point sets (objects)")
    check_count(coords.shape[1], MAX_POINTS_PER_SET, "points per set")
    if lab is None:
        lab = np.ones(coords.shape[:2], dtype=np.int32)
    else:
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
    if boxes is None:
        return None
    b = finite_array(boxes, "boxes")
    if b.size == 0:
        return None
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4:
        raise InputError(f"boxes must be [x0, y0, x1, y1] (4,) or (N, 4); got shape {np.shape(boxes)}")
    check_count(b.shape[0], MAX_PROMPT_SETS, "boxes")
    check_box_order(b)
    return b


def _texts(text: str | Sequence[str] | None) -> list[str] | None:
    if text is None:
        return None
    if not isinstance(text, (str, list, tuple)):
        raise InputError(f"text must be a string or a list of strings, got {type(text).__name__}")
    texts = [text] if isinstance(text, str) else list(text)
    if not texts:
        return None
    check_count(len(texts), MAX_PROMPT_SETS, "text prompts")
    for t in texts:
        if not isinstance(t, str):
            raise InputError(f"text prompts must be strings, got {type(t).__name__}")
        check_text(t)
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
    check_count(m.shape[0], MAX_PROMPT_SETS, "mask inputs")
    return m


# ------------------------------------------------------------------------------------------- the rule and the limits


def fit_to_image(coords: Any, boxes: Any, size: tuple[int, int], labels: Any = None, frame: str = "image"
                 ) -> tuple[Any, Any]:
    """The one rule for prompts on an image of `size` (H, W), in that image's pixels: `(coords, boxes)` with
    `coords` unchanged and `boxes` clipped to the image.

    coords (..., 2) x, y must lie in [0, W] x [0, H] (boundary included; points whose label is -1, padding, are
    not checked); boxes (..., 4) XYXY need x0 < x1 and y0 < y1 and some area inside the image. Else InputError
    naming the point (or the box's index) and the image size; `frame` names what the size is of ("image", or
    predict_torch's resized input frame). None passes through.
    """
    h, w = int(size[0]), int(size[1])
    if coords is not None:
        c = np.asarray(coords)
        if c.ndim == 0 or c.shape[-1] != 2:
            raise InputError(f"points must be (..., 2) x, y pairs; got shape {c.shape}")
        points = c.reshape(-1, 2).astype(np.float64, copy=False)
        if not np.isfinite(points).all():
            raise InputError("points contain NaN or infinite values")
        outside = (points[:, 0] < 0) | (points[:, 0] > w) | (points[:, 1] < 0) | (points[:, 1] > h)
        if labels is not None and np.size(labels) == len(outside):
            outside &= np.asarray(labels).reshape(-1) != -1
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            x, y = points[i]
            where = ""
            if points.shape[0] > 1:
                per_set = c.shape[-2] if c.ndim >= 2 else 1
                where = f" (prompt set {i // per_set}, point {i % per_set})" if c.ndim == 3 else f" (point {i})"
            raise InputError(f"point ({x:g}, {y:g}){where} lies outside the {w}x{h} {frame}: points must lie in "
                             f"[0, {w}] x [0, {h}]")
    if boxes is not None:
        b = np.asarray(boxes, dtype=np.float64)
        if b.ndim == 0 or b.shape[-1] != 4:
            raise InputError(f"boxes must be (..., 4) x0, y0, x1, y1; got shape {b.shape}")
        flat = b.reshape(-1, 4)
        if not np.isfinite(flat).all():
            raise InputError("boxes contain NaN or infinite values")
        check_box_order(flat)
        outside = (flat[:, 0] >= w) | (flat[:, 2] <= 0) | (flat[:, 1] >= h) | (flat[:, 3] <= 0)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise InputError(f"box {i} {_box_text(flat[i])} lies wholly outside the {w}x{h} {frame}: a box needs "
                             f"some area inside [0, {w}] x [0, {h}] (boxes that overlap it are clipped to it)")
        clipped = flat.copy()
        clipped[:, 0::2] = clipped[:, 0::2].clip(0, w)
        clipped[:, 1::2] = clipped[:, 1::2].clip(0, h)
        boxes = clipped.reshape(b.shape)
    return coords, boxes


def check_box_order(boxes: np.ndarray) -> None:
    """InputError for the first (N, 4) XYXY box with zero or negative width or height (x0 >= x1 or y0 >= y1)."""
    bad = np.flatnonzero((boxes[:, 0] >= boxes[:, 2]) | (boxes[:, 1] >= boxes[:, 3]))
    if bad.size:
        i = int(bad[0])
        x0, y0, x1, y1 = boxes[i]
        what = "width" if x0 >= x1 else "height"
        size = (x1 - x0) if x0 >= x1 else (y1 - y0)
        raise InputError(f"box {i} {_box_text(boxes[i])} has {'zero' if size == 0 else 'negative'} {what}: "
                         "expected x0 < x1 and y0 < y1 (XYXY, in pixels)")


def check_count(count: int, limit: int, what: str) -> None:
    """InputError when `count` things are more than `limit` (the documented limit of this module)."""
    if count > limit:
        raise InputError(f"{count} {what}: at most {limit} are accepted in one call (split them over several)")


def check_text(text: str) -> None:
    """InputError for an empty text prompt or one longer than MAX_TEXT_CHARS."""
    if not text.strip():
        raise InputError("a text prompt is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"a text prompt of {len(text)} characters: at most {MAX_TEXT_CHARS} are accepted "
                         f"({text[:40]!r}...)")


def auto_grid_prompts(points_per_side: int, crop_n_layers: int, downscale: int = 1) -> int:
    """Grid prompts of the automatic mask generator over every crop of every layer (4**k crops in layer k)."""
    return sum(4**k * (points_per_side // downscale**k) ** 2 for k in range(crop_n_layers + 1))


def check_auto_grid(points_per_side: int | None, crop_n_layers: int, downscale: int = 1) -> None:
    """InputError when the automatic generator's grid is over MAX_POINTS_PER_SIDE, MAX_CROP_LAYERS or
    MAX_AUTO_PROMPTS (points_per_side None: explicit grids, only the layers are checked)."""
    if crop_n_layers > MAX_CROP_LAYERS:
        raise InputError(f"crop_n_layers {crop_n_layers}: at most {MAX_CROP_LAYERS} (4**k crops in layer k)")
    if points_per_side is None:
        return
    if points_per_side > MAX_POINTS_PER_SIDE:
        raise InputError(f"points_per_side {points_per_side}: at most {MAX_POINTS_PER_SIDE}")
    prompts = auto_grid_prompts(points_per_side, crop_n_layers, max(1, downscale))
    if prompts > MAX_AUTO_PROMPTS:
        raise InputError(f"points_per_side {points_per_side} with crop_n_layers {crop_n_layers} (downscale "
                         f"{downscale}) makes {prompts} grid prompts over all crops: at most {MAX_AUTO_PROMPTS}")


def _box_text(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in box) + "]"
