"""Masks and payloads as JSON: COCO RLE, base64 PNGs, records of graph outputs."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from samflow.engine.types import Image, Masks, Payload
from samflow.ops import rle
from samflow.serve.schemas import MaskOut


def png_base64(pixels: np.ndarray) -> str:
    """A bool mask (PNG mode 1) or uint8 RGB picture as base64 PNG text."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG", compress_level=1)  # speed over a few bytes
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def masks_out(masks: np.ndarray, scores: np.ndarray, with_png: bool) -> list[MaskOut]:
    """One MaskOut per bool (K, H, W) mask with its score."""
    rles = rle.encode(masks)
    boxes = rle.bbox(rles)
    areas = masks.reshape(masks.shape[0], -1).sum(axis=1)
    return [MaskOut(score=float(scores[k]), area=int(areas[k]), bbox=[float(v) for v in boxes[k]], rle=rles[k],
                    png_base64=png_base64(masks[k]) if with_png else None) for k in range(masks.shape[0])]


def payload_json(payload: Payload) -> dict[str, Any]:
    """A graph output as JSON: masks with their RLE, images as PNG, anything else as its record."""
    if isinstance(payload, Masks):
        record = payload.to_record()
        flat = payload.data.reshape(-1, *payload.data.shape[2:])
        for entry, seg in zip(record["masks"], rle.encode(flat) if len(flat) else [], strict=True):
            entry["rle"] = seg
        return record
    if isinstance(payload, Image):
        return {**payload.to_record(), "png_base64": png_base64(payload.data)}
    return payload.to_record()
