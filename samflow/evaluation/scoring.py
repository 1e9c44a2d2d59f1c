"""Mask AP and AR from the standard evaluators, never from a hand-written AP: pycocotools' COCOeval (COCO) and the
`lvis` package's LVISEval (LVIS). Both are in samflow's `eval` extra (`pip install "samflow[eval]"`).

- `coco_mask_ap` / `lvis_mask_ap`: instance segmentation (COCOeval iouType "segm" with its standard parameters;
  LVISEval "segm" with its standard 300 detections per image);
- `coco_mask_ar`: class-agnostic proposals (COCOeval useCats=0, maxDets [10, 100, 1000]): AR@10/100/1000 and AR
  by object size at 1000;
- `lvis_mask_ar`: AR@1000 (all, by size) with LVISEval on the file relabelled to one category, and for the rare,
  common and frequent categories "measured against a ground-truth set containing just the corresponding LVIS
  categories", as the SAM paper does (LVISEval's own `use_cats=0` mode reads no ground truth in lvis 0.5.3).

Ground truth is a COCO / LVIS dict; results are a path to a COCO results JSON or a list of its entries (masks as
compressed RLE, no `bbox` key: with one, both evaluators take the box area as the object's size). An empty result
set scores 0 (both evaluators' loaders index the first result, so an empty set is built without them).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from samflow.errors import InputError
from samflow.ops import rle

log = logging.getLogger(__name__)

__all__ = ["COCO_AP_KEYS", "COCO_AR_KEYS", "coco_mask_ap", "coco_mask_ar", "lvis_mask_ap", "lvis_mask_ar"]

COCO_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR@1", "AR@10", "AR@100", "ARs@100", "ARm@100",
                "ARl@100")
COCO_AR_KEYS = ("AR@10", "AR@100", "AR@1000", "ARs@1000", "ARm@1000", "ARl@1000")
INSTALL = 'pip install "samflow[eval]"'

Results = str | Path | Sequence[dict[str, Any]]


def _pycocotools() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise InputError(f"mask AP and AR are computed by pycocotools, which is not installed: {INSTALL}") from None
    return COCO, COCOeval


def _lvis() -> tuple[Any, Any, Any]:
    try:
        from lvis import LVIS, LVISEval, LVISResults
    except ImportError:
        raise InputError(f"LVIS mask AP and AR are computed by the lvis package, which is not installed: {INSTALL}"
                         ) from None
    return LVIS, LVISEval, LVISResults


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The evaluators print progress and tables; send them to the debug log."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    if buffer.getvalue().strip():
        log.debug("%s", buffer.getvalue().rstrip())


@contextlib.contextmanager
def _numpy_float_alias() -> Iterator[None]:
    """lvis 0.5.3 (the latest release) calls `np.float`, which numpy 1.24 removed: alias it to `float` meanwhile."""
    added = "float" not in np.__dict__
    if added:
        np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if added:
            del np.float  # type: ignore[attr-defined]


def _result_list(results: Results) -> list[dict[str, Any]]:
    if isinstance(results, (str, Path)):
        try:
            data = json.loads(Path(results).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read the results file {results}: {exc}") from None
        if not isinstance(data, list):
            raise InputError(f"results file {results}: expected a COCO results list")
        return data
    return [dict(r) for r in results]


def _coco_gt(ground_truth: dict[str, Any]) -> Any:
    COCO, _ = _pycocotools()
    coco = COCO()
    coco.dataset = copy.deepcopy(ground_truth)
    with _quiet():
        coco.createIndex()
    return coco


def _coco_dt(coco_gt: Any, results: list[dict[str, Any]]) -> Any:
    COCO, _ = _pycocotools()
    if results:
        with _quiet():
            return coco_gt.loadRes(copy.deepcopy(results))
    empty = COCO()
    empty.dataset = {"images": list(coco_gt.dataset["images"]),
                     "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])), "annotations": []}
    with _quiet():
        empty.createIndex()
    return empty


def _check_ids(results: list[dict[str, Any]], ground_truth: dict[str, Any]) -> None:
    known = {image["id"] for image in ground_truth["images"]}
    unknown = {r.get("image_id") for r in results} - known
    if unknown:
        raise InputError(f"results name {len(unknown)} image ids the ground truth does not have, e.g. "
                         f"{sorted(unknown, key=str)[0]!r}")
    bad = next((r for r in results if not isinstance(r.get("segmentation"), dict) or "score" not in r), None)
    if bad is not None:
        raise InputError(f"every result needs an RLE 'segmentation' and a 'score'; got {bad!r:.120}")


def _run_cocoeval(ground_truth: dict[str, Any], results: Results, image_ids: Sequence[Any] | None,
                  use_cats: bool, max_dets: Sequence[int] | None) -> Any:
    _, COCOeval = _pycocotools()
    entries = _result_list(results)
    _check_ids(entries, ground_truth)
    coco_gt = _coco_gt(ground_truth)
    coco_dt = _coco_dt(coco_gt, entries)
    evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
    evaluator.params.useCats = int(use_cats)
    if max_dets is not None:
        evaluator.params.maxDets = list(max_dets)
    if image_ids is not None:
        evaluator.params.imgIds = sorted(image_ids)
    with _quiet():
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def coco_mask_ap(ground_truth: dict[str, Any], results: Results, image_ids: Sequence[Any] | None = None
                 ) -> dict[str, Any]:
    """COCOeval mask AP/AR (its 12 summary numbers, -1 where undefined) and the precision-recall curves at IoU 0.5
    and 0.75 (averaged over categories, all areas, 100 detections), for the plots."""
    evaluator = _run_cocoeval(ground_truth, results, image_ids, use_cats=True, max_dets=None)
    out: dict[str, Any] = {k: float(v) for k, v in zip(COCO_AP_KEYS, evaluator.stats)}
    precision = evaluator.eval["precision"]  # (T, R, K, A, M)
    curves = {}
    for name, t in (("0.50", 0), ("0.75", 5)):
        p = precision[t, :, :, 0, -1]
        valid = (p > -1).any(axis=0)
        curves[name] = p[:, valid].mean(axis=1).tolist() if valid.any() else []
    out["pr_curve"] = {"recall": [float(r) for r in evaluator.params.recThrs], "precision": curves}
    return out


def coco_mask_ar(ground_truth: dict[str, Any], results: Results, image_ids: Sequence[Any] | None = None
                 ) -> dict[str, float]:
    """Class-agnostic COCOeval (useCats=0, maxDets [10, 100, 1000]): AR@10, AR@100, AR@1000 and by size at 1000."""
    evaluator = _run_cocoeval(ground_truth, results, image_ids, use_cats=False, max_dets=(10, 100, 1000))
    return {k: float(evaluator.stats[i]) for k, i in zip(COCO_AR_KEYS, range(6, 12))}


def _lvis_from_dict(dataset: dict[str, Any]) -> Any:
    """An lvis.LVIS over a dict already in memory (LVIS() reads only from a path)."""
    LVIS, _, _ = _lvis()

    class FromDict(LVIS):  # type: ignore[misc, valid-type]
        def __init__(self, data: dict[str, Any]) -> None:
            self.logger = logging.getLogger("lvis.lvis")
            self.dataset = data
            self._create_index()

    return FromDict(dataset)


@contextlib.contextmanager
def _lvis_logs_quiet() -> Iterator[None]:
    """LVISResults warns 'Assuming user provided the results in correct format' for in-memory results (through
    the deprecated Logger.warn)."""
    logger = logging.getLogger("lvis")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def _run_lvis(ground_truth: dict[str, Any], results: Results, image_ids: Sequence[Any] | None,
              max_dets: int) -> dict[str, float]:
    _, LVISEval, LVISResults = _lvis()
    entries = _result_list(results)
    _check_ids(entries, ground_truth)
    gt = _lvis_from_dict(copy.deepcopy(ground_truth))
    with _lvis_logs_quiet():
        if entries:
            dt = LVISResults(gt, copy.deepcopy(entries), max_dets=max_dets)
        else:  # LVISResults indexes results[0]: load one entry of the first image, then drop it
            first = ground_truth["images"][0]
            empty = rle.encode(np.zeros((int(first.get("height", 1)), int(first.get("width", 1))), bool))
            dt = LVISResults(gt, [{"image_id": first["id"], "category_id": ground_truth["categories"][0]["id"],
                                   "segmentation": empty, "score": 0.0}], max_dets=max_dets)
            dt.dataset["annotations"] = []
            dt._create_index()
    evaluator = LVISEval(gt, dt, iou_type="segm")
    evaluator.params.max_dets = max_dets
    if image_ids is not None:
        evaluator.params.img_ids = sorted(image_ids)
    with _quiet(), _numpy_float_alias(), _lvis_logs_quiet():
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {k: float(v) for k, v in evaluator.get_results().items()}


def lvis_mask_ap(ground_truth: dict[str, Any], results: Results, image_ids: Sequence[Any] | None = None
                 ) -> dict[str, float]:
    """LVISEval mask AP (AP, AP50, AP75, APs/m/l, APr/c/f, AR@300 and by size), 300 detections per image."""
    return _run_lvis(ground_truth, results, image_ids, max_dets=300)


def _agnostic(ground_truth: dict[str, Any], frequency: str | None = None) -> dict[str, Any]:
    """The file with every annotation (or those of categories of `frequency`) relabelled to one category 1."""
    keep = None
    if frequency is not None:
        keep = {c["id"] for c in ground_truth["categories"] if c.get("frequency") == frequency}
    images = [dict(i, neg_category_ids=[], not_exhaustive_category_ids=[]) for i in ground_truth["images"]]
    anns = [dict(a, category_id=1) for a in ground_truth["annotations"] if keep is None or a["category_id"] in keep]
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "object", "frequency": "f", "image_count": len(images)}]}


def lvis_mask_ar(ground_truth: dict[str, Any], results: Results, image_ids: Sequence[Any] | None = None,
                 max_dets: int = 1000) -> dict[str, float]:
    """Class-agnostic LVISEval AR@`max_dets` (all, small, medium, large), and for each of the rare, common and
    frequent categories against a ground truth of just those categories (ARr/ARc/ARf)."""
    entries = [dict(r, category_id=1) for r in _result_list(results)]
    key = f"AR@{max_dets}"
    found = _run_lvis(_agnostic(ground_truth), entries, image_ids, max_dets)
    out = {k: v for k, v in found.items() if k.startswith("AR")}
    for letter in ("r", "c", "f"):
        subset = _agnostic(ground_truth, letter)
        out[f"AR{letter}@{max_dets}"] = _run_lvis(subset, entries, image_ids, max_dets)[key] \
            if subset["annotations"] else -1.0
    return out
