"""Instance-mask folders: a folder of images beside a folder of instance-mask PNGs, the layout most segmentation
datasets convert to.

    ROOT/images/NAME.jpg (or .jpeg, .png)
    ROOT/masks/NAME.png      one single-channel integer PNG per image: one id per instance, 0 background
                             (8- or 16-bit grey, or a palette PNG whose indices are the ids), or
    ROOT/masks/NAME/*.png    one binary PNG per instance (nonzero is inside), in name order

Both forms may be mixed across images, not within one. Anything else (a mask of another size, an RGB mask, an image
without masks, a NAME that has both forms) is refused with an error that names the file and the expected layout.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from samflow.data.sa1b import IMAGE_SUFFIXES
from samflow.data.samples import Sample, SampleSequence, load_rgb
from samflow.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["LAYOUT", "InstanceFolderDataset", "is_instance_folder"]

LAYOUT = ("ROOT/images/NAME.jpg|.png with ROOT/masks/NAME.png (one integer id per instance, 0 background) or "
          "ROOT/masks/NAME/*.png (one binary PNG per instance)")


def is_instance_folder(root: str | os.PathLike[str]) -> bool:
    """Whether `root` has the two folders of the layout (its contents are checked by the reader)."""
    root = Path(root)
    return (root / "images").is_dir() and (root / "masks").is_dir()


def _read_label_png(path: Path) -> np.ndarray:
    """The integer array of a single-channel PNG; an InputError for colour images or unreadable files."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise InputError(f"{path}: an instance mask must be a single-channel PNG (grey or palette indices), "
                                 f"got mode {im.mode}; expected layout: {LAYOUT}")
            return np.asarray(im)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the mask PNG ({exc})") from None


class InstanceFolderDataset(SampleSequence):
    """Images and instance masks of a folder in the layout of this module, read lazily: `dataset[i]` -> `Sample`
    with masks (N, H, W), annotations `{"id", "instance_id"}` (label form) or `{"id", "file_name"}` (folder form)."""

    _noun = "image"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        images, masks = self.root / "images", self.root / "masks"
        missing = [p.name + "/" for p in (images, masks) if not p.is_dir()]
        if not self.root.is_dir() or missing:
            what = "is not a folder" if not self.root.is_dir() else f"lacks {' and '.join(missing)}"
            raise InputError(f"instance-mask dataset {self.root} {what}; expected layout: {LAYOUT}")
        self.image_paths: list[Path] = sorted(p for p in images.iterdir()
                                              if p.suffix in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not self.image_paths:
            raise InputError(f"{images} holds no .jpg or .png images; expected layout: {LAYOUT}")
        self.mask_paths: list[Path] = []
        lacking = []
        for image in self.image_paths:
            label, folder = masks / f"{image.stem}.png", masks / image.stem
            if label.is_file() and folder.is_dir():
                raise InputError(f"{image.name} has both {label} and the folder {folder}: keep one form; "
                                 f"expected layout: {LAYOUT}")
            if label.is_file() or folder.is_dir():
                self.mask_paths.append(label if label.is_file() else folder)
            else:
                lacking.append(image.name)
        if lacking:
            shown = ", ".join(lacking[:3]) + (f" and {len(lacking) - 3} more" if len(lacking) > 3 else "")
            raise InputError(f"{masks} has no masks for {shown} (looked for masks/NAME.png and masks/NAME/); "
                             f"expected layout: {LAYOUT}")
        names = {p.stem for p in self.image_paths}
        strays = [p.name for p in masks.iterdir() if not p.name.startswith(".") and Path(p.name).stem not in names]
        if strays:
            log.warning("%s: %d entries have no image (e.g. %s)", masks, len(strays), strays[0])
        log.debug("InstanceFolderDataset: %d images in %s", len(self.image_paths), self.root)

    def __len__(self) -> int:
        return len(self.image_paths)

    def _load(self, index: int) -> Sample:
        image_path, mask_path = self.image_paths[index], self.mask_paths[index]
        image = load_rgb(image_path)
        h, w = image.shape[:2]
        if mask_path.is_dir():
            files = sorted(p for p in mask_path.iterdir() if not p.name.startswith("."))
            others = [p.name for p in files if p.suffix.lower() != ".png" or not p.is_file()]
            if others:
                raise InputError(f"{mask_path}: expected only binary .png masks, found {others[0]}; "
                                 f"expected layout: {LAYOUT}")
            planes = [_read_label_png(p) for p in files]
            anns = [{"id": i + 1, "file_name": p.name} for i, p in enumerate(files)]
            masks = np.zeros((len(planes), h, w), dtype=bool)
            for i, (plane, path) in enumerate(zip(planes, files)):
                self._check_size(path, plane, h, w)
                masks[i] = plane != 0
        else:
            label = _read_label_png(mask_path)
            self._check_size(mask_path, label, h, w)
            ids = np.unique(label)
            ids = ids[ids != 0]
            masks = label[None] == ids[:, None, None]
            anns = [{"id": i + 1, "instance_id": int(v)} for i, v in enumerate(ids)]
        return Sample(image=image, masks=masks, annotations=anns, file_name=image_path.name)

    @staticmethod
    def _check_size(path: Path, mask: np.ndarray, h: int, w: int) -> None:
        if mask.shape != (h, w):
            raise InputError(f"{path}: mask is {mask.shape[0]}x{mask.shape[1]} but its image is {h}x{w}")
