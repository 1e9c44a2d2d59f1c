"""Interactive-segmentation evaluation: the SAM paper's single-point protocol, correction clicks, and box prompts.

Per object: click 1 is the pixel farthest from the mask boundary; click k+1 is the pixel farthest from the boundary
of the larger error region of the current mask (positive in a false-negative region, negative in a false-positive
one), with the previous mask's low-res logits fed back. After click 1 we score the most confident of the three
masks (`top`) and the best of them (`oracle`); later clicks use the single-mask output. A box prompt (the tight
box of the mask) is scored separately. mIoU is reported per dataset and per object size (COCO's small < 32^2 <=
medium < 96^2 <= large, in original pixels).

    report = evaluate(build_sam("tiny"), synthetic_scenes(seed=1000, n=200))
    print(report.format())

As the `points` task (`samflow eval DATASET --task points --out DIR`), `keep_predictions=True` also keeps every
object's clicks and masks, and `write_points_outputs` writes DIR/metrics.json, DIR/predictions.json and the mIoU vs
clicks plot. Datasets come from samflow.evaluation.datasets (re-exported here).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from samflow.data.samples import Sample
from samflow.errors import InputError
from samflow.evaluation.datasets import SyntheticScenes, load_dataset, synthetic_scenes
from samflow.models.sam.sam import Sam
from samflow.ops import rle
from samflow.ops.distance import distance_transform
from samflow.ops.metrics import mask_iou
from samflow.predict.predictor import SamPredictor

log = logging.getLogger(__name__)

SIZE_BINS = (("small", 0, 32**2), ("medium", 32**2, 96**2), ("large", 96**2, float("inf")))


def size_category(area: int) -> str:
    for name, lo, hi in SIZE_BINS:
        if lo <= area < hi:
            return name
    return "large"


def _peak(region: np.ndarray) -> tuple[float, int, int]:
    """(distance, x, y) of the pixel of `region` farthest from its boundary; distance 0 when empty."""
    rows = np.flatnonzero(region.any(axis=1))
    if rows.size == 0:
        return 0.0, 0, 0
    cols = np.flatnonzero(region.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    dist = distance_transform(region[y0:y1, x0:x1])  # outside the box is background anyway
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(dist[y, x]), int(x + x0), int(y + y0)


def next_click(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int] | None:
    """The protocol's next click (x, y, label) for bool `pred` vs `gt` (H, W); None when they agree."""
    fn_dist, fx, fy = _peak(gt & ~pred)
    fp_dist, px, py = _peak(pred & ~gt)
    if fn_dist == 0 and fp_dist == 0:
        return None
    return (fx, fy, 1) if fn_dist >= fp_dist else (px, py, 0)


@dataclass
class ObjectResult:
    """IoUs of one object: `clicks[k]` after k clicks (top mask at k=1), `oracle` (best of 3 at k=1), `box`.

    With `evaluate(..., keep_predictions=True)` also: `image` (its file name), `index` (the object's place among the
    image's masks), `prompts` ([x, y, label] of every click made) and `masks` (COCO RLE of the mask after k clicks,
    for each reported k)."""

    area: int
    clicks: dict[int, float]
    oracle: float
    box: float | None
    image: str = ""
    index: int = 0
    prompts: list[list[float]] | None = None
    masks: dict[int, dict[str, Any]] | None = None


