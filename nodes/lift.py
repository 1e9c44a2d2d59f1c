"""Masks into 3D: `lift.depth` (depth + pinhole intrinsics + masks -> one coloured point cloud per mask),
`lift.write` (binary PLY files) and `mcc.export` (the inputs of MCC-style single-view reconstruction per object).

Intrinsics come from the optional `intrinsics` input or the `intrinsics` param ({fx, fy, cx, cy} or a JSON file);
when they state an image size other than the depth map's, they are scaled to it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from samflow.engine.context import ItemContext
from samflow.engine.node import Input, Node, NodeParams
from samflow.engine.registry import register
from samflow.engine.types import Image, Masks
from samflow.engine.types.geometry import Depth, Intrinsics, PointCloud
from samflow.errors import InputError
from samflow.ops import pointcloud
from samflow.ops.mcc import mcc_object, seen_xyz

log = logging.getLogger(__name__)


class CameraParams(NodeParams):
    intrinsics: dict[str, Any] | str | None = Field(
        None, description="pinhole camera {fx, fy, cx, cy[, width, height]} or a JSON file (or wire the input)")
    depth_scale: float | None = Field(None, gt=0, description="metres per stored depth unit; default: the file's "
                                                              "(0.001 for 16-bit PNG, 1 for .npy)")
    best_only: bool = Field(True, description="use the best-scoring mask of each prompt set")

    _check_intrinsics = field_validator("intrinsics")(Intrinsics.check_param)


class CameraNode(Node):
    """A node taking a camera from its `intrinsics` input or param (a param file is read once)."""

    Params = CameraParams

    def camera(self, wired: Intrinsics | None) -> Intrinsics:
        if wired is not None:
            return wired
        if self.params.intrinsics is None:
            raise InputError("no camera intrinsics: wire the intrinsics input or set the intrinsics param")
        if getattr(self, "_param_camera", None) is None:
            self._param_camera = Intrinsics.coerce(self.params.intrinsics)
        return self._param_camera


def _inputs(params: CameraParams, image: Image, depth: Depth, masks: Masks, camera: Intrinsics
            ) -> tuple[np.ndarray, np.ndarray, Intrinsics]:
    """(depth in metres (H, W), masks bool (N, K', H, W), intrinsics for this size), after checking sizes."""
    where_depth = f"depth map {depth.path}" if depth.path else "the depth map"
    where_image = f"the image {image.path}" if image.path else "the image"
    if depth.size != image.size:
        raise InputError(f"{where_depth} is {depth.size[1]}x{depth.size[0]} (WxH) but {where_image} is "
                         f"{image.size[1]}x{image.size[0]}: depth and image must be the same size (register and "
                         "resize the depth to the image first)")
    if masks.data.shape[2:] != depth.size:
        raise InputError(f"the masks are {masks.data.shape[3]}x{masks.data.shape[2]} (WxH) but {where_depth} is "
                         f"{depth.size[1]}x{depth.size[0]}")
    layers = masks.best()[:, None] if params.best_only else masks.data
    return depth.metres(params.depth_scale), layers, camera.for_size(*depth.size)


class LiftParams(CameraParams):
    min_depth_m: float = Field(0.0, ge=0, description="drop points nearer than this")
    max_depth_m: float | None = Field(None, gt=0, description="drop points farther than this")
    voxel_size_m: float = Field(0.0, ge=0, description="voxel downsampling edge (0: off)")
    outlier_neighbors: int = Field(0, ge=0, description="statistical outlier removal over this many neighbours "
                                                        "(0: off)")
    outlier_std: float = Field(2.0, gt=0, description="drop points whose mean neighbour distance exceeds the "
                                                      "cloud's mean by this many standard deviations")

    @model_validator(mode="after")
    def _range(self) -> LiftParams:
        if self.max_depth_m is not None and self.max_depth_m <= self.min_depth_m:
            raise ValueError(f"max_depth_m ({self.max_depth_m}) must exceed min_depth_m ({self.min_depth_m})")
        return self


@register("lift.depth")
class LiftDepth(CameraNode):
    """Lift each mask to a coloured 3D point cloud with a depth map and pinhole intrinsics (camera frame, metres)."""

    Params = LiftParams
    inputs = {"image": Input(Image, doc="colours of the points"), "depth": Input(Depth), "masks": Input(Masks),
              "intrinsics": Input(Intrinsics, optional=True)}
    outputs = {"clouds": PointCloud}

    def run(self, ctx: ItemContext, image: Image, depth: Depth, masks: Masks,
            intrinsics: Intrinsics | None = None) -> dict[str, PointCloud]:
        p = self.params
        z, layers, camera = _inputs(p, image, depth, masks, self.camera(intrinsics))
        if p.min_depth_m > 0 or p.max_depth_m is not None:
            far = np.inf if p.max_depth_m is None else p.max_depth_m
            z = np.where((z >= p.min_depth_m) & (z <= far), z, np.float32(np.nan))
        parts_points, parts_colors, parts_index = [], [], []
        flat = layers.reshape(-1, *layers.shape[2:])
        for n, mask in enumerate(flat):
            points, pixels = pointcloud.backproject(z, camera.fx, camera.fy, camera.cx, camera.cy, mask)
            colors = image.data[pixels[:, 0], pixels[:, 1]]
            if p.voxel_size_m > 0:
                points, colors = pointcloud.voxel_downsample(points, colors, p.voxel_size_m)
            if p.outlier_neighbors > 0:
                keep = pointcloud.statistical_outliers(points, p.outlier_neighbors, p.outlier_std)
                points, colors = points[keep], colors[keep]
            parts_points.append(points)
            parts_colors.append(colors)
            parts_index.append(np.full(points.shape[0], n, np.int32))
        names = getattr(masks, "names", None)
        if names is not None and layers.shape[1] > 1:
            names = [name for name in names for _ in range(layers.shape[1])]
        cloud = PointCloud(np.concatenate(parts_points) if parts_points else np.zeros((0, 3), np.float32),
                           np.concatenate(parts_colors) if parts_colors else np.zeros((0, 3), np.uint8),
                           np.concatenate(parts_index) if parts_index else np.zeros(0, np.int32),
                           count=flat.shape[0], names=names)
        return {"clouds": cloud}


class WritePlyParams(NodeParams):
    dir: str = Field("clouds", description="folder inside the item's output folder")
    name: str = Field("cloud", description="file prefix: NAME_<set>.ply and NAME.json")
    merged: bool = Field(False, description="also write NAME_all.ply with every mask's points")


@register("lift.write")
class WritePly(Node):
    """Write each mask's point cloud as a binary PLY file, with a JSON summary (count, centroid, bounds)."""

    Params = WritePlyParams
    inputs = {"clouds": Input(PointCloud)}
    outputs = {}

    def run(self, ctx: ItemContext, clouds: PointCloud) -> dict:
        from samflow.data.ply import write_ply

        folder = ctx.output_path(self.params.dir, who=self.type_id)
        folder.mkdir(exist_ok=True)
        clouds.save(folder, self.params.name)
        if self.params.merged:
            write_ply(folder / f"{self.params.name}_all.ply", clouds.points, clouds.colors)
        return {}


class MccParams(CameraParams):
    dir: str = Field("mcc", description="folder inside the item's output folder; one subfolder per object")
    padding: int = Field(40, ge=0, description="pixels added around each mask's box (MCC's demo uses 40)")


@register("mcc.export")
class MccExport(CameraNode):
    """Write per object what MCC-style single-view 3D reconstruction consumes: RGB crop, seen XYZ (unmasked points at
    infinity) and mask."""

    Params = MccParams
    inputs = {"image": Input(Image), "depth": Input(Depth), "masks": Input(Masks),
              "intrinsics": Input(Intrinsics, optional=True)}
    outputs = {}

    def run(self, ctx: ItemContext, image: Image, depth: Depth, masks: Masks,
            intrinsics: Intrinsics | None = None) -> dict:
        from PIL import Image as PILImage

        p = self.params
        z, layers, camera = _inputs(p, image, depth, masks, self.camera(intrinsics))
        xyz = seen_xyz(z, camera.fx, camera.fy, camera.cx, camera.cy)
        folder = ctx.output_path(p.dir, who=self.type_id)
        names = getattr(masks, "names", None)
        for n, mask in enumerate(layers.reshape(-1, *layers.shape[2:])):
            if not mask.any():
                log.info("mcc.export: mask %d of item %s is empty; skipped", n, ctx.item_id)
                continue
            obj = mcc_object(image.data, xyz, mask, p.padding)
            target = folder / f"{n:03d}"
            target.mkdir(parents=True, exist_ok=True)
            PILImage.fromarray(obj.rgb).save(target / "rgb.png")
            PILImage.fromarray(obj.mask.astype(np.uint8) * 255).save(target / "mask.png")
            np.save(target / "xyz.npy", obj.xyz)
            meta = {"set": n, "label": names[n] if names is not None and layers.shape[1] == 1 else None,
                    "crop_xyxy": list(obj.box), "seen_points": obj.seen, "units": "metres, camera frame "
                    "(x right, y down, z forward); inf = not seen", "intrinsics": camera.to_record()}
            (target / "meta.json").write_text(json.dumps(meta, indent=2))
        return {}
