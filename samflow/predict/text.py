"""Text prompts for SAM: CLIP text embedding -> prompt adapter -> prompt tokens, decoded in the same call as clicks.

    models = load_text_models()                        # shipped clip_tiny + tiny's adapter, shared per process
    predictor = TextSamPredictor(sam, models); predictor.set_image(image)
    masks, scores, logits = predictor.predict(text="a red star", point_coords=[[x, y]], point_labels=[1],
                                              multimask_output=False)

The adapter locates the text on the image embedding (see samflow.models.text.adapter), so its tokens are made per
image: `text_prompt_tokens(text, sam, image_embeddings=features)`. They are appended to the sparse tokens of the
prompt encoder (points, box corners), so text, clicks and a box go through one mask-decoder forward pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samflow.devices import resolve_device
from samflow.errors import CheckpointError, InputError
from samflow.models.text.adapter import PromptAdapter, adapter_path_for, load_adapter
from samflow.models.text.clip import ClipModel
from samflow.models.text.clip_config import DEFAULT_CLIP
from samflow.models.text.clip_loading import get_clip
from samflow.pool import ModelPool, default_model_pool
from samflow.predict.predictor import POSTPROCESS_CHUNK, SamPredictor

log = logging.getLogger(__name__)


def default_adapter_path(sam: str = "tiny") -> Path:
    """The adapter of a SAM preset's shipped weights, or of a SAM checkpoint path (beside it)."""
    from samflow.models.sam.build import SHIPPED_WEIGHTS

    return adapter_path_for(SHIPPED_WEIGHTS.get(sam, sam))


@dataclass
class TextModels:
    """The CLIP model and prompt adapter that together turn text into SAM prompt tokens."""

    clip: ClipModel
    adapter: PromptAdapter

    def __post_init__(self) -> None:
        want = self.adapter.config.clip_fingerprint
        if want and want != self.clip.fingerprint:
            log.warning("the prompt adapter was trained with another CLIP (%s) than the one loaded (%s): text "
                        "prompts may miss", self.adapter.config.clip_name or want[:8], self.clip.config.name)

    def tokens(self, texts: str | list[str], sam_model: Any, features: torch.Tensor) -> torch.Tensor:
        """(N, T, C) prompt tokens for N texts on one image's SAM features (1, C, h, w)."""
        return text_tokens_for(self.adapter, self.clip.embed_text(texts), self.clip.fingerprint, sam_model,
                               features)


def get_adapter(path: str | Path, device: str | None = None, pool: ModelPool | None = None) -> PromptAdapter:
    """`load_adapter` once per (file, device) per process."""
    device = device or "cpu"
    key = ("text_adapter", str(Path(path).resolve()), device)
    return (pool if pool is not None else default_model_pool()).get(key, lambda: load_adapter(path, device))


def load_text_models(sam: str = "tiny", clip: str | Path | None = DEFAULT_CLIP,
                     clip_checkpoint: str | Path | None = None, adapter: str | Path | None = None,
                     device: str | None = None, pool: ModelPool | None = None) -> TextModels:
    """The text models for a SAM model, shared per process.

    sam: the preset whose shipped adapter to use ('tiny'), or a SAM checkpoint path whose adapter lies beside it;
    adapter: an explicit adapter file instead. clip / clip_checkpoint: as `load_clip` (default: shipped clip_tiny).
    """
    device = resolve_device(device)
    clip_model = get_clip(clip, clip_checkpoint, device, pool)
    adapter_model = get_adapter(adapter or default_adapter_path(sam), device, pool)
    return TextModels(clip_model, adapter_model)


