"""Mask AP and AR through pycocotools and lvis: perfect predictions score 1, none score 0, known halves score 0.5,
and what samflow reports is what the evaluators say when run directly on the same files."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from eval_testing import coco_dict, scenes

from samflow.errors import InputError
from samflow.evaluation.scoring import coco_mask_ap, coco_mask_ar, lvis_mask_ap, lvis_mask_ar


@pytest.fixture(scope="module")
def truth():
    return coco_dict(scenes(3))


@pytest.fixture(scope="module")
def lvis_truth():
    return coco_dict(scenes(3), lvis=True)


def perfect(gt: dict) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
             "score": 1.0 - 0.001 * n} for n, a in enumerate(gt["annotations"])]


def test_perfect_predictions_give_ap_and_ar_one(truth, lvis_truth):
    ap = coco_mask_ap(truth, perfect(truth))
    for key in ("AP", "AP50", "AP75", "AR@100"):
        assert ap[key] == pytest.approx(1.0)
    for key in ("APs", "APm", "APl", "ARs@100", "ARm@100", "ARl@100"):  # -1: no object of that size
        assert ap[key] == -1.0 or ap[key] == pytest.approx(1.0)
    ar = coco_mask_ar(truth, perfect(truth))
    assert ar["AR@100"] == ar["AR@1000"] == pytest.approx(1.0)
    lvis = lvis_mask_ap(lvis_truth, perfect(lvis_truth))
    assert lvis["AP"] == pytest.approx(1.0) and lvis["APr"] == lvis["APc"] == lvis["APf"] == pytest.approx(1.0)
    recall = lvis_mask_ar(lvis_truth, perfect(lvis_truth))
    for key in ("AR@1000", "ARr@1000", "ARc@1000", "ARf@1000"):
        assert recall[key] == pytest.approx(1.0)


def test_an_empty_prediction_set_gives_zero(truth, lvis_truth):
    ap = coco_mask_ap(truth, [])
    assert ap["AP"] == ap["AP50"] == ap["AR@100"] == 0.0
    assert all(v == 0.0 for v in coco_mask_ar(truth, []).values() if v != -1.0)
    assert lvis_mask_ap(lvis_truth, [])["AP"] == 0.0
    assert all(v == 0.0 for v in lvis_mask_ar(lvis_truth, []).values() if v != -1.0)


def test_proposals_covering_half_the_objects_recall_half(truth):
    half = [r for n, r in enumerate(perfect(truth)) if n % 2 == 0]
    expected = len(half) / len(truth["annotations"])
    assert coco_mask_ar(truth, half)["AR@1000"] == pytest.approx(expected)
    # Class-agnostic: the category of a proposal does not matter.
    relabelled = [dict(r, category_id=1) for r in perfect(truth)]
    assert coco_mask_ar(truth, relabelled)["AR@1000"] == pytest.approx(1.0)
    assert coco_mask_ap(truth, relabelled)["AP"] < 1.0  # but it does for instance AP


def test_reported_numbers_are_the_evaluators_own(truth):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    results = perfect(truth)
    for r in results:  # shuffled confidences, some masks swapped between objects: AP strictly between 0 and 1
        r["score"] = float(rng.random())
    for a, b in zip(results[::3], results[1::3]):
        a["segmentation"], b["segmentation"] = b["segmentation"], a["segmentation"]
    reported = coco_mask_ap(truth, results)
    gt = COCO()
    gt.dataset = copy.deepcopy(truth)
    gt.createIndex()
    evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), iouType="segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert 0 < reported["AP"] < 1
    assert [reported[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")] == pytest.approx(
        list(evaluator.stats[:6]))


def test_results_for_unknown_images_are_refused(truth):
    bad = perfect(truth)[:1]
    bad[0]["image_id"] = 999
    with pytest.raises(InputError, match="image ids"):
        coco_mask_ap(truth, bad)
    with pytest.raises(InputError, match="segmentation"):
        coco_mask_ap(truth, [{"image_id": 1, "category_id": 1, "score": 1.0, "bbox": [0, 0, 1, 1]}])
