"""Is the object a text names in the picture at all? The presence decision of the prompt-adapter route.

The adapter always places its click somewhere, so a text naming nothing in the image ("a giraffe" on a scene of
squares, "a purple circle" where only an orange one is) still gets a mask. After the adapter's text tokens are
decoded, CLIP checks the answer: each of the decoder's candidate masks for the text (its three multimask outputs)
is cut out as a masked crop (`crops.masked_crops`, as CLIP ranking and the adapter's training cut them) and scored
against the text exactly as `rank.rank_masks` scores proposals: the cosine of text and crop decides whether a
candidate counts (`threshold`), and among those that count SAM's predicted IoU breaks near-ties
(`quality_weight`). A text none of whose candidates reaches the threshold is refused: no mask, no error.

The threshold belongs to one CLIP + adapter pair, so it travels in the adapter file's metadata
(`PresenceCalibration` under `PRESENCE_KEY`), as clip_tiny's ranking threshold travels in its own file. It is chosen
on validation scenes only (recipes/calibrate_text_presence.py: the provenance field records how), never on the
scenes the figures are reported on. `augment` averages each crop's CLIP embedding over flips (and, where objects
have no up, quarter turns): clip_tiny reads shapes better so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from samflow.errors import InputError
from samflow.models.text.clip import ClipModel
from samflow.models.text.crops import masked_crops
from samflow.models.text.presence_head import PresenceHead
from samflow.models.text.rank import rank_masks
from samflow.ops.mask_descriptors import mask_descriptors

PRESENCE_KEY = "samflow_text_presence"  # safetensors metadata key of the adapter file
RANK_MIN_AREA = 16  # rank_masks' default min_area: smaller candidates are never kept
Augment = Literal["none", "hflip", "dihedral"]


class PresenceCalibration(BaseModel):
    """How a CLIP + prompt-adapter pair decides that a text's object is present, and where that came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(ge=-1.0, le=1.0, description="cosine of text and masked crop a candidate must reach")
    quality_weight: float = Field(0.0, ge=0.0, description="weight of SAM's predicted IoU in the order of the "
                                                           "candidates that reach the threshold")
    augment: Augment = Field("none", description="crop views averaged: none, hflip (+ mirror), dihedral (+ mirrors "
                                                 "and quarter turns: for pictures without an up)")
    scorer: Literal["cosine", "head"] = Field("cosine", description="what the threshold applies to: the cosine, or "
                                              "the probability of the adapter's trained presence head "
                                              "(samflow.models.text.presence_head)")
    provenance: dict[str, Any] = Field(default_factory=dict, description="how it was chosen: data, rule, figures")


@dataclass
class PresenceResult:
    """One decision per text: `present` bool (N,), `picked` int (N,) the candidate the text's object is (the best
    one, also for refused texts), `scores` float32 (N,) its cosine with the text, and the `threshold` used."""

    present: np.ndarray
    picked: np.ndarray
    scores: np.ndarray
    threshold: float


