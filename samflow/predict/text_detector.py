"""Text -> boxes with an open-vocabulary detector (OWL-ViT, OWLv2, Grounding DINO) from a local Hugging Face folder,
as `Detections` whose names are the texts the boxes matched: what `samflow.segment(text=..., detector=PATH)` and the
`detect.text` node prompt SAM with.

    found = detect_text(get_text_detector("models/owlv2"), rgb, ["a dog"], box_threshold=0.2)
    found.xyxy, found.scores, found.names        # one row per box, best first

Detectors are loaded once per (folder, device) per process (the model pool). See samflow.models.detection_text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from samflow.devices import resolve_device
from samflow.engine.types.detect import Detections
from samflow.errors import InputError
from samflow.models.detection_text import TextDetector, load_text_detector, model_folder
from samflow.pool import ModelPool, default_model_pool
from samflow.predict.prompts import MAX_PROMPT_SETS, check_count, check_text


def get_text_detector(path: str | Path, device: str | None = None, pool: ModelPool | None = None) -> TextDetector:
    """`load_text_detector` once per (folder, device) per process."""
    device = resolve_device(device)
    folder = model_folder(path)  # a missing folder is refused before anything is imported
    key = ("text_detector", str(folder.resolve()), device)
    return (pool if pool is not None else default_model_pool()).get(key, lambda: load_text_detector(folder, device))


def check_texts(texts: str | Sequence[str]) -> list[str]:
    """Texts as a list of non-empty stripped strings, bounded as every text prompt is."""
    items = [texts] if isinstance(texts, str) else list(texts)
    if not items:
        raise InputError("a text detector needs at least one text")
    check_count(len(items), MAX_PROMPT_SETS, "texts")
    for text in items:
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"texts must be non-empty strings, got {text!r}")
        check_text(text)
    return [text.strip() for text in items]


def detect_text(detector: TextDetector, image: Any, texts: str | Sequence[str], box_threshold: float | None = None,
                text_threshold: float | None = None, max_detections: int | None = None) -> Detections:
    """Detections of `texts` on `image` (uint8 (H, W, 3), or anything with `.data` as one): boxes clipped to the
    image (those with no area left are dropped), scores, `class_ids` the index of each box's text and `names` the
    text itself; best first, at most `max_detections`. Nothing above the threshold: empty Detections."""
    texts = check_texts(texts)
    rgb = np.asarray(getattr(image, "data", image))
    boxes, scores, ids = detector.detect(rgb, texts, box_threshold, text_threshold)
    h, w = rgb.shape[:2]
    boxes = boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if max_detections is not None:
        keep &= np.cumsum(keep) <= max_detections
    ids = ids[keep]
    return Detections(boxes[keep], scores[keep], ids, [texts[i] for i in ids])


__all__ = ["check_texts", "detect_text", "get_text_detector"]
