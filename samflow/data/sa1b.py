"""SA-1B layout reader: one ``<stem>.json`` (COCO RLE masks) beside each ``<stem>.jpg``/``.png`` image."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from samflow.data.samples import Sample, SampleSequence, load_json, load_rgb
from samflow.errors import SamflowError
from samflow.ops import rle

log = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "SA1BDataset"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def decode_segmentations(segs: list[Any], h: int, w: int, where: str) -> np.ndarray:
    """Bool (N, H, W) masks of RLE segmentations, checked against the image size."""
    out = np.zeros((len(segs), h, w), dtype=bool)
    for i, seg in enumerate(segs):
        try:
            mask = rle.decode(seg)
        except SamflowError as exc:
            raise SamflowError(f"{where}: annotation {i}: {exc}") from None
        if mask.shape != (h, w):
            raise SamflowError(
                f"{where}: annotation {i}: mask size {mask.shape} differs from the image's {(h, w)}"
            )
        out[i] = mask
    return out


class SA1BDataset(SampleSequence):
    """Images and masks of a folder in SA-1B layout, decoded lazily on access.

    Every ``*.json`` in ``folder`` is one sample; its image is the file with the same stem and an image suffix
    (or the JSON's ``image.file_name``). ``dataset[i]`` -> ``Sample``.
    """

    _noun = "sample"

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SamflowError(f"{self.folder}: not a folder")
        names = {p.name for p in self.folder.iterdir()}
        # Hidden files are the temporary halves of writes in progress.
        self.json_paths = sorted(
            self.folder / n for n in names if n.endswith(".json") and not n.startswith(".")
        )
        self.image_paths: list[Path | None] = []
        for js in self.json_paths:
            found = next((self.folder / (js.stem + s) for s in IMAGE_SUFFIXES if js.stem + s in names), None)
            self.image_paths.append(found)
        log.debug("SA1BDataset: %d samples in %s", len(self.json_paths), self.folder)

    def __len__(self) -> int:
        return len(self.json_paths)

    def _load(self, index: int) -> Sample:
        js = self.json_paths[index]
        record = load_json(js)
        if not isinstance(record, dict) or not isinstance(record.get("annotations", []), list):
            raise SamflowError(f"{js}: expected an object with an 'annotations' list")
        image_path = self.image_paths[index]
        if image_path is None:
            info = record.get("image") or {}
            name = info.get("file_name") if isinstance(info, dict) else None
            if not name or not (self.folder / name).exists():
                raise SamflowError(
                    f"{js}: no image found (looked for {js.stem}{{{','.join(IMAGE_SUFFIXES[:3])}}})"
                )
            image_path = self.folder / name
        image = load_rgb(image_path)
        h, w = image.shape[:2]
        anns = record.get("annotations", [])
        try:
            segs = [a["segmentation"] for a in anns]
        except (KeyError, TypeError):
            raise SamflowError(f"{js}: every annotation needs a 'segmentation'") from None
        masks = decode_segmentations(segs, h, w, str(js))
        return Sample(image=image, masks=masks, annotations=anns, file_name=image_path.name)
