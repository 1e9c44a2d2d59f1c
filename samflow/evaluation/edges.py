"""Zero-shot edge detection: SAM's masks turned into an edge map (the SAM paper's recipe, appendix D.2), scored by
the BSDS500 boundary benchmark (samflow.evaluation.boundaries).

The recipe: prompt SAM with a 16x16 grid of foreground points, three masks per point (768); no filtering by
predicted IoU or stability; redundant masks removed by box NMS (IoU 0.7, the generator's, preferring higher
predicted IoU); each remaining mask's unthresholded probability map (the sigmoid of its logits at image size)
Sobel-filtered, with the response kept only on the mask's boundary (pixels within one pixel of the edge of the
thresholded mask: "set to zero where they do not intersect the outer boundary pixels of a mask"); the pixel-wise
maximum over masks, linearly normalised to [0, 1], thinned by edge NMS (Dollár's, as the BSDS toolchain applies
to every detector: triangle smoothing, orientation from second derivatives, suppression across the edge). The
benchmark thins each thresholded map again before matching, as the standard evaluation does.

Writes DIR/edges/NAME.png (8-bit edge maps, the benchmark's input format) and DIR/metrics.json (ODS, OIS, AP, R50,
the precision-recall curve over thresholds, each image's best threshold).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from samflow.data.bsds import BoundarySample
from samflow.errors import InputError
from samflow.evaluation.boundaries import INSTALL, MAX_DIST, image_counts, summarize, thresholds
from samflow.evaluation.outputs import write_json, write_png
from samflow.ops.amg import build_point_grid, masks_to_boxes
from samflow.predict.predictor import SamPredictor

log = logging.getLogger(__name__)

__all__ = ["EdgeSettings", "evaluate_edges", "format_edges", "sam_edge_map", "sobel_magnitude"]

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


@dataclass
class EdgeSettings:
    """The recipe's grid, deduplication and post-processing (defaults: the SAM paper's)."""

    points_per_side: int = 16
    box_nms_thresh: float = 0.7
    points_per_batch: int = 64
    edge_nms: bool = True

    def check(self) -> None:
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise InputError("the edge grid and its batch must be positive")
        if not 0 < self.box_nms_thresh <= 1:
            raise InputError(f"box_nms_thresh must be in (0, 1], got {self.box_nms_thresh}")


def sobel_magnitude(maps: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude (N, H, W) of maps (N, H, W) by 3x3 Sobel filters (edges replicated at the border)."""
    kernels = torch.stack([_SOBEL_X, _SOBEL_X.T])[:, None].to(maps)
    gradients = F.conv2d(F.pad(maps[:, None], (1, 1, 1, 1), mode="replicate"), kernels)
    return gradients.pow(2).sum(dim=1).sqrt()


