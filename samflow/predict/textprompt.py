"""The one door from samflow's applications (`samflow.segment`, `samflow serve`, the browser app) to text prompts.

Text prompts come from `samflow.predict.text` (CLIP + the prompt adapter). Everything here asks that package for a
single function,

    text_prompt_tokens(text: str, sam_model: Sam, image_embeddings: Tensor | None = None) -> torch.Tensor
        # (1, T, sam_model.prompt_encoder.embed_dim); image_embeddings (1, C, h, w) are the image's SAM features

the sparse prompt tokens of one text for SAM's mask decoder, placed after the point and box tokens. When the package
cannot serve it (not installed, open_clip missing, no trained CLIP or adapter for this SAM model: a CheckpointError)
callers get `TextPromptsUnavailable`, whose message says what is missing.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from samflow.errors import CheckpointError, SamflowError

log = logging.getLogger(__name__)

TEXT_MODULE = "samflow.predict.text"
HOOK = "text_prompt_tokens"


class TextPromptsUnavailable(SamflowError):
    """Text prompts cannot be served: the text models (CLIP and a prompt adapter for this SAM model) are missing."""


def _hook() -> Callable[[str, Any], torch.Tensor]:
    try:
        module = importlib.import_module(TEXT_MODULE)
    except ImportError as exc:  # e.g. open_clip_torch not installed
        raise TextPromptsUnavailable(f"text prompts need {TEXT_MODULE}, which failed to import: {exc}") from exc
    hook = getattr(module, HOOK, None)
    if not callable(hook):
        raise TextPromptsUnavailable(
            f"text prompts need {TEXT_MODULE}.{HOOK}(text, sam_model) (CLIP and a prompt adapter); this installation "
            "does not provide it. Use point or box prompts.")
    return hook


def text_prompts_available() -> bool:
    """Whether `samflow.predict.text` offers text prompts (it may still refuse a SAM model it has no adapter for)."""
    try:
        _hook()
    except TextPromptsUnavailable:
        return False
    return True


def text_prompt_tokens(model: Any, texts: Sequence[str], image_embeddings: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """Sparse prompt tokens (N, T, C) for N `texts` on one image (its SAM features `image_embeddings`), on `model`'s
    device and dtype; TextPromptsUnavailable if the text models are not there."""
    hook = _hook()
    width = model.prompt_encoder.embed_dim
    sets = []
    for text in texts:
        try:
            tokens = hook(text, model, image_embeddings=image_embeddings)
        except CheckpointError as exc:  # the text models' weights are missing or do not fit
            raise TextPromptsUnavailable(f"text prompts need the text models: {exc}") from exc
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3 or tokens.shape[0] != 1 \
                or tokens.shape[2] != width:
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise SamflowError(f"{TEXT_MODULE}.{HOOK} returned {shape} for one text; expected (1, T, {width})")
        sets.append(tokens)
    if not sets:
        raise SamflowError("text_prompt_tokens needs at least one text")
    return torch.cat(sets).to(device=model.device, dtype=model.dtype)
