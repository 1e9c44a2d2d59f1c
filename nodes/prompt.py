"""Prompt literals: `prompt.points` and `prompt.boxes`, from params or from a JSON file.

Checked when the graph is read, by what holds without the image (samflow.predict.prompts): the counts are within the
documented limits, no coordinate is negative (it lies outside any image), boxes have width and height. The rest of
the rule (points inside the image, boxes clipped to it) is `sam.decoder`'s, which knows the image. Prompts read
from a file get the same checks when the node runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from samflow.engine.context import ItemContext
from samflow.engine.node import Node, NodeParams
from samflow.engine.registry import register
from samflow.engine.types import Boxes, Points
from samflow.errors import InputError
from samflow.predict.prompts import MAX_POINTS_PER_SET, MAX_PROMPT_SETS, check_box_order, check_count


class PointsParams(NodeParams):
    points: list[tuple[float, float]] | None = Field(None, description="[[x, y], ...] in image pixels")
    labels: list[int] | None = Field(None, description="1 foreground, 0 background per point; default all 1")
    file: str | None = Field(None, description='JSON file: {"points": [[x, y]...], "labels": [...]}')
    separate: bool = Field(False, description="each point is its own prompt (N = P) instead of one set of P")

    @model_validator(mode="after")
    def _one_source(self) -> PointsParams:
        if (self.points is None) == (self.file is None):
            raise ValueError("give either 'points' or 'file'")
        if self.points is not None and not self.points:
            raise ValueError("'points' is empty")
        if self.labels is not None and self.points is not None and len(self.labels) != len(self.points):
            raise ValueError(f"{len(self.labels)} labels for {len(self.points)} points")
        if self.labels is not None and any(label not in (0, 1) for label in self.labels):
            raise ValueError("labels must be 1 (foreground) or 0 (background)")
        if self.points is not None:
            _check_points(np.asarray(self.points, dtype=np.float64)[None], self.separate)
        return self


@register("prompt.points")
class PointPrompt(Node):
    """Point prompts given in the graph (params) or read from a JSON file."""

    Params = PointsParams
    outputs = {"points": Points}

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._points: Points | None = None

    def run(self, ctx: ItemContext) -> dict[str, Points]:
        if self._points is None:  # the same for every item: build once
            p = self.params
            points = Points.coerce({"points": p.points, "labels": p.labels} if p.file is None else Path(p.file))
            if p.file is not None:
                _from_file(_check_points, p.file, points.coords, p.separate)
            if p.separate:
                points = Points(points.coords.reshape(-1, 1, 2), points.labels.reshape(-1, 1))
            self._points = points
        return {"points": self._points}


class BoxesParams(NodeParams):
    boxes: list[tuple[float, float, float, float]] | None = Field(None, description="[[x0, y0, x1, y1], ...]")
    file: str | None = Field(None, description='JSON file: {"boxes": [[x0, y0, x1, y1], ...]}')

    @model_validator(mode="after")
    def _one_source(self) -> BoxesParams:
        if (self.boxes is None) == (self.file is None):
            raise ValueError("give either 'boxes' or 'file'")
        if self.boxes is not None and not self.boxes:
            raise ValueError("'boxes' is empty")
        if self.boxes is not None:
            _check_boxes(np.asarray(self.boxes, dtype=np.float64))
        return self


@register("prompt.boxes")
class BoxPrompt(Node):
    """Box prompts (one prompt set per box) given in the graph or read from a JSON file."""

    Params = BoxesParams
    outputs = {"boxes": Boxes}

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._boxes: Boxes | None = None

    def run(self, ctx: ItemContext) -> dict[str, Boxes]:
        if self._boxes is None:
            p = self.params
            boxes = Boxes.coerce(p.boxes if p.file is None else Path(p.file))
            if p.file is not None:
                _from_file(_check_boxes, p.file, boxes.xyxy)
            self._boxes = boxes
        return {"boxes": self._boxes}


def _check_points(coords: np.ndarray, separate: bool) -> None:
    """What holds for (N, P, 2) points without the image: counts within the limits, no negative coordinate.
    InputError (a ValueError, so a params error when the graph is read)."""
    if separate:
        check_count(coords.shape[0] * coords.shape[1], MAX_PROMPT_SETS, "points (each its own prompt set)")
    else:
        check_count(coords.shape[0], MAX_PROMPT_SETS, "point sets (objects)")
        check_count(coords.shape[1], MAX_POINTS_PER_SET, "points per set")
    flat = coords.reshape(-1, 2)
    if not np.isfinite(flat).all():
        raise InputError("points contain NaN or infinite values")
    negative = np.flatnonzero((flat < 0).any(axis=1))
    if negative.size:
        x, y = flat[negative[0]]
        raise InputError(f"point {int(negative[0])} ({x:g}, {y:g}) lies outside any image: coordinates are pixels "
                         "from the top-left corner, 0 or more")


def _check_boxes(xyxy: np.ndarray) -> None:
    """What holds for (N, 4) boxes without the image: the count within the limit, a width and a height, not wholly
    at negative coordinates. InputError (a ValueError, so a params error when the graph is read)."""
    check_count(len(xyxy), MAX_PROMPT_SETS, "boxes")
    if not np.isfinite(xyxy).all():
        raise InputError("boxes contain NaN or infinite values")
    check_box_order(xyxy)
    outside = np.flatnonzero((xyxy[:, 2] <= 0) | (xyxy[:, 3] <= 0))
    if outside.size:
        box = ", ".join(f"{v:g}" for v in xyxy[outside[0]])
        raise InputError(f"box {int(outside[0])} [{box}] lies wholly outside any image (x1 and y1 must be more "
                         "than 0)")


def _from_file(check: Any, file: str, *args: Any) -> None:
    try:
        check(*args)
    except InputError as exc:
        raise InputError(f"{file}: {exc}") from None
