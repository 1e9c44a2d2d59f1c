"""A synthetic RGB-D view with exact geometry: a tilted wall (a plane), a card parallel to the image (constant depth)
and a ball (a sphere), seen by a pinhole camera. Inputs for the 3D lifting recipe and tests.

Depth is computed per pixel ray (u, v) -> ((u - cx) / fx, (v - cy) / fy, 1) by intersecting the surfaces, so
lifting a mask must give back points lying exactly on its surface. A small patch of the wall has no depth (0), as
real sensors leave holes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from samflow.errors import InputError

WALL_NORMAL = np.array([0.15, -0.25, -1.0]) / np.linalg.norm([0.15, -0.25, -1.0])
WALL_POINT = np.array([0.0, 0.0, 3.0])
CARD_DEPTH = 1.4
BALL_CENTRE = np.array([0.35, 0.05, 2.0])
BALL_RADIUS = 0.3


@dataclass
class DepthScene:
    """image uint8 (H, W, 3); depth float32 (H, W) metres, NaN where the sensor has no depth; masks bool (N, H, W)
    of the objects (card, ball); names (N); intrinsics {fx, fy, cx, cy, width, height}."""

    image: np.ndarray
    depth: np.ndarray
    masks: np.ndarray
    names: list[str] = field(default_factory=list)
    intrinsics: dict[str, float] = field(default_factory=dict)


def rays(height: int, width: int, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """float64 (H, W, 3): each pixel's ray with z = 1."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1)


def plane_depth(ray: np.ndarray, normal: np.ndarray, point: np.ndarray) -> np.ndarray:
    """z where each ray (z = 1) meets the plane through `point` with `normal` (inf when parallel or behind)."""
    denominator = ray @ normal
    with np.errstate(divide="ignore"):
        z = np.where(np.abs(denominator) > 1e-12, (point @ normal) / denominator, np.inf)
    return np.where(z > 0, z, np.inf)


def depth_scene(height: int = 192, width: int = 256, seed: int = 0) -> DepthScene:
    if height < 32 or width < 32:
        raise InputError(f"a depth scene needs at least 32 x 32 pixels, got {height} x {width}")
    rng = np.random.default_rng([seed, 3])
    f = 0.9 * width
    k = {"fx": f, "fy": f, "cx": (width - 1) / 2, "cy": (height - 1) / 2, "width": width, "height": height}
    ray = rays(height, width, k["fx"], k["fy"], k["cx"], k["cy"])
    wall = plane_depth(ray, WALL_NORMAL, WALL_POINT)

    card = np.zeros((height, width), bool)
    card[int(0.2 * height) : int(0.55 * height), int(0.12 * width) : int(0.4 * width)] = True

    # Ray-sphere: |s r - C|^2 = R^2 with s the depth (r has z = 1); the nearer root.
    rc = ray @ BALL_CENTRE
    rr = (ray**2).sum(-1)
    disc = rc**2 - rr * (BALL_CENTRE @ BALL_CENTRE - BALL_RADIUS**2)
    ball = disc >= 0
    ball_z = np.where(ball, (rc - np.sqrt(np.maximum(disc, 0))) / rr, np.inf)

    depth = wall.copy()
    depth[card] = CARD_DEPTH
    in_front = ball & (ball_z < depth)
    depth[in_front] = ball_z[in_front]
    masks = np.stack([card & ~in_front, in_front])

    image = np.empty((height, width, 3), np.float64)
    image[:] = (170, 160, 140)
    image += rng.normal(0, 5, image.shape)
    image[masks[0]] = (60, 170, 80)
    points = ray * depth[..., None]
    normal = (points - BALL_CENTRE) / BALL_RADIUS
    light = np.clip(normal @ np.array([-0.4, -0.5, -0.77]), 0.15, 1.0)  # lit from the upper left, facing us
    image[masks[1]] = np.array([240, 140, 30]) * light[masks[1], None]

    hole = np.zeros_like(card)
    hole[int(0.75 * height) : int(0.85 * height), int(0.7 * width) : int(0.8 * width)] = True
    depth[hole & ~masks.any(0)] = np.nan
    return DepthScene(np.clip(image, 0, 255).astype(np.uint8), depth.astype(np.float32), masks,
                      ["card", "ball"], k)


def _bbox_xywh(mask: np.ndarray) -> list[float]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


def write_depth_demo(folder: str | Path, height: int = 192, width: int = 256, seed: int = 0) -> dict[str, Path]:
    """Everything graphs/lift_3d.yaml runs on: image.png, depth.png (16-bit mm), depth.npy (float32 m),
    intrinsics.json, instances.json (COCO: the objects' boxes and names) and detections.json (COCO results)."""
    from PIL import Image

    from samflow.ops.depth import write_depth_png

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scene = depth_scene(height, width, seed)
    paths = {name: folder / file for name, file in (("image", "image.png"), ("depth", "depth.png"),
                                                     ("depth_npy", "depth.npy"), ("intrinsics", "intrinsics.json"),
                                                     ("instances", "instances.json"),
                                                     ("detections", "detections.json"))}
    Image.fromarray(scene.image).save(paths["image"])
    write_depth_png(paths["depth"], scene.depth)
    np.save(paths["depth_npy"], scene.depth)
    paths["intrinsics"].write_text(json.dumps(scene.intrinsics, indent=2))
    boxes = [_bbox_xywh(mask) for mask in scene.masks]
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(scene.names)]
    instances = {"images": [{"id": 1, "file_name": paths["image"].name, "width": width, "height": height}],
                 "categories": categories,
                 "annotations": [{"id": i + 1, "image_id": 1, "category_id": i + 1, "bbox": box, "iscrowd": 0,
                                  "area": int(scene.masks[i].sum())} for i, box in enumerate(boxes)]}
    paths["instances"].write_text(json.dumps(instances, indent=2))
    results = [{"image_id": 1, "category_id": i + 1, "bbox": box, "score": 0.95} for i, box in enumerate(boxes)]
    paths["detections"].write_text(json.dumps(results, indent=2))
    return paths


__all__ = ["DepthScene", "depth_scene", "plane_depth", "rays", "write_depth_demo"]
