"""Text prompts for SAM: CLIP text embedding -> adapter -> prompt tokens, decoded in the same call as clicks.

    models = load_text_models()                       # shipped clip_tiny + tiny's adapter, shared per process
    tokens = text_prompt_tokens("a red star", sam)    # (1, K, 256) on SAM's device
    predictor = TextSamPredictor(sam); predictor.set_image(image)
    masks, scores, logits = predictor.predict(text_tokens=tokens, point_coords=[[x, y]], point_labels=[1],
                                              multimask_output=False)

The text tokens are appended to the sparse tokens of the prompt encoder (points, box corners), so text, clicks and
a box go through one mask-decoder forward pass, at the cost of K more tokens (a point is 1-2 tokens).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samflow.errors import InputError
from samflow.models.text.adapter import PromptAdapter, adapter_path_for, load_adapter
from samflow.models.text.clip import DEFAULT_CLIP, ClipModel, get_clip
from samflow.pool import ModelPool, default_model_pool
from samflow.predictor import POSTPROCESS_CHUNK, SamPredictor

log = logging.getLogger(__name__)

# The adapter trained for a SAM preset's shipped weights (recipes/sam_tiny_text_adapter.yaml).
SHIPPED_ADAPTERS = {"tiny": "sam_tiny"}


def default_adapter_path(sam: str = "tiny") -> Path:
    from samflow.models.sam.build import SHIPPED_WEIGHTS

    if sam in SHIPPED_WEIGHTS:
        return adapter_path_for(SHIPPED_WEIGHTS[sam])
    return adapter_path_for(sam)  # a checkpoint path: the adapter lies beside it


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

    @torch.no_grad()
    def tokens_for_embeddings(self, embeddings: torch.Tensor, device: torch.device | str | None = None,
                              dtype: torch.dtype | None = None) -> torch.Tensor:
        """(N, K, C) prompt tokens from CLIP text embeddings (N, D)."""
        tokens = self.adapter.text_tokens(torch.as_tensor(embeddings).to(self.adapter.device))
        return tokens.to(device=device or tokens.device, dtype=dtype or tokens.dtype)

    def tokens(self, texts: str | list[str], device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> torch.Tensor:
        """(N, K, C) prompt tokens for N texts (one prompt set each)."""
        return self.tokens_for_embeddings(self.clip.embed_text(texts), device, dtype)


def get_adapter(path: str | Path, device: str | None = None, pool: ModelPool | None = None) -> PromptAdapter:
    """`load_adapter` once per (file, device) per process."""
    device = device or "cpu"
    key = ("text_adapter", str(Path(path).resolve()), device)
    return (pool if pool is not None else default_model_pool()).get(key, lambda: load_adapter(path, device))


def text_tokens_for(adapter: PromptAdapter, embeddings: np.ndarray | torch.Tensor, clip_key: str,
                    sam_model: Any) -> torch.Tensor:
    """Prompt tokens (N, K, C) on `sam_model`'s device for CLIP text embeddings (N, D) made by the CLIP whose
    fingerprint is `clip_key`; refuses embeddings of another CLIP than the adapter's (the tokens would be noise)."""
    want = adapter.config.clip_fingerprint
    if want and clip_key and want != clip_key:
        raise InputError(f"the text embedding comes from another CLIP model than the one the prompt adapter was "
                         f"trained with ({adapter.config.clip_name or want[:8]}); use that CLIP in clip.text")
    _warn_other_sam(adapter, sam_model)
    with torch.no_grad():
        tokens = adapter.text_tokens(torch.as_tensor(embeddings, dtype=torch.float32, device=adapter.device))
    return tokens.to(device=sam_model.device, dtype=sam_model.dtype)


def _warn_other_sam(adapter: PromptAdapter, sam_model: Any) -> None:
    from samflow.models.sam.checkpoint import model_fingerprint

    want = adapter.config.sam_fingerprint
    if want and not getattr(sam_model, "_samflow_text_checked", False):
        if model_fingerprint(sam_model) != want:
            log.warning("the prompt adapter was trained for other SAM weights than these: text prompts may miss")
        sam_model._samflow_text_checked = True  # once per model object


