"""Text-to-mask: the mIoU of masks prompted by a caption of one object, through `samflow.segment(image, text=...)`
(for `tiny`: the shipped CLIP `clip_tiny` and tiny's prompt adapter).

Captions: an annotation's own `caption` when the dataset has one; else, for synthetic scenes, the canonical caption
of every object whose colour + shape is unique in its scene ("a red star", samflow.data.captions), for objects of
at least `min_area` pixels (the adapter's size threshold, 200). All captions of an image go through the decoder in
one call. Use scenes the text models never saw: `synthetic:22:N` (CLIP was trained on seed 11, the adapter on 21).
The adapter route checks each caption for presence (samflow.models.text.presence): a caption it refuses gets no
mask and counts as IoU 0 (`refused` in the metrics; `presence_threshold=False` turns the check off).
Writes DIR/predictions.json (image, object, caption, iou, score, refused, segmentation RLE) and DIR/metrics.json
(mIoU, by object size, the fraction of objects found at IoU >= 0.5, and the fraction refused).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from samflow.data.samples import Sample
from samflow.errors import InputError
from samflow.evaluation.outputs import write_json
from samflow.evaluation.points import SIZE_BINS, size_category
from samflow.ops import rle
from samflow.ops.metrics import mask_iou

log = logging.getLogger(__name__)

__all__ = ["MIN_AREA", "captioned_objects", "evaluate_text", "format_text"]

MIN_AREA = 200  # samflow.train.text_adapter.TextAdapterConfig().min_area: smaller objects get no text prompt


def captioned_objects(sample: Sample, min_area: int = MIN_AREA) -> list[tuple[int, str]]:
    """(mask index, caption) of the objects of a sample that a caption names."""
    from samflow.data.captions import caption, unique_objects

    anns = sample.annotations
    areas = sample.masks.reshape(len(sample.masks), -1).sum(axis=1) if len(sample.masks) else np.zeros(0)
    if any("caption" in a for a in anns):
        return [(i, str(a["caption"])) for i, a in enumerate(anns) if a.get("caption") and areas[i] >= min_area]
    if anns and all("color" in a and "shape" in a for a in anns):
        side = max(sample.image.shape[:2])
        return [(i, caption(anns[i], side)) for i in unique_objects(anns) if areas[i] >= min_area]
    return []


@torch.no_grad()
def evaluate_text(model: Any, dataset: Sequence[Sample], out_dir: str | Path, name: str = "dataset",
                  min_area: int = MIN_AREA, max_images: int | None = None, progress: bool = False,
                  plot: bool = False, presence_threshold: float | bool | None = None) -> dict[str, Any]:
    """Prompt with every caption of every image, score the masks (a refused caption: IoU 0); returns the
    metrics. `presence_threshold` as `samflow.segment`'s."""
    from samflow.engine.cache import EmbeddingCache
    from samflow.predict.api import segment
    from samflow.predict.segmenter import Segmenter

    out = Path(out_dir)
    segmenter = Segmenter(cache=EmbeddingCache(max_bytes=64 * 2**20))  # images are seen once: keep few
    records: list[dict[str, Any]] = []
    images = 0
    started = time.perf_counter()
    total = len(dataset) if max_images is None else min(max_images, len(dataset))
    for index in tqdm(range(total), disable=not progress, desc=name):
        sample = dataset[index]
        images += 1
        objects = captioned_objects(sample, min_area)
        if not objects:
            continue
        texts = [text for _, text in objects]
        result = segment(sample.image, text=texts, model=model, segmenter=segmenter,
                         presence_threshold=presence_threshold)
        truth = sample.masks[[i for i, _ in objects]]
        # The objects kept are in caption order: match them to their captions in turn (refused ones are skipped).
        answer: list[int | None] = []
        at = 0
        for text in texts:
            found = at < len(result) and result.labels[at] == text
            answer.append(at if found else None)
            at += int(found)
        empty = np.zeros(sample.image.shape[:2], bool)
        masks = np.stack([result.masks[j] if j is not None else empty for j in answer])
        ious = np.atleast_1d(mask_iou(masks, truth))
        encoded = rle.encode(masks)
        assert isinstance(encoded, list)
        for n, (i, text) in enumerate(objects):
            j = answer[n]
            records.append({"image": sample.file_name or str(index + 1), "object": int(i), "caption": text,
                            "area": int(truth[n].sum()), "iou": float(ious[n]) if j is not None else 0.0,
                            "score": float(result.scores[j]) if j is not None else 0.0, "refused": j is None,
                            "segmentation": encoded[n]})
    if not records:
        raise InputError(f"{name}: no object has a caption (the text task needs annotations with a 'caption', or "
                         "synthetic scenes, whose colour and shape name an object: synthetic:22:N)")
    write_json(out / "predictions.json", records)
    ious = np.array([r["iou"] for r in records])
    by_size = {}
    for group, _, _ in SIZE_BINS:
        picked = [r["iou"] for r in records if size_category(r["area"]) == group]
        by_size[group] = {"n": len(picked), "mIoU": float(np.mean(picked)) if picked else None}
    metrics: dict[str, Any] = {"task": "text", "dataset": name, "images": images, "objects": len(records),
                               "min_area": min_area, "mIoU": float(ious.mean()),
                               "found_at_0.5": float((ious >= 0.5).mean()), "by_size": by_size,
                               "refused": float(np.mean([r["refused"] for r in records])),
                               "seconds": round(time.perf_counter() - started, 2)}
    if plot:
        from samflow.evaluation.plots import plot_iou_histogram

        plot_iou_histogram(ious, out / "iou_histogram.png", title=f"text prompts, {name}")
    write_json(out / "metrics.json", metrics, indent=2)
    return metrics


def format_text(metrics: dict[str, Any]) -> str:
    return (f"{metrics['dataset']}: {metrics['objects']} captioned objects in {metrics['images']} images, text-to-mask "
            f"mIoU {metrics['mIoU']:.4f}, found at IoU >= 0.5: {metrics['found_at_0.5']:.1%}, refused as absent: "
            f"{metrics.get('refused', 0.0):.1%}")
