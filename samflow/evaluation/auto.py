"""Automatic-mask recall: how many annotated objects the automatic mask generator recovers.

An object counts as recovered when some generated mask overlaps it with IoU >= `iou_threshold`; only objects of at
least `min_area` pixels (default 32x32, COCO's medium and large) are counted, as the data engine's quality target
says. Masks are compared at the image's own resolution.

    recall = automatic_mask_recall(build_sam("tiny"), synthetic_scenes(1000, 200))
    print(recall.format())
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from samflow.data.samples import Sample
from samflow.errors import InputError


@dataclass
class AutoRecall:
    """Objects counted, objects recovered, images, masks generated, and the criteria used."""

    objects: int = 0
    recovered: int = 0
    images: int = 0
    masks: int = 0
    min_area: int = 32 * 32
    iou_threshold: float = 0.75
    points_per_side: int = 16

    @property
    def recall(self) -> float:
        return self.recovered / self.objects if self.objects else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"objects": self.objects, "recovered": self.recovered, "recall": self.recall, "images": self.images,
                "masks_per_image": self.masks / max(self.images, 1), "min_area": self.min_area,
                "iou_threshold": self.iou_threshold, "points_per_side": self.points_per_side}

    def format(self) -> str:
        return (f"automatic masks ({self.points_per_side}x{self.points_per_side} points, "
                f"{self.masks / max(self.images, 1):.1f} per image): recovered {self.recovered} of {self.objects} "
                f"objects of at least {self.min_area} px at IoU >= {self.iou_threshold:g} ({self.recall:.1%})")


def best_overlaps(truth: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """For each true mask (N, H, W), its best IoU with any generated mask (M, H, W); zeros when M = 0."""
    if len(generated) == 0:
        return np.zeros(len(truth))
    t = torch.from_numpy(np.ascontiguousarray(truth)).flatten(1).float()
    g = torch.from_numpy(np.ascontiguousarray(generated)).flatten(1).float()
    inter = t @ g.T
    union = t.sum(1, keepdim=True) + g.sum(1)[None] - inter
    return (inter / union.clamp(min=1)).max(dim=1).values.numpy()


def _grid_side(generator: Any, default: int) -> int:
    """Points per side of a ready generator, from its first point grid (the generator keeps no count)."""
    grids = getattr(generator, "point_grids", None)
    if grids:
        return round(len(grids[0]) ** 0.5)
    return getattr(generator, "points_per_side", default)


@torch.no_grad()
def automatic_mask_recall(model: Any, dataset: Iterable[Sample], *, points_per_side: int = 16,
                          min_area: int = 32 * 32, iou_threshold: float = 0.75, max_images: int | None = None,
                          progress: bool = False, **generator_params: Any) -> AutoRecall:
    """Run `SamAutomaticMaskGenerator(model, points_per_side, **generator_params)` (official defaults otherwise) on
    every image and count the objects of at least `min_area` pixels that a generated mask recovers. `model` may
    also be a ready generator (anything with `generate(image) -> records`), e.g. one configured with crops."""
    from samflow.predict.amg import SamAutomaticMaskGenerator

    if not 0 < iou_threshold <= 1:
        raise InputError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if hasattr(model, "generate"):
        generator = model
        points_per_side = _grid_side(model, points_per_side)
    else:
        generator = SamAutomaticMaskGenerator(model, points_per_side=points_per_side, **generator_params)
    result = AutoRecall(min_area=min_area, iou_threshold=iou_threshold, points_per_side=points_per_side)
    for i, sample in enumerate(tqdm(dataset, disable=not progress, desc="automatic masks")):
        if max_images is not None and i >= max_images:
            break
        truth = sample.masks[sample.masks.reshape(len(sample.masks), -1).sum(axis=1) >= min_area]
        records = generator.generate(sample.image)
        generated = np.stack([r["segmentation"] for r in records]) if records else np.zeros((0, 1, 1), bool)
        result.objects += len(truth)
        result.recovered += int((best_overlaps(truth, generated) >= iou_threshold).sum())
        result.images += 1
        result.masks += len(records)
    return result


__all__ = ["AutoRecall", "automatic_mask_recall", "best_overlaps"]
