"""Text nodes: `clip.text` (text -> CLIP embedding, to prompt `sam.decoder` through its `text` input) and
`clip.rank` (score mask proposals against a text with CLIP; keep the top-k above a calibrated threshold).

CLIP models come from the scheduler's pool (one per config/weights/device per process); text embeddings are
cached by the model, so a prompt repeated over many items is embedded once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from samflow.devices import resolve_device
from samflow.engine.context import ItemContext
from samflow.engine.node import Input, Node, NodeParams
from samflow.engine.registry import register
from samflow.engine.types import Image, Masks, Scores, TextEmbedding
from samflow.errors import NodeError
from samflow.models.text.rank import DEFAULT_QUALITY_WEIGHT, rank_masks
from samflow.predict.prompts import MAX_PROMPT_SETS, check_count, check_text


class TextParams(NodeParams):
    text: str | list[str] = Field(description="a prompt such as 'a red star', or a list (one prompt set each)")
    model: str | None = Field("clip_tiny", description="samflow's clip_tiny, an open_clip model name, a config JSON, "
                                                       "or null for the config embedded in the checkpoint")
    checkpoint: str | None = Field(None, description="local CLIP weights file (default: shipped, for clip_tiny)")
    device: str | None = Field(None, description="cpu, cuda...; default cuda when available")

    @field_validator("text")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts or any(not t.strip() for t in texts):
            raise ValueError("text must be a non-empty string or a list of them")
        check_count(len(texts), MAX_PROMPT_SETS, "text prompts")
        for text in texts:
            check_text(text)
        return value


@register("clip.text")
class ClipText(Node):
    """Embed text prompts with CLIP (offline tokenizer, local weights); feed sam.decoder's text input or clip.rank."""

    Params = TextParams
    outputs = {"text": TextEmbedding}

    def model(self, ctx: ItemContext) -> Any:

        from samflow.models.text.clip_loading import get_clip

        p = self.params
        if p.checkpoint and not Path(p.checkpoint).is_file():
            raise NodeError(f"CLIP checkpoint not found: {p.checkpoint}")
        device = resolve_device(p.device)
        return get_clip(p.model, p.checkpoint, device, pool=ctx.models)

    def run(self, ctx: ItemContext) -> dict[str, TextEmbedding]:
        clip = self.model(ctx)
        texts = [self.params.text] if isinstance(self.params.text, str) else list(self.params.text)
        data = clip.embed_text(texts).cpu().numpy()
        return {"text": TextEmbedding(data, texts, model_key=clip.fingerprint, model=clip)}


class RankParams(NodeParams):
    top_k: int = Field(1, ge=1, description="keep at most this many masks")
    threshold: float | None = Field(None, ge=-1, le=1,
                                    description="score a mask must reach (a cosine, or a probability in contrast "
                                                "mode); default: the model's calibrated cosine threshold, or 0.5 "
                                                "in contrast mode")
    mode: Literal["auto", "cosine", "contrast"] = Field(
        "auto", description="cosine: absolute cosine threshold; contrast: text vs neutral captions (any CLIP); "
                            "auto: cosine when the model has a calibrated threshold")
    negatives: list[str] = Field(default_factory=list, description="extra captions the text must beat (contrast)")
    min_area: int = Field(16, ge=0, description="masks smaller than this many pixels are never kept")
    quality_weight: float = Field(DEFAULT_QUALITY_WEIGHT, ge=0, description="weight of the proposals' own scores (SAM's predicted "
                                                        "IoU) in the order among masks that reach the threshold")

    @field_validator("negatives")
    @classmethod
    def _bounded_negatives(cls, value: list[str]) -> list[str]:
        check_count(len(value), MAX_PROMPT_SETS, "negative captions")
        for text in value:
            check_text(text)
        return value


@register("clip.rank")
class ClipRank(Node):
    """Score mask proposals (all masks of all sets) by CLIP similarity to a text; keep the top-k above threshold.

    Outputs one set per kept mask, best first: an empty Masks when nothing in the picture matches the text.
    """

    Params = RankParams
    inputs = {"image": Input(Image), "masks": Input(Masks, doc="proposals (sam.decoder over a grid, sam.auto...)"),
              "text": Input(TextEmbedding, doc="from clip.text; several texts are synonyms")}
    outputs = {"masks": Masks, "scores": Scores}

    def run(self, ctx: ItemContext, image: Image, masks: Masks, text: TextEmbedding) -> dict[str, Any]:
        if text.model is None:
            raise NodeError("the text embedding carries no CLIP model; produce it with clip.text")
        p = self.params
        h, w = image.size
        proposals = masks.data.reshape(-1, *masks.data.shape[2:])
        if proposals.shape[1:] != (h, w):
            raise NodeError(f"masks are {proposals.shape[1:]} but the image is {(h, w)}")
        quality = masks.scores.reshape(-1) if masks.scores is not None else None
        result = rank_masks(text.model, image.data, proposals, text.texts, top_k=p.top_k, threshold=p.threshold,
                            mode=p.mode, negatives=p.negatives, min_area=p.min_area, quality=quality,
                            quality_weight=p.quality_weight)
        kept = proposals[result.indices][:, None] if len(result.indices) else np.zeros((0, 1, h, w), dtype=bool)
        scores = result.scores.reshape(-1, 1)
        return {"masks": Masks(kept, scores), "scores": Scores(scores)}
