"""Projecting eye gaze into a camera image: Aria CPF yaw/pitch -> 3D point -> camera frame -> pinhole pixel."""

from __future__ import annotations

import numpy as np

from samflow.errors import InputError


def cpf_points(yaw: np.ndarray, pitch: np.ndarray, depth: np.ndarray | float) -> np.ndarray:
    """float64 (T, 3): the gazed-at points in the Central Pupil Frame, at `depth` metres along the unit direction
    (tan(yaw), tan(pitch), 1) / |.| (Project Aria's convention)."""
    direction = np.stack([np.tan(yaw), np.tan(pitch), np.ones_like(np.asarray(yaw, dtype=np.float64))], axis=-1)
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    return direction * np.asarray(depth, dtype=np.float64)[..., None]


def as_transform(matrix: np.ndarray | list | None) -> np.ndarray:
    """A 4 x 4 rigid transform from a 4 x 4 or 3 x 4 matrix (identity for None)."""
    if matrix is None:
        return np.eye(4)
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape == (3, 4):
        m = np.vstack([m, [0, 0, 0, 1]])
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise InputError(f"a camera transform must be a finite 4 x 4 or 3 x 4 matrix, got shape {m.shape}")
    return m


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4 x 4 transform to (T, 3) points."""
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def project_pinhole(points: np.ndarray, fx: float, fy: float, cx: float, cy: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(pixels float64 (T, 2) as u = fx x / z + cx, v = fy y / z + cy; in_front bool (T,) where z > 0).
    Pixels of points behind the camera are NaN."""
    z = points[..., 2]
    in_front = z > 1e-9
    safe = np.where(in_front, z, 1.0)
    uv = np.stack([fx * points[..., 0] / safe + cx, fy * points[..., 1] / safe + cy], axis=-1)
    uv[~in_front] = np.nan
    return uv, in_front


def pixel_angles(xy: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """(T, 2) degrees: the horizontal and vertical angle of each pixel's ray (for velocities in deg/s)."""
    return np.degrees(np.stack([np.arctan((xy[..., 0] - cx) / fx), np.arctan((xy[..., 1] - cy) / fy)], axis=-1))
