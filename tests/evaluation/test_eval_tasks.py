"""`samflow eval DATASET --task ... --out DIR` end to end with the shipped tiny on small synthetic COCO, LVIS, BSDS
and instance-folder sets (small grids), the written predictions re-scored by the standard tools, and bad input."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from eval_testing import scenes, write_bsds, write_coco, write_instance_folder

from samflow.cli import main
from samflow.ops import rle

FAST = ["--no-progress"]


@pytest.fixture(autouse=True)
def _one_model(monkeypatch, tiny):
    """Every command gets the session's tiny (loading weights is tested elsewhere): the tests stay fast."""
    monkeypatch.setattr("samflow.commands.eval.build_sam", lambda *args, **kwargs: tiny)


def read(path):
    return json.loads(path.read_text())


def cocoeval(gt_path, predictions, use_cats=True, max_dets=None, image_ids=None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(gt_path))
    evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(predictions)), iouType="segm")
    evaluator.params.useCats = int(use_cats)
    if max_dets:
        evaluator.params.maxDets = max_dets
    if image_ids:
        evaluator.params.imgIds = image_ids
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats


def test_points_task_on_instance_folders_with_plot(tmp_path, capsys):
    root = write_instance_folder(tmp_path / "set", scenes(1), "folder")
    out = tmp_path / "out"
    assert main(["eval", str(root), "--task", "points", "--out", str(out), "--clicks", "1,2", "--plot", *FAST]) == 0
    metrics = read(out / "metrics.json")
    assert metrics["task"] == "points" and metrics["images"] == 1
    assert {"1_click", "2_click", "1_click_oracle", "box"} <= set(metrics["miou"]["all"])
    predictions = read(out / "predictions.json")
    assert len(predictions) == metrics["miou"]["all"]["n"]
    first = predictions[0]
    assert set(first["segmentation"]) == {"1", "2"} and len(first["clicks"]) == 2
    assert rle.decode(first["segmentation"]["1"]).shape == (64, 64)
    mean = np.mean([p["iou"]["1"] for p in predictions])
    assert mean == pytest.approx(metrics["miou"]["all"]["1_click"])
    assert (out / "miou_vs_clicks.png").stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out


def test_instances_on_coco_rescored_by_pycocotools(tmp_path):
    gt_path = write_coco(tmp_path / "coco", scenes(1))
    out = tmp_path / "out"
    assert main(["eval", str(gt_path), "--task", "instances", "--detections", "gt", "--out", str(out), "--plot",
                 *FAST]) == 0
    metrics, predictions = read(out / "metrics.json"), read(out / "predictions.json")
    gt = read(gt_path)
    assert metrics["prompts"] == len(predictions) == len(gt["annotations"])
    assert all("bbox" not in p for p in predictions)  # mask area sizes the objects, as for detectron2's masks
    stats = cocoeval(gt_path, predictions)
    assert metrics["coco"]["AP"] == pytest.approx(stats[0]) and metrics["coco"]["AP50"] == pytest.approx(stats[1])
    assert 0.2 < metrics["coco"]["AP"] <= 1.0
    assert (out / "precision_recall.png").exists()
    # A detector's file: half the boxes, with scores, some for another category.
    detections = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                   "score": 0.5 + 0.01 * n} for n, a in enumerate(gt["annotations"]) if n % 2 == 0]
    (tmp_path / "dets.json").write_text(json.dumps(detections))
    out2 = tmp_path / "out2"
    assert main(["eval", str(gt_path), "--task", "instances", "--detections", str(tmp_path / "dets.json"),
                 "--out", str(out2), *FAST]) == 0
    metrics2, predictions2 = read(out2 / "metrics.json"), read(out2 / "predictions.json")
    assert metrics2["prompts"] == len(detections)
    assert [p["score"] for p in predictions2] == pytest.approx([d["score"] for d in detections])  # float32
    assert metrics2["coco"]["AR@100"] == pytest.approx(cocoeval(gt_path, predictions2)[8])
    assert metrics2["coco"]["AR@100"] < metrics["coco"]["AR@100"]


def test_instances_and_proposals_on_lvis(tmp_path):
    from lvis import LVIS, LVISEval

    from samflow.evaluation.scoring import _numpy_float_alias

    gt_path = write_coco(tmp_path, scenes(1), lvis=True)
    out = tmp_path / "inst"
    assert main(["eval", str(gt_path), "--task", "instances", "--out", str(out), *FAST]) == 0
    metrics = read(out / "metrics.json")
    evaluator = LVISEval(LVIS(str(gt_path)), str(out / "predictions.json"), iou_type="segm")
    with _numpy_float_alias():
        evaluator.run()
    assert metrics["lvis"]["AP"] == pytest.approx(evaluator.get_results()["AP"])
    assert {"APr", "APc", "APf"} <= set(metrics["lvis"])
    out = tmp_path / "prop"
    assert main(["eval", str(gt_path), "--task", "proposals", "--out", str(out), "--points-per-side", "4",
                 "--pred-iou-thresh", "0.3", "--stability-thresh", "0.3", *FAST]) == 0
    metrics = read(out / "metrics.json")
    assert {"AR@1000", "ARr@1000", "ARc@1000", "ARf@1000"} <= set(metrics["lvis"])
    assert metrics["coco"]["AR@1000"] == pytest.approx(metrics["lvis"]["AR@1000"], abs=1e-6)