def text_tokens_for(adapter: PromptAdapter, embeddings: np.ndarray | torch.Tensor, clip_key: str, sam_model: Any,
                    features: torch.Tensor, strict_sam: bool = False) -> torch.Tensor:
    """Prompt tokens (N, T, C) on `sam_model`'s device for CLIP text embeddings (N, D) made by the CLIP whose
    fingerprint is `clip_key`, on SAM image features (1, C, h, w). Refuses embeddings of another CLIP than the
    adapter's (the tokens would be noise); other SAM weights than the adapter's: a warning, or with `strict_sam`
    a CheckpointError."""
    want = adapter.config.clip_fingerprint
    if want and clip_key and want != clip_key:
        raise InputError(f"the text embedding comes from another CLIP model than the one the prompt adapter was "
                         f"trained with ({adapter.config.clip_name or want[:8]}); use that CLIP in clip.text")
    _check_sam(adapter, sam_model, strict_sam)
    with torch.no_grad():
        tokens = adapter.prompt_tokens(torch.as_tensor(embeddings), sam_model, features)
    return tokens.to(device=sam_model.device, dtype=sam_model.dtype)


def _check_sam(adapter: PromptAdapter, sam_model: Any, strict: bool) -> None:
    from samflow.models.sam.checkpoint import model_fingerprint

    want = adapter.config.sam_fingerprint
    if not want or getattr(sam_model, "_samflow_text_adapter_ok", None) == want:
        return
    if model_fingerprint(sam_model) != want:
        message = "the prompt adapter was trained for other SAM weights than these"
        if strict:
            raise CheckpointError(f"{message}: no text prompt adapter for this SAM model")
        log.warning("%s: text prompts may miss", message)
    sam_model._samflow_text_adapter_ok = want  # checked once per model object


def text_prompt_tokens(text: str, sam_model: Any, image_embeddings: torch.Tensor | None = None,
                       models: TextModels | None = None) -> torch.Tensor:
    """Prompt tokens (1, T, C) for `text` on one image's SAM features `image_embeddings` (1, C, h, w), on
    `sam_model`'s device and dtype: the hook of the one-call API (samflow.predict.textprompt).

    Uses the shipped text models unless `models` is given; raises CheckpointError when they are missing or were
    trained for other SAM weights, InputError without `image_embeddings` (the adapter locates the text on them).
    """
    if image_embeddings is None:
        raise InputError("text prompt tokens depend on the image: pass image_embeddings (the SAM features of the "
                         "image, (1, C, h, w))")
    models = models or load_text_models(device=str(sam_model.device))
    return text_tokens_for(models.adapter, models.clip.embed_text(text), models.clip.fingerprint, sam_model,
                           image_embeddings, strict_sam=True)


