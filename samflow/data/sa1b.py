"""SA-1B layout reader: one ``<stem>.json`` (COCO RLE masks) beside each ``<stem>.jpg``/``.png`` image."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
from PIL import Image

from samflow.errors import SamflowError
from samflow.ops import rle

log = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "SA1BDataset", "Sample", "load_json", "load_rgb"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


@dataclass
class Sample:
    """One image with its masks.

    image: uint8 (H, W, 3) RGB. masks: bool (N, H, W), one per annotation, in annotation order.
    annotations: the N raw annotation dicts of the file. file_name: the image's file name.
    """

    image: np.ndarray
    masks: np.ndarray
    annotations: list[dict[str, Any]] = field(default_factory=list)
    file_name: str = ""


def load_json(path: Path) -> Any:
    """Parsed JSON, or a SamflowError that names the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise SamflowError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SamflowError(f"{path}: not valid JSON ({exc})") from None


def load_rgb(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB pixels of an image file, or a SamflowError that names it."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise SamflowError(f"{path}: image not found") from None
    except OSError as exc:
        raise SamflowError(f"{path}: cannot read image ({exc})") from None


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


class SA1BDataset(Sequence[Sample]):
    """Images and masks of a folder in SA-1B layout, decoded lazily on access.

    Every ``*.json`` in ``folder`` is one sample; its image is the file with the same stem and an image suffix
    (or the JSON's ``image.file_name``). ``dataset[i]`` -> ``Sample``.
    """

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

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...

    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"sample {index} out of range for {n} samples")
        index %= n
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
