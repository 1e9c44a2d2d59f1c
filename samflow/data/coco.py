"""COCO instance-segmentation reader: polygons, compressed RLE and uncompressed (``iscrowd``) RLE."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from samflow.data.samples import Sample, SampleSequence, load_json, load_rgb
from samflow.errors import InputError, SamflowError
from samflow.ops import rle

log = logging.getLogger(__name__)

__all__ = ["CocoDataset", "rasterize_polygons", "segmentation_to_mask"]


def _polygon_parity(xy: np.ndarray, h: int, w: int) -> np.ndarray:
    """Even-odd fill of one closed polygon (K, 2) in pixel coordinates, sampled at pixel centres.

    Every edge that crosses a column's centre line toggles the inside state from the crossing row downwards;
    a cumulative sum of toggles down each column gives the parity. No Python loop over edges or pixels.
    """
    out = np.zeros((h, w), dtype=bool)
    x0, y0 = xy[:, 0], xy[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    lo = max(int(np.floor(xy[:, 0].min() - 0.5)), 0)
    hi = min(int(np.ceil(xy[:, 0].max() - 0.5)), w - 1)
    if hi < lo:
        return out
    cx = np.arange(lo, hi + 1, dtype=np.float64) + 0.5
    # Half-open test, so a vertex lying on a column line counts once for the two edges that meet there.
    crosses = (np.minimum(x0, x1)[:, None] <= cx) & (cx < np.maximum(x0, x1)[:, None])
    e, c = np.nonzero(crosses)
    t = (cx[c] - x0[e]) / (x1[e] - x0[e])
    y = y0[e] + t * (y1[e] - y0[e])
    row = np.clip(np.ceil(y - 0.5), 0, h).astype(np.int64)
    toggles = np.bincount(row * (hi - lo + 1) + c, minlength=(h + 1) * (hi - lo + 1))
    parity = np.cumsum(toggles.reshape(h + 1, hi - lo + 1)[:h], axis=0) & 1
    out[:, lo : hi + 1] = parity.astype(bool)
    return out


def rasterize_polygons(polygons: Sequence[Sequence[float]], h: int, w: int) -> np.ndarray:
    """Bool (H, W) union of COCO polygons (each a flat ``[x1, y1, x2, y2, ...]`` list).

    A pixel is inside when its centre is; this agrees with pycocotools up to pixels along the boundary.
    Polygons with fewer than 3 points cover nothing.
    """
    mask = np.zeros((h, w), dtype=bool)
    for poly in polygons:
        try:
            xy = np.asarray(poly, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError("a polygon must be a flat list of numbers [x1, y1, x2, y2, ...]") from None
        if xy.ndim != 1 or xy.size % 2:
            raise InputError(
                f"a polygon must be a flat list of an even count of numbers, got {xy.size} values"
            )
        if xy.size < 6:
            log.debug("skipping a polygon with %d points", xy.size // 2)
            continue
        # pycocotools rounds vertices to 1/5 pixel before filling; doing the same halves the boundary disagreement.
        xy = np.floor(xy * 5 + 0.5) / 5
        mask |= _polygon_parity(xy.reshape(-1, 2), h, w)
    return mask


def segmentation_to_mask(seg: Any, h: int, w: int) -> np.ndarray:
    """Bool (H, W) mask of a COCO segmentation: polygon list, or RLE with str or list counts."""
    if isinstance(seg, list):
        return rasterize_polygons(seg, h, w)
    if isinstance(seg, dict):
        mask = rle.decode(seg)
        if mask.shape != (h, w):
            raise InputError(f"RLE size {list(mask.shape)} differs from the image size {[h, w]}")
        return mask
    raise InputError(f"unknown segmentation type {type(seg).__name__}: expected polygons or RLE")


class CocoDataset(SampleSequence):
    """Images and instance masks of a COCO annotation file, decoded lazily on access.

    ``dataset[i]`` -> ``Sample`` for the i-th image of the file's ``images`` (optionally only those with
    annotations). ``categories`` maps category id -> name.
    """

    _noun = "image"

    def __init__(
        self,
        annotation_json: str | os.PathLike[str],
        image_dir: str | os.PathLike[str],
        skip_empty: bool = False,
    ) -> None:
        self.annotation_json = Path(annotation_json)
        self.image_dir = Path(image_dir)
        data = load_json(self.annotation_json)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise SamflowError(f"{self.annotation_json}: expected a COCO object with an 'images' list")
        anns = data.get("annotations", [])
        if not isinstance(anns, list):
            raise SamflowError(f"{self.annotation_json}: 'annotations' must be a list")
        self.categories: dict[int, str] = {
            c["id"]: c.get("name", str(c["id"])) for c in data.get("categories", []) if isinstance(c, dict)
        }
        by_image: dict[Any, list[dict[str, Any]]] = {}
        for a in anns:
            if not isinstance(a, dict) or "image_id" not in a or "segmentation" not in a:
                raise SamflowError(
                    f"{self.annotation_json}: annotation {a!r:.80} lacks 'image_id' or 'segmentation'"
                )
            by_image.setdefault(a["image_id"], []).append(a)
        self.images: list[dict[str, Any]] = []
        for img in data["images"]:
            if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
                raise SamflowError(
                    f"{self.annotation_json}: image entry {img!r:.80} lacks 'id' or 'file_name'"
                )
            if skip_empty and not by_image.get(img["id"]):
                continue
            self.images.append(img)
        self._anns = by_image
        log.debug("CocoDataset: %d images from %s", len(self.images), self.annotation_json)

    def __len__(self) -> int:
        return len(self.images)

    def annotations_of(self, index: int) -> list[dict[str, Any]]:
        """The raw annotations of image ``index`` (no pixels are read)."""
        return self._anns.get(self.images[index]["id"], [])

    def _load(self, index: int) -> Sample:
        info = self.images[index]
        path = self.image_dir / info["file_name"]
        image = load_rgb(path)
        h, w = image.shape[:2]
        if (info.get("height", h), info.get("width", w)) != (h, w):
            raise SamflowError(
                f"{path}: image is {h}x{w} but {self.annotation_json.name} says {info.get('height')}x{info.get('width')}"
            )
        anns = self.annotations_of(index)
        masks = np.zeros((len(anns), h, w), dtype=bool)
        for i, a in enumerate(anns):
            try:
                masks[i] = segmentation_to_mask(a["segmentation"], h, w)
            except SamflowError as exc:
                raise SamflowError(f"{self.annotation_json}: annotation {a.get('id', i)}: {exc}") from None
        return Sample(image=image, masks=masks, annotations=anns, file_name=info["file_name"])
