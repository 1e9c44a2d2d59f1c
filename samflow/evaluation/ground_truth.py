"""The ground truth that COCOeval and LVISEval read, for any evaluation dataset, and the images to predict on.

A COCO or LVIS annotation file is its own ground truth. Any other dataset (synthetic scenes, SA-1B folders,
instance-mask folders) becomes a COCO dict while its images are read: image ids 1..N in dataset order, one
annotation per non-empty mask (compressed RLE, its pixel area, its tight box, iscrowd 0), category = the shape for
synthetic scenes (circle, ellipse, ...: `SHAPE_CATEGORIES`), else one category "object". The tasks write it beside
their predictions (DIR/ground_truth.json) so that both can be re-scored with the standard tools.

    truth = ground_truth("synthetic:1000:50")
    for item in truth.images(max_images=10):
        item.image_id, item.image, item.annotations
    truth.data, truth.image_ids       # complete once the images were read
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from samflow.data.samples import Sample
from samflow.data.synthetic import SHAPES
from samflow.errors import InputError
from samflow.evaluation.datasets import load_dataset
from samflow.ops import rle

__all__ = ["SHAPE_CATEGORIES", "EvalImage", "GroundTruth", "ground_truth", "sample_annotations"]

SHAPE_CATEGORIES = [{"id": i + 1, "name": shape} for i, shape in enumerate(SHAPES)]
OBJECT_CATEGORY = {"id": len(SHAPES) + 1, "name": "object"}
_SHAPE_IDS = {c["name"]: c["id"] for c in SHAPE_CATEGORIES}


@dataclass
class EvalImage:
    """One image to predict on: its id in the ground truth, file name, pixels and ground-truth annotations."""

    image_id: Any
    file_name: str
    image: np.ndarray
    annotations: list[dict[str, Any]] = field(default_factory=list)


def sample_annotations(sample: Sample, image_id: int, first_id: int) -> list[dict[str, Any]]:
    """COCO annotations of a sample's non-empty masks (ids from `first_id`)."""
    keep = [i for i in range(len(sample.masks)) if sample.masks[i].any()]
    if not keep:
        return []
    encoded = rle.encode(sample.masks[keep])
    assert isinstance(encoded, list)
    boxes = rle.bbox(encoded)
    anns = []
    for n, (i, seg) in enumerate(zip(keep, encoded)):
        source = sample.annotations[i] if i < len(sample.annotations) else {}
        category = _SHAPE_IDS.get(source.get("shape"), OBJECT_CATEGORY["id"])
        anns.append({"id": first_id + n, "image_id": image_id, "category_id": category, "segmentation": seg,
                     "area": int(sample.masks[i].sum()), "bbox": [float(v) for v in boxes[n]], "iscrowd": 0})
    return anns


class GroundTruth:
    """A dataset as the standard evaluators see it: `data` (COCO or LVIS dict), `lvis`, `source` (the annotation
    file, or None when built from samples), and `images()` to predict on."""

    def __init__(self, name: str, data: dict[str, Any], lvis: bool = False, source: Path | None = None) -> None:
        self.name, self.data, self.lvis, self.source = name, data, lvis, source
        self.image_ids: list[Any] = []  # the images read so far: what the evaluators are restricted to

    def __len__(self) -> int:
        raise NotImplementedError

    def images(self, max_images: int | None = None, progress: bool = False) -> Iterator[EvalImage]:
        raise NotImplementedError

    @property
    def frequencies(self) -> dict[str, int]:
        """Categories per LVIS frequency letter (empty for COCO)."""
        counts: dict[str, int] = {}
        for c in self.data.get("categories", []):
            if "frequency" in c:
                counts[c["frequency"]] = counts.get(c["frequency"], 0) + 1
        return counts


class _FileTruth(GroundTruth):
    def __init__(self, path: Path, image_dir: str | None) -> None:
        from samflow.data.lvis import AnnotationFile

        self.file = AnnotationFile(path, image_dir)
        super().__init__(path.stem, self.file.data, self.file.lvis, path)
        self._by_image: dict[Any, list[dict[str, Any]]] = {}
        for ann in self.data["annotations"]:
            self._by_image.setdefault(ann["image_id"], []).append(ann)

    def __len__(self) -> int:
        return len(self.file)

    def images(self, max_images: int | None = None, progress: bool = False) -> Iterator[EvalImage]:
        self.image_ids = []
        entries = self.file.images[:max_images] if max_images is not None else self.file.images
        for entry in tqdm(entries, disable=not progress, desc=self.name):
            from samflow.data.lvis import image_file_name

            image = self.file.load_image(entry)
            expected = (entry.get("height"), entry.get("width"))
            if None not in expected and expected != image.shape[:2]:
                raise InputError(f"image {image_file_name(entry)} is {image.shape[0]}x{image.shape[1]} but "
                                 f"{self.file.path.name} says {expected[0]}x{expected[1]}")
            self.image_ids.append(entry["id"])
            yield EvalImage(entry["id"], image_file_name(entry), image, self._by_image.get(entry["id"], []))


class _SampleTruth(GroundTruth):
    def __init__(self, name: str, samples: Sequence[Sample]) -> None:
        super().__init__(name, {"images": [], "annotations": [], "categories": SHAPE_CATEGORIES + [OBJECT_CATEGORY]})
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def images(self, max_images: int | None = None, progress: bool = False) -> Iterator[EvalImage]:
        self.image_ids = []
        self.data["images"], self.data["annotations"] = [], []
        total = len(self.samples) if max_images is None else min(max_images, len(self.samples))
        for index in tqdm(range(total), disable=not progress, desc=self.name):
            sample = self.samples[index]
            image_id = index + 1
            h, w = sample.image.shape[:2]
            anns = sample_annotations(sample, image_id, len(self.data["annotations"]) + 1)
            self.data["images"].append({"id": image_id, "file_name": sample.file_name or f"{image_id}.png",
                                        "height": int(h), "width": int(w)})
            self.data["annotations"].extend(anns)
            self.image_ids.append(image_id)
            yield EvalImage(image_id, sample.file_name, sample.image, anns)


def ground_truth(spec: str, images: str | None = None) -> GroundTruth:
    """The ground truth of a dataset spec (see samflow.evaluation.datasets): a COCO / LVIS .json file as it is,
    anything else converted from its masks."""
    path = Path(spec)
    if path.suffix == ".json":
        if not path.is_file():
            raise InputError(f"annotation file not found: {path}")
        return _FileTruth(path, images)
    name, samples = load_dataset(spec, images)
    return _SampleTruth(name, samples)
