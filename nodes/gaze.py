"""Gaze as prompts: `gaze.points` (a gaze recording -> one point per frame, or none) and `gaze.simulated` (points
drawn from ground-truth masks, for the single-point evaluation).

`gaze.points` reads the recording once (Aria MPS eye gaze or 2D gaze CSV, see samflow.data.gaze), filters it for
fixations once (I-VT or I-DT, samflow.ops.fixations), then per frame takes the nearest sample within a tolerance
and projects it to a pixel. A frame whose sample is missing, in a saccade, off the image or behind the camera gets
no point (Points with N = 0), so it prompts nothing; the `gaze` output says which case it was.
"""

from __future__ import annotations

import math
import threading
import zlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from samflow.data.gaze import GazeTrack, read_gaze_csv
from samflow.engine.context import ItemContext
from samflow.engine.node import Input, Node, NodeParams
from samflow.engine.registry import register
from samflow.engine.types import Masks, Points
from samflow.engine.types.geometry import Intrinsics
from samflow.engine.types.video import Frame, Gaze
from samflow.errors import InputError
from samflow.ops import fixations
from samflow.ops.distance import farthest_point
from samflow.ops.gaze_projection import (
    as_transform,
    cpf_points,
    pixel_angles,
    project_pinhole,
    transform_points,
)
from samflow.ops.timealign import NearestSample

DEFAULT_VELOCITY_DEG_S = 30.0  # the common I-VT threshold for angular gaze (Tobii's default)
DEFAULT_DISPERSION_DEG = 1.0
DEFAULT_IDT_WINDOW_S = 0.1


class GazeParams(NodeParams):
    file: str = Field(description="gaze CSV: Aria MPS eye gaze, or 2D gaze (frame or timestamp, x, y in pixels)")
    format: Literal["auto", "aria", "2d"] = Field("auto", description="auto: Aria when tracking_timestamp_us is a "
                                                                      "column, else 2D")
    match: Literal["auto", "time", "frame"] = Field("auto", description="align by timestamp or by frame index; "
                                                                        "auto: frame when the CSV has a frame column")
    tolerance_s: float = Field(0.05, ge=0, description="largest time between a frame and its gaze sample")
    tolerance_frames: int = Field(0, ge=0, description="largest frame-index difference (match: frame)")
    time_offset_s: float | Literal["first"] = Field(
        0.0, description="added to gaze times to put them on the frame clock; 'first': the first sample is t = 0")
    fps: float = Field(30.0, gt=0, description="clock of frame-indexed gaze without times (for velocities)")
    intrinsics: dict[str, Any] | str | None = Field(
        None, description="pinhole camera {fx, fy, cx, cy[, width, height]} or a JSON file; needed for Aria gaze "
                          "(or wire the intrinsics input)")
    T_camera_cpf: list[list[float]] | None = Field(
        None, description="4x4 (or 3x4) transform from Aria's CPF to the camera frame (x right, y down, "
                          "z forward); default identity")
    default_depth_m: float = Field(1.0, gt=0, description="Aria gaze depth when depth_m is missing or 0")
    fixation: Literal["none", "ivt", "idt"] = Field("ivt", description="fixation filter: saccade samples "
                                                                       "prompt nothing")
    velocity_threshold: float | None = Field(
        None, gt=0, description="I-VT threshold: deg/s for angular gaze (Aria, or 2D with intrinsics; default 30), "
                                "px/s for 2D gaze without intrinsics (required then)")
    dispersion_threshold: float | None = Field(
        None, gt=0, description="I-DT threshold: degrees (default 1) or pixels (required for 2D without intrinsics)")
    min_fixation_s: float | None = Field(None, ge=0, description="shortest fixation kept (default: 0 for I-VT, "
                                                                 "0.1 s window for I-DT)")
    max_gap_s: float = Field(0.1, gt=0, description="a longer gap between samples splits fixations")
    point: Literal["sample", "centroid"] = Field("sample", description="prompt at the matched sample, or at the "
                                                                       "centroid of its fixation")

    _check_intrinsics = field_validator("intrinsics")(Intrinsics.check_param)

    @field_validator("T_camera_cpf")
    @classmethod
    def _check_transform(cls, value: list[list[float]] | None) -> list[list[float]] | None:
        as_transform(value)
        return value


@dataclass
class _Prepared:
    """The recording once read and filtered: what every frame looks up."""

    track: GazeTrack
    index: NearestSample
    times: np.ndarray | None  # on the frame clock
    keep: np.ndarray  # fixation samples
    centroids: np.ndarray | None  # source coordinates (pixels, or yaw/pitch radians) of each sample's fixation


