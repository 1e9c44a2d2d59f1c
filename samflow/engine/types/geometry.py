"""Payloads of 3D lifting: `Depth` (a depth map as stored, with its scale), `Intrinsics` (a pinhole camera) and
`PointCloud` (coloured points grouped by the mask they were lifted from).

Camera frame convention (OpenCV): x right, y down, z forward, metres. A pixel (u, v) with depth z lifts to
x = (u - cx) z / fx, y = (v - cy) z / fy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from samflow.engine.types.base import FilePath, Payload, as_array, payload_type
from samflow.errors import InputError


def _where(path: Path | None) -> str:
    return f" ({path})" if path is not None else ""


@payload_type
@dataclass(eq=False)
class Depth(Payload):
    """A depth map. `data: float32 (H, W)` as stored in its file; `scale`: metres per stored unit (0.001 for a
    16-bit PNG in millimetres, 1.0 for a float `.npy` in metres); 0, negative, NaN and inf values are invalid.
    `path`: the file it was read from."""

    data: np.ndarray
    scale: float = 1.0
    path: Path | None = None

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.ndim == 3 and data.shape[2] == 1:
            data = data[..., 0]
        if data.ndim != 2:
            raise InputError(f"depth map{_where(self.path)} must be (H, W), got shape {data.shape}")
        if not np.issubdtype(data.dtype, np.number):
            raise InputError(f"depth map{_where(self.path)} must hold numbers, got {data.dtype}")
        self.data = data.astype(np.float32, copy=False)
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise InputError(f"depth scale{_where(self.path)} must be a positive number of metres per unit, "
                             f"got {self.scale}")

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.data.shape[0]), int(self.data.shape[1])

    def metres(self, scale: float | None = None) -> np.ndarray:
        """float32 (H, W) depth in metres (`scale` overrides the stored one); NaN where invalid."""
        z = self.data * np.float32(self.scale if scale is None else scale)
        return np.where(np.isfinite(z) & (z > 0), z, np.float32(np.nan)).astype(np.float32, copy=False)

    @classmethod
    def load(cls, path: str | Path, scale: float | None = None) -> Depth:
        """Read a depth map: a 16-bit PNG (millimetres unless `scale` says otherwise), a float `.npy` (metres unless
        `scale`), or a 32-bit float TIFF (metres). Errors name the file and what is wrong with it."""
        from samflow.ops.depth import read_depth

        data, default_scale = read_depth(Path(path))
        return cls(data, default_scale if scale is None else scale, Path(path))

    @classmethod
    def coerce(cls, value: Any) -> Depth:
        if isinstance(value, Depth):
            return value
        if isinstance(value, FilePath):
            return cls.load(value.path)
        if isinstance(value, (str, Path)):
            return cls.load(value)
        if isinstance(value, np.ndarray):
            return cls(value)
        raise InputError(f"expected a depth map file (.png, .npy, .tif) or an (H, W) array, got {type(value).__name__}")

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def to_record(self) -> dict[str, Any]:
        valid = np.isfinite(self.data) & (self.data > 0)
        return {"type": self.type_name, "height": self.size[0], "width": self.size[1], "scale": self.scale,
                "valid": int(valid.sum()), "path": str(self.path) if self.path else None}


@payload_type
@dataclass(eq=False)
class Intrinsics(Payload):
    """A pinhole camera: focal lengths `fx, fy` and principal point `cx, cy` in pixels; `width, height`: the image
    size they are for (None when not stated; then they apply to any size); `path`: the file they came from."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int | None = None
    height: int | None = None
    path: Path | None = None

    def __post_init__(self) -> None:
        where = f"intrinsics{_where(self.path)}"
        for name in ("fx", "fy", "cx", "cy"):
            value = getattr(self, name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise InputError(f"{where}: {name} must be a number, got {value!r}") from None
            if not math.isfinite(value):
                raise InputError(f"{where}: {name} must be finite, got {value}")
            setattr(self, name, value)
        for name in ("fx", "fy"):
            if getattr(self, name) <= 0:
                raise InputError(f"{where}: {name} must be > 0 (a focal length in pixels), got {getattr(self, name):g}")
        if (self.width is None) != (self.height is None):
            raise InputError(f"{where}: give both width and height, or neither")
        if self.width is not None and (int(self.width) <= 0 or int(self.height) <= 0):
            raise InputError(f"{where}: width and height must be positive, got {self.width} x {self.height}")

    @property
    def matrix(self) -> np.ndarray:
        """float64 (3, 3) K."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)

    def for_size(self, height: int, width: int) -> Intrinsics:
        """These intrinsics for an image of (height, width): scaled when they state another size."""
        if self.width is None or (self.width, self.height) == (width, height):
            return self
        sx, sy = width / self.width, height / self.height
        # Pixel centres sit at integer coordinates: the principal point scales about the image corner (-0.5).
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                          width, height, self.path)

    @staticmethod
    def check_param(value: dict[str, Any] | str | None) -> dict[str, Any] | str | None:
        """A node's `intrinsics` param, returned unchanged once checked: a mapping must make valid intrinsics, so
        fx = 0 and friends fail when the graph is validated; a file path is read when the node first runs."""
        if isinstance(value, dict):
            Intrinsics.from_mapping(value)
        return value

    @classmethod
    def from_mapping(cls, data: Any, path: Path | None = None) -> Intrinsics:
        """From `{"fx", "fy", "cx", "cy"[, "width", "height"]}` or `{"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]}`."""
        where = f"intrinsics{_where(path)}"
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a JSON object with fx, fy, cx, cy (or K), got {type(data).__name__}")
        if "K" in data or "camera_matrix" in data:
            k = as_array(data.get("K", data.get("camera_matrix")), np.float64, f"{where}: K")
            if k.shape != (3, 3):
                raise InputError(f"{where}: K must be 3 x 3, got shape {k.shape}")
            values = {"fx": k[0, 0], "fy": k[1, 1], "cx": k[0, 2], "cy": k[1, 2]}
        else:
            missing = [name for name in ("fx", "fy", "cx", "cy") if name not in data]
            if missing:
                raise InputError(f"{where}: missing {', '.join(missing)} (give fx, fy, cx, cy in pixels, or K)")
            values = {name: data[name] for name in ("fx", "fy", "cx", "cy")}
        return cls(**values, width=data.get("width"), height=data.get("height"), path=path)

    @classmethod
    def load(cls, path: str | Path) -> Intrinsics:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise InputError(f"cannot read intrinsics file {path}: {exc.strerror or exc}") from exc
        except json.JSONDecodeError as exc:
            raise InputError(f"intrinsics file {path} is not valid JSON: {exc}") from exc
        return cls.from_mapping(data, path)

    @classmethod
    def coerce(cls, value: Any) -> Intrinsics:
        if isinstance(value, Intrinsics):
            return value
        if isinstance(value, FilePath):
            return cls.load(value.path)
        if isinstance(value, (str, Path)):
            return cls.load(value)
        if isinstance(value, dict):
            return cls.from_mapping(value)
        raise InputError(f"expected intrinsics (a JSON file or a mapping with fx, fy, cx, cy), got "
                         f"{type(value).__name__}")

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy,
                "width": self.width, "height": self.height}


@payload_type
@dataclass(eq=False)
class PointCloud(Payload):
    """Coloured 3D points in metres, camera frame, grouped by the mask they were lifted from.

    `points: float32 (M, 3)`; `colors: uint8 (M, 3)` RGB; `index: int32 (M,)` the mask (prompt set) each point
    comes from, 0..count-1; `count`: the number of masks (a mask may give no point); `names`: a label per mask, or
    None.
    """

    points: np.ndarray
    colors: np.ndarray
    index: np.ndarray
    count: int
    names: list[str | None] | None = None

    def __post_init__(self) -> None:
        self.points = as_array(self.points, np.float32, "PointCloud.points").reshape(-1, 3)
        self.colors = as_array(self.colors, np.uint8, "PointCloud.colors").reshape(-1, 3)
        self.index = as_array(self.index, np.int32, "PointCloud.index").reshape(-1)
        m = self.points.shape[0]
        if self.colors.shape[0] != m or self.index.shape[0] != m:
            raise InputError(f"PointCloud: {m} points, {self.colors.shape[0]} colours, {self.index.shape[0]} indices")
        if m and (self.index.min() < 0 or self.index.max() >= self.count):
            raise InputError(f"PointCloud.index must lie in 0..{self.count - 1}")
        if self.names is not None and len(self.names) != self.count:
            raise InputError(f"PointCloud: {len(self.names)} names for {self.count} masks")

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def part(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(points (M_n, 3), colors (M_n, 3)) of mask n."""
        keep = self.index == n
        return self.points[keep], self.colors[keep]

    @property
    def nbytes(self) -> int:
        return int(self.points.nbytes + self.colors.nbytes + self.index.nbytes)

    def summary(self) -> list[dict[str, Any]]:
        """Per mask: point count, centroid and axis-aligned bounds (metres)."""
        out = []
        for n in range(self.count):
            points, _ = self.part(n)
            record: dict[str, Any] = {"set": n, "points": int(points.shape[0]),
                                      "label": self.names[n] if self.names is not None else None}
            if points.shape[0]:
                record["centroid"] = points.mean(axis=0).round(6).tolist()
                record["min"], record["max"] = points.min(axis=0).tolist(), points.max(axis=0).tolist()
            out.append(record)
        return out

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "points": len(self), "clouds": self.summary()}

    def save(self, directory: Path, name: str) -> list[Path]:
        """`NAME_<n>.ply` (binary PLY, one per mask) and `NAME.json` (per mask: file, count, centroid, bounds)."""
        from samflow.fileio import write_atomic
        from samflow.ops.ply import encode_ply

        written = []
        records = self.summary()
        for n, record in enumerate(records):
            path = directory / f"{name}_{n}.ply"
            write_atomic(path, encode_ply(*self.part(n)))
            record["file"] = path.name
            written.append(path)
        summary = directory / f"{name}.json"
        summary.write_text(json.dumps(records, indent=2))
        return [*written, summary]


__all__ = ["Depth", "Intrinsics", "PointCloud"]
