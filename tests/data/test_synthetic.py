"""Synthetic scenes: determinism, coverage of shapes and colours, visible-only masks, part/whole, writing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from samflow.data import COLORS, SHAPES, SA1BDataset, render_scene, scene_rng, write_dataset
from samflow.data.synthetic import Scene
from samflow.errors import InputError
from samflow.ops import rle

N_SCENES = 200


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [render_scene(scene_rng(7, i)) for i in range(N_SCENES)]


def test_same_seed_same_scene() -> None:
    a, b = render_scene(scene_rng(3, 5)), render_scene(scene_rng(3, 5))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.annotations == b.annotations
    c = render_scene(scene_rng(3, 6))
    assert not np.array_equal(a.image, c.image)
    # An int seed and a generator seeded alike agree.
    np.testing.assert_array_equal(render_scene(11).image, render_scene(np.random.default_rng(11)).image)


def test_scene_contract(scenes: list[Scene]) -> None:
    for s in scenes:
        assert s.image.dtype == np.uint8 and s.image.shape == (256, 256, 3)
        assert s.masks.dtype == np.bool_ and s.masks.shape == (len(s.annotations), 256, 256)
        assert [a["id"] for a in s.annotations] == list(range(1, len(s.annotations) + 1))
        for a, m in zip(s.annotations, s.masks, strict=True):
            assert a["area"] == int(m.sum()) >= 30
            assert a["bbox"] == list(rle.bbox(rle.encode(m)))
            x, y = (int(v) for v in a["point"])
            assert m[y, x], "the point must lie inside its mask"
            assert a["shape"] in SHAPES
            assert a["color"] in COLORS


def test_every_shape_and_colour_appears(scenes: list[Scene]) -> None:
    shapes = Counter(a["shape"] for s in scenes for a in s.annotations if a["part_of"] is None)
    colours = Counter(a["color"] for s in scenes for a in s.annotations)
    assert set(shapes) >= set(SHAPES), shapes
    assert set(colours) == set(COLORS), colours
    counts = [len(s.annotations) for s in scenes]
    assert min(counts) >= 1 and max(counts) >= 8


def test_colours_stay_near_their_names(scenes: list[Scene]) -> None:
    # The median pixel of a shape (without its inner part) is nearer its named colour than any other name.
    names = list(COLORS)
    anchors = np.array([COLORS[n] for n in names], dtype=np.float32)
    for s in scenes[:50]:
        for i, a in enumerate(s.annotations):
            own = s.masks[i].copy()
            for j, b in enumerate(s.annotations):
                if b["part_of"] == a["id"]:
                    own &= ~s.masks[j]
            median = np.median(s.image[own].astype(np.float32), axis=0)
            nearest = names[int(np.argmin(((anchors - median) ** 2).sum(axis=1)))]
            assert nearest == a["color"], (a, median)
            assert np.abs(median - anchors[names.index(a["color"])]).max() <= 20


def test_visible_masks_are_disjoint_except_part_in_whole(scenes: list[Scene]) -> None:
    n_parts = 0
    for s in scenes:
        by_id = {a["id"]: i for i, a in enumerate(s.annotations)}
        wholes = [i for i, a in enumerate(s.annotations) if a["part_of"] is None]
        parts = [i for i, a in enumerate(s.annotations) if a["part_of"] is not None]
        n_parts += len(parts)
        # Top-level masks never overlap: each pixel shows one shape.
        cover = s.masks[wholes].sum(axis=0)
        assert cover.max(initial=0) <= 1
        assert s.masks[parts].sum(axis=0).max(initial=0) <= 1
        for i in parts:
            parent = by_id[s.annotations[i]["part_of"]]
            assert s.annotations[parent]["part_of"] is None
            part, whole = s.masks[i], s.masks[parent]
            assert not (part & ~whole).any(), "a part lies inside its whole"
            assert (whole & ~part).sum() >= 30, "the whole is more than its part"
            assert s.annotations[i]["color"] != s.annotations[parent]["color"]
    assert n_parts >= 20


def test_non_square_and_bad_sizes() -> None:
    s = render_scene(0, size=(120, 200))
    assert s.image.shape == (120, 200, 3) and s.masks.shape[1:] == (120, 200)
    with pytest.raises(InputError):
        render_scene(0, size=8)
    with pytest.raises(InputError):
        render_scene(0, size=(1, 2, 3))
    with pytest.raises(InputError):
        scene_rng(-1, 0)


def test_write_dataset_reads_back(tmp_path: Path) -> None:
    stats = write_dataset(tmp_path, 3, seed=5, size=(96, 128), progress=False)
    assert (stats.written, stats.skipped) == (3, 0)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"sa_00000{i}.{ext}" for i in (1, 2, 3) for ext in ("json", "png")]
    record = json.loads((tmp_path / "sa_000002.json").read_text())
    assert record["image"] == {"image_id": 2, "width": 128, "height": 96, "file_name": "sa_000002.png"}
    scene = render_scene(scene_rng(5, 2), (96, 128))
    ann = record["annotations"][0]
    assert set(ann) >= {"id", "segmentation", "bbox", "area", "predicted_iou", "stability_score", "crop_box"}
    assert ann["crop_box"] == [0, 0, 128, 96] and ann["point_coords"] == [scene.annotations[0]["point"]]
    sample = SA1BDataset(tmp_path)[1]
    np.testing.assert_array_equal(sample.image, scene.image)  # PNG is lossless
    np.testing.assert_array_equal(sample.masks, scene.masks)
    assert [a["part_of"] for a in sample.annotations] == [a["part_of"] for a in scene.annotations]
    # Resuming skips finished scenes and completes missing ones.
    (tmp_path / "sa_000003.json").unlink()
    again = write_dataset(tmp_path, 4, seed=5, size=(96, 128), progress=False)
    assert (again.written, again.skipped) == (2, 2)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_scene_depends_only_on_seed_and_index(tmp_path: Path) -> None:
    write_dataset(tmp_path / "a", 1, seed=9, size=64, progress=False, start=4)
    write_dataset(tmp_path / "b", 4, seed=9, size=64, progress=False)
    write_dataset(tmp_path / "c", 4, seed=9, size=64, progress=False, workers=2)
    for name in ("sa_000004.png", "sa_000004.json"):
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()
    assert len(list((tmp_path / "c").iterdir())) == 8


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from samflow.cli import main

    out = tmp_path / "synth"
    assert main(["synth", "--n", "3", "--out", str(out), "--seed", "1", "--size", "64", "--no-progress"]) == 0
    assert len(list(out.glob("sa_*.png"))) == 3 and len(list(out.glob("sa_*.json"))) == 3
    assert "wrote 3 scenes" in capsys.readouterr().out
    assert main(["synth", "--n", "2", "--out", str(tmp_path / "r"), "--size", "48x80", "--no-progress"]) == 0
    assert SA1BDataset(tmp_path / "r")[0].image.shape == (48, 80, 3)
    assert main(["synth", "--n", "1", "--out", str(out), "--size", "8", "--no-progress"]) == 2
