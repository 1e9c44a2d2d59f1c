"""COCO- and LVIS-format annotation files read once, for evaluators that need the whole file (pycocotools' COCOeval,
the `lvis` package's LVISEval) and the images it names.

LVIS v1 files name their images by `coco_url` only (`http://images.cocodataset.org/val2017/000000397133.jpg`): the
file is looked up as `IMAGES/val2017/000000397133.jpg`, then `IMAGES/000000397133.jpg`, so `IMAGES` may be a COCO
root holding train2017/ and val2017/ (LVIS val draws from both) or one folder of images. An LVIS file is told from
a COCO one by its categories' `frequency` (r: rare, c: common, f: frequent) or its images' `neg_category_ids`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from samflow.data.samples import load_json, load_rgb
from samflow.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["FREQUENCIES", "AnnotationFile", "image_file_name", "is_lvis"]

FREQUENCIES = {"r": "rare", "c": "common", "f": "frequent"}


def is_lvis(data: dict[str, Any]) -> bool:
    """Whether a parsed annotation file is in LVIS format (category frequencies or federated image lists)."""
    categories = data.get("categories") or []
    images = data.get("images") or []
    return any(isinstance(c, dict) and "frequency" in c for c in categories) or any(
        isinstance(i, dict) and "neg_category_ids" in i for i in images[:1])


def image_file_name(entry: dict[str, Any]) -> str:
    """The relative path of an image entry: `file_name`, else the last two parts of its `coco_url`."""
    if entry.get("file_name"):
        return str(entry["file_name"])
    url = entry.get("coco_url") or entry.get("url")
    if not url:
        raise InputError(f"image entry {entry.get('id')!r} has neither 'file_name' nor 'coco_url'")
    parts = str(url).rstrip("/").split("/")
    return "/".join(parts[-2:])


class AnnotationFile:
    """A COCO or LVIS annotation file: `data` (the parsed file), `images` (its image entries), `lvis`, and the
    image pixels from `image_dir` by entry."""

    def __init__(self, path: str | os.PathLike[str], image_dir: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path)
        self.image_dir = Path(image_dir) if image_dir is not None else self.path.parent
        data = load_json(self.path)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise InputError(f"{self.path}: expected a COCO or LVIS object with an 'images' list")
        for key in ("annotations", "categories"):
            if not isinstance(data.get(key, []), list):
                raise InputError(f"{self.path}: '{key}' must be a list")
        data.setdefault("annotations", [])
        data.setdefault("categories", [])
        for image in data["images"]:
            if not isinstance(image, dict) or "id" not in image:
                raise InputError(f"{self.path}: image entry {image!r:.80} lacks an 'id'")
        for ann in data["annotations"]:
            if not isinstance(ann, dict) or not {"image_id", "category_id", "segmentation"} <= set(ann):
                raise InputError(f"{self.path}: annotation {ann!r:.80} lacks image_id, category_id or segmentation")
        self.data: dict[str, Any] = data
        self.lvis = is_lvis(data)
        if self.lvis:
            missing = [c.get("id") for c in data["categories"] if c.get("frequency") not in FREQUENCIES]
            if missing:
                raise InputError(f"{self.path}: LVIS categories need a frequency r/c/f; {missing[:3]} have none")
            for image in data["images"]:
                image.setdefault("neg_category_ids", [])
                image.setdefault("not_exhaustive_category_ids", [])
        self.images: list[dict[str, Any]] = data["images"]
        log.debug("%s: %d images, %d annotations (%s)", self.path, len(self.images), len(data["annotations"]),
                  "LVIS" if self.lvis else "COCO")

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, entry: dict[str, Any]) -> Path:
        name = image_file_name(entry)
        for candidate in (self.image_dir / name, self.image_dir / Path(name).name):
            if candidate.is_file():
                return candidate
        raise InputError(f"image {name} of {self.path.name} not found in {self.image_dir} (give the image folder "
                         "with --images)")

    def load_image(self, entry: dict[str, Any]) -> np.ndarray:
        return load_rgb(self.image_path(entry))