@dataclass
class EvalReport:
    """Per-object results of one dataset and their summaries."""

    name: str
    objects: list[ObjectResult] = field(default_factory=list)
    images: int = 0
    auto: dict[str, Any] | None = None  # automatic-mask recall (samflow.evaluation.auto), when measured

    def summary(self) -> dict[str, Any]:
        """{'all': {...}, 'small': {...}, ...} with n, mIoU per click count ('1'...), '1_oracle' and 'box'."""
        def stats(objs: list[ObjectResult]) -> dict[str, Any]:
            out: dict[str, Any] = {"n": len(objs)}
            if not objs:
                return out
            for k in sorted(objs[0].clicks):
                out[f"{k}_click"] = float(np.mean([o.clicks[k] for o in objs]))
            out["1_click_oracle"] = float(np.mean([o.oracle for o in objs]))
            boxes = [o.box for o in objs if o.box is not None]
            if boxes:
                out["box"] = float(np.mean(boxes))
            return out

        result = {"all": stats(self.objects)}
        for name, _, _ in SIZE_BINS:
            result[name] = stats([o for o in self.objects if size_category(o.area) == name])
        return result

    def to_dict(self) -> dict[str, Any]:
        out = {"dataset": self.name, "images": self.images, "miou": self.summary()}
        if self.auto is not None:
            out["automatic_masks"] = self.auto
        return out

    def format(self) -> str:
        """A plain-text table: one row per object-size group, one column per metric."""
        summary = self.summary()
        keys = [k for k in summary["all"] if k != "n"]
        header = f"{'objects':<8} {'n':>6} " + " ".join(f"{k:>15}" for k in keys)
        lines = [f"{self.name}: {self.images} images, mIoU", header]
        for group, stats in summary.items():
            cells = " ".join(f"{stats[k]:>15.4f}" if k in stats else f"{'-':>15}" for k in keys)
            lines.append(f"{group:<8} {stats['n']:>6} {cells}")
        return "\n".join(lines)


def _box_of(mask: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=float)


def evaluate_sample(predictor: SamPredictor | Any, sample: Sample, clicks: Sequence[int] = (1, 3, 5), box: bool = True,
                    use_mask_input: bool = True, keep_predictions: bool = False) -> list[ObjectResult]:
    """Run the protocol on every object of one image (objects batched in each decoder call)."""
    present = np.flatnonzero(sample.masks.reshape(len(sample.masks), -1).any(axis=1)) if len(sample.masks) \
        else np.zeros(0, np.int64)
    gts = sample.masks[present]
    n = len(gts)
    kept: dict[int, list[dict[str, Any]]] = {}
    if n == 0:
        return []
    max_clicks = max(clicks)
    predictor.set_image(sample.image)
    coords = np.zeros((n, max_clicks, 2))
    labels = np.zeros((n, max_clicks), dtype=int)
    ious: dict[int, np.ndarray] = {}
    for i, gt in enumerate(gts):
        _, x, y = _peak(gt)
        coords[i, 0], labels[i, 0] = (x, y), 1
    masks, scores, low_res = predictor.predict(coords[:, :1], labels[:, :1], multimask_output=True)
    all_iou = mask_iou(masks, gts[:, None])  # (n, 3)
    top = scores.argmax(axis=1)
    current = masks[np.arange(n), top]
    logits = low_res[np.arange(n), top][:, None]
    ious[1] = all_iou[np.arange(n), top]
    oracle = all_iou.max(axis=1)
    if keep_predictions and 1 in clicks:
        kept[1] = _encode(current)
    for k in range(2, max_clicks + 1):
        for i in range(n):
            click = next_click(current[i], gts[i])
            if click is None:  # perfect already: repeat the last click, the mask stays as it is
                coords[i, k - 1], labels[i, k - 1] = coords[i, k - 2], labels[i, k - 2]
            else:
                coords[i, k - 1], labels[i, k - 1] = click[:2], click[2]
        masks, _, low_res = predictor.predict(coords[:, :k], labels[:, :k],
                                              mask_input=logits if use_mask_input else None,
                                              multimask_output=False)
        current, logits = masks[:, 0], low_res[:, :1]
        ious[k] = mask_iou(current, gts)
        if keep_predictions and k in clicks:
            kept[k] = _encode(current)
    box_ious = None
    if box:
        boxes = np.stack([_box_of(g) for g in gts])
        masks, _, _ = predictor.predict(box=boxes, multimask_output=False)
        box_ious = mask_iou(masks[:, 0], gts)
    return [
        ObjectResult(area=int(gts[i].sum()), clicks={k: float(ious[k][i]) for k in clicks}, oracle=float(oracle[i]),
                     box=None if box_ious is None else float(box_ious[i]), image=sample.file_name,
                     index=int(present[i]),
                     prompts=[[float(x), float(y), int(label)] for (x, y), label in zip(coords[i], labels[i])]
                     if keep_predictions else None,
                     masks={k: kept[k][i] for k in sorted(kept)} if keep_predictions else None)
        for i in range(n)
    ]


