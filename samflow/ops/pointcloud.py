"""Point clouds from depth: back-projection through a pinhole camera, voxel downsampling, outlier removal.

All functions work on plain arrays (points float32 (M, 3) in metres, colours uint8 (M, 3)); the nodes in
`nodes/lift.py` adapt them to payloads.
"""

from __future__ import annotations

import numpy as np

from samflow.errors import InputError

_CDIST_ELEMENTS = 1 << 24  # distances held at once by the k-NN search (64 MB of float32)


def backproject(depth_m: np.ndarray, fx: float, fy: float, cx: float, cy: float,
                mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lift pixels with valid depth (finite, > 0), inside `mask` when given.

    Returns points float32 (M, 3) with x = (u - cx) z / fx, y = (v - cy) z / fy, z (pixel centres at integer
    u, v, the OpenCV convention), and their pixels int64 (M, 2) as (v, u) in row-major order.
    """
    valid = np.isfinite(depth_m) & (depth_m > 0)
    if mask is not None:
        if mask.shape != depth_m.shape:
            raise InputError(f"mask {mask.shape} and depth {depth_m.shape} differ in size")
        valid &= mask.astype(bool)
    v, u = np.nonzero(valid)
    z = depth_m[v, u].astype(np.float64)
    points = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=1).astype(np.float32)
    return points, np.stack([v, u], axis=1)


def voxel_downsample(points: np.ndarray, colors: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """One point per occupied voxel of edge `voxel` (metres): the mean of its points and of their colours."""
    if voxel <= 0:
        raise InputError(f"voxel size must be > 0, got {voxel}")
    if points.shape[0] == 0:
        return points, colors
    cells = np.floor(points / voxel).astype(np.int64)
    cells -= cells.min(axis=0)
    dims = cells.max(axis=0) + 1
    # One integer per cell (row-major over the occupied box) makes np.unique 1-D and fast.
    if float(dims[0]) * float(dims[1]) * float(dims[2]) < 2**62:
        keys = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    else:
        _, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    out_points = np.stack([np.bincount(inverse, points[:, i].astype(np.float64)) for i in range(3)], axis=1)
    out_colors = np.stack([np.bincount(inverse, colors[:, i].astype(np.float64)) for i in range(3)], axis=1)
    out_points /= counts[:, None]
    out_colors /= counts[:, None]
    return out_points.astype(np.float32), np.round(out_colors).astype(np.uint8)


def statistical_outliers(points: np.ndarray, neighbors: int = 16, std_ratio: float = 2.0) -> np.ndarray:
    """bool (M,): True for inliers. A point is an outlier when its mean distance to its `neighbors` nearest
    points exceeds the mean of that distance over the cloud by more than `std_ratio` standard deviations (the
    usual statistical filter). Exact k-NN: a k-d tree when scipy is installed, else chunked all-pairs distances
    (O(M^2): downsample large clouds first)."""
    m = points.shape[0]
    if neighbors < 1:
        raise InputError(f"outlier neighbours must be >= 1, got {neighbors}")
    if m <= neighbors:
        return np.ones(m, dtype=bool)
    mean_distance = _mean_neighbour_distance(np.ascontiguousarray(points, dtype=np.float32), neighbors)
    bar = mean_distance.mean() + std_ratio * mean_distance.std()
    return mean_distance <= bar


def _mean_neighbour_distance(points: np.ndarray, k: int) -> np.ndarray:
    try:
        from scipy.spatial import cKDTree
    except ImportError:
        return _mean_neighbour_distance_torch(points, k)
    distances, _ = cKDTree(points).query(points, k=k + 1)  # the first neighbour is the point itself
    return distances[:, 1:].mean(axis=1)


def _mean_neighbour_distance_torch(points: np.ndarray, k: int) -> np.ndarray:
    import torch

    m = points.shape[0]
    cloud = torch.from_numpy(points)
    out = torch.empty(m)
    chunk = max(1, _CDIST_ELEMENTS // m)
    with torch.no_grad():
        for start in range(0, m, chunk):
            distances = torch.cdist(cloud[start:start + chunk], cloud)
            out[start:start + chunk] = distances.topk(k + 1, dim=1, largest=False).values[:, 1:].mean(dim=1)
    return out.numpy()
