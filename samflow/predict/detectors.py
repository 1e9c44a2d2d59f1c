"""Detectors written in Python, registered by name so a graph's `detect.callable` node can run them.

    from samflow.predict.detectors import register_detector

    @register_detector("red_things")
    def red_things(rgb):            # uint8 (H, W, 3) -> boxes, or a mapping, or Detections
        return {"boxes": [[10, 20, 60, 80]], "scores": [0.9], "names": ["red thing"]}

A function may return `samflow.engine.types.detect.Detections`, `Boxes`, an (N, 4) array of xyxy boxes, a mapping with
`boxes` (or `xyxy`) and optional `scores`, `class_ids` (or `labels`), `names`, a tuple (boxes, scores[, class_ids]),
or a supervision `Detections`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from samflow.engine.types import Boxes
from samflow.engine.types.detect import Detections
from samflow.errors import InputError

DetectorFunction = Callable[[np.ndarray], Any]
F = TypeVar("F", bound=DetectorFunction)

_DETECTORS: dict[str, DetectorFunction] = {}


def register_detector(name: str, function: DetectorFunction | None = None) -> Any:
    """Register `function` under `name` (or use as a decorator: `@register_detector("name")`)."""
    if not name or not isinstance(name, str):
        raise InputError(f"a detector name must be a non-empty string, got {name!r}")

    def decorate(fn: F) -> F:
        if not callable(fn):
            raise InputError(f"detector {name!r} must be callable, got {type(fn).__name__}")
        _DETECTORS[name] = fn
        return fn

    return decorate(function) if function is not None else decorate


def unregister_detector(name: str) -> None:
    _DETECTORS.pop(name, None)


def get_detector(name: str) -> DetectorFunction:
    try:
        return _DETECTORS[name]
    except KeyError:
        known = ", ".join(sorted(_DETECTORS)) or "none registered"
        raise InputError(f"no detector registered as {name!r} (known: {known}); register it in Python with "
                         "samflow.predict.detectors.register_detector before running the graph") from None


def as_detections(result: Any, where: str = "detector") -> Detections:
    """Normalise what a detector function returned into Detections."""
    if isinstance(result, Detections):
        return result
    if isinstance(result, Boxes):
        return Detections(result.xyxy)
    if hasattr(result, "xyxy") and hasattr(result, "confidence"):  # supervision.Detections, duck-typed
        return Detections.from_supervision(result)
    try:
        if isinstance(result, Mapping):
            boxes = result.get("boxes", result.get("xyxy"))
            if boxes is None:
                raise InputError("the mapping has no 'boxes'")
            class_ids = result.get("class_ids", result.get("labels"))
            return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), result.get("scores"), class_ids,
                              result.get("names"))
        if isinstance(result, tuple):
            boxes, *rest = result
            return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), *rest[:2])
        return Detections(np.asarray(result, np.float32).reshape(-1, 4))
    except (InputError, TypeError, ValueError) as exc:
        raise InputError(f"{where} returned {type(result).__name__} that is not detections: {exc}") from exc
