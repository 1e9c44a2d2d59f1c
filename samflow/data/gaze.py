"""Readers of gaze recordings: Project Aria MPS eye-gaze CSV and plain 2D gaze CSV, into one `GazeTrack`.

- Aria MPS (`general_eye_gaze.csv` / `personalized_eye_gaze.csv`): `tracking_timestamp_us` (device clock, µs),
  `yaw_rads_cpf`, `pitch_rads_cpf` (or `left_yaw_rads_cpf` + `right_yaw_rads_cpf`, averaged), optional `depth_m`;
  angles in the Central Pupil Frame. Extra columns are ignored.
- 2D gaze: `x`, `y` in pixels of the frames, and `frame` (0-based frame index) and/or a timestamp column:
  `timestamp_s` / `time_s` / `timestamp` / `time` / `t` (seconds), `timestamp_ms`, `timestamp_us`, `timestamp_ns`.

Rows may come in any order (the track is sorted by time, or by frame, with the original row kept); empty cells,
`nan` and `none` read as missing. Every error names the file, and the row and column when it is about a cell.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samflow.errors import InputError

log = logging.getLogger(__name__)

ARIA_TIME = "tracking_timestamp_us"
TIME_COLUMNS = {"timestamp_s": 1.0, "time_s": 1.0, "timestamp": 1.0, "time": 1.0, "t": 1.0,
                "timestamp_ms": 1e-3, "timestamp_us": 1e-6, "timestamp_ns": 1e-9}
FRAME_COLUMNS = ("frame", "frame_index")
MISSING = {"", "nan", "none", "null", "na"}


@dataclass
class GazeTrack:
    """A gaze recording, sorted by time (or by frame when it has no times).

    kind: 'aria' (angles) or '2d' (pixels). times: float64 (T,) seconds on the recording's clock, or None;
    frames: int64 (T,) frame indices, or None. Aria: yaw, pitch float64 (T,) radians in CPF, depth float64 (T,)
    metres (NaN when missing). 2D: xy float64 (T, 2) pixels (NaN when missing). rows: int64 (T,) the data row of
    each sample in the file (0-based, header excluded). path: the file.
    """

    kind: str
    path: Path
    rows: np.ndarray
    times: np.ndarray | None = None
    frames: np.ndarray | None = None
    yaw: np.ndarray | None = None
    pitch: np.ndarray | None = None
    depth: np.ndarray | None = None
    xy: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def read_gaze_csv(path: str | Path, kind: str = "auto") -> GazeTrack:
    """Read an Aria MPS eye-gaze CSV or a 2D gaze CSV (`kind`: 'auto', 'aria' or '2d')."""
    path = Path(path)
    header, rows = _read_rows(path)
    columns = {name.strip().lower(): i for i, name in enumerate(header)}
    if kind == "auto":
        kind = "aria" if ARIA_TIME in columns else "2d"
    if kind == "aria":
        track = _aria(path, columns, rows)
    elif kind == "2d":
        track = _gaze_2d(path, columns, rows)
    else:
        raise InputError(f"unknown gaze format {kind!r}; use 'auto', 'aria' or '2d'")
    log.debug("read %d %s gaze samples from %s", len(track), kind, path)
    return track


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise InputError(f"gaze file not found: {path}")
    try:
        with path.open(newline="") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            rows = [row for row in reader if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read gaze file {path}: {exc}") from exc
    if not header:
        raise InputError(f"gaze file {path} is empty (expected a CSV header line)")
    return header, rows


def _missing_columns(path: Path, columns: dict[str, int], wanted: list[str], what: str) -> InputError:
    found = ", ".join(columns) or "none"
    return InputError(f"gaze file {path}: missing column(s) {', '.join(wanted)} (found: {found}); {what}")


def _column(path: Path, rows: list[list[str]], columns: dict[str, int], name: str) -> np.ndarray:
    """float64 (T,) of a column; NaN for missing cells; InputError naming the row and column of a bad cell."""
    index = columns[name]
    out = np.empty(len(rows), dtype=np.float64)
    for r, row in enumerate(rows):
        text = row[index].strip() if index < len(row) else ""
        if text.lower() in MISSING:
            out[r] = math.nan
            continue
        try:
            out[r] = float(text)
        except ValueError:
            # Row r + 2: 1-based line numbers, after the header.
            raise InputError(f"gaze file {path}, line {r + 2}, column '{name}': {text!r} is not a number") from None
    return out


def _aria(path: Path, columns: dict[str, int], rows: list[list[str]]) -> GazeTrack:
    both_eyes = ["left_yaw_rads_cpf", "right_yaw_rads_cpf"]
    yaw_names = both_eyes if "yaw_rads_cpf" not in columns and all(n in columns for n in both_eyes) else \
        ["yaw_rads_cpf"]
    missing = [name for name in (ARIA_TIME, *yaw_names, "pitch_rads_cpf") if name not in columns]
    if missing:
        raise _missing_columns(path, columns, missing, "an Aria MPS eye-gaze CSV needs tracking_timestamp_us, "
                                                       "yaw_rads_cpf (or left_/right_yaw_rads_cpf), pitch_rads_cpf")
    times = _column(path, rows, columns, ARIA_TIME) * 1e-6
    yaw = np.mean([_column(path, rows, columns, name) for name in yaw_names], axis=0)
    pitch = _column(path, rows, columns, "pitch_rads_cpf")
    depth = _column(path, rows, columns, "depth_m") if "depth_m" in columns else np.full(len(rows), math.nan)
    bad = np.flatnonzero(~np.isfinite(times))
    if bad.size:
        raise InputError(f"gaze file {path}, line {bad[0] + 2}: missing {ARIA_TIME}")
    order = np.argsort(times, kind="stable")
    return GazeTrack("aria", path, order.astype(np.int64), times=times[order], yaw=yaw[order], pitch=pitch[order],
                     depth=depth[order])


def _gaze_2d(path: Path, columns: dict[str, int], rows: list[list[str]]) -> GazeTrack:
    time_name = next((name for name in TIME_COLUMNS if name in columns), None)
    frame_name = next((name for name in FRAME_COLUMNS if name in columns), None)
    missing = [name for name in ("x", "y") if name not in columns]
    if time_name is None and frame_name is None:
        missing.insert(0, "frame or timestamp_s")
    if missing:
        raise _missing_columns(path, columns, missing, "a 2D gaze CSV needs 'frame' (0-based frame index) or a "
                                                       "timestamp column (timestamp_s, timestamp_ms, ...) and "
                                                       "'x', 'y' in pixels")
    xy = np.stack([_column(path, rows, columns, "x"), _column(path, rows, columns, "y")], axis=1)
    times = frames = None
    if time_name is not None:
        times = _column(path, rows, columns, time_name) * TIME_COLUMNS[time_name]
        bad = np.flatnonzero(~np.isfinite(times))
        if bad.size:
            raise InputError(f"gaze file {path}, line {bad[0] + 2}: missing {time_name}")
    if frame_name is not None:
        raw = _column(path, rows, columns, frame_name)
        bad = np.flatnonzero(~np.isfinite(raw) | (raw < 0) | (raw != np.round(raw)))
        if bad.size:
            raise InputError(f"gaze file {path}, line {bad[0] + 2}: '{frame_name}' must be a frame index >= 0")
        frames = raw.astype(np.int64)
    order = np.argsort(times if times is not None else frames, kind="stable")
    return GazeTrack("2d", path, order.astype(np.int64), times=None if times is None else times[order],
                     frames=None if frames is None else frames[order], xy=xy[order])


__all__ = ["GazeTrack", "read_gaze_csv"]
