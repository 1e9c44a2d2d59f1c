"""Text prompts for SAM: CLIP text embedding -> prompt adapter -> prompt tokens, decoded in the same call as clicks.

    models = load_text_models()                        # shipped clip_tiny + tiny's adapter, shared per process
    predictor = TextSamPredictor(sam, models); predictor.set_image(image)
    masks, scores, logits = predictor.predict(text="a red star", point_coords=[[x, y]], point_labels=[1],
                                              multimask_output=False)

The adapter locates the text on the image embedding (see samflow.models.text.adapter), so its tokens are made per
image: `text_prompt_tokens(text, sam, image_embeddings=features)`. They are appended to the sparse tokens of the
prompt encoder (points, box corners), so text, clicks and a box go through one mask-decoder forward pass.

Which adapter: the one given (`load_text_models(adapter=PATH)`, `segment(..., adapter=PATH)`), else the one beside
the SAM checkpoint (`sam_vit_b.pth` -> `sam_vit_b_text_adapter.safetensors`, where `samflow train` writes it), else
tiny's shipped one. An adapter records the fingerprint of the SAM weights it was trained for, and is refused for any
others (its tokens would be noise there).

Presence: a text alone (no clicks, box or mask) is checked after decoding (samflow.models.text.presence): CLIP
scores the decoder's three candidate masks of it against the text, keeps the best one that reaches the adapter's
calibrated threshold, and refuses the text when none does; where the calibration is a trained presence head's
(samflow.models.text.presence_head: CLIP's cosine, SAM's predicted IoU, the mask's shape and colours and the text),
its probability decides instead. `presence_threshold`: None (the adapter's calibrated decision; never refused if it
has none), a cosine in [-1, 1] (the cosine rule), or False (off: the decoder's single mask, as before).
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
from samflow.models.text.presence import (
    PresenceCalibration,
    PresenceResult,
    check_presence_threshold,
    decide_presence,
)
from samflow.models.text.presence_head import PresenceHead
from samflow.ops.image import to_rgb_uint8
from samflow.pool import ModelPool, default_model_pool
from samflow.predict.predictor import POSTPROCESS_CHUNK, EncodedImage, SamPredictor
from samflow.predict.textprompt import current_text_adapter

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


def load_text_models(sam: str = "tiny", clip: str | Path | None = None,
                     clip_checkpoint: str | Path | None = None, adapter: str | Path | None = None,
                     device: str | None = None, pool: ModelPool | None = None) -> TextModels:
    """The text models for a SAM model, shared per process.

    sam: the preset whose shipped adapter to use ('tiny'), or a SAM checkpoint path whose adapter lies beside it;
    adapter: an explicit adapter file instead. clip / clip_checkpoint: as `load_clip`; without either, the CLIP the
    adapter records it was trained with (`samflow train` writes its name and weights path into the adapter), else
    the shipped clip_tiny.
    """
    device = resolve_device(device)
    adapter_model = get_adapter(adapter or default_adapter_path(sam), device, pool)
    source = adapter_model.clip_source
    if clip is None and clip_checkpoint is None:
        if source and (source.get("model") or source.get("checkpoint")):
            clip, clip_checkpoint = source.get("model"), source.get("checkpoint")
        else:
            clip = DEFAULT_CLIP
    try:
        clip_model = get_clip(clip, clip_checkpoint, device, pool)
    except CheckpointError as exc:
        if source is None or (clip, clip_checkpoint) != (source.get("model"), source.get("checkpoint")):
            raise
        raise CheckpointError(f"{exc} (the CLIP the prompt adapter was trained with; pass clip= and "
                              "clip_checkpoint= to load_text_models where it lies now)") from None
    return TextModels(clip_model, adapter_model)


def text_models_for(sam_model: Any, adapter: str | Path | TextModels | None = None) -> TextModels:
    """The text models for `sam_model`: `adapter` (a file or TextModels), else the one the current call chose
    (`samflow.predict.textprompt.using_text_adapter`, as `segment(adapter=...)` does), else tiny's shipped ones.
    Whether the adapter fits these SAM weights is checked where its tokens are made."""
    choice = adapter if adapter is not None else current_text_adapter()
    if isinstance(choice, TextModels):
        return choice
    return load_text_models(adapter=choice, device=str(sam_model.device))


def resolve_presence_threshold(value: float | bool | str | None, calibration: PresenceCalibration | None
                               ) -> float | None:
    """The presence threshold a `presence_threshold` argument means: None -> the adapter's calibrated one (None
    without a calibration: no text is refused); True -> the calibrated one, required; False or 'off' -> None
    (off); a number -> itself (a cosine in [-1, 1])."""
    if value is None:
        return calibration.threshold if calibration is not None else None
    if value is False or (isinstance(value, str) and value.lower() == "off"):
        return None
    if value is True:
        if calibration is None:
            raise InputError("this prompt adapter has no calibrated presence threshold: give presence_threshold a "
                             "number (recipes/calibrate_text_presence.py calibrates one)")
        return calibration.threshold
    if isinstance(value, str):
        raise InputError(f"presence_threshold must be None, a number, True or False ('off'); got {value!r}")
    return check_presence_threshold(value)


def calibrated_head(adapter: PromptAdapter | None, value: float | bool | str | None) -> PresenceHead | None:
    """The adapter's trained presence head when `value` (a presence_threshold argument) means the calibrated
    decision and that decision is the head's; None for a cosine rule (an explicit number is always a cosine)."""
    calibration = adapter.presence if adapter is not None else None
    if (value is None or value is True) and calibration is not None and calibration.scorer == "head":
        return adapter.presence_head
    return None


