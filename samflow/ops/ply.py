"""Binary PLY encoding of coloured point clouds (samflow's own: no GPL dependency).

Format: `binary_little_endian 1.0`, one `vertex` element with float x, y, z and uchar red, green, blue, written
as one packed record array. Any PLY reader (Open3D, MeshLab, CloudCompare, plyfile) opens it.
"""

from __future__ import annotations

import numpy as np

from samflow.errors import InputError

VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def ply_header(count: int, comment: str | None = None) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0"]
    if comment:
        lines.append(f"comment {' '.join(comment.split())}")  # one line, whatever the caller gave
    lines += [f"element vertex {count}", "property float x", "property float y", "property float z",
              "property uchar red", "property uchar green", "property uchar blue", "end_header"]
    return ("\n".join(lines) + "\n").encode("ascii")


def encode_ply(points: np.ndarray, colors: np.ndarray | None = None, comment: str | None = "written by samflow"
               ) -> bytes:
    """The binary PLY of points float (M, 3) with colours uint8 (M, 3) (grey when None)."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    if colors is None:
        colors = np.full(points.shape, 200, np.uint8)
    colors = np.asarray(colors)
    if colors.shape != points.shape:
        raise InputError(f"write_ply: {points.shape[0]} points but colours of shape {colors.shape}")
    if colors.dtype != np.uint8:
        colors = np.clip(colors, 0, 255).astype(np.uint8)
    records = np.empty(points.shape[0], VERTEX)
    records["x"], records["y"], records["z"] = points.T
    records["red"], records["green"], records["blue"] = colors.T
    return ply_header(points.shape[0], comment) + records.tobytes()