@register("gaze.points")
class GazePoints(Node):
    """Gaze recording -> the fixated point of each frame as a one-point prompt (none off fixations or off-image)."""

    Params = GazeParams
    inputs = {"frame": Input(Frame, doc="a video frame (its time or index finds the gaze sample)"),
              "intrinsics": Input(Intrinsics, optional=True, doc="camera of the frames (else the param)")}
    outputs = {"points": Points, "gaze": Gaze}

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._prepared: _Prepared | None = None
        self._param_camera: Intrinsics | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------------ per frame

    def run(self, ctx: ItemContext, frame: Frame, intrinsics: Intrinsics | None = None) -> dict[str, Any]:
        camera = self._camera(intrinsics)
        prepared = self._prepare(camera)
        sample = self._match(prepared, frame)
        if sample < 0:
            return _nothing("missing")
        time = float(prepared.times[sample]) if prepared.times is not None else None
        row = int(prepared.track.rows[sample])
        if not prepared.keep[sample]:
            status = "saccade" if self._source(prepared, sample) is not None else "missing"
            return _nothing(status, time=time, sample=row)
        source = prepared.centroids[sample] if prepared.centroids is not None else self._source(prepared, sample)
        if source is None:
            return _nothing("missing", time=time, sample=row)
        height, width = frame.size
        if prepared.track.kind == "aria":
            if camera is None:
                raise InputError(f"gaze file {prepared.track.path}: Aria eye gaze needs the camera intrinsics (param "
                                 "'intrinsics' or the intrinsics input) to project onto the frames")
            x, y, in_front = self._project(prepared, sample, source, camera.for_size(height, width))
            if not in_front:
                return _nothing("behind_camera", time=time, sample=row)
        else:
            x, y = float(source[0]), float(source[1])
        if not (0 <= x < width and 0 <= y < height):
            return _nothing("off_image", x, y, time, row)
        return {"points": Points(np.array([[[x, y]]], np.float32), np.ones((1, 1), np.int32)),
                "gaze": Gaze("fixation", x, y, time, row)}

    def _match(self, prepared: _Prepared, frame: Frame) -> int:
        p = self.params
        by_frame = p.match == "frame" or (p.match == "auto" and prepared.track.frames is not None)
        if by_frame:
            if prepared.track.frames is None:
                raise InputError(f"gaze file {prepared.track.path} has no frame column; use match: time")
            return int(prepared.index.query(frame.index, p.tolerance_frames)[0])
        if prepared.times is None:
            raise InputError(f"gaze file {prepared.track.path} has no timestamps; use match: frame")
        if frame.time is None:
            raise InputError(f"frame {frame.index} has no timestamp to match gaze with; read frames from a video or "
                             "give the frame folder an fps, or use match: frame")
        return int(prepared.index.query(frame.time, p.tolerance_s)[0])

    @staticmethod
    def _source(prepared: _Prepared, sample: int) -> np.ndarray | None:
        """The sample's position as recorded (pixels, or yaw/pitch radians); None when missing."""
        track = prepared.track
        value = track.xy[sample] if track.kind == "2d" else np.array([track.yaw[sample], track.pitch[sample]])
        return value if np.isfinite(value).all() else None

    def _project(self, prepared: _Prepared, sample: int, yaw_pitch: np.ndarray, camera: Intrinsics
                 ) -> tuple[float, float, bool]:
        depth = prepared.track.depth[sample]
        if not (math.isfinite(depth) and depth > 0):
            depth = self.params.default_depth_m
        point = transform_points(as_transform(self.params.T_camera_cpf),
                                 cpf_points(yaw_pitch[0:1], yaw_pitch[1:2], np.array([depth])))
        uv, in_front = project_pinhole(point, camera.fx, camera.fy, camera.cx, camera.cy)
        return float(uv[0, 0]), float(uv[0, 1]), bool(in_front[0])

    # ------------------------------------------------------------------------------------------------ once

    def _camera(self, wired: Intrinsics | None) -> Intrinsics | None:
        if wired is not None:
            return wired
        if self._param_camera is None and self.params.intrinsics is not None:
            self._param_camera = Intrinsics.coerce(self.params.intrinsics)  # a file is read once, not per frame
        return self._param_camera

    def _prepare(self, camera: Intrinsics | None) -> _Prepared:
        if self._prepared is None:
            with self._lock:
                if self._prepared is None:
                    self._prepared = self._read_and_filter(camera)
        return self._prepared

    def _read_and_filter(self, camera: Intrinsics | None) -> _Prepared:
        p = self.params
        track = read_gaze_csv(p.file, p.format)
        times = track.times
        if times is not None:
            offset = -float(times[0]) if p.time_offset_s == "first" and len(track) else p.time_offset_s
            times = times + float(offset or 0.0)
        by_frame = p.match == "frame" or (p.match == "auto" and track.frames is not None)
        index = NearestSample(track.frames if by_frame and track.frames is not None else
                              (times if times is not None else np.zeros(0)))
        clock = times if times is not None else track.frames / p.fps
        positions, angular = self._filter_space(track, camera)
        keep = self._fixations(track, clock, positions, angular)
        centroids = None
        if p.point == "centroid":
            source = track.xy if track.kind == "2d" else np.stack([track.yaw, track.pitch], axis=1)
            centroids = fixations.fixation_centroids(clock, source, keep, p.max_gap_s)
        return _Prepared(track, index, times, keep, centroids)

    @staticmethod
    def _filter_space(track: GazeTrack, camera: Intrinsics | None) -> tuple[np.ndarray, bool]:
        """Positions to filter in: degrees when angles are known, else pixels."""
        if track.kind == "aria":
            return np.degrees(np.stack([track.yaw, track.pitch], axis=1)), True
        if camera is not None:
            # Angles from pixels need the size the intrinsics are for; without one they are taken as given.
            return pixel_angles(track.xy, camera.fx, camera.fy, camera.cx, camera.cy), True
        return track.xy, False

    def _fixations(self, track: GazeTrack, clock: np.ndarray, positions: np.ndarray, angular: bool) -> np.ndarray:
        p = self.params
        present = np.isfinite(positions).all(axis=1)
        if p.fixation == "none":
            return present
        unit = "deg" if angular else "px"
        if p.fixation == "ivt":
            threshold = p.velocity_threshold or (DEFAULT_VELOCITY_DEG_S if angular else None)
            if threshold is None:
                raise InputError(f"gaze file {track.path}: 2D gaze without intrinsics is filtered in pixels; set "
                                 "velocity_threshold (px/s), or give intrinsics to filter in deg/s")
            return fixations.ivt(clock, positions, threshold, p.min_fixation_s or 0.0, p.max_gap_s)
        threshold = p.dispersion_threshold or (DEFAULT_DISPERSION_DEG if angular else None)
        if threshold is None:
            raise InputError(f"gaze file {track.path}: 2D gaze without intrinsics is filtered in pixels; set "
                             f"dispersion_threshold ({unit}), or give intrinsics to filter in degrees")
        window = DEFAULT_IDT_WINDOW_S if p.min_fixation_s is None else p.min_fixation_s
        return fixations.idt(clock, positions, threshold, window, p.max_gap_s)