def load_text_models(sam: str = "tiny", clip: str | Path | None = DEFAULT_CLIP,
                     clip_checkpoint: str | Path | None = None, adapter: str | Path | None = None,
                     device: str | None = None, pool: ModelPool | None = None) -> TextModels:
    """The text models for a SAM model, shared per process.

    sam: the preset whose shipped adapter to use ('tiny'), or a SAM checkpoint path whose adapter lies beside it;
    adapter: an explicit adapter file instead. clip / clip_checkpoint: as `load_clip` (default: shipped clip_tiny).
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    clip_model = get_clip(clip, clip_checkpoint, device, pool)
    adapter_model = get_adapter(adapter or default_adapter_path(sam), device, pool)
    return TextModels(clip_model, adapter_model)


def text_prompt_tokens(text: str, sam_model: Any, models: TextModels | None = None) -> torch.Tensor:
    """Prompt tokens (1, K, C) for `text`, on `sam_model`'s device and dtype (the hook of the one-call API).

    Uses the shipped text models unless `models` is given; embeddings of repeated texts come from the cache.
    """
    models = models or load_text_models(device=str(sam_model.device))
    return models.tokens(text, device=sam_model.device, dtype=sam_model.dtype)


class TextSamPredictor(SamPredictor):
    """SamPredictor whose `predict` / `predict_torch` also take `text_tokens` (N, K, C): decoded with the points,
    box and mask of the same call, in one forward pass (a set of 1 broadcasts to N, as every prompt does)."""

    _text_tokens: torch.Tensor | None = None
    _last_outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def predict(self, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                box: np.ndarray | None = None, mask_input: np.ndarray | None = None, multimask_output: bool = True,
                return_logits: bool = False, text_tokens: torch.Tensor | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As `SamPredictor.predict`, plus `text_tokens` (N, K, C) or (K, C). Batched (N, ...) outputs when the
        text tokens hold more than one set, like any other batched prompt."""
        if text_tokens is None:
            return super().predict(point_coords, point_labels, box, mask_input, multimask_output, return_logits)
        tokens = self._check_tokens(text_tokens)
        self._text_tokens = tokens
        try:
            masks, scores, logits = super().predict(point_coords, point_labels, box, mask_input, multimask_output,
                                                    return_logits)
        finally:
            self._text_tokens = None
        if tokens.shape[0] > 1 and masks.ndim == 3:
            # Only the text was batched, so the base class unbatched the outputs: return every set.
            full, iou, low_res = self._last_outputs
            masks = full.float().cpu().numpy() if return_logits else full.cpu().numpy()
            scores, logits = iou.float().cpu().numpy(), low_res.float().cpu().numpy()
        self._last_outputs = None
        return masks, scores, logits

    def _check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = torch.as_tensor(tokens)
        if tokens.ndim == 2:
            tokens = tokens[None]
        dim = self.model.prompt_encoder.embed_dim
        if tokens.ndim != 3 or tokens.shape[-1] != dim:
            raise InputError(f"text_tokens must be (N, K, {dim}) prompt tokens, got {tuple(tokens.shape)}")
        return tokens.to(device=self.device, dtype=self.model.dtype)

    @torch.no_grad()
    def predict_torch(self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                      boxes: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
                      multimask_output: bool = True, return_logits: bool = False,
                      text_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As `SamPredictor.predict_torch`, plus `text_tokens` (B, K, C) appended to the sparse prompt tokens."""
        tokens = self._check_tokens(text_tokens) if text_tokens is not None else self._text_tokens
        if tokens is None:
            return super().predict_torch(point_coords, point_labels, boxes, mask_input, multimask_output,
                                         return_logits)
        self._require_image()
        model = self.model
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        sparse, dense, tokens = _broadcast_sets(sparse, dense, tokens)
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