def test_proposals_on_coco_rescored_class_agnostic(tmp_path):
    gt_path = write_coco(tmp_path / "coco", scenes(2))
    out = tmp_path / "out"
    assert main(["eval", str(gt_path), "--task", "proposals", "--max-images", "1", "--out", str(out), "--points-per-side", "4",
                 "--pred-iou-thresh", "0.3", "--stability-thresh", "0.3", "--max-proposals", "5", "--plot",
                 *FAST]) == 0
    metrics, predictions = read(out / "metrics.json"), read(out / "predictions.json")
    assert metrics["settings"]["points_per_side"] == 4 and metrics["settings"]["crop_n_layers"] == 0
    assert metrics["images"] == 1 and 0 < len(predictions) <= 5 and {p["image_id"] for p in predictions} == {1}
    scores = [p["score"] for p in predictions if p["image_id"] == 1]
    assert scores == sorted(scores, reverse=True)  # most confident first, by predicted IoU
    stats = cocoeval(gt_path, predictions, use_cats=False, max_dets=[10, 100, 1000], image_ids=[1])  # --max-images
    assert [metrics["coco"][k] for k in ("AR@10", "AR@100", "AR@1000")] == pytest.approx(list(stats[6:9]))
    assert (out / "ar_vs_proposals.png").exists()


def test_edges_on_bsds_format(tmp_path):
    from PIL import Image

    from samflow.evaluation.boundaries import image_counts, mask_boundaries, summarize, thresholds

    items = scenes(1)
    maps = [np.stack([mask_boundaries(s.masks), mask_boundaries(s.masks[:2])]) for s in items]
    root = write_bsds(tmp_path / "data", items, maps)
    out = tmp_path / "out"
    assert main(["eval", str(root), "--task", "edges", "--out", str(out), "--points-per-side", "4",
                 "--thresholds", "9", "--plot", *FAST]) == 0
    metrics = read(out / "metrics.json")
    assert metrics["images"] == 1 and metrics["settings"]["points_per_side"] == 4
    assert 0 < metrics["ODS"] <= metrics["OIS"] + 1e-9 <= 1 + 1e-9 and 0 <= metrics["AP"] <= 1
    pngs = sorted((out / "edges").glob("*.png"))
    assert [p.stem for p in pngs] == ["100001"]
    # The PNGs are what the benchmark reads: re-scoring them gives the reported figures (the matcher's random
    # outlier links may move a pixel or two).
    edge_maps = [np.asarray(Image.open(p), dtype=np.float64) / 255 for p in pngs]
    again = summarize([image_counts(e, m, thresholds(9)) for e, m in zip(edge_maps, maps)], thresholds(9))
    assert again["ODS"] == pytest.approx(metrics["ODS"], abs=0.02)
    assert (out / "precision_recall.png").exists()


def test_text_task_on_held_out_scenes(tmp_path):
    out = tmp_path / "out"
    assert main(["eval", "synthetic:22:1", "--task", "text", "--out", str(out), *FAST]) == 0
    metrics, predictions = read(out / "metrics.json"), read(out / "predictions.json")
    assert metrics["objects"] == len(predictions) > 0
    assert metrics["mIoU"] == pytest.approx(np.mean([p["iou"] for p in predictions]))
    assert all(p["caption"].startswith("a ") for p in predictions)


@pytest.mark.parametrize("case", ["missing", "layout", "two", "no_out", "detections_missing", "detections_json",
                                  "detections_ids", "detections_task", "no_captions", "bsds_empty"])
def test_bad_input_is_a_clear_error(tmp_path, capsys, case):
    gt_path = write_coco(tmp_path / "coco", scenes(1))
    out = ["--out", str(tmp_path / "out")]
    args = {
        "missing": [str(tmp_path / "nowhere"), "--task", "points", *out],
        "layout": [str(tmp_path / "layout"), "--task", "points", *out],
        "two": ["synthetic:1:1", "synthetic:2:1", "--task", "points", *out],
        "no_out": ["synthetic:1:1", "--task", "edges"],
        "detections_missing": [str(gt_path), "--task", "instances", "--detections", str(tmp_path / "x.json"), *out],
        "detections_json": [str(gt_path), "--task", "instances", "--detections", str(gt_path.parent / "bad.json"),
                            *out],
        "detections_ids": [str(gt_path), "--task", "instances", "--detections", str(gt_path.parent / "ids.json"),
                           *out],
        "detections_task": ["synthetic:1:1", "--task", "points", "--detections", "gt", *out],
        "no_captions": [str(gt_path), "--task", "text", *out],
        "bsds_empty": [str(tmp_path / "bsds"), "--task", "edges", *out],
    }[case]
    (gt_path.parent / "bad.json").write_text("{not json")
    (gt_path.parent / "ids.json").write_text(json.dumps([{"image_id": 77, "category_id": 1, "bbox": [0, 0, 4, 4],
                                                          "score": 1}]))
    (tmp_path / "bsds" / "images").mkdir(parents=True)
    (tmp_path / "bsds" / "groundTruth").mkdir()
    (tmp_path / "layout" / "images").mkdir(parents=True)  # images without masks/
    assert main(["eval", *args, *FAST]) == 2
    message = capsys.readouterr().err
    expected = {"missing": "is not an SA-1B folder", "layout": "lacks masks/", "two": "evaluates one DATASET",
                "no_out": "needs --out", "detections_missing": "no such file", "detections_json": "not valid JSON",
                "detections_ids": "none of its 1 image ids", "detections_task": "belongs to --task instances",
                "no_captions": "no object has a caption", "bsds_empty": "holds no images"}[case]
    assert expected in message


def test_plot_without_matplotlib_names_the_extra(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(["eval", "synthetic:1:1", "--task", "points", "--out", "/nonexistent/out", "--plot", *FAST]) == 2
    assert 'pip install "samflow[plot]"' in capsys.readouterr().err
