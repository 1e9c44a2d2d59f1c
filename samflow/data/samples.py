"""What every dataset reader returns: `Sample` (an image with its masks), the lazily indexed sequence of them that
the SA-1B and COCO readers share, and the file readers that name the file in their errors."""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
from PIL import Image

from samflow.errors import SamflowError

__all__ = ["Sample", "SampleSequence", "load_json", "load_rgb"]


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


class SampleSequence(Sequence[Sample]):
    """Samples decoded lazily on access: `dataset[i]` (negative `i` counts from the end) and `dataset[a:b]`.

    A reader gives `__len__` and `_load(index)` for 0 <= index < len; `_noun` names its entries in the IndexError.
    """

    _noun = "sample"

    @abstractmethod
    def _load(self, index: int) -> Sample:
        """The sample at `index`, 0 <= index < len(self), read from its files."""

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...

    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self._noun} {index} out of range for {n} {self._noun}s")
        return self._load(index % n)


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
