"""Frame sources and a video writer.

- `VideoFrames`: a video file decoded frame by frame with PyAV (never the whole video in memory); each frame
  carries its index and presentation time in seconds.
- `FolderFrames`: a folder of image files in natural order (`f2.png` before `f10.png`); times from an fps or a
  timestamps CSV.
- `VideoWriter`: encodes RGB frames one by one (H.264 when available, else MPEG-4).

PyAV (`pip install av`) is imported only when a video is read or written.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from samflow.data.gaze import TIME_COLUMNS
from samflow.engine.types.video import Frame
from samflow.errors import InputError
from samflow.ops.image import IMAGE_SUFFIXES

log = logging.getLogger(__name__)



def _av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise InputError("reading and writing videos needs PyAV (pip install av)") from exc
    return av


class VideoFrames:
    """Frames of a video file, decoded one at a time. `start`, `step` and `max_frames` select frames by index
    (indices count every decoded frame, so they are stable whatever is selected)."""

    def __init__(self, path: str | Path, start: int = 0, step: int = 1, max_frames: int | None = None) -> None:
        if start < 0 or step < 1 or (max_frames is not None and max_frames < 0):
            raise InputError(f"bad frame selection: start={start} (>= 0), step={step} (>= 1), "
                             f"max_frames={max_frames} (>= 0)")
        self.path = Path(path)
        self.start, self.step, self.max_frames = start, step, max_frames
        self.fps, self.frame_count, self.size = self._probe()

    def _probe(self) -> tuple[float | None, int | None, tuple[int, int]]:
        """Open the file once to fail early (missing, not a video, no video stream) and read its rate and size."""
        av = _av()
        if not self.path.is_file():
            raise InputError(f"video file not found: {self.path}")
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise InputError(f"cannot decode video {self.path}: the file has no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                count = stream.frames or None
                size = (int(stream.height or 0), int(stream.width or 0))
        except av.error.FFmpegError as exc:
            raise InputError(f"cannot decode video {self.path}: {_reason(exc)}") from exc
        if size[0] <= 0 or size[1] <= 0:
            raise InputError(f"cannot decode video {self.path}: its video stream has no frame size")
        return (float(rate) if rate else None), count, size

    def __iter__(self) -> Iterator[Frame]:
        av = _av()
        yielded = 0
        index = -1
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"  # frame-threaded decoding; frames still come out in order
                for index, decoded in enumerate(container.decode(stream)):
                    if self.max_frames is not None and yielded >= self.max_frames:
                        return
                    if index < self.start or (index - self.start) % self.step:
                        continue
                    time = decoded.time if decoded.time is not None else (index / self.fps if self.fps else None)
                    yield Frame(decoded.to_ndarray(format="rgb24"), path=self.path, index=index,
                                time=None if time is None else float(time))
                    yielded += 1
        except av.error.FFmpegError as exc:
            where = f"after frame {index}" if index >= 0 else "at its first frame"
            raise InputError(f"cannot decode video {self.path} {where}: {_reason(exc)}") from exc
        if index < 0:
            raise InputError(f"cannot decode video {self.path}: no frame could be decoded")


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '")[0] if text else type(exc).__name__


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class FolderFrames:
    """Frames from a folder of images, in natural name order. Times come from `timestamps` (a CSV with a time
    column such as `timestamp_s` or `timestamp_ns`, and optionally `file` naming each frame), else from `fps`,
    else they are None."""

    def __init__(self, path: str | Path, fps: float | None = None, timestamps: str | Path | None = None,
                 start: int = 0, step: int = 1, max_frames: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise InputError(f"frame folder not found: {self.path}")
        if fps is not None and not fps > 0:
            raise InputError(f"fps must be > 0, got {fps}")
        files = sorted((p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                        and not p.name.startswith(".")), key=_natural_key)
        if not files:
            raise InputError(f"frame folder {self.path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.files = files
        self.fps = fps
        self.frame_count = len(files)
        self.times = _read_timestamps(Path(timestamps), files) if timestamps is not None else None
        self.start, self.step, self.max_frames = start, step, max_frames
        first = Frame.load(files[0])
        self.size = first.size

    def __iter__(self) -> Iterator[Frame]:
        chosen = range(self.start, len(self.files), self.step)
        if self.max_frames is not None:
            chosen = chosen[: self.max_frames]
        for index in chosen:
            frame = Frame.load(self.files[index])
            frame.index = index
            if self.times is not None:
                frame.time = float(self.times[index])
            elif self.fps:
                frame.time = index / self.fps
            yield frame


def _read_timestamps(path: Path, files: list[Path]) -> np.ndarray:
    """Seconds per frame file from a CSV: a `file` column matched by name, or rows in frame order."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read timestamps file {path}: {exc}") from exc
    columns = {name.strip().lower(): name for name in (rows[0].keys() if rows else [])}
    time_name = next((name for name in TIME_COLUMNS if name in columns), None)
    if time_name is None:
        raise InputError(f"timestamps file {path}: no time column (one of {', '.join(TIME_COLUMNS)}); found "
                         f"{', '.join(columns) or 'none'}")
    scale = TIME_COLUMNS[time_name]
    try:
        values = [float(row[columns[time_name]]) * scale for row in rows]
    except (TypeError, ValueError) as exc:
        raise InputError(f"timestamps file {path}: a {time_name} value is not a number ({exc})") from exc
    if "file" in columns:
        by_name = {Path(row[columns["file"]]).name: value for row, value in zip(rows, values)}
        missing = [f.name for f in files if f.name not in by_name]
        if missing:
            raise InputError(f"timestamps file {path} has no time for {len(missing)} frame(s), e.g. {missing[0]}")
        return np.array([by_name[f.name] for f in files])
    if len(values) != len(files):
        raise InputError(f"timestamps file {path} has {len(values)} rows for {len(files)} frames")
    return np.array(values)


