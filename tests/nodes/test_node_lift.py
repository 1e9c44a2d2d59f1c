"""3D lifting: depth readers, intrinsics, a known plane lifted from a known mask, the PLY writer (parsed back by a
reader written here), voxel downsampling and outlier removal, the MCC export, and bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from composition_testing import read_ply
from PIL import Image as PILImage

from samflow.data.ply import write_ply
from samflow.data.synthetic_depth import depth_scene, plane_depth, rays
from samflow.engine.graph import Graph
from samflow.engine.types import Image, Masks
from samflow.engine.types.geometry import Depth, Intrinsics, PointCloud
from samflow.errors import GraphError, InputError
from samflow.ops import pointcloud
from samflow.ops.depth import write_depth_png

FX, FY, CX, CY = 120.0, 110.0, 31.5, 23.5
NORMAL = np.array([0.2, -0.1, -1.0]) / np.linalg.norm([0.2, -0.1, -1.0])
POINT = np.array([0.0, 0.0, 2.0])


def plane(height=48, width=64):
    z = plane_depth(rays(height, width, FX, FY, CX, CY), NORMAL, POINT).astype(np.float32)
    z[0, :5] = 0  # a few invalid readings
    z[1, :3] = np.nan
    return z


@pytest.fixture
def camera_file(tmp_path):
    path = tmp_path / "camera.json"
    path.write_text(json.dumps({"fx": FX, "fy": FY, "cx": CX, "cy": CY}))
    return path


def test_plane_lifts_onto_the_plane_and_the_ply_parses_back(tmp_path, ctx):
    from samflow.nodes.lift import LiftDepth, WritePly

    z = plane()
    mask = np.zeros(z.shape, bool)
    mask[:20, :30] = True
    rgb = np.random.default_rng(0).integers(0, 255, (*z.shape, 3), dtype=np.uint8)
    masks = Masks(np.stack([mask, ~mask])[:, None])
    clouds = LiftDepth({"intrinsics": {"fx": FX, "fy": FY, "cx": CX, "cy": CY}}).run(
        ctx, image=Image(rgb), depth=Depth(z), masks=masks)["clouds"]
    points, colors = clouds.part(0)
    valid = np.isfinite(z) & (z > 0)
    assert points.shape[0] == (mask & valid).sum() == 20 * 30 - 8 and clouds.count == 2
    assert np.abs(points @ NORMAL - POINT @ NORMAL).max() < 1e-5  # on the plane
    v, u = np.nonzero(mask & valid)  # row-major, as the points come
    assert np.allclose(points[:, 0], (u - CX) * z[v, u] / FX, atol=1e-6) and np.array_equal(colors, rgb[v, u])
    assert len(clouds) == valid.sum()

    WritePly({"dir": "clouds", "merged": True}).run(ctx, clouds=clouds)
    back_points, back_colors = read_ply(tmp_path / "clouds" / "cloud_0.ply")
    assert np.array_equal(back_points, points) and np.array_equal(back_colors, colors)
    merged, _ = read_ply(tmp_path / "clouds" / "cloud_all.ply")
    assert merged.shape == (len(clouds), 3)
    summary = json.loads((tmp_path / "clouds" / "cloud.json").read_text())
    assert summary[0]["points"] == points.shape[0] and summary[1]["file"] == "cloud_1.ply"


def test_empty_cloud_writes_a_valid_ply(tmp_path):
    path = write_ply(tmp_path / "empty.ply", np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    points, colors = read_ply(path)
    assert points.shape == (0, 3) and colors.shape == (0, 3)
    with pytest.raises(InputError, match="colours of shape"):
        write_ply(tmp_path / "bad.ply", np.zeros((2, 3)), np.zeros((3, 3), np.uint8))


def test_depth_files_in_millimetres_and_metres(tmp_path):
    metres = np.array([[0.5, 1.234], [0.0, 3.0]], np.float32)
    write_depth_png(tmp_path / "d.png", metres)
    stored = np.asarray(PILImage.open(tmp_path / "d.png"))
    assert stored.dtype == np.uint16 and stored.tolist() == [[500, 1234], [0, 3000]]
    depth = Depth.load(tmp_path / "d.png")
    got = depth.metres()
    assert depth.scale == 0.001 and np.allclose(got[[0, 0, 1], [0, 1, 1]], [0.5, 1.234, 3.0]) and np.isnan(got[1, 0])
    assert np.allclose(Depth.load(tmp_path / "d.png", scale=0.0001).metres()[0, 0], 0.05)
    np.save(tmp_path / "d.npy", metres)
    assert Depth.coerce(str(tmp_path / "d.npy")).scale == 1.0
    assert np.allclose(Depth.load(tmp_path / "d.npy").metres()[0], [0.5, 1.234])


@pytest.mark.parametrize("make, needle", [
    (lambda p: PILImage.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p / "d.png"), "must be 16-bit single-channel"),
    (lambda p: (p / "d.png").write_bytes(b"not a png"), "cannot read as an image"),
    (lambda p: np.save(p / "d.npy", np.zeros((2, 3, 4))), "expected an (H, W) array"),
    (lambda p: (p / "d.exr").write_bytes(b"x"), "unsupported format .exr"),
])
def test_bad_depth_files_name_the_file(tmp_path, make, needle):
    make(tmp_path)
    path = next(tmp_path.glob("d.*"))
    with pytest.raises(InputError) as info:
        Depth.load(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_intrinsics_files_and_their_errors(tmp_path, camera_file):
    camera = Intrinsics.coerce(camera_file)
    assert camera.matrix[0, 0] == FX and camera.for_size(48, 64) is camera
    bad = tmp_path / "bad_camera.json"
    bad.write_text(json.dumps({"fx": 0, "fy": 100, "cx": 32, "cy": 24}))
    with pytest.raises(InputError) as info:
        Intrinsics.load(bad)
    assert str(info.value) == f"intrinsics ({bad}): fx must be > 0 (a focal length in pixels), got 0"
    bad.write_text(json.dumps({"fx": 10, "cx": 32}))
    with pytest.raises(InputError, match=r"missing fy, cy"):
        Intrinsics.load(bad)
    bad.write_text(json.dumps({"K": [[100, 0, 32], [0, 90, 24], [0, 0, 1]], "width": 64, "height": 48}))
    scaled = Intrinsics.load(bad).for_size(96, 128)
    assert (scaled.fx, scaled.fy, scaled.cx, scaled.cy) == (200, 180, 64.5, 48.5)


def test_depth_of_another_size_than_the_image_is_refused(tmp_path, ctx, camera_file):
    from samflow.nodes.lift import LiftDepth

    np.save(tmp_path / "depth.npy", np.ones((40, 64), np.float32))
    image = Image.load(_png(tmp_path / "rgb.png", (48, 64)))
    with pytest.raises(InputError) as info:
        LiftDepth().run(ctx, image=image, depth=Depth.load(tmp_path / "depth.npy"),
                        masks=Masks(np.ones((1, 1, 48, 64), bool)), intrinsics=Intrinsics.load(camera_file))
    message = str(info.value)
    assert f"depth map {tmp_path / 'depth.npy'} is 64x40" in message and f"{tmp_path / 'rgb.png'} is 64x48" in message
    with pytest.raises(GraphError, match="node 'lift'.*fx must be > 0"):
        Graph().add("lift.depth", "lift", params={"intrinsics": {"fx": 0, "fy": 1, "cx": 0, "cy": 0}},
                    image="$inputs.a", depth="$inputs.b", masks="$inputs.c")


def _png(path, size):
    PILImage.fromarray(np.full((*size, 3), 128, np.uint8)).save(path)
    return path


def test_voxel_downsampling_and_outlier_removal():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 0.1, (2000, 3)).astype(np.float32)
    colors = np.full((2000, 3), 100, np.uint8)
    down, down_colors = pointcloud.voxel_downsample(points, colors, 0.02)
    assert down.shape[0] <= 6**3 and down.shape[0] > 50 and (down_colors == 100).all()
    assert np.allclose(down.mean(0), 0.05, atol=0.01)
    cloud = np.concatenate([points, [[1.0, 1.0, 1.0], [-1.0, 0.5, 2.0]]]).astype(np.float32)
    keep = pointcloud.statistical_outliers(cloud, neighbors=8, std_ratio=2.0)
    assert not keep[-2:].any() and keep[:-2].mean() > 0.97
    with pytest.raises(InputError):
        pointcloud.voxel_downsample(points, colors, 0)


def test_lift_node_options_on_the_synthetic_scene(ctx):
    from samflow.nodes.lift import LiftDepth

    scene = depth_scene(96, 128)
    masks = Masks(scene.masks[:, None])
    k = scene.intrinsics
    full = LiftDepth({"intrinsics": k}).run(ctx, image=Image(scene.image), depth=Depth(scene.depth),
                                            masks=masks)["clouds"]
    card, _ = full.part(0)
    assert np.allclose(card[:, 2], 1.4, atol=1e-5)  # the card is parallel to the image at 1.4 m
    ball, _ = full.part(1)
    assert np.allclose(np.linalg.norm(ball - [0.35, 0.05, 2.0], axis=1), 0.3, atol=1e-3)  # on the sphere
    thin = LiftDepth({"intrinsics": k, "voxel_size_m": 0.05, "max_depth_m": 1.5, "outlier_neighbors": 4}).run(
        ctx, image=Image(scene.image), depth=Depth(scene.depth), masks=masks)["clouds"]
    assert 0 < thin.part(0)[0].shape[0] < card.shape[0] and thin.part(1)[0].shape[0] == 0  # the ball is at 1.7+ m


def test_mcc_export_writes_crops_with_unseen_points_at_infinity(tmp_path, ctx):
    from samflow.nodes.lift import MccExport

    scene = depth_scene(96, 128)
    MccExport({"intrinsics": scene.intrinsics, "padding": 4}).run(
        ctx, image=Image(scene.image), depth=Depth(scene.depth), masks=Masks(scene.masks[:, None]))
    folder = tmp_path / "mcc" / "001"
    xyz = np.load(folder / "xyz.npy")
    mask = np.asarray(PILImage.open(folder / "mask.png")) > 0
    meta = json.loads((folder / "meta.json").read_text())
    x0, y0, x1, y1 = meta["crop_xyxy"]
    assert xyz.shape == (y1 - y0, x1 - x0, 3) == (*mask.shape, 3)
    assert np.isinf(xyz[~mask]).all() and np.isfinite(xyz[mask]).all() and meta["seen_points"] == mask.sum()
    assert np.asarray(PILImage.open(folder / "rgb.png")).shape == (*mask.shape, 3)
    assert (x0, y0) == (max(np.flatnonzero(scene.masks[1].any(0))[0] - 4, 0),
                        max(np.flatnonzero(scene.masks[1].any(1))[0] - 4, 0))


def test_point_cloud_payload_checks():
    with pytest.raises(InputError, match="index must lie in 0..0"):
        PointCloud(np.zeros((1, 3)), np.zeros((1, 3)), np.array([1]), count=1)
    with pytest.raises(InputError, match="2 points, 1 colours"):
        PointCloud(np.zeros((2, 3)), np.zeros((1, 3)), np.zeros(2), count=1)
