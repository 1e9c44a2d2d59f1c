"""Zero-shot instance segmentation: a detector's boxes (or the ground-truth boxes) as SAM box prompts, scored as mask
AP by the standard evaluators (COCOeval for COCO files and any converted dataset, LVISEval for LVIS files).

Per image, every box goes through the decoder in one batched call (`SamPredictor.predict(box=(N, 4))`); each box
keeps the most confident of SAM's three masks (or the single-mask output with `multimask=False`), scored by the
detector's score (1 for ground-truth boxes) and labelled with the detector's category. Crowd regions are no
prompts. Writes:

    DIR/predictions.json   COCO results: image_id, category_id, segmentation (compressed RLE), score, plus
                           mask_score (SAM's predicted IoU) and prompt_box (XYWH); no `bbox`, so the evaluators
                           size objects by their masks
    DIR/ground_truth.json  the COCO ground truth, for datasets that are not an annotation file already
    DIR/metrics.json       mask AP (COCOeval's 12 numbers, or LVISEval's AP, APr/APc/APf, ...)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samflow.errors import InputError
from samflow.evaluation.ground_truth import EvalImage, GroundTruth
from samflow.evaluation.outputs import write_json
from samflow.evaluation.scoring import coco_mask_ap, lvis_mask_ap
from samflow.ops import rle
from samflow.predict.predictor import SamPredictor

log = logging.getLogger(__name__)

__all__ = ["box_prompts", "evaluate_instances", "load_detections"]


def load_detections(spec: str, truth: GroundTruth, max_images: int | None = None) -> Any:
    """`gt` -> None (ground-truth boxes); a file -> its DetectionFile, checked against the dataset's images and
    categories (an InputError when none of its detections is for an image that will be evaluated)."""
    if spec == "gt":
        return None
    from samflow.data.coco_results import DetectionFile

    path = Path(spec)
    if not path.is_file():
        raise InputError(f"--detections {spec}: no such file (give a COCO results JSON, or 'gt' for the ground-truth "
                         "boxes)")
    detections = DetectionFile(path)
    if not detections.image_ids:
        raise InputError(f"--detections {spec}: the file holds no detections")
    if truth.source is not None:
        images = truth.data["images"][:max_images] if max_images is not None else truth.data["images"]
        wanted = {image["id"] for image in images}
    else:
        wanted = set(range(1, (len(truth) if max_images is None else min(max_images, len(truth))) + 1))
    found = set(detections.image_ids) | {int(i) for i in detections.image_ids if isinstance(i, str) and i.isdigit()}
    if not (found & wanted) and not detections.file_ids:
        example = sorted(found, key=str)[0]
        raise InputError(f"--detections {spec}: none of its {len(found)} image ids (e.g. {example!r}) is an image of "
                         f"{truth.name}; results must use the dataset's image ids")
    categories = {c["id"] for c in truth.data.get("categories", [])}
    return detections if not categories else _check_categories(detections, categories, spec)


def _check_categories(detections: Any, categories: set[int], spec: str) -> Any:
    seen: set[int] = set()
    for image_id in detections.image_ids:
        class_ids = detections.detections(image_id).class_ids
        if class_ids is None:
            raise InputError(f"--detections {spec}: every detection needs a category_id (mask AP is per category); "
                             f"image {image_id!r} has one without")
        seen.update(int(c) for c in class_ids)
    unknown = seen - categories
    if unknown == seen:
        raise InputError(f"--detections {spec}: none of its category ids ({sorted(unknown)[:5]}) is a category of the "
                         "dataset")
    if unknown:
        log.warning("--detections %s: %d category ids are not in the dataset and will not count, e.g. %s", spec,
                    len(unknown), sorted(unknown)[0])
    return detections


def box_prompts(item: EvalImage, detections: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes XYXY (N, 4), scores (N,), category ids (N,)) of one image: its detections, or its ground-truth boxes
    (score 1) when `detections` is None."""
    if detections is None:
        anns = [a for a in item.annotations if not a.get("iscrowd")]
        if any("bbox" not in a for a in anns):
            raise InputError(f"image {item.file_name}: an annotation has no bbox to prompt with")
        xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        scores = np.ones(len(anns))
        categories = np.array([a["category_id"] for a in anns], np.int64)
    else:
        image_id = detections.file_ids.get(Path(item.file_name).name, item.image_id)
        found = detections.detections(image_id)
        if not len(found.xyxy):
            return np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
        xyxy = found.xyxy.astype(np.float64)
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        scores = found.scores.astype(np.float64) if found.scores is not None else np.ones(len(xyxy))
        categories = found.class_ids.astype(np.int64)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return xyxy, scores, categories


@torch.no_grad()
def evaluate_instances(model: Any, truth: GroundTruth, out_dir: str | Path, detections: str = "gt",
                       multimask: bool = True, max_images: int | None = None, progress: bool = False,
                       plot: bool = False) -> dict[str, Any]:
    """Run the task on `truth` and write DIR/predictions.json and DIR/metrics.json; returns the metrics."""
    out = Path(out_dir)
    found = load_detections(detections, truth, max_images)
    predictor = model if hasattr(model, "set_image") else SamPredictor(model)
    results: list[dict[str, Any]] = []
    started, prompts = time.perf_counter(), 0
    for item in truth.images(max_images, progress):
        boxes, scores, categories = box_prompts(item, found)
        if not len(boxes):
            continue
        h, w = item.image.shape[:2]
        boxes = np.clip(boxes, 0, [w, h, w, h])
        predictor.set_image(item.image)
        masks, quality, _ = predictor.predict(box=boxes, multimask_output=multimask)
        best = quality.argmax(axis=1)
        chosen = masks[np.arange(len(boxes)), best]
        encoded = rle.encode(chosen)
        assert isinstance(encoded, list)
        for n, seg in enumerate(encoded):
            x0, y0, x1, y1 = (float(v) for v in boxes[n])
            results.append({"image_id": item.image_id, "category_id": int(categories[n]), "segmentation": seg,
                            "score": float(scores[n]), "mask_score": float(quality[n, best[n]]),
                            "prompt_box": [x0, y0, x1 - x0, y1 - y0]})
        prompts += len(boxes)
    if not truth.image_ids:
        raise InputError(f"{truth.name}: no images to evaluate")
    predictions = write_json(out / "predictions.json", results)
    if truth.source is None:
        write_json(out / "ground_truth.json", truth.data)
    metrics: dict[str, Any] = {"task": "instances", "dataset": truth.name, "images": len(truth.image_ids),
                               "detections": detections, "prompts": prompts, "multimask": multimask,
                               "seconds": round(time.perf_counter() - started, 2)}
    if truth.lvis:
        metrics["lvis"] = lvis_mask_ap(truth.data, str(predictions), truth.image_ids)
    else:
        metrics["coco"] = coco_mask_ap(truth.data, str(predictions), truth.image_ids)
    if plot and "coco" in metrics:
        from samflow.evaluation.plots import plot_precision_recall

        plot_precision_recall(metrics["coco"]["pr_curve"], out / "precision_recall.png",
                              title=f"mask precision-recall, {truth.name}")
    write_json(out / "metrics.json", metrics)
    return metrics


def format_instances(metrics: dict[str, Any]) -> str:
    scores = metrics.get("coco") or metrics.get("lvis") or {}
    shown = " ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float))
    return (f"{metrics['dataset']}: {metrics['images']} images, {metrics['prompts']} box prompts "
            f"({metrics['detections']}), mask {'LVIS' if 'lvis' in metrics else 'COCO'} {shown}")