def open_frames(path: str | Path, fps: float | None = None, timestamps: str | Path | None = None,
                start: int = 0, step: int = 1, max_frames: int | None = None) -> VideoFrames | FolderFrames:
    """A video file or a folder of frames. `fps` and `timestamps` apply to folders (a video has its own times)."""
    path = Path(path)
    if path.is_dir():
        return FolderFrames(path, fps, timestamps, start, step, max_frames)
    if timestamps is not None:
        raise InputError("timestamps apply to a folder of frames; a video file carries its own")
    return VideoFrames(path, start, step, max_frames)


class VideoWriter:
    """Encode RGB frames to a video file one at a time; the size is fixed by the first frame (odd sizes are padded
    by a pixel, as 4:2:0 video needs even ones)."""

    def __init__(self, path: str | Path, fps: float = 30.0, codecs: tuple[str, ...] = ("libx264", "mpeg4")) -> None:
        self.path = Path(path)
        self.fps = fps
        self.codecs = codecs
        self.frames = 0
        self._container: Any = None
        self._stream: Any = None

    def _open(self, height: int, width: int) -> None:
        av = _av()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        container = av.open(str(self.path), mode="w")
        rate = Fraction(self.fps).limit_denominator(1001)
        for codec in self.codecs:
            try:
                stream = container.add_stream(codec, rate=rate)
                break
            except (av.error.FFmpegError, ValueError, KeyError) as exc:  # codec not built into this FFmpeg
                log.debug("video codec %s unavailable: %s", codec, exc)
        else:
            container.close()
            raise InputError(f"cannot write video {self.path}: none of the codecs {', '.join(self.codecs)} is "
                             "available in this PyAV build")
        stream.width, stream.height, stream.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
        self._container, self._stream = container, stream

    def write(self, rgb: np.ndarray) -> None:
        av = _av()
        if self._container is None:
            self._open(rgb.shape[0], rgb.shape[1])
        height, width = self._stream.height, self._stream.width
        if rgb.shape[:2] != (height, width):
            padded = np.zeros((height, width, 3), np.uint8)
            h, w = min(rgb.shape[0], height), min(rgb.shape[1], width)
            padded[:h, :w] = rgb[:h, :w]
            rgb = padded
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():  # flush the encoder's delayed frames
            self._container.mux(packet)
        self._container.close()
        self._container = self._stream = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["FolderFrames", "VideoFrames", "VideoWriter", "open_frames"]
