"""Payloads of video and gaze pipelines: `Frame` (an Image with its place in a stream) and `Gaze` (the gaze
sample matched to a frame, and what became of it).

`Frame` subclasses `Image`, so a frame wires into every node that takes an image (`sam.encoder`,
`masks.overlay`) and, in addition, into nodes that need its timestamp (`gaze.points`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from samflow.engine.types.base import FilePath, Payload, payload_type
from samflow.engine.types.image import Image
from samflow.errors import InputError


@payload_type
@dataclass(eq=False)
class Frame(Image):
    """One frame of a video or of a folder of frames. As `Image` (`data: uint8 (H, W, 3)` RGB, `path`: the video or
    frame file), plus `index`: 0-based position in the stream and `time`: seconds on the stream's clock (the
    presentation time of a video frame; None when unknown)."""

    index: int = 0
    time: float | None = None

    @classmethod
    def coerce(cls, value: Any) -> Frame:
        """Accept a Frame, an Image (frame 0, no time), an image path or a uint8 (H, W, 3) array."""
        if isinstance(value, Frame):
            return value
        if isinstance(value, Image):
            return cls(value.data, path=value.path)
        if isinstance(value, (str, Path, FilePath, np.ndarray)):
            image = Image.coerce(value)
            return cls(image.data, path=image.path)
        raise InputError(f"expected a Frame, an Image, a path or a uint8 (H, W, 3) array, got {type(value).__name__}")

    def to_record(self) -> dict[str, Any]:
        return {**super().to_record(), "index": self.index, "time": self.time}


GAZE_STATUSES = ("fixation", "saccade", "missing", "off_image", "behind_camera")


@payload_type
@dataclass(eq=False)
class Gaze(Payload):
    """The gaze sample matched to one frame. `status`: 'fixation' (a usable point), 'saccade' (dropped by the
    fixation filter), 'missing' (no sample within the tolerance), 'off_image' or 'behind_camera' (projected outside
    the frame). `x, y`: pixels (None unless projected); `time`: the sample's time on the frame clock (s), or None;
    `sample`: its row in the gaze file (0-based data row), or None."""

    status: str
    x: float | None = None
    y: float | None = None
    time: float | None = None
    sample: int | None = None

    def __post_init__(self) -> None:
        if self.status not in GAZE_STATUSES:
            raise InputError(f"Gaze.status must be one of {', '.join(GAZE_STATUSES)}, got {self.status!r}")

    @property
    def usable(self) -> bool:
        return self.status == "fixation"

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "status": self.status, "x": self.x, "y": self.y, "time": self.time,
                "sample": self.sample}


__all__ = ["GAZE_STATUSES", "Frame", "Gaze"]