def text_presence_threshold(sam_model: Any, threshold: float | bool | str | None = None,
                            models: TextModels | None = None) -> float | None:
    """What `threshold` (a `presence_threshold` argument) means for the text models of `sam_model` (see
    resolve_presence_threshold): the hook the one-call API asks before decoding."""
    models = models or text_models_for(sam_model)
    return resolve_presence_threshold(threshold, models.adapter.presence)


def text_presence(sam_model: Any, image: np.ndarray, texts: list[str], candidates: np.ndarray,
                  quality: np.ndarray | None, threshold: float | bool | str | None = None,
                  models: TextModels | None = None) -> PresenceResult | None:
    """The presence decision (samflow.models.text.presence) for N `texts` on `image` uint8 (H, W, 3), from the
    decoder's candidate masks of each, bool (N, K, H, W), and their predicted IoU (N, K), with the text models of
    `sam_model` (or `models`) and their calibration: the hook of the one-call API (samflow.predict.textprompt).
    None when `threshold` resolves to off."""
    models = models or text_models_for(sam_model)
    calibration = models.adapter.presence
    value = resolve_presence_threshold(threshold, calibration)
    if value is None:
        return None
    calibration = calibration or PresenceCalibration(threshold=value)
    return decide_presence(models.clip, image, texts, candidates, quality, value, calibration.quality_weight,
                           calibration.augment, head=calibrated_head(models.adapter, threshold))


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

    Uses `models`, else those `text_models_for(sam_model)` finds (the call's chosen adapter, else tiny's shipped
    ones); raises CheckpointError when they are missing or were trained for other SAM weights, InputError without
    `image_embeddings` (the adapter locates the text on them).
    """
    if image_embeddings is None:
        raise InputError("text prompt tokens depend on the image: pass image_embeddings (the SAM features of the "
                         "image, (1, C, h, w))")
    models = models or text_models_for(sam_model)
    return text_tokens_for(models.adapter, models.clip.embed_text(text), models.clip.fingerprint, sam_model,
                           image_embeddings, strict_sam=True)


class TextSamPredictor(SamPredictor):
    """SamPredictor whose `predict` / `predict_torch` also take a text prompt, decoded with the points, box and mask
    of the same call in one forward pass (a set of 1 broadcasts to N, as every prompt does).

    `text` (str or N strings) needs `models`; `text_embeddings` (N, D) CLIP text embeddings need `models` or an
    adapter; `text_tokens` (N, T, C) are used as they are.

    A `text` alone (no points, box or mask_input) is checked for presence when the image's pixels are known
    (`set_image`, or `set_image_embedding(encoded, image=...)`) and `presence_threshold` resolves to a number (see
    the module doc): the masks come from the decoder's three candidates, CLIP's pick with multimask_output=False;
    a refused text keeps its place in the outputs with all-False masks (-inf as logits) and score 0.
    `last_presence` holds the decision of the last call (None when none was made).
    """

    def __init__(self, sam_model: Any, models: TextModels | None = None, adapter: PromptAdapter | None = None,
                 clip_key: str = "") -> None:
        super().__init__(sam_model)
        self.text_models = models
        self.adapter = adapter or (models.adapter if models is not None else None)
        self.clip_key = clip_key or (models.clip.fingerprint if models is not None else "")
        self._text: dict[str, Any] | None = None
        self._last_outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.last_presence: PresenceResult | None = None

    def reset_image(self) -> None:
        super().reset_image()
        self._pixels: np.ndarray | None = None  # the RGB image, for the presence check's crops

    def set_image(self, image: object, image_format: str = "RGB") -> None:
        super().set_image(image, image_format)
        pixels = to_rgb_uint8(image)
        self._pixels = np.ascontiguousarray(pixels[..., ::-1] if image_format == "BGR" else pixels)

    def set_image_embedding(self, encoded: EncodedImage, image: object | None = None) -> None:
        """As `SamPredictor.set_image_embedding`; `image` (its pixels, RGB) lets text prompts be checked for
        presence."""
        super().set_image_embedding(encoded)
        self._pixels = None
        if image is not None:
            pixels = to_rgb_uint8(image)
            if pixels.shape[:2] != tuple(self.original_size):
                raise InputError(f"image is {pixels.shape[1]}x{pixels.shape[0]} but the embedding was made of a "
                                 f"{self.original_size[1]}x{self.original_size[0]} image")
            self._pixels = pixels

    def predict(self, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                box: np.ndarray | None = None, mask_input: np.ndarray | None = None, multimask_output: bool = True,
                return_logits: bool = False, text: str | list[str] | None = None,
                text_embeddings: torch.Tensor | np.ndarray | None = None,
                text_tokens: torch.Tensor | None = None, presence_threshold: float | bool | str | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As `SamPredictor.predict`, plus one text prompt form. Batched (N, ...) outputs when the text holds more
        than one set, like any other batched prompt. `presence_threshold`: see the class doc."""
        self.last_presence = None
        if text is None and text_embeddings is None and text_tokens is None:
            return super().predict(point_coords, point_labels, box, mask_input, multimask_output, return_logits)
        self._require_image()
        tokens = self._text_tokens(text, text_embeddings, text_tokens)
        threshold = self._presence_threshold(text, point_coords, box, mask_input, presence_threshold)
        self._text = {"tokens": tokens}
        try:
            masks, scores, logits = super().predict(point_coords, point_labels, box, mask_input,
                                                    multimask_output or threshold is not None, return_logits)
        finally:
            self._text = None
        if tokens.shape[0] > 1 and masks.ndim == 3 and self._last_outputs is not None:
            # Only the text was batched, so the base class unbatched the outputs: return every set.
            full, iou, low_res = self._last_outputs
            masks = full.float().cpu().numpy() if return_logits else full.cpu().numpy()
            scores, logits = iou.float().cpu().numpy(), low_res.float().cpu().numpy()
        self._last_outputs = None
        if threshold is not None:
            assert text is not None
            masks, scores, logits = self._check_presence([text] if isinstance(text, str) else list(text), threshold,
                                                         masks, scores, logits, multimask_output, return_logits,
                                                         calibrated_head(self.adapter, presence_threshold))
        return masks, scores, logits

    def _presence_threshold(self, text: str | list[str] | None, point_coords: Any, box: Any, mask_input: Any,
                            value: float | bool | str | None) -> float | None:
        """The threshold of this call's presence check, or None when there is none to make."""
        if text is None or point_coords is not None or box is not None or mask_input is not None:
            if value is not None and value is not False:
                raise InputError("presence_threshold checks a text prompt alone: give it without points, box or "
                                 "mask_input (text= strings, not embeddings or tokens)")
            return None
        calibration = self.adapter.presence if self.adapter is not None else None
        threshold = resolve_presence_threshold(value, calibration)
        if threshold is None:
            return None
        if self.text_models is None or self._pixels is None:
            if value is None:  # the calibrated default, where it cannot be applied: no check, as without one
                return None
            raise InputError("a presence check needs the CLIP model (TextSamPredictor(sam, models)) and the "
                             "image's pixels (set_image, or set_image_embedding(encoded, image=...))")
        return threshold

    def _check_presence(self, texts: list[str], threshold: float, masks: np.ndarray, scores: np.ndarray,
                        logits: np.ndarray, multimask_output: bool, return_logits: bool,
                        head: PresenceHead | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert self.text_models is not None and self._pixels is not None
        batched = masks.ndim == 4
        if not batched:
            masks, scores, logits = masks[None], scores[None], logits[None]
        if len(texts) == 1 and masks.shape[0] > 1:
            texts = texts * masks.shape[0]
        calibration = (self.adapter.presence if self.adapter is not None else None) \
            or PresenceCalibration(threshold=threshold)
        candidates = masks > self.model.mask_threshold if return_logits else masks
        decision = decide_presence(self.text_models.clip, self._pixels, texts, candidates, scores, threshold,
                                   calibration.quality_weight, calibration.augment, head=head)
        if not multimask_output:
            rows, picked = np.arange(masks.shape[0]), decision.picked
            masks, scores, logits = masks[rows, picked][:, None], scores[rows, picked][:, None], \
                logits[rows, picked][:, None]
        refused = ~decision.present
        masks, scores = masks.copy(), scores.copy()
        masks[refused] = -np.inf if return_logits else False
        scores[refused] = 0.0
        self.last_presence = decision
        if not batched:
            masks, scores, logits = masks[0], scores[0], logits[0]
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