def check_presence_threshold(value: float) -> float:
    """A presence threshold is a cosine: a number in [-1, 1] (InputError otherwise, e.g. a typo such as 70)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
            or not -1.0 <= float(value) <= 1.0:
        raise InputError(f"presence_threshold must be a cosine in [-1, 1], None (the calibrated default) or False "
                         f"(off); got {value!r}")
    return float(value)


def crop_embeddings(clip: ClipModel, image: np.ndarray, masks: np.ndarray, augment: Augment = "none"
                    ) -> torch.Tensor:
    """L2-normalised CLIP embeddings (M, D) of the masked crops of `masks` bool (M, H, W), averaged over the
    views `augment` names."""
    if augment == "none":
        return clip.embed_crops(image, masks)
    crops = masked_crops(image, masks, clip.image_size)
    views = [crops, crops.flip(-1)]
    if augment == "dihedral":
        views += [crops.flip(-2), *(crops.rot90(k, (-2, -1)) for k in (1, 2, 3))]
    return F.normalize(torch.stack([clip.embed_images(v) for v in views]).mean(0), dim=-1)


def decide_presence(clip: ClipModel, image: np.ndarray, texts: Sequence[str], candidates: np.ndarray,
                    quality: np.ndarray | None, threshold: float, quality_weight: float = 0.0,
                    augment: Augment = "none", head: PresenceHead | None = None) -> PresenceResult:
    """Decide for each of N `texts` whether its object is in `image` uint8 (H, W, 3), from the decoder's K candidate
    masks of that text, `candidates` bool (N, K, H, W), with SAM's predicted IoU `quality` (N, K).

    Text i is present when a candidate's crop reaches `threshold` (cosine with text i, the score of
    `rank.rank_masks`); `picked` is then the best of those by cosine + `quality_weight` x predicted IoU. With a
    trained `head`, the threshold applies to its probability instead, and `picked` is the most probable candidate
    (`scores` are then probabilities). Every crop is embedded in one batch.
    """
    candidates = np.asarray(candidates, dtype=bool)
    if candidates.ndim != 4 or len(texts) != candidates.shape[0]:
        raise InputError(f"presence needs candidates (N, K, H, W) for N texts, got {candidates.shape} for "
                         f"{len(texts)} texts")
    n, k = candidates.shape[:2]
    if quality is not None:
        quality = np.asarray(quality, dtype=np.float32).reshape(n, k)
    flat = candidates.reshape(n * k, *candidates.shape[2:])
    embedded = crop_embeddings(clip, image, flat, augment).view(n, k, -1) if n else None
    if head is not None:
        return _decide_with_head(head, clip, image, texts, flat, embedded, quality, threshold, n, k)
    present = np.zeros(n, dtype=bool)
    picked = np.zeros(n, dtype=np.int64)
    scores = np.full(n, -1.0, dtype=np.float32)
    for i, text in enumerate(texts):
        assert embedded is not None
        q = quality[i] if quality is not None else None
        ranked = rank_masks(clip, image, candidates[i], [text], top_k=1, threshold=threshold, mode="cosine",
                            crop_embeddings=embedded[i], quality=q, quality_weight=quality_weight, dedupe=False)
        if ranked.indices.size:
            present[i], picked[i], scores[i] = True, int(ranked.indices[0]), float(ranked.scores[0])
        else:  # the best candidate all the same, for whoever looks at what was refused
            order = ranked.cosines + (quality_weight * q if q is not None else 0.0)
            picked[i] = int(np.argmax(order))
            scores[i] = float(ranked.cosines[picked[i]])
    return PresenceResult(present, picked, scores, float(threshold))


def _decide_with_head(head: PresenceHead, clip: ClipModel, image: np.ndarray, texts: Sequence[str],
                      flat: np.ndarray, embedded: torch.Tensor | None, quality: np.ndarray | None, threshold: float,
                      n: int, k: int) -> PresenceResult:
    if not n:
        return PresenceResult(np.zeros(0, bool), np.zeros(0, np.int64), np.zeros(0, np.float32), float(threshold))
    assert embedded is not None
    text = clip.embed_text(list(texts))
    cosine = (embedded * text[:, None].to(embedded.device, embedded.dtype)).sum(-1).double().cpu().numpy()
    small = flat.reshape(n * k, -1).sum(axis=1) < RANK_MIN_AREA  # never ranked: as rank_masks leaves them out
    cosine[small.reshape(n, k)] = -np.inf
    quality = np.zeros((n, k)) if quality is None else quality
    probability = head.probabilities(cosine, quality, mask_descriptors(image, flat).reshape(n, k, -1),
                                     text.float().cpu().numpy())
    picked = probability.argmax(axis=1)
    best = probability[np.arange(n), picked]
    return PresenceResult(best >= threshold, picked, best.astype(np.float32), float(threshold))


__all__ = ["PRESENCE_KEY", "PresenceCalibration", "PresenceResult", "check_presence_threshold", "crop_embeddings",
           "decide_presence"]
