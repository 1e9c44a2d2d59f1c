"""The one-call API: `samflow.segment(image, points=..., boxes=..., text=...)` and `samflow.Pipeline`.

    import samflow
    result = samflow.segment("photo.jpg", points=[[120, 80]])      # the best mask of the object clicked
    result.masks, result.scores, result.boxes, result.labels
    result.overlay().save("overlay.png"); result.to_coco(); result.to_supervision()
    samflow.segment("photo.jpg", points=[[120, 80], [200, 90]], point_labels=[1, 0])   # the encoder is not rerun

Models and image embeddings are kept across calls in one process-wide Segmenter (see samflow.predict.segmenter): the
second call on an image costs the decoder only. Calls may come from several threads at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from samflow.engine.types import Image
from samflow.models.sam import Sam, SamConfig
from samflow.ops.image import to_rgb_uint8
from samflow.predict.pipeline import Pipeline
from samflow.predict.prompts import Prompts
from samflow.predict.result import Segmentation
from samflow.predict.segmenter import Segmenter, default_segmenter


def as_image(image: Any) -> Image:
    """An Image payload from a path, a PIL image, a numpy array (any form SamPredictor.set_image takes) or an Image."""
    if isinstance(image, Image):
        return image
    if isinstance(image, (str, Path)):
        return Image.load(image)
    return Image(to_rgb_uint8(image))


def segment(image: Any, points: Any = None, point_labels: Any = None, boxes: Any = None,
            text: str | Sequence[str] | None = None, *, model: str | SamConfig | Sam = "tiny",
            checkpoint: str | Path | None = None, device: str | None = None, dtype: str | None = None,
            multimask: bool | None = None, mask_input: Any = None,
            segmenter: Segmenter | None = None) -> Segmentation:
    """Segment the objects that prompts point at in one image; one object per prompt set.

    image: a path, PIL image, numpy array or Image. points: [[x, y], ...] clicks on one object (or (N, P, 2) for N
    objects) with point_labels 1 (foreground, the default) / 0 (background); boxes: [x0, y0, x1, y1] or (N, 4);
    text: a description, or N of them (needs samflow.predict.text; else TextPromptsUnavailable). Parts given once
    apply to every object. model: a preset ("tiny", "vit_b"...), a SamConfig (with `checkpoint`), or a Sam.
    dtype: None / "float32" (exact), "bfloat16", or "auto" (bfloat16 where the device runs it faster).
    multimask: three candidate masks per object (None: only for a single click, as SAM advises); the result's
    `masks` holds the best of each. mask_input: an earlier Segmentation (or low-res logits) to refine.
    Points must lie in the image (boundary included); boxes are clipped to it, and a box wholly outside it or
    without width or height is refused (InputError), as are more than the documented counts
    (samflow.predict.prompts).
    """
    segmenter = segmenter or default_segmenter()
    picture = as_image(image)
    prompts = Prompts.build(points, point_labels, boxes, text, mask_input).fit(picture.size)
    sam = segmenter.model(model, checkpoint=checkpoint, device=device, dtype=dtype)
    prediction = segmenter.predict(sam, picture, prompts, multimask=multimask)
    return Segmentation.from_prediction(prediction, picture.data)


__all__ = ["Pipeline", "Segmentation", "Segmenter", "as_image", "segment"]