class TextSamPredictor(SamPredictor):
    """SamPredictor whose `predict` / `predict_torch` also take a text prompt, decoded with the points, box and mask
    of the same call in one forward pass (a set of 1 broadcasts to N, as every prompt does).

    `text` (str or N strings) needs `models`; `text_embeddings` (N, D) CLIP text embeddings need `models` or an
    adapter; `text_tokens` (N, T, C) are used as they are.
    """

    def __init__(self, sam_model: Any, models: TextModels | None = None, adapter: PromptAdapter | None = None,
                 clip_key: str = "") -> None:
        super().__init__(sam_model)
        self.text_models = models
        self.adapter = adapter or (models.adapter if models is not None else None)
        self.clip_key = clip_key or (models.clip.fingerprint if models is not None else "")
        self._text: dict[str, Any] | None = None
        self._last_outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def predict(self, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                box: np.ndarray | None = None, mask_input: np.ndarray | None = None, multimask_output: bool = True,
                return_logits: bool = False, text: str | list[str] | None = None,
                text_embeddings: torch.Tensor | np.ndarray | None = None,
                text_tokens: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As `SamPredictor.predict`, plus one text prompt form. Batched (N, ...) outputs when the text holds more
        than one set, like any other batched prompt."""
        if text is None and text_embeddings is None and text_tokens is None:
            return super().predict(point_coords, point_labels, box, mask_input, multimask_output, return_logits)
        self._require_image()
        tokens = self._text_tokens(text, text_embeddings, text_tokens)
        self._text = {"tokens": tokens}
        try:
            masks, scores, logits = super().predict(point_coords, point_labels, box, mask_input, multimask_output,
                                                    return_logits)
        finally:
            self._text = None
        if tokens.shape[0] > 1 and masks.ndim == 3 and self._last_outputs is not None:
            # Only the text was batched, so the base class unbatched the outputs: return every set.
            full, iou, low_res = self._last_outputs
            masks = full.float().cpu().numpy() if return_logits else full.cpu().numpy()
            scores, logits = iou.float().cpu().numpy(), low_res.float().cpu().numpy()
        self._last_outputs = None
        return masks, scores, logits

    def _text_tokens(self, text: str | list[str] | None, embeddings: torch.Tensor | np.ndarray | None,
                     tokens: torch.Tensor | None) -> torch.Tensor:
        if tokens is None:
            if text is not None:
                if self.text_models is None:
                    raise InputError("a text prompt needs the text models: TextSamPredictor(sam, load_text_models())")
                embeddings = self.text_models.clip.embed_text(text)
            if self.adapter is None:
                raise InputError("text embeddings need a prompt adapter: TextSamPredictor(sam, models)")
            tokens = text_tokens_for(self.adapter, embeddings, self.clip_key, self.model, self.features)
        tokens = torch.as_tensor(tokens)
        if tokens.ndim == 2:
            tokens = tokens[None]
        dim = self.model.prompt_encoder.embed_dim
        if tokens.ndim != 3 or tokens.shape[-1] != dim:
            raise InputError(f"text_tokens must be (N, T, {dim}) prompt tokens, got {tuple(tokens.shape)}")
        return tokens.to(device=self.device, dtype=self.model.dtype)

    @torch.no_grad()
    def predict_torch(self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                      boxes: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
                      multimask_output: bool = True, return_logits: bool = False,
                      text_tokens: torch.Tensor | None = None, hq_token_only: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As `SamPredictor.predict_torch`, plus `text_tokens` (B, T, C) appended to the sparse prompt tokens."""
        if text_tokens is None and self._text is not None:
            text_tokens = self._text["tokens"]
        if text_tokens is None:
            return super().predict_torch(point_coords, point_labels, boxes, mask_input, multimask_output,
                                         return_logits, hq_token_only=hq_token_only)
        if self.model.family != "sam" or hq_token_only:
            raise InputError(f"text prompt tokens go into the original SAM decoder; this is a {self.model.family} "
                             "model (and hq_token_only is HQ-SAM's)")
        self._require_image()
        model = self.model
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        sparse, dense, tokens = _broadcast_sets(sparse, dense, text_tokens.to(sparse.dtype))
        low_res, iou = model.mask_decoder(
            image_embeddings=self.features,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=torch.cat([sparse, tokens], dim=1),
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
        chunks = []
        for start in range(0, low_res.shape[0], POSTPROCESS_CHUNK):  # bounded memory, as the base class
            full = model.postprocess_masks(low_res[start : start + POSTPROCESS_CHUNK], self.input_size,
                                           self.original_size)
            chunks.append(full if return_logits else full > model.mask_threshold)
        self._last_outputs = (torch.cat(chunks, dim=0), iou, low_res)
        return self._last_outputs


def _broadcast_sets(sparse: torch.Tensor, dense: torch.Tensor, tokens: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Equal set counts for the prompt encoder's output and the text tokens (a count of 1 repeats)."""
    n = max(sparse.shape[0], tokens.shape[0])
    if {sparse.shape[0], tokens.shape[0]} - {1, n}:
        raise InputError(f"text prompts ({tokens.shape[0]} sets) and other prompts ({sparse.shape[0]} sets) need "
                         "equal counts, or 1")
    if sparse.shape[0] != n:
        sparse = sparse.expand(n, -1, -1)
        dense = dense.expand(n, -1, -1, -1)
    if tokens.shape[0] != n:
        tokens = tokens.expand(n, -1, -1)
    return sparse, dense, tokens
