"""SA-1B and COCO readers: masks equal pycocotools' (RLE exactly, polygons to IoU > 0.97), errors name files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from samflow.data import CocoDataset, SA1BDataset, Sample, rasterize_polygons, write_dataset
from samflow.errors import SamflowError
from samflow.ops import rle

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

mask_utils = pytest.importorskip("pycocotools.mask")

H, W = 90, 120


def _polygon(cx: float, cy: float, radii: list[float], phase: float = 0.0) -> list[float]:
    t = phase + np.arange(len(radii)) * 2 * np.pi / len(radii)
    return np.stack([cx + np.array(radii) * np.cos(t), cy + np.array(radii) * np.sin(t)], 1).ravel().tolist()


POLYGONS: dict[str, list[list[float]]] = {
    "triangle": [_polygon(40.3, 30.7, [25, 25, 25], 0.3)],
    "star": [_polygon(70.0, 50.0, [30, 12] * 5, -np.pi / 2)],
    "square": [[10.0, 10.0, 50.0, 10.0, 50.0, 50.0, 10.0, 50.0]],
    "blob": [_polygon(60.2, 44.9, [30, 22, 35, 18, 28, 33, 25, 20, 31], 0.1)],
    "two_parts": [_polygon(25, 70, [15, 15, 15, 15, 15, 15]), _polygon(95, 20, [14, 10, 14, 10])],
    "off_edge": [_polygon(110, 80, [30, 24, 30, 24, 30], 0.5)],
}


def _pycoco_mask(seg: Any, h: int = H, w: int = W) -> np.ndarray:
    if isinstance(seg, list):
        rles = mask_utils.frPyObjects(seg, h, w)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    if isinstance(seg["counts"], list):
        seg = mask_utils.frPyObjects(seg, h, w)
    return mask_utils.decode(seg).astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("name", list(POLYGONS))
def test_polygon_rasteriser_agrees_with_pycocotools(name: str) -> None:
    ours = rasterize_polygons(POLYGONS[name], H, W)
    ref = _pycoco_mask(POLYGONS[name])
    assert ours.shape == (H, W) and ours.dtype == np.bool_
    assert _iou(ours, ref) > 0.97, name


def test_polygon_rasteriser_on_random_polygons() -> None:
    rng = np.random.default_rng(0)
    ious = []
    for _ in range(60):
        k = int(rng.integers(3, 12))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radii = rng.uniform(10, 40, k)
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        poly = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).ravel().tolist()
        ref = _pycoco_mask([poly])
        if ref.sum() >= 100:
            ious.append(_iou(rasterize_polygons([poly], H, W), ref))
    assert len(ious) >= 30 and min(ious) > 0.95 and np.mean(ious) > 0.985


def test_degenerate_polygons_cover_nothing() -> None:
    assert not rasterize_polygons([[1.0, 1.0, 5.0, 5.0]], H, W).any()
    assert not rasterize_polygons([[200.0, 200.0, 300.0, 200.0, 250.0, 260.0]], H, W).any()
    with pytest.raises(SamflowError):
        rasterize_polygons([[1.0, 2.0, 3.0]], H, W)


def _write_coco(root: Path, mode: str = "RGB") -> tuple[Path, dict[int, np.ndarray]]:
    """Two annotated images and one without annotations; returns the JSON path and expected masks by ann id."""
    images_dir = root / "images"
    images_dir.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg", "empty.png"):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).convert(mode).save(images_dir / name)
    crowd = np.zeros((H, W), dtype=bool)
    crowd[20:60, 30:100] = True
    crowd[0, 0] = True
    compressed = mask_utils.encode(np.asfortranarray(crowd[:, ::-1, None].astype(np.uint8)))[0]
    compressed["counts"] = compressed["counts"].decode()
    uncompressed = rle.to_uncompressed(crowd)
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": POLYGONS["star"]},
        {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 0, "segmentation": POLYGONS["two_parts"]},
        {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": uncompressed},
        {"id": 4, "image_id": 2, "category_id": 2, "iscrowd": 1, "segmentation": compressed},
        {"id": 5, "image_id": 2, "category_id": 1, "iscrowd": 0, "segmentation": POLYGONS["off_edge"]},
    ]
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": H, "width": W},
            {"id": 3, "file_name": "empty.png", "height": H, "width": W},
            {"id": 2, "file_name": "b.jpg", "height": H, "width": W},
        ],
        "annotations": anns,
        "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "stuff"}],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return path, {a["id"]: _pycoco_mask(a["segmentation"]) for a in anns}


def test_coco_dataset_reads_polygons_and_rles(tmp_path: Path) -> None:
    path, expected = _write_coco(tmp_path)
    ds = CocoDataset(path, tmp_path / "images")
    assert len(ds) == 3 and ds.categories == {1: "thing", 2: "stuff"}
    first, empty, second = ds[0], ds[1], ds[-1]
    assert isinstance(first, Sample) and first.file_name == "a.png"
    assert first.image.shape == (H, W, 3) and first.image.dtype == np.uint8
    assert first.masks.shape == (3, H, W) and first.masks.dtype == np.bool_
    assert [a["id"] for a in first.annotations] == [1, 2, 3]
    for sample in (first, second):
        for ann, mask in zip(sample.annotations, sample.masks, strict=True):
            ref = expected[ann["id"]]
            if isinstance(ann["segmentation"], dict):
                np.testing.assert_array_equal(mask, ref)  # RLE: exact
            else:
                assert _iou(mask, ref) > 0.97
    assert empty.masks.shape == (0, H, W)
    assert [s.file_name for s in ds] == ["a.png", "empty.png", "b.jpg"]
    assert len(CocoDataset(path, tmp_path / "images", skip_empty=True)) == 2


def test_coco_grayscale_image_becomes_rgb(tmp_path: Path) -> None:
    path, _ = _write_coco(tmp_path, mode="L")
    assert CocoDataset(path, tmp_path / "images")[0].image.shape == (H, W, 3)


def test_coco_errors_name_the_file(tmp_path: Path) -> None:
    path, _ = _write_coco(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SamflowError, match="bad.json"):
        CocoDataset(bad, tmp_path / "images")
    bad.write_text(json.dumps({"annotations": []}))
    with pytest.raises(SamflowError, match="images"):
        CocoDataset(bad, tmp_path / "images")
    (tmp_path / "images" / "b.jpg").unlink()
    ds = CocoDataset(path, tmp_path / "images")
    with pytest.raises(SamflowError, match="b.jpg"):
        ds[2]
    with pytest.raises(IndexError):
        ds[3]
    data = json.loads(path.read_text())
    data["images"][0]["height"] = H + 1
    data["annotations"][0]["segmentation"] = {"size": [H, W], "counts": "!!"}
    path.write_text(json.dumps(data))
    with pytest.raises(SamflowError, match="says"):
        CocoDataset(path, tmp_path / "images")[0]
    data["images"][0]["height"] = H
    path.write_text(json.dumps(data))
    with pytest.raises(SamflowError, match=r"instances.json: annotation 1: malformed RLE"):
        CocoDataset(path, tmp_path / "images")[0]
    data["annotations"][0]["segmentation"] = 42
    path.write_text(json.dumps(data))
    with pytest.raises(SamflowError, match="unknown segmentation"):
        CocoDataset(path, tmp_path / "images")[0]


def test_sa1b_round_trip(tmp_path: Path) -> None:
    write_dataset(tmp_path, 2, seed=3, size=64, progress=False)
    ds = SA1BDataset(tmp_path)
    assert len(ds) == 2
    for sample, js in zip(ds, sorted(tmp_path.glob("*.json")), strict=True):
        record = json.loads(js.read_text())
        segs = [a["segmentation"] for a in record["annotations"]]
        np.testing.assert_array_equal(sample.masks, _pycoco_mask_stack(segs))
        assert sample.file_name == js.with_suffix(".png").name
        assert sample.annotations == record["annotations"]


def _pycoco_mask_stack(segs: list[dict]) -> np.ndarray:
    ref = [dict(s, counts=s["counts"].encode()) for s in segs]
    return mask_utils.decode(ref).transpose(2, 0, 1).astype(bool)


def test_sa1b_jpg_and_file_name_fallback(tmp_path: Path) -> None:
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:9, 3:20] = True
    record = {
        "image": {"file_name": "photo.jpeg"},
        "annotations": [{"id": 1, "segmentation": rle.encode(mask)}],
    }
    (tmp_path / "sa_1.json").write_text(json.dumps(record))
    Image.new("RGB", (30, 20)).save(tmp_path / "photo.jpeg")
    (tmp_path / "sa_2.json").write_text(json.dumps({"annotations": []}))
    Image.new("RGB", (30, 20)).save(tmp_path / "sa_2.jpg")
    ds = SA1BDataset(tmp_path)
    np.testing.assert_array_equal(ds[0].masks[0], mask)
    assert ds[0].file_name == "photo.jpeg"
    assert ds[1].masks.shape == (0, 20, 30) and ds[1].file_name == "sa_2.jpg"
    assert len(ds[0:2]) == 2


def test_sa1b_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SamflowError, match="not a folder"):
        SA1BDataset(tmp_path / "missing")
    (tmp_path / "sa_1.json").write_text("{broken")
    Image.new("RGB", (8, 8)).save(tmp_path / "sa_1.png")
    (tmp_path / "sa_2.json").write_text(json.dumps({"annotations": []}))
    (tmp_path / "sa_3.json").write_text(
        json.dumps({"annotations": [{"segmentation": rle.encode(np.ones((4, 4)))}]})
    )
    Image.new("RGB", (8, 8)).save(tmp_path / "sa_3.png")
    (tmp_path / ".sa_4.json.123.tmp").write_text("half")
    ds = SA1BDataset(tmp_path)
    assert len(ds) == 3
    with pytest.raises(SamflowError, match="sa_1.json: not valid JSON"):
        ds[0]
    with pytest.raises(SamflowError, match="sa_2.json: no image"):
        ds[1]
    with pytest.raises(SamflowError, match="sa_3.json: annotation 0: mask size"):
        ds[2]
    with pytest.raises(IndexError):
        ds[3]