def _boundary_band(binary: torch.Tensor) -> torch.Tensor:
    """Pixels within one pixel (3x3) of the boundary of bool masks (N, H, W); none along the image border."""
    x = binary[:, None].float()
    dilated = F.max_pool2d(x, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
    return (dilated > 0.5)[:, 0] & ~(eroded > 0.5)[:, 0]


def _edge_nms(edges: np.ndarray) -> np.ndarray:
    try:
        from pyEdgeEval.preprocess import fast_nms
    except ImportError:
        raise InputError(f"edge NMS uses pyEdgeEval, which is not installed: {INSTALL}") from None
    return np.clip(fast_nms(np.ascontiguousarray(edges, dtype=np.float64), r=1, s=5, m=1.01), 0, 1)


@torch.no_grad()
def sam_edge_map(model: Any, image: np.ndarray, settings: EdgeSettings | None = None) -> np.ndarray:
    """The recipe's edge map of an RGB image (H, W, 3): float64 (H, W) in [0, 1]."""
    settings = settings or EdgeSettings()
    settings.check()
    predictor = model if isinstance(model, SamPredictor) else SamPredictor(model)
    predictor.set_image(image)
    sam = predictor.model
    h, w = image.shape[:2]
    points = build_point_grid(settings.points_per_side) * np.array([w, h])
    device = predictor.device
    low_res, scores, boxes = [], [], []
    for start in range(0, len(points), settings.points_per_batch):
        batch = points[start : start + settings.points_per_batch]
        coords = torch.as_tensor(predictor.transform.apply_coords(batch, predictor.original_size),
                                 dtype=torch.float, device=device)[:, None]
        labels = torch.ones(coords.shape[:2], dtype=torch.int, device=device)
        logits, iou, low = predictor.predict_torch(coords, labels, multimask_output=True, return_logits=True)
        boxes.append(masks_to_boxes((logits > sam.mask_threshold).flatten(0, 1).cpu().numpy()))
        scores.append(iou.flatten().float().cpu())
        low_res.append(low.flatten(0, 1).to(torch.float16).cpu())
        del logits
    all_low = torch.cat(low_res)
    keep = batched_nms(torch.as_tensor(np.concatenate(boxes)).float(), torch.cat(scores),
                       torch.zeros(len(all_low)), iou_threshold=settings.box_nms_thresh)
    edges = torch.zeros((h, w), dtype=torch.float32)
    for start in range(0, len(keep), settings.points_per_batch):
        chosen = all_low[keep[start : start + settings.points_per_batch]].to(device=device, dtype=torch.float32)
        logits = sam.postprocess_masks(chosen[:, None], predictor.input_size, predictor.original_size)[:, 0]
        response = sobel_magnitude(torch.sigmoid(logits)) * _boundary_band(logits > sam.mask_threshold)
        edges = torch.maximum(edges, response.amax(dim=0).float().cpu())
    values = edges.numpy().astype(np.float64)
    low_value, high_value = values.min(), values.max()
    values = (values - low_value) / (high_value - low_value) if high_value > low_value else np.zeros_like(values)
    return _edge_nms(values) if settings.edge_nms else values


def evaluate_edges(model: Any, dataset: Sequence[BoundarySample], out_dir: str | Path, name: str = "dataset",
                   settings: EdgeSettings | None = None, levels: int = 99, max_dist: float = MAX_DIST,
                   max_images: int | None = None, progress: bool = False, plot: bool = False) -> dict[str, Any]:
    """Edge maps for every image, written as PNGs and scored against the boundaries; returns the metrics."""
    from tqdm import tqdm

    settings = settings or EdgeSettings()
    settings.check()
    out = Path(out_dir)
    grid = thresholds(levels)
    predictor = SamPredictor(model)
    counts, images = [], []
    started = time.perf_counter()
    total = len(dataset) if max_images is None else min(max_images, len(dataset))
    for index in tqdm(range(total), disable=not progress, desc=name):
        sample = dataset[index]
        edge_map = sam_edge_map(predictor, sample.image, settings)
        stem = Path(sample.file_name).stem or f"{index + 1:06d}"
        write_png(out / "edges" / f"{stem}.png", edge_map)
        quantised = np.round(edge_map * 255) / 255  # what the benchmark reads back from the PNG
        found = image_counts(quantised, sample.boundaries, grid, max_dist)
        counts.append(found)
        one = summarize([found], grid)
        best = int(np.argmax(one["curve"]["f"]))
        images.append({"name": stem, "annotators": int(len(sample.boundaries)), "threshold": float(grid[best]),
                       "recall": one["curve"]["recall"][best], "precision": one["curve"]["precision"][best],
                       "f": one["curve"]["f"][best]})
    if not counts:
        raise InputError(f"{name}: no images to evaluate")
    summary = summarize(counts, grid)
    metrics: dict[str, Any] = {"task": "edges", "dataset": name, "images": len(counts), "settings": asdict(settings),
                               "thresholds": levels, "max_dist": max_dist,
                               **{k: summary[k] for k in summary if k != "curve"},
                               "curve": summary["curve"], "per_image": images,
                               "seconds": round(time.perf_counter() - started, 2)}
    if plot:
        from samflow.evaluation.plots import plot_boundary_pr

        plot_boundary_pr(metrics, out / "precision_recall.png", title=f"boundaries, {name}")
    write_json(out / "metrics.json", metrics, indent=2)
    return metrics


def format_edges(metrics: dict[str, Any]) -> str:
    def show(v: Any) -> str:
        return "nan" if v is None or v != v else f"{v:.4f}"

    return (f"{metrics['dataset']}: {metrics['images']} images, boundaries ODS {show(metrics['ODS'])} "
            f"OIS {show(metrics['OIS'])} AP {show(metrics['AP'])} R50 {show(metrics['R50'])}")