def _nothing(status: str, x: float | None = None, y: float | None = None, time: float | None = None,
             sample: int | None = None) -> dict[str, Any]:
    return {"points": Points(np.zeros((0, 1, 2), np.float32), np.zeros((0, 1), np.int32)),
            "gaze": Gaze(status, x, y, time, sample)}


class SimulatedParams(NodeParams):
    mode: Literal["random", "center"] = Field("random", description="random: a uniform pixel of each mask (models "
                                                                    "gaze better); center: the pixel farthest from "
                                                                    "the mask's boundary")
    seed: int = Field(0, description="random mode: the same seed and item give the same points")


@register("gaze.simulated")
class SimulatedGaze(Node):
    """One foreground point per ground-truth mask (N sets of 1), for the single-point evaluation of gaze prompts."""

    Params = SimulatedParams
    inputs = {"masks": Input(Masks, doc="ground-truth masks; the best of each set is used")}
    outputs = {"points": Points}

    def run(self, ctx: ItemContext, masks: Masks) -> dict[str, Points]:
        # Seeded per item, so a frame's points do not depend on which frames ran before it.
        rng = np.random.default_rng([self.params.seed, zlib.crc32(ctx.item_id.encode())])
        return {"points": mask_points(masks.best(), self.params.mode, rng)}


def mask_points(masks: np.ndarray, mode: str, rng: np.random.Generator) -> Points:
    """Points (N sets of one foreground point) for bool (N, H, W) masks: a uniform pixel or the centre."""
    coords = np.zeros((masks.shape[0], 1, 2), np.float32)
    for n, mask in enumerate(masks):
        if mode == "center":
            found = farthest_point(mask)
            if found is None:
                raise InputError(f"mask {n} is empty: no point to simulate gaze on")
            coords[n, 0] = found
            continue
        ys, xs = np.nonzero(mask)
        if xs.size == 0:
            raise InputError(f"mask {n} is empty: no point to simulate gaze on")
        pick = rng.integers(xs.size)
        coords[n, 0] = (xs[pick], ys[pick])
    return Points(coords, np.ones((masks.shape[0], 1), np.int32))