def _encode(masks: np.ndarray) -> list[dict[str, Any]]:
    encoded = rle.encode(np.asarray(masks, dtype=bool))
    assert isinstance(encoded, list)
    return encoded


@torch.no_grad()
def evaluate(model: Sam | SamPredictor | Any, dataset: Iterable[Sample], clicks: Sequence[int] = (1, 3, 5),
             box: bool = True, name: str = "dataset", max_images: int | None = None, progress: bool = False,
             use_mask_input: bool = True, keep_predictions: bool = False) -> EvalReport:
    """Evaluate a model on a dataset of `Sample`s (SA1BDataset, CocoDataset, `synthetic_scenes`, a list...)."""
    clicks = sorted(set(int(c) for c in clicks))
    if not clicks or clicks[0] < 1:
        raise InputError(f"clicks must be positive counts, got {clicks}")
    if 1 not in clicks:
        clicks = [1, *clicks]  # the first click is always needed (and reported)
    # Anything with the predictor's set_image/predict is accepted (e.g. a wrapper around another model).
    predictor = model if hasattr(model, "set_image") and hasattr(model, "predict") else SamPredictor(model)
    report = EvalReport(name=name)
    total = len(dataset) if isinstance(dataset, Sequence) else None
    if max_images is not None and total is not None:
        total = min(total, max_images)
    for i, sample in enumerate(tqdm(dataset, total=total, disable=not progress, desc=name)):
        if max_images is not None and i >= max_images:
            break
        report.objects.extend(evaluate_sample(predictor, sample, clicks, box, use_mask_input, keep_predictions))
        report.images += 1
    return report


def write_points_outputs(report: EvalReport, out_dir: str | Path, plot: bool = False) -> dict[str, Any]:
    """The points task's files: DIR/metrics.json (the report), DIR/predictions.json (one record per object: its
    image, index, area, clicks [x, y, label], IoU per click count, oracle and box IoU, and the mask after each
    reported click count as COCO RLE; needs `evaluate(..., keep_predictions=True)`) and, with `plot`,
    DIR/miou_vs_clicks.png. Returns the metrics."""
    from samflow.evaluation.outputs import write_json

    out = Path(out_dir)
    records = [{"image": o.image, "object": o.index, "area": o.area, "clicks": o.prompts,
                "iou": {str(k): v for k, v in o.clicks.items()}, "oracle": o.oracle, "box": o.box,
                "segmentation": {str(k): m for k, m in (o.masks or {}).items()}} for o in report.objects]
    write_json(out / "predictions.json", records)
    metrics = {"task": "points", **report.to_dict()}
    if plot:
        from samflow.evaluation.plots import plot_miou_vs_clicks

        plot_miou_vs_clicks(report.summary(), out / "miou_vs_clicks.png", title=f"mIoU vs clicks, {report.name}")
    write_json(out / "metrics.json", metrics, indent=2)
    return metrics


def write_reports(reports: list[EvalReport], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.to_dict() for r in reports], indent=2), encoding="utf-8")
    return path


__all__ = ["EvalReport", "ObjectResult", "SyntheticScenes", "evaluate", "evaluate_sample", "load_dataset",
           "next_click", "size_category", "synthetic_scenes", "write_points_outputs", "write_reports"]
