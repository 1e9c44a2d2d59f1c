"""The one-call API: `samflow.segment(image, points=..., boxes=..., text=...)` and `samflow.Pipeline`.

    import samflow
    result = samflow.segment("photo.jpg", points=[[120, 80]])      # the best mask of the object clicked
    result.masks, result.scores, result.boxes, result.labels
    result.overlay().save("overlay.png"); result.to_coco(); result.to_supervision()
    samflow.segment("photo.jpg", points=[[120, 80], [200, 90]], point_labels=[1, 0])   # the encoder is not rerun
    samflow.segment("photo.jpg", text="a dog", model="vit_b", checkpoint="sam_vit_b.pth",
                    detector="models/owlv2")       # text -> detector boxes -> one mask per box, labelled "a dog"

Models and image embeddings are kept across calls in one process-wide Segmenter (see samflow.predict.segmenter): the
second call on an image costs the decoder only. Calls may come from several threads at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from samflow.engine.types import Image
from samflow.errors import InputError
from samflow.models.sam import Sam, SamConfig
from samflow.ops.image import to_rgb_uint8
from samflow.predict.pipeline import Pipeline
from samflow.predict.prompts import Prompts
from samflow.predict.result import Segmentation, mask_boxes
from samflow.predict.segmenter import Prediction, Segmenter, default_segmenter
from samflow.predict.textprompt import (
    TextPromptsUnavailable,
    text_presence,
    text_presence_threshold,
    using_text_adapter,
)

# Grid of the automatic masks that CLIP ranks (route c): points per side of the image.
CLIP_POINTS_PER_SIDE = 16
TEXT_ROUTES = (
    "A text reaches SAM by one of three routes: "
    "(a) the prompt adapter trained for this SAM model (shipped for model='tiny'; train one for other weights "
    "with a text_adapter recipe, `samflow train recipes/text_adapter_official.yaml`: it is found beside the "
    "checkpoint as <checkpoint stem>_text_adapter.safetensors, or pass adapter=PATH); "
    "(b) detector=PATH, a local Hugging Face zero-shot detector folder (OWL-ViT, OWLv2, Grounding DINO; "
    "pip install \"samflow[detect]\"): its boxes become box prompts, one mask per box; "
    "(c) clip='clip_tiny' (or an open_clip model name, or a CLIP weights file): CLIP ranks the automatic masks")


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
            segmenter: Segmenter | None = None, detector: str | Path | None = None,
            box_threshold: float | None = None, text_threshold: float | None = None, max_detections: int = 100,
            clip: Any = None, adapter: Any = None, presence_threshold: float | bool | None = None) -> Segmentation:
    """Segment the objects that prompts point at in one image; one object per prompt set.

    image: a path, PIL image, numpy array or Image. points: [[x, y], ...] clicks on one object (or (N, P, 2) for N
    objects) with point_labels 1 (foreground, the default) / 0 (background); boxes: [x0, y0, x1, y1] or (N, 4);
    text: a description, or N of them (served by one of the text routes below). Parts given once
    apply to every object. model: a preset ("tiny", "vit_b"...), a SamConfig (with `checkpoint`), or a Sam.
    dtype: None / "float32" (exact), "bfloat16", or "auto" (bfloat16 where the device runs it faster).
    multimask: three candidate masks per object (None: only for a single click, as SAM advises); the result's
    `masks` holds the best of each. mask_input: an earlier Segmentation (or low-res logits) to refine.
    Points must lie in the image (boundary included); boxes are clipped to it, and a box wholly outside it or
    without width or height is refused (InputError), as are more than the documented counts
    (samflow.predict.prompts).

    Text routes, in this order:
    - (b) `detector=PATH` given: an open-vocabulary detector (OWL-ViT, OWLv2, Grounding DINO) from that local Hugging
      Face folder finds the boxes of each text (above `box_threshold`; Grounding DINO also needs a token above
      `text_threshold`; at most `max_detections`, best first). They prompt SAM in one batched decoder call, one mask
      per box, labelled with its text, the detector's score in `confidence`. Used even when a prompt adapter
      exists. No box above the threshold: an empty result (zero masks), not an error.
    - (c) `clip=` given (a ClipModel, 'clip_tiny', an open_clip name or config JSON, or a CLIP weights file): CLIP
      ranks SAM's automatic masks (a CLIP_POINTS_PER_SIDE grid) against each text; the best one above the model's
      threshold is decoded again from its box and point (one batched call), labelled with its text, CLIP's score
      in `confidence`. A text that matches nothing gets no mask.
    - (a) otherwise: the prompt adapter trained for this SAM model; text prompt tokens in the decoder, one mask per
      text, combinable with points and boxes. Which adapter: `adapter=` (a file, or `samflow.predict.text.
      TextModels`), else `<checkpoint stem>_text_adapter.safetensors` beside `checkpoint` (where `samflow train`
      writes it), else tiny's shipped one; an adapter serves only the SAM weights it was trained for.
      A text alone (no points, boxes or mask_input) is checked for presence: CLIP scores the decoder's three
      candidate masks of it against the text, the best one reaching the threshold is the object's mask (CLIP's
      cosine in `confidence`; with `multimask=True` all three stay in `candidates`, `best` says which), and a
      text none reaches gets no mask (fewer objects than texts; `labels` say which remain). presence_threshold:
      None, the adapter's calibrated threshold (samflow/weights/sam_tiny_text_adapter.safetensors carries one;
      an adapter without one refuses nothing); a cosine in [-1, 1]; False: no check (the decoder's single mask).
    (b) and (c) make the prompts themselves: points, boxes and mask_input do not combine with them. Without a
    detector, CLIP or an adapter for this model, TextPromptsUnavailable names the three routes and how to provide
    each.
    """
    segmenter = segmenter or default_segmenter()
    picture = as_image(image)
    if text is None and (detector is not None or clip is not None):
        raise InputError(f"{'detector' if detector is not None else 'clip'}= finds what a text names: give text=")
    if text is not None and (detector is not None or clip is not None):
        texts = Prompts.build(text=text).texts or []
        if points is not None or boxes is not None or mask_input is not None:
            route = "detector" if detector is not None else "clip"
            raise InputError(f"{route}= turns the text into SAM prompts of its own; give points, boxes or "
                             "mask_input in another call")
        sam = segmenter.model(model, checkpoint=checkpoint, device=device, dtype=dtype)
        if detector is not None:
            return _detector_route(segmenter, sam, picture, texts, detector, box_threshold, text_threshold,
                                   max_detections, device, multimask)
        return _clip_route(segmenter, sam, picture, texts, clip, device, multimask)
    prompts = Prompts.build(points, point_labels, boxes, text, mask_input).fit(picture.size)
    sam = segmenter.model(model, checkpoint=checkpoint, device=device, dtype=dtype)
    if prompts.texts is None:
        return Segmentation.from_prediction(segmenter.predict(sam, picture, prompts, multimask=multimask),
                                            picture.data)
    text_only = prompts.coords is None and prompts.boxes is None and prompts.mask_input is None
    if not text_only and presence_threshold is not None and presence_threshold is not False:
        raise InputError("presence_threshold checks text prompts alone; with points, boxes or mask_input the "
                         "text is never refused (give presence_threshold=None or False)")
    try:
        with using_text_adapter(_adapter_choice(adapter, checkpoint)):
            threshold = text_presence_threshold(sam, presence_threshold) if text_only else None
            prediction = segmenter.predict(sam, picture, prompts, multimask=True if threshold is not None
                                           else multimask)
            decision = None if threshold is None else text_presence(
                sam, picture.data, prediction.labels, prediction.masks, prediction.scores,
                presence_threshold)  # the argument, not its resolved value: None may mean the trained head
    except TextPromptsUnavailable as exc:
        raise TextPromptsUnavailable(f"{str(exc).rstrip('.')}. {TEXT_ROUTES}.") from exc
    if decision is None:
        return Segmentation.from_prediction(prediction, picture.data)
    return _present_objects(prediction, picture, decision, keep_candidates=multimask is True)


def _adapter_choice(adapter: Any, checkpoint: str | Path | None) -> Any:
    """The prompt adapter the caller means: `adapter` itself, else the one beside `checkpoint`, else None (the text
    package's default: tiny's)."""
    if adapter is not None:
        if isinstance(adapter, (str, Path)) and not Path(adapter).is_file():
            raise InputError(f"prompt adapter {adapter} does not exist")
        return adapter
    if checkpoint is not None:
        from samflow.models.text.adapter import adapter_path_for

        beside = adapter_path_for(checkpoint)
        if beside.is_file():
            return beside
    return None


def _present_objects(prediction: Prediction, picture: Image, decision: Any, keep_candidates: bool) -> Segmentation:
    """The objects of the texts the presence check kept, each the candidate it picked (refused texts: none)."""
    rows, picked = np.arange(prediction.masks.shape[0]), np.asarray(decision.picked)
    keep = np.flatnonzero(decision.present)
    masks, scores = prediction.masks[rows, picked][keep], prediction.scores[rows, picked][keep]
    if keep_candidates:
        candidates, candidate_scores = prediction.masks[keep], prediction.scores[keep]
        logits, best = prediction.logits[keep], picked[keep]
    else:
        candidates, candidate_scores = masks[:, None], scores[:, None]
        logits, best = prediction.logits[rows, picked][keep][:, None], None
    labels = [prediction.labels[i] for i in keep]
    prompts = Prompts(texts=[str(t) for t in labels]) if len(keep) else Prompts(boxes=np.zeros((0, 4)))
    return Segmentation(masks=masks, scores=scores.astype(np.float32), boxes=mask_boxes(masks), labels=labels,
                        candidates=candidates, candidate_scores=candidate_scores.astype(np.float32),
                        logits=logits.astype(np.float32), image=picture.data, prompts=prompts,
                        confidence=np.asarray(decision.scores, np.float32)[keep], best=best)


def _detector_route(segmenter: Segmenter, sam: Sam, picture: Image, texts: list[str], detector: str | Path,
                    box_threshold: float | None, text_threshold: float | None, max_detections: int,
                    device: str | None, multimask: bool | None) -> Segmentation:
    """Text -> detector boxes -> one mask per box (one batched decoder call), labelled with their texts."""
    from samflow.predict.text_detector import detect_text, get_text_detector

    found = detect_text(get_text_detector(detector, device, pool=segmenter.models), picture, texts,
                        box_threshold, text_threshold, max_detections)
    if len(found) == 0:
        return _empty(sam, picture, bool(multimask))
    prediction = segmenter.predict(sam, picture, Prompts.build(boxes=found.xyxy), multimask=multimask)
    result = Segmentation.from_prediction(prediction, picture.data)
    return dataclasses.replace(result, labels=list(found.names or []), confidence=found.scores)


def _clip_route(segmenter: Segmenter, sam: Sam, picture: Image, texts: list[str], clip: Any,
                device: str | None, multimask: bool | None) -> Segmentation:
    """Text -> the CLIP-ranked best automatic mask -> decoded again from its box and point, labelled."""
    from samflow.models.text.clip import ClipModel
    from samflow.models.text.clip_loading import get_clip
    from samflow.models.text.rank import rank_masks
    from samflow.predict.amg import SamAutomaticMaskGenerator
    from samflow.predict.predictor import EncodedImage

    if not isinstance(clip, ClipModel):
        weights = Path(str(clip))
        weights_file = weights.suffix.lower() in (".safetensors", ".pt", ".pth", ".bin")
        clip = get_clip(None, weights, device, pool=segmenter.models) if weights_file \
            else get_clip(clip, None, device, pool=segmenter.models)
    embedding = segmenter.embed(sam, picture)
    generator = SamAutomaticMaskGenerator(sam, points_per_side=CLIP_POINTS_PER_SIDE)
    proposals = generator.generate_masks(picture.data, EncodedImage.of(embedding))
    if len(proposals) == 0:
        return _empty(sam, picture, bool(multimask))
    masks = proposals.masks()
    crops = clip.embed_crops(picture.data, masks)
    chosen, labels, scores = [], [], []
    for text in texts:
        ranked = rank_masks(clip, picture.data, masks, [text], top_k=1, crop_embeddings=crops,
                            quality=proposals.predicted_iou)
        if len(ranked.indices):
            chosen.append(int(ranked.indices[0]))
            labels.append(text)
            scores.append(float(ranked.scores[0]))
    if not chosen:
        return _empty(sam, picture, bool(multimask))
    index = np.asarray(chosen)
    prompts = Prompts.build(points=proposals.points[index][:, None], boxes=mask_boxes(masks[index]))
    prediction = segmenter.predict(sam, embedding, prompts, multimask=multimask)
    result = Segmentation.from_prediction(prediction, picture.data)
    return dataclasses.replace(result, labels=labels, confidence=np.asarray(scores, np.float32))


def _empty(sam: Sam, picture: Image, multimask: bool) -> Segmentation:
    """No object found: zero masks of the image's size (the shapes a found object would have)."""
    h, w = picture.size
    from samflow.predict.embeddings import (
        outputs_per_prompt,  # either family (SAM 2 has no image_encoder.img_size)
    )

    k = outputs_per_prompt(sam, multimask)
    low = (sam.image_size if hasattr(sam, "image_size") else sam.image_encoder.img_size) // 4
    return Segmentation(masks=np.zeros((0, h, w), bool), scores=np.zeros(0, np.float32),
                        boxes=np.zeros((0, 4), np.float32), labels=[], candidates=np.zeros((0, k, h, w), bool),
                        candidate_scores=np.zeros((0, k), np.float32), logits=np.zeros((0, k, low, low), np.float32),
                        image=picture.data, prompts=Prompts(boxes=np.zeros((0, 4))),
                        confidence=np.zeros(0, np.float32))


__all__ = ["Pipeline", "Segmentation", "Segmenter", "as_image", "segment"]
