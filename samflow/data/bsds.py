"""BSDS500 boundary ground truth: images with the boundary maps of several annotators, in the benchmark's layout.

    ROOT/images/SPLIT/NAME.jpg (or .png)
    ROOT/groundTruth/SPLIT/NAME.mat     the benchmark's files: groundTruth{k}.Boundaries, one per annotator, or
    ROOT/groundTruth/SPLIT/NAME.png     one boundary map (nonzero is boundary), or
    ROOT/groundTruth/SPLIT/NAME/*.png   one boundary map per annotator

ROOT is BSDS500's `data` folder (BSR/BSDS500/data) and SPLIT `test` (200 images), `val` or `train`; without
SPLIT folders, ROOT/images/NAME.jpg and ROOT/groundTruth/NAME.mat are read. `.mat` files are read with
`scipy.io.loadmat` (scipy is in samflow's `eval` extra).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
from PIL import Image

from samflow.data.sa1b import IMAGE_SUFFIXES
from samflow.data.samples import load_rgb
from samflow.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["LAYOUT", "BSDSDataset", "BoundarySample", "is_bsds_folder", "read_boundaries_mat"]

LAYOUT = ("ROOT/images/SPLIT/NAME.jpg with ROOT/groundTruth/SPLIT/NAME.mat (groundTruth{k}.Boundaries), "
          "NAME.png (a boundary map) or NAME/*.png (one map per annotator)")


@dataclass
class BoundarySample:
    """One image and its ground-truth boundaries: image uint8 (H, W, 3); boundaries bool (K, H, W), one map per
    annotator."""

    image: np.ndarray
    boundaries: np.ndarray
    file_name: str = ""


def is_bsds_folder(root: str | os.PathLike[str]) -> bool:
    root = Path(root)
    return (root / "images").is_dir() and (root / "groundTruth").is_dir()


def read_boundaries_mat(path: str | os.PathLike[str]) -> np.ndarray:
    """bool (K, H, W): the `Boundaries` of every annotator in a BSDS500 ground-truth .mat file."""
    path = Path(path)
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ImportError:
        raise InputError(f"reading {path} needs scipy: pip install \"samflow[eval]\"") from None
    try:
        data = loadmat(path, simplify_cells=True)
    except (OSError, ValueError, TypeError, NotImplementedError, MatReadError) as exc:
        raise InputError(f"{path}: not a readable MATLAB file ({exc})") from None
    if "groundTruth" not in data:
        raise InputError(f"{path}: no 'groundTruth' variable (BSDS500 files hold groundTruth{{k}}.Boundaries)")
    cells: Any = data["groundTruth"]
    if isinstance(cells, dict):
        cells = [cells]
    maps = []
    for k, cell in enumerate(np.atleast_1d(np.asarray(cells, dtype=object)).ravel()):
        if not isinstance(cell, dict) or "Boundaries" not in cell:
            raise InputError(f"{path}: groundTruth{{{k + 1}}} has no 'Boundaries' field")
        maps.append(np.asarray(cell["Boundaries"]) != 0)
    if not maps or any(m.ndim != 2 or m.shape != maps[0].shape for m in maps):
        raise InputError(f"{path}: expected one 2-D boundary map per annotator, of one size")
    return np.stack(maps)


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L")) != 0
    except OSError as exc:
        raise InputError(f"{path}: cannot read the boundary PNG ({exc})") from None


class BSDSDataset(Sequence[BoundarySample]):
    """Images and boundary maps of a BSDS500-layout folder (see the module doc), read lazily."""

    def __init__(self, root: str | os.PathLike[str], split: str = "test") -> None:
        self.root = Path(root)
        if not is_bsds_folder(self.root):
            raise InputError(f"BSDS dataset {self.root} lacks images/ and groundTruth/; expected layout: {LAYOUT}")
        images, truth = self.root / "images", self.root / "groundTruth"
        if split and (images / split).is_dir():
            images, truth = images / split, truth / split
            if not truth.is_dir():
                raise InputError(f"{self.root}: images/{split}/ has no groundTruth/{split}/; expected layout: "
                                 f"{LAYOUT}")
        elif split and any(p.is_dir() for p in images.iterdir()):
            found = sorted(p.name for p in images.iterdir() if p.is_dir())
            raise InputError(f"{self.root}: no split {split!r} in images/ (found {', '.join(found)}); choose one")
        self.image_paths = sorted(p for p in images.iterdir()
                                  if p.suffix in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not self.image_paths:
            raise InputError(f"{images} holds no images; expected layout: {LAYOUT}")
        self.truth_paths: list[Path] = []
        lacking = []
        for image in self.image_paths:
            options = [truth / f"{image.stem}.mat", truth / f"{image.stem}.png", truth / image.stem]
            found = [p for p in options if p.exists()]
            if len(found) > 1:
                raise InputError(f"{image.name} has several ground truths ({', '.join(p.name for p in found)}) in "
                                 f"{truth}: keep one")
            if found:
                self.truth_paths.append(found[0])
            else:
                lacking.append(image.name)
        if lacking:
            shown = ", ".join(lacking[:3]) + (f" and {len(lacking) - 3} more" if len(lacking) > 3 else "")
            raise InputError(f"{truth} has no ground truth for {shown}; expected layout: {LAYOUT}")
        self.name = f"{self.root.name}/{split}" if split else self.root.name

    def __len__(self) -> int:
        return len(self.image_paths)

    @overload
    def __getitem__(self, index: int) -> BoundarySample: ...

    @overload
    def __getitem__(self, index: slice) -> list[BoundarySample]: ...

    def __getitem__(self, index: int | slice) -> BoundarySample | list[BoundarySample]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"image {index} out of range for {len(self)} images")
        index %= len(self)
        image_path, truth_path = self.image_paths[index], self.truth_paths[index]
        image = load_rgb(image_path)
        if truth_path.suffix == ".mat":
            boundaries = read_boundaries_mat(truth_path)
        elif truth_path.is_dir():
            files = sorted(p for p in truth_path.iterdir() if p.suffix.lower() == ".png")
            if not files:
                raise InputError(f"{truth_path}: no boundary .png files; expected layout: {LAYOUT}")
            maps = [_read_png(p) for p in files]
            if len({m.shape for m in maps}) != 1:
                raise InputError(f"{truth_path}: boundary maps of different sizes")
            boundaries = np.stack(maps)
        else:
            boundaries = _read_png(truth_path)[None]
        if boundaries.shape[1:] != image.shape[:2]:
            raise InputError(f"{truth_path}: boundaries are {boundaries.shape[1]}x{boundaries.shape[2]} but "
                             f"{image_path.name} is {image.shape[0]}x{image.shape[1]}")
        return BoundarySample(image=image, boundaries=boundaries, file_name=image_path.name)
