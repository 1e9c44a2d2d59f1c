"""The evaluation-only hard scene style: determinism per (seed, i), exact visible masks, occlusion, its dataset spec."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from samflow.data import COLORS, SHAPES, SA1BDataset, render_scene, scene_rng
from samflow.data.synthetic import Scene
from samflow.data.synthetic_hard import MIN_AREA, hard_scene_rng, render_hard_scene, write_hard_dataset
from samflow.errors import InputError
from samflow.evaluation.datasets import SyntheticScenes, load_dataset, parse_synthetic
from samflow.ops import rle

N_SCENES = 60
NAMES = list(COLORS)
ANCHORS = np.array([COLORS[n] for n in NAMES], dtype=np.float32)


def _nearest_colour(pixels: np.ndarray) -> np.ndarray:
    """Index into NAMES of the named colour nearest each (..., 3) pixel."""
    d = ((pixels.astype(np.float32)[..., None, :] - ANCHORS) ** 2).sum(axis=-1)
    return d.argmin(axis=-1)


def _minor_over_major(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask)
    low, high = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(np.float64)))
    return float(np.sqrt(max(low, 0.0) / high))


@pytest.fixture(scope="module")
def clean() -> list[Scene]:
    return [render_hard_scene(hard_scene_rng(2000, i), degrade=False) for i in range(N_SCENES)]


@pytest.fixture(scope="module")
def degraded() -> list[Scene]:
    return [render_hard_scene(hard_scene_rng(2000, i)) for i in range(N_SCENES)]


def test_scene_depends_only_on_seed_and_index() -> None:
    a = render_hard_scene(hard_scene_rng(3, 5))
    b = render_hard_scene(hard_scene_rng(3, 5))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.annotations == b.annotations
    assert not np.array_equal(a.image, render_hard_scene(hard_scene_rng(3, 6)).image)
    assert not np.array_equal(a.image, render_hard_scene(hard_scene_rng(4, 5)).image)
    # Another random stream than the plain style's scene (3, 5).
    assert not np.array_equal(a.masks[:1], render_scene(scene_rng(3, 5)).masks[:1])
    # Through the dataset: scene i of SEED, whatever else is read and in which order.
    scenes = SyntheticScenes(3, 6, style="hard")
    later, first = scenes[4], scenes[0]
    np.testing.assert_array_equal(later.image, a.image)
    np.testing.assert_array_equal(first.masks, render_hard_scene(hard_scene_rng(3, 1)).masks)
    with pytest.raises(InputError):
        hard_scene_rng(-1, 0)


def test_scene_contract(degraded: list[Scene]) -> None:
    for s in degraded:
        assert s.image.dtype == np.uint8 and s.image.shape == (256, 256, 3)
        assert s.masks.dtype == np.bool_ and s.masks.shape == (len(s.annotations), 256, 256)
        assert [a["id"] for a in s.annotations] == list(range(1, len(s.annotations) + 1))
        assert s.masks.sum(axis=0).max(initial=0) <= 1, "visible regions never overlap"
        for a, m in zip(s.annotations, s.masks, strict=True):
            assert set(a) >= {"id", "shape", "color", "bbox", "area", "point", "part_of"}
            assert a["area"] == int(m.sum()) >= MIN_AREA
            assert a["area"] <= a["full_area"]
            assert a["bbox"] == list(rle.bbox(rle.encode(m)))
            x, y = (int(v) for v in a["point"])
            assert m[y, x], "the point lies inside its mask"
            assert a["shape"] in SHAPES and a["color"] in COLORS and a["part_of"] is None
        assert len({a["color"] for a in s.annotations}) == len(s.annotations)


def test_masks_are_exact_before_degradation(clean: list[Scene], degraded: list[Scene]) -> None:
    for c, d in zip(clean, degraded, strict=True):
        # Degradation changes only the pixels.
        np.testing.assert_array_equal(c.masks, d.masks)
        assert c.annotations == d.annotations
        assert not np.array_equal(c.image, d.image)
        # Every pixel of a visible region has its object's colour (jitter and shading keep the name), so the mask
        # is the region the image shows; pixels around the region show something else.
        for a, m in zip(c.annotations, c.masks, strict=True):
            inside = _nearest_colour(c.image[m])
            assert (inside == NAMES.index(a["color"])).all(), a
            ring = np.zeros_like(m)
            ys, xs = np.nonzero(m)
            ring[np.clip(ys - 1, 0, 255), xs] = ring[np.clip(ys + 1, 0, 255), xs] = True
            ring[ys, np.clip(xs - 1, 0, 255)] = ring[ys, np.clip(xs + 1, 0, 255)] = True
            ring &= ~m
            if ring.any():
                close = np.abs(c.image[ring].astype(np.float32) - ANCHORS[NAMES.index(a["color"])]).max(axis=1)
                assert (close > 20).all(), "a pixel beside the mask looks like the object: the mask is too small"


def test_colours_survive_jpeg(degraded: list[Scene]) -> None:
    for s in degraded:
        for a, m in zip(s.annotations, s.masks, strict=True):
            if a["area"] >= 200:  # what the text task captions
                median = np.median(s.image[m].astype(np.float32), axis=0)
                assert NAMES[int(_nearest_colour(median))] == a["color"], (a, median)


def test_occlusion_sizes_and_coverage(clean: list[Scene]) -> None:
    anns = [a for s in clean for a in s.annotations]
    visible = np.array([a["area"] / a["full_area"] for a in anns])
    assert np.mean(visible < 0.95) >= 0.25, "many objects are partly hidden"
    assert np.mean(visible < 0.6) >= 0.05, "some are mostly hidden"
    areas = np.array([a["area"] for a in anns])
    assert np.mean(areas < 32**2) >= 0.4 and (areas < 100).sum() >= 10, "small objects"
    # Thin bars and elongated ellipses: the minor axis of the pixels' spread under a quarter of the major one.
    elongation = [_minor_over_major(m) for s in clean for a, m in zip(s.annotations, s.masks, strict=True)
                  if a["shape"] in ("rectangle", "ellipse") and a["area"] == a["full_area"]]
    assert sum(e < 0.25 for e in elongation) >= 5, sorted(elongation)[:10]
    assert set(Counter(a["shape"] for a in anns)) == set(SHAPES)
    assert set(Counter(a["color"] for a in anns)) == set(COLORS)


def test_non_square_and_bad_sizes() -> None:
    s = render_hard_scene(0, size=(120, 200))
    assert s.image.shape == (120, 200, 3) and s.masks.shape[1:] == (120, 200)
    with pytest.raises(InputError):
        render_hard_scene(0, size=8)


def test_dataset_spec() -> None:
    name, scenes = load_dataset("synthetic-hard:3000:4:96")
    assert name == "synthetic-hard:3000:4:96" and len(scenes) == 4
    sample = scenes[1]
    assert sample.image.shape == (96, 96, 3) and sample.file_name == "sa_000002.png"
    np.testing.assert_array_equal(sample.masks, render_hard_scene(hard_scene_rng(3000, 2), 96).masks)
    assert parse_synthetic("synthetic-hard:1:2").size == 256
    # The plain style is unchanged.
    plain = load_dataset("synthetic:5:1:64")[1][0]
    np.testing.assert_array_equal(plain.image, render_scene(scene_rng(5, 1), 64).image)


@pytest.mark.parametrize("spec, says", [
    ("synthetic-hard:1", "expected synthetic-hard:SEED:N[:SIZE]"),
    ("synthetic-hard:a:2", "expected synthetic-hard:SEED:N[:SIZE]"),
    ("synthetic-hard:1:2:64:9", "expected synthetic-hard:SEED:N[:SIZE]"),
    ("synthetic-hard:1:0", "SEED >= 0 and N >= 1"),
    ("synthetic-hard:-1:3", "SEED >= 0 and N >= 1"),
    ("synthetic-hard:1:3:16", "32 <= SIZE <= 4096"), ("synthetic-hard:1:3:99999", "32 <= SIZE <= 4096"),
    ("synthetic-harder:1:3", "synthetic-hard:SEED:N"),
])
def test_bad_specs(spec: str, says: str) -> None:
    with pytest.raises(InputError, match=re.escape(says)):
        load_dataset(spec)


def test_ground_truth_of_hard_scenes() -> None:
    from samflow.evaluation.ground_truth import SHAPE_CATEGORIES, ground_truth

    truth = ground_truth("synthetic-hard:3000:2:96")
    items = list(truth.images())
    assert len(items) == 2 and truth.image_ids == [1, 2]
    scene = render_hard_scene(hard_scene_rng(3000, 1), 96)
    assert len(items[0].annotations) == len(scene.annotations)
    names = {c["id"]: c["name"] for c in SHAPE_CATEGORIES}
    assert [names[a["category_id"]] for a in items[0].annotations] == [a["shape"] for a in scene.annotations]


def test_text_task_captions_hard_scenes() -> None:
    from samflow.evaluation.text import captioned_objects

    sample = load_dataset("synthetic-hard:3000:3")[1][2]
    objects = captioned_objects(sample)
    assert objects and all(text == f"a {sample.annotations[i]['color']} {sample.annotations[i]['shape']}"
                           for i, text in objects)


def test_write_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from samflow.cli import main

    stats = write_hard_dataset(tmp_path / "w", 2, seed=4, size=(64, 80), progress=False, start=3)
    assert (stats.written, stats.skipped) == (2, 0)
    record = json.loads((tmp_path / "w" / "sa_000004.json").read_text())
    scene = render_hard_scene(hard_scene_rng(4, 4), (64, 80))
    assert [a["full_area"] for a in record["annotations"]] == [a["full_area"] for a in scene.annotations]
    sample = SA1BDataset(tmp_path / "w")[1]
    np.testing.assert_array_equal(sample.image, scene.image)
    np.testing.assert_array_equal(sample.masks, scene.masks)
    assert write_hard_dataset(tmp_path / "w", 2, seed=4, size=(64, 80), progress=False, start=3).skipped == 2

    out = tmp_path / "cli"
    argv = ["synth", "--n", "2", "--out", str(out), "--seed", "4", "--size", "64x80", "--start", "3", "--no-progress"]
    assert main([*argv, "--style", "hard"]) == 0
    assert "wrote 2 scenes" in capsys.readouterr().out
    for name in ("sa_000003.png", "sa_000004.json"):
        assert (out / name).read_bytes() == (tmp_path / "w" / name).read_bytes()
    assert main([*argv[:4], str(tmp_path / "plain"), *argv[5:]]) == 0  # default: the plain style
    plain = SA1BDataset(tmp_path / "plain")[0]
    np.testing.assert_array_equal(plain.image, render_scene(scene_rng(4, 3), (64, 80)).image)
    with pytest.raises(SystemExit):
        main([*argv, "--style", "nope"])
