"""CLIP ranking of mask proposals, no training: score each masked crop against a text, keep the top-k above an
absolute threshold, so a text naming nothing in the picture returns nothing (a softmax winner would always name
some crop).

Two ways to decide "above threshold":
- `cosine` (default when the CLIP model carries a calibrated threshold, as samflow's clip_tiny does): the cosine
  of text and crop must reach the threshold fitted on held-out scenes (samflow.train.text_clip.calibrate_threshold).
- `contrast` (any open_clip model, no calibration): per crop, the text competes in a softmax with neutral captions
  ("an object", "the background"... plus any `negatives` you pass, such as the other class names); the crop counts
  when the text's probability reaches the threshold (default 0.5).

Among the proposals that pass, the order can also weigh SAM's own predicted IoU of each mask (`quality`): CLIP sees
a crop, and a ragged mask of the right object, or one that spills onto its neighbour, can look to CLIP much like
the clean one. On tiny's grid proposals, cosine + 0.1 x predicted IoU picks the right object markedly more often
than the cosine alone (benchmarks/text_prompts.py). The threshold still applies to the text score alone, so what
is kept at all depends only on what the text says.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from samflow.errors import InputError
from samflow.models.text.clip import ClipModel
from samflow.ops.metrics import mask_iou

log = logging.getLogger(__name__)

RankMode = Literal["auto", "cosine", "contrast"]
DEFAULT_CONTRAST_THRESHOLD = 0.5
DUPLICATE_IOU = 0.8  # proposals overlapping a better one this much are the same object (multimask, grids)
DEFAULT_QUALITY_WEIGHT = 0.1

# Captions that name no object: the reference scores of the 'contrast' ranking mode.
NEUTRAL_CAPTIONS = ("an object", "a shape", "a thing", "something", "the background", "a photo", "a picture",
                    "a region", "a part of an image", "a texture")


@dataclass
class RankResult:
    """Kept proposals, best first: `indices` into the proposals, `scores` (the mode's score), `cosines` of every
    proposal (N,), the `threshold` and `mode` used."""

    indices: np.ndarray
    scores: np.ndarray
    cosines: np.ndarray
    threshold: float
    mode: str


def rank_masks(clip: ClipModel, image: np.ndarray, masks: np.ndarray, texts: str | Sequence[str], *,
               top_k: int = 1, threshold: float | None = None, mode: RankMode = "auto",
               negatives: Sequence[str] = (), min_area: int = 16, dedupe: bool = True,
               crop_embeddings: torch.Tensor | None = None, quality: np.ndarray | None = None,
               quality_weight: float = DEFAULT_QUALITY_WEIGHT) -> RankResult:
    """Rank `masks` bool (N, H, W) over `image` uint8 (H, W, 3) by CLIP similarity to `texts`.

    Several texts are synonyms: a crop's score is its best over them. Masks under `min_area` pixels are never kept.
    Returns at most `top_k` proposals whose score reaches the threshold (none when nothing does).
    `crop_embeddings` (N, D) from `clip.embed_crops(image, masks)` skip embedding the crops again (several texts
    ranked over one set of proposals). `quality` (N,), SAM's predicted IoU of each mask, adds `quality_weight`
    times itself to the order among the masks that reach the threshold (not to the returned scores).
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise InputError(f"rank_masks needs masks (N, H, W), got {masks.shape}")
    if top_k < 1:
        raise InputError(f"top_k must be at least 1, got {top_k}")
    if mode == "auto":
        mode = "cosine" if clip.rank_threshold is not None or threshold is not None else "contrast"
    if mode == "cosine" and threshold is None:
        if clip.rank_threshold is None:
            raise InputError(f"CLIP model {clip.config.name!r} has no calibrated threshold: pass threshold= or use "
                             "mode='contrast'")
        threshold = clip.rank_threshold
    if mode == "contrast" and threshold is None:
        threshold = DEFAULT_CONTRAST_THRESHOLD
    assert threshold is not None
    n = masks.shape[0]
    if quality is not None:
        quality = np.asarray(quality, dtype=np.float32).reshape(-1)
        if quality.shape != (n,):
            raise InputError(f"quality needs one value per mask ({n}), got {quality.shape[0]}")
    areas = masks.reshape(n, -1).sum(1)
    valid = np.flatnonzero(areas >= min_area)
    cosines = np.full(n, -1.0, dtype=np.float32)
    scores = np.full(n, -np.inf, dtype=np.float32)
    if valid.size:
        text = clip.embed_text(texts)  # (T, D)
        if crop_embeddings is not None:
            crops = torch.as_tensor(crop_embeddings)[torch.as_tensor(valid)].to(text.device)
        else:
            crops = clip.embed_crops(image, masks[valid])  # (V, D)
        sims = crops @ text.T  # (V, T)
        best = sims.max(dim=1).values
        cosines[valid] = best.cpu().numpy()
        if mode == "cosine":
            scores[valid] = cosines[valid]
        else:
            neutral = clip.embed_text(list(dict.fromkeys([*NEUTRAL_CAPTIONS, *negatives])))
            scale = float(clip.model.logit_scale.exp().clamp(max=100))
            logits = scale * torch.cat([best[:, None], crops @ neutral.T], dim=1)
            scores[valid] = logits.softmax(dim=1)[:, 0].cpu().numpy()
    order_by = scores + quality_weight * quality if quality is not None else scores
    order = [int(i) for i in np.argsort(-order_by, kind="stable") if scores[i] >= threshold]
    kept: list[int] = []
    for i in order:
        if len(kept) == top_k:
            break
        # Masks under min_area score -inf and miss any finite threshold, so with min_area >= 1 (the default 16)
        # no mask here is empty; otherwise two empty masks (IoU 1 by mask_iou's definition) are one duplicate.
        if dedupe and any(mask_iou(masks[i], masks[j]) > DUPLICATE_IOU for j in kept):
            continue
        kept.append(i)
    return RankResult(np.asarray(kept, dtype=np.int64), scores[kept].astype(np.float32), cosines,
                      float(threshold), mode)
