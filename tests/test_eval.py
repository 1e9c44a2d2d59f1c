"""The evaluation protocol: exact distance transform, the click rules, and `samflow eval` on SA-1B and COCO files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from samflow.cli import main
from samflow.data.samples import Sample
from samflow.data.synthetic import render_scene, scene_rng, write_dataset
from samflow.evaluation.points import (
    EvalReport,
    ObjectResult,
    evaluate,
    load_dataset,
    next_click,
    size_category,
)
from samflow.ops import rle
from samflow.ops.distance import distance_transform, farthest_point


def _brute_force_edt(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    ys, xs = np.nonzero(~padded)
    yy, xx = np.mgrid[0 : padded.shape[0], 0 : padded.shape[1]]
    d = np.sqrt(((yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2).min(-1))
    return d[1:-1, 1:-1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distance_transform_is_exact(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((23, 31)) > 0.25
    np.testing.assert_allclose(distance_transform(mask), _brute_force_edt(mask), atol=1e-5)


def test_farthest_point_and_clicks():
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:31, 5:26] = True  # 21x21 square: centre (15, 20)
    assert farthest_point(mask) == (15, 20)
    assert farthest_point(np.zeros((5, 5), bool)) is None
    pred = mask.copy()
    pred[10:31, 30:55] = True  # a bigger false positive
    x, y, label = next_click(pred, mask)
    assert label == 0 and y == 20 and 40 <= x <= 44  # the centre band of the 25x21 false-positive block
    pred = np.zeros_like(mask)
    pred[10:31, 5:10] = True  # mostly missed: a positive click
    x, y, label = next_click(pred, mask)
    assert label == 1 and mask[y, x] and not pred[y, x]
    assert next_click(mask, mask) is None


class _Oracle:
    """A stand-in predictor that answers every prompt with the ground truth of the object it points at."""

    def __init__(self, masks: np.ndarray) -> None:
        self.masks = masks

    def set_image(self, image: np.ndarray) -> None:
        pass

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=True):
        n = len(self.masks)
        k = 3 if multimask_output else 1
        out = np.repeat(self.masks[:, None], k, axis=1)
        if multimask_output:
            out[:, 1:] = False  # wrong candidates, scored lower
        scores = np.tile(np.array([0.9, 0.1, 0.1][:k]), (n, 1))
        return out, scores, np.zeros((n, k, 8, 8), np.float32)


def test_protocol_scores_a_perfect_model_one():
    scene = render_scene(scene_rng(5, 1), 96)
    sample = Sample(scene.image, scene.masks, scene.annotations)
    report = evaluate(_Oracle(scene.masks), [sample], clicks=(1, 2))
    summary = report.summary()["all"]
    assert summary["n"] == len(scene.masks)
    assert summary["1_click"] == summary["2_click"] == summary["1_click_oracle"] == summary["box"] == 1.0


def test_report_groups_by_size():
    assert [size_category(a) for a in (10, 32**2, 96**2)] == ["small", "medium", "large"]
    report = EvalReport("x", [ObjectResult(100, {1: 0.5}, 0.7, 0.9), ObjectResult(5000, {1: 1.0}, 1.0, None)], 1)
    s = report.summary()
    assert s["all"]["1_click"] == 0.75 and s["small"]["1_click_oracle"] == 0.7 and s["all"]["box"] == 0.9
    assert s["large"] == {"n": 0} and s["medium"]["n"] == 1
    assert "small" in report.format()


def test_cli_on_sa1b_and_coco(tmp_path, capsys):
    sa1b = tmp_path / "sa1b"
    write_dataset(sa1b, 2, seed=9, size=64, progress=False)
    # The same scenes as a COCO file with RLE segmentations.
    images, anns = [], []
    for i, stem in enumerate(["sa_000001", "sa_000002"], start=1):
        record = json.loads((sa1b / f"{stem}.json").read_text())
        images.append({"id": i, "file_name": f"{stem}.png", "height": 64, "width": 64})
        for a in record["annotations"]:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "segmentation": a["segmentation"],
                         "bbox": a["bbox"], "area": a["area"], "iscrowd": 0})
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "shape"}]}))
    out = tmp_path / "eval.json"
    code = main(["eval", str(sa1b), str(coco), "synthetic:9:1:64", "--clicks", "1,2", "--json", str(out),
                 "--images", str(sa1b), "--no-progress"])
    assert code == 0
    results = json.loads(out.read_text())
    assert [r["dataset"] for r in results] == ["sa1b", "coco", "synthetic:9:1:64"]
    # Both readers yield the same objects, so the same scores.
    assert results[0]["miou"]["all"] == results[1]["miou"]["all"]
    assert results[0]["miou"]["all"]["n"] == sum(len(rle.decode(a["segmentation"])) > 0 for a in anns)
    assert "1_click_oracle" in capsys.readouterr().out


def test_bad_dataset_spec(tmp_path):
    from samflow.errors import InputError

    with pytest.raises(InputError):
        load_dataset(str(tmp_path / "nothing"))
    with pytest.raises(InputError):
        load_dataset("synthetic:x")
