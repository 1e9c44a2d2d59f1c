"""A synthetic video of a moving shape, with gaze recordings that follow it: inputs for the gaze recipes and tests.

The video: a red disc gliding on a slow Lissajous path over a static textured background with a blue square.
Frame i depends only on (seed, i) and is rendered on demand, so a video of any length costs one frame of memory.

The gaze (60 Hz by default, on the video's clock): smooth pursuit of the disc's centre with sub-pixel noise,
interrupted by glances away (a saccade out, a short fixation elsewhere, a saccade back), one blink (rows with empty
x, y), one tracking gap (no rows at all), and a few rows written out of order. Each sample is labelled ('pursuit',
'saccade', 'away', 'blink') so tests can score fixation filters. Written as a 2D gaze CSV (pixels) or an Aria MPS
eye-gaze CSV (yaw/pitch in CPF, with identity CPF-to-camera extrinsics and the scene's pinhole intrinsics).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samflow.errors import InputError

SHAPE_RGB = (220, 40, 40)
SQUARE_RGB = (40, 70, 200)
ARIA_CLOCK_START_US = 12_345_678_000  # device clocks do not start at 0: a recipe must align them


@dataclass(frozen=True)
class MovingShape:
    """The scene: frame size (H, W), frame rate, seed. Positions in pixels (x, y)."""

    height: int = 128
    width: int = 128
    fps: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.height < 32 or self.width < 32:
            raise InputError(f"a moving-shape video needs at least 32 x 32 pixels, got {self.height} x {self.width}")
        if not self.fps > 0:
            raise InputError(f"fps must be > 0, got {self.fps}")

    @property
    def radius(self) -> float:
        return 0.14 * min(self.height, self.width)

    @property
    def intrinsics(self) -> dict[str, float]:
        """A pinhole camera for the frames (about 45 degrees across)."""
        f = 1.2 * max(self.height, self.width)
        return {"fx": f, "fy": f, "cx": (self.width - 1) / 2, "cy": (self.height - 1) / 2,
                "width": self.width, "height": self.height}

    def centre(self, t: np.ndarray | float) -> np.ndarray:
        """(..., 2) the disc's centre at time(s) t seconds: a slow Lissajous path well inside the frame."""
        t = np.asarray(t, dtype=np.float64)
        phase = (self.seed % 7) * 0.9
        x = self.width / 2 + 0.28 * self.width * np.sin(2 * np.pi * t / 9.0 + phase)
        y = self.height / 2 + 0.25 * self.height * np.sin(2 * np.pi * t / 6.0 + 2 * phase)
        return np.stack([x, y], axis=-1)

    def background(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 7])
        yy, xx = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        base = 90 + 50 * (xx / self.width)[..., None] * np.array([0.6, 0.8, 1.0]) + \
            30 * (yy / self.height)[..., None] * np.array([1.0, 0.7, 0.4])
        image = base + rng.normal(0, 6, (self.height, self.width, 3))
        s = int(0.12 * min(self.height, self.width))
        y0, x0 = int(0.72 * self.height), int(0.08 * self.width)
        image[y0 : y0 + s, x0 : x0 + s] = SQUARE_RGB
        return np.clip(image, 0, 255).astype(np.uint8)

    def mask(self, index: int) -> np.ndarray:
        """bool (H, W): the disc in frame `index`."""
        cx, cy = self.centre(index / self.fps)
        yy, xx = np.ogrid[0 : self.height, 0 : self.width]
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= self.radius**2

    def frame(self, index: int, background: np.ndarray | None = None) -> np.ndarray:
        """uint8 (H, W, 3): frame `index`."""
        image = (self.background() if background is None else background).copy()
        image[self.mask(index)] = SHAPE_RGB
        return image

    def frames(self, count: int) -> Iterator[tuple[int, float, np.ndarray]]:
        """(index, time s, RGB) for frames 0..count-1, rendered one at a time."""
        background = self.background()
        for index in range(count):
            yield index, index / self.fps, self.frame(index, background)


def write_video(path: str | Path, scene: MovingShape, count: int) -> Path:
    """Encode `count` frames of `scene` (H.264, or MPEG-4 when unavailable)."""
    from samflow.data.frames import VideoWriter

    path = Path(path)
    with VideoWriter(path, scene.fps) as writer:
        for _, _, rgb in scene.frames(count):
            writer.write(rgb)
    return path


