"""Saved detections: a COCO results JSON (`[{image_id, category_id, bbox: [x, y, w, h], score}, ...]`, what COCO
evaluation reads and detectors write) or a COCO annotations JSON (`{images, annotations, categories}`: ground-truth
boxes, score 1), grouped by image.

An image is found by, in order: an explicit id; the file name in an `images` list (of the file itself, or of a
companion annotations file); an id that is a string equal to the file name or stem; the number in the file stem
(`000000397133.jpg` -> 397133, `sa_000012.png` -> 12).
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from samflow.engine.types.detect import Detections
from samflow.errors import InputError

log = logging.getLogger(__name__)

ImageId = int | str


class DetectionFile:
    """Detections of a COCO results or annotations file, by image id; `names` maps category ids to names."""

    def __init__(self, path: str | Path, images: str | Path | None = None) -> None:
        self.path = Path(path)
        data = _load(self.path, "detections")
        self.names: dict[int, str] = {}
        self.file_ids: dict[str, ImageId] = {}
        if isinstance(data, dict):
            if not isinstance(data.get("annotations"), list):
                raise InputError(f"detections file {self.path}: a JSON object must be COCO annotations with an "
                                 "'annotations' list (or give a COCO results list)")
            self._read_index(data, self.path)
            entries = data["annotations"]
        elif isinstance(data, list):
            entries = data
        else:
            raise InputError(f"detections file {self.path}: expected a COCO results list, got {type(data).__name__}")
        if images is not None:
            self._read_index(_load(Path(images), "COCO images"), Path(images))
        self._by_image: dict[ImageId, list[tuple[list[float], float, int | None]]] = defaultdict(list)
        for number, entry in enumerate(entries):
            self._add(number, entry)
        log.debug("read %d detections of %d images from %s", len(entries), len(self._by_image), self.path)

    def _read_index(self, data: Any, path: Path) -> None:
        if not isinstance(data, dict):
            raise InputError(f"COCO images file {path}: expected a JSON object with 'images' and 'categories'")
        for image in data.get("images") or []:
            if isinstance(image, dict) and "file_name" in image and "id" in image:
                self.file_ids[Path(str(image["file_name"])).name] = image["id"]
        for category in data.get("categories") or []:
            if isinstance(category, dict) and "id" in category and "name" in category:
                self.names[int(category["id"])] = str(category["name"])

    def _add(self, number: int, entry: Any) -> None:
        where = f"detections file {self.path}, entry {number}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected an object with image_id and bbox, got {type(entry).__name__}")
        if entry.get("iscrowd"):
            return  # crowd regions are not objects to prompt with
        missing = [key for key in ("image_id", "bbox") if key not in entry]
        if missing:
            raise InputError(f"{where}: missing {', '.join(missing)}")
        bbox = entry["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise InputError(f"{where}: bbox must be [x, y, width, height] numbers, got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise InputError(f"{where}: bbox {bbox} has a negative width or height (COCO boxes are x, y, w, h)")
        score = entry.get("score", 1.0)
        category = entry.get("category_id")
        self._by_image[entry["image_id"]].append((bbox, float(score), None if category is None else int(category)))

    @property
    def image_ids(self) -> list[ImageId]:
        return list(self._by_image)

    def image_id(self, image_path: Path | None) -> ImageId:
        """The id of the image read from `image_path` (see the module doc for the rules)."""
        if image_path is None:
            raise InputError(f"detections file {self.path}: the image has no file name to find its detections by; "
                             "set the node's image_id param")
        name = image_path.name
        for key in (name, image_path.stem):
            if key in self.file_ids:
                return self.file_ids[key]
        if name in self._by_image or image_path.stem in self._by_image:
            return name if name in self._by_image else image_path.stem
        digits = re.findall(r"\d+", image_path.stem)
        if not digits:
            raise InputError(f"detections file {self.path}: cannot tell the image id of {name} (no number in its "
                             "name and no 'images' list naming it); give the COCO annotations file as 'images', "
                             "or set image_id")
        return int(digits[-1])

    def detections(self, image_id: ImageId, class_names: dict[int, str] | None = None) -> Detections:
        """Detections of one image (empty when the file has none for it), with names when categories are known."""
        entries = self._by_image.get(image_id)
        if entries is None and isinstance(image_id, str) and image_id.isdigit():
            entries = self._by_image.get(int(image_id))
        if not entries:
            return Detections.empty()
        xywh = np.array([bbox for bbox, _, _ in entries], np.float32)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        scores = np.array([score for _, score, _ in entries], np.float32)
        categories = [category for _, _, category in entries]
        class_ids = None if any(c is None for c in categories) else np.array(categories, np.int64)
        names_map = class_names if class_names is not None else self.names
        names = None
        if class_ids is not None and names_map:
            names = [names_map.get(int(c), str(int(c))) for c in class_ids]
        return Detections(xyxy, scores, class_ids, names)


def _load(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} file {path} is not valid JSON: {exc}") from exc


def write_results(path: str | Path, detections: dict[ImageId, Detections]) -> Path:
    """Write detections as a COCO results JSON (xywh boxes); class ids default to 1, scores to 1."""
    entries = []
    for image_id, found in detections.items():
        for n, (x0, y0, x1, y1) in enumerate(found.xyxy.tolist()):
            entries.append({"image_id": image_id,
                            "category_id": int(found.class_ids[n]) if found.class_ids is not None else 1,
                            "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": float(found.scores[n]) if found.scores is not None else 1.0})
    path = Path(path)
    path.write_text(json.dumps(entries))
    return path


__all__ = ["DetectionFile", "write_results"]
