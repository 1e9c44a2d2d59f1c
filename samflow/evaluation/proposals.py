"""Zero-shot object proposals: the automatic mask generator's masks as class-agnostic proposals, scored by SAM's
predicted IoU, evaluated as mask average recall by the standard evaluators.

The SAM paper's setting (appendix D.3) is the default: a 64x64 point grid on the whole image, no zoomed-in crops,
the generator's filters (predicted IoU 0.88, stability 0.95) and its deduplication (box NMS at IoU 0.7), at most
1000 proposals per image, the most confident first. All of these are `ProposalSettings`.

Metrics: COCOeval with useCats=0 and maxDets [10, 100, 1000] (AR@10/100/1000, AR by size at 1000) on every dataset;
for LVIS files also LVISEval's AR@1000 class-agnostic and for the rare, common and frequent categories, each
against a ground truth of just those categories (see samflow.evaluation.scoring). Writes DIR/predictions.json (COCO
results, category 1, RLE), DIR/ground_truth.json (for converted datasets) and DIR/metrics.json.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samflow.errors import InputError
from samflow.evaluation.ground_truth import GroundTruth
from samflow.evaluation.outputs import write_json
from samflow.evaluation.scoring import coco_mask_ar, lvis_mask_ar
from samflow.ops import rle

log = logging.getLogger(__name__)

__all__ = ["ProposalSettings", "evaluate_proposals", "format_proposals"]


@dataclass
class ProposalSettings:
    """The generator's grid, filters and deduplication for proposals (defaults: the SAM paper's)."""

    points_per_side: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    max_proposals: int = 1000
    points_per_batch: int = 64

    def check(self) -> None:
        if self.points_per_side < 1 or self.max_proposals < 1 or self.points_per_batch < 1:
            raise InputError("the proposal grid, the proposal count and the batch must be positive")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.crop_n_layers < 0:
            raise InputError(f"crop_n_layers must not be negative, got {self.crop_n_layers}")


@torch.no_grad()
def evaluate_proposals(model: Any, truth: GroundTruth, out_dir: str | Path,
                       settings: ProposalSettings | None = None, max_images: int | None = None,
                       progress: bool = False, plot: bool = False) -> dict[str, Any]:
    """Generate proposals for each image of `truth`, write the predictions and score them; returns the metrics."""
    from samflow.predict.amg import SamAutomaticMaskGenerator

    settings = settings or ProposalSettings()
    settings.check()
    out = Path(out_dir)
    generator = model if hasattr(model, "generate_masks") else SamAutomaticMaskGenerator(
        model, points_per_side=settings.points_per_side, points_per_batch=settings.points_per_batch,
        pred_iou_thresh=settings.pred_iou_thresh, stability_score_thresh=settings.stability_score_thresh,
        box_nms_thresh=settings.box_nms_thresh, crop_n_layers=settings.crop_n_layers)
    results: list[dict[str, Any]] = []
    counts = []
    started = time.perf_counter()
    for item in truth.images(max_images, progress):
        masks = generator.generate_masks(item.image)
        order = np.argsort(-masks.predicted_iou, kind="stable")[: settings.max_proposals]
        for i in order:
            seg = rle.uncompressed_to_compressed(masks.rle(int(i)))
            results.append({"image_id": item.image_id, "category_id": 1, "segmentation": seg,
                            "score": float(masks.predicted_iou[i])})
        counts.append(len(order))
    if not truth.image_ids:
        raise InputError(f"{truth.name}: no images to evaluate")
    predictions = write_json(out / "predictions.json", results)
    if truth.source is None:
        write_json(out / "ground_truth.json", truth.data)
    metrics: dict[str, Any] = {"task": "proposals", "dataset": truth.name, "images": len(truth.image_ids),
                               "settings": asdict(settings), "proposals_per_image": float(np.mean(counts)),
                               "seconds": round(time.perf_counter() - started, 2)}
    metrics["coco"] = coco_mask_ar(truth.data, str(predictions), truth.image_ids)
    if truth.lvis:
        metrics["lvis"] = lvis_mask_ar(truth.data, str(predictions), truth.image_ids, max_dets=1000)
    if plot:
        from samflow.evaluation.plots import plot_recall_vs_proposals

        plot_recall_vs_proposals(metrics["coco"], out / "ar_vs_proposals.png", title=f"mask AR, {truth.name}")
    write_json(out / "metrics.json", metrics, indent=2)
    return metrics


def format_proposals(metrics: dict[str, Any]) -> str:
    shown = " ".join(f"{k} {v:.4f}" for k, v in metrics["coco"].items())
    lines = [f"{metrics['dataset']}: {metrics['images']} images, {metrics['proposals_per_image']:.1f} proposals per "
             f"image, mask {shown}"]
    if "lvis" in metrics:
        lines.append("LVIS " + " ".join(f"{k} {v:.4f}" for k, v in metrics["lvis"].items()))
    return "\n".join(lines)