def write_frames(folder: str | Path, scene: MovingShape, count: int) -> Path:
    """Write frames as `frame_000000.png`... and `timestamps.csv` (file, timestamp_s)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, time, rgb in scene.frames(count):
        name = f"frame_{index:06d}.png"
        Image.fromarray(rgb).save(folder / name, compress_level=1)
        rows.append(f"{name},{time:.6f}")
    (folder / "timestamps.csv").write_text("file,timestamp_s\n" + "\n".join(rows) + "\n")
    return folder


@dataclass
class GazeRecording:
    """Samples in time order: times (T,) s on the video clock, xy (T, 2) pixels (NaN in blinks), labels (T,)
    'pursuit' | 'saccade' | 'away' | 'blink'; `order`: the row order to write (a few rows swapped)."""

    times: np.ndarray
    xy: np.ndarray
    labels: np.ndarray
    order: np.ndarray


def gaze_recording(scene: MovingShape, duration: float, rate: float = 60.0, noise_px: float = 0.15,
                   glance_every: float = 1.5, gap: tuple[float, float] | None = (1.1, 1.35),
                   blink: tuple[float, float] | None = (2.2, 2.3)) -> GazeRecording:
    """A gaze recording pursuing the disc over `duration` seconds (see the module doc)."""
    rng = np.random.default_rng([scene.seed, 11])
    times = np.arange(0, duration, 1 / rate)
    if gap is not None:
        times = times[(times < gap[0]) | (times >= gap[1])]
    xy = scene.centre(times) + rng.normal(0, noise_px, (times.size, 2))
    labels = np.full(times.size, "pursuit", dtype=object)
    # Glances away: 3 samples of saccade out, ~120 ms fixating elsewhere, 3 samples of saccade back.
    transit, dwell = 3, max(1, round(0.12 * rate))
    for start_time in np.arange(glance_every, duration - 0.5, glance_every):
        start = int(np.searchsorted(times, start_time))
        stop = start + 2 * transit + dwell
        if stop + 1 >= times.size:
            break
        home_out, home_back = xy[start - 1].copy(), xy[stop].copy()
        target = np.array([rng.uniform(0.1, 0.9) * scene.width, rng.uniform(0.1, 0.3) * scene.height])
        for k in range(transit):
            f = (k + 1) / (transit + 1)
            xy[start + k] = home_out + f * (target - home_out)
            xy[start + transit + dwell + k] = target + f * (home_back - target)
        xy[start + transit : start + transit + dwell] = target + rng.normal(0, noise_px, (dwell, 2))
        labels[start : start + transit] = "saccade"
        labels[start + transit : start + transit + dwell] = "away"
        labels[start + transit + dwell : stop] = "saccade"
    if blink is not None:
        inside = (times >= blink[0]) & (times < blink[1])
        xy[inside] = np.nan
        labels[inside] = "blink"
    order = np.arange(times.size)
    for i in rng.choice(max(times.size - 1, 1), size=min(3, max(times.size - 1, 0)), replace=False):
        order[[i, i + 1]] = order[[i + 1, i]]  # a few rows out of order, as loggers sometimes write them
    return GazeRecording(times, xy, labels, order)


def write_gaze_2d(path: str | Path, recording: GazeRecording) -> Path:
    """A 2D gaze CSV: timestamp_s, x, y (pixels; empty in blinks)."""
    path = Path(path)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["timestamp_s", "x", "y"])
        for i in recording.order:
            x, y = recording.xy[i]
            writer.writerow([f"{recording.times[i]:.6f}", "" if math.isnan(x) else f"{x:.3f}",
                             "" if math.isnan(y) else f"{y:.3f}"])
    return path


def write_gaze_aria(path: str | Path, recording: GazeRecording, scene: MovingShape, depth_m: float = 1.0) -> Path:
    """An Aria MPS eye-gaze CSV of the same gaze: yaw = atan((x - cx) / fx), pitch = atan((y - cy) / fy) in a CPF
    aligned with the camera, timestamps on a device clock starting at ARIA_CLOCK_START_US."""
    k = scene.intrinsics
    path = Path(path)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["tracking_timestamp_us", "yaw_rads_cpf", "pitch_rads_cpf", "depth_m", "yaw_low_rads_cpf",
                         "pitch_low_rads_cpf", "yaw_high_rads_cpf", "pitch_high_rads_cpf"])
        for i in recording.order:
            x, y = recording.xy[i]
            stamp = ARIA_CLOCK_START_US + round(recording.times[i] * 1e6)
            if math.isnan(x):
                writer.writerow([stamp, "", "", "", "", "", "", ""])
                continue
            yaw, pitch = math.atan((x - k["cx"]) / k["fx"]), math.atan((y - k["cy"]) / k["fy"])
            writer.writerow([stamp, f"{yaw:.7f}", f"{pitch:.7f}", f"{depth_m:.3f}", f"{yaw - 0.01:.7f}",
                             f"{pitch - 0.01:.7f}", f"{yaw + 0.01:.7f}", f"{pitch + 0.01:.7f}"])
    return path


def write_gaze_demo(folder: str | Path, frames: int = 90, size: int = 128, fps: float = 30.0, seed: int = 0
                    ) -> dict[str, Path]:
    """Everything graphs/gaze_video.yaml runs on: video.mp4, gaze.csv (2D), gaze_aria.csv, intrinsics.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scene = MovingShape(size, size, fps, seed)
    recording = gaze_recording(scene, frames / fps)
    paths = {"video": write_video(folder / "video.mp4", scene, frames),
             "gaze": write_gaze_2d(folder / "gaze.csv", recording),
             "gaze_aria": write_gaze_aria(folder / "gaze_aria.csv", recording, scene),
             "intrinsics": folder / "intrinsics.json"}
    paths["intrinsics"].write_text(json.dumps(scene.intrinsics, indent=2))
    return paths


__all__ = ["GazeRecording", "MovingShape", "gaze_recording", "write_frames", "write_gaze_2d", "write_gaze_aria",
           "write_gaze_demo", "write_video"]
