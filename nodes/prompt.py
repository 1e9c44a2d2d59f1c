"""Prompt literals: `prompt.points` and `prompt.boxes`, from params or from a JSON file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from samflow.engine.context import ItemContext
from samflow.engine.node import Node, NodeParams
from samflow.engine.registry import register
from samflow.engine.types import Boxes, Points


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
        for box in self.boxes or []:
            if box[0] > box[2] or box[1] > box[3]:
                raise ValueError(f"box {list(box)} is not x0 <= x1, y0 <= y1")
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
            self._boxes = Boxes.coerce(p.boxes if p.file is None else Path(p.file))
        return {"boxes": self._boxes}
