"""Captions of synthetic-scene objects from their colour and shape names ("a red star", "a small blue ring")."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from samflow.data.synthetic import COLORS, SHAPES

# An object whose box's long side is under this fraction of the image's long side may be called "small".
SMALL_FRACTION = 0.125
TEMPLATES = ("a {}", "{}", "the {}", "a photo of a {}", "a picture of the {}", "one {}")


def object_name(ann: dict[str, Any]) -> str:
    """'red star': colour then shape."""
    return f"{ann['color']} {ann['shape']}"


def is_small(ann: dict[str, Any], image_side: int) -> bool:
    _, _, bw, bh = ann["bbox"]
    return max(bw, bh) < SMALL_FRACTION * image_side


def caption(ann: dict[str, Any], image_side: int = 256, rng: np.random.Generator | None = None) -> str:
    """The canonical caption 'a red star'; with `rng`, a random template and, for small objects, maybe 'small'."""
    name = object_name(ann)
    if rng is None:
        return f"a {name}"
    if is_small(ann, image_side) and rng.random() < 0.5:
        name = f"small {name}"
    return TEMPLATES[rng.integers(len(TEMPLATES))].format(name)


def unique_objects(annotations: Sequence[dict[str, Any]]) -> list[int]:
    """Indices of annotations whose colour + shape is unique in their scene (a caption names exactly one)."""
    counts = Counter(object_name(a) for a in annotations)
    return [i for i, a in enumerate(annotations) if counts[object_name(a)] == 1]


def absent_names(annotations: Sequence[dict[str, Any]]) -> list[str]:
    """Every colour + shape name that no annotation of the scene has."""
    present = {object_name(a) for a in annotations}
    return [f"{c} {s}" for c in COLORS for s in SHAPES if f"{c} {s}" not in present]


def all_names() -> list[str]:
    return [f"{c} {s}" for c in COLORS for s in SHAPES]
