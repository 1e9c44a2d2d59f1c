"""The one door from samflow's applications (`samflow.segment`, `samflow serve`, the browser app) to text prompts.

Text prompts come from `samflow.predict.text` (CLIP + the prompt adapter). Everything here asks that package for a
single function,

    text_prompt_tokens(text: str, sam_model: Sam, image_embeddings: Tensor | None = None) -> torch.Tensor
        # (1, T, sam_model.prompt_encoder.embed_dim); image_embeddings (1, C, h, w) are the image's SAM features

the sparse prompt tokens of one text for SAM's mask decoder, placed after the point and box tokens. When the package
cannot serve it (not installed, open_clip missing, no trained CLIP or adapter for this SAM model: a CheckpointError)
callers get `TextPromptsUnavailable`, whose message says what is missing.

Two more things pass through this door, both optional for the text package:
- which prompt adapter (`using_text_adapter(path or TextModels)`: for the calls made inside the block, on this
  thread; without one, the package finds the adapter of the SAM model itself);
- the presence decision (`text_presence`: whether each text's object is in the image at all, from the decoder's
  candidate masks of it), None when the package offers none or it is turned off.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch

from samflow.errors import CheckpointError, SamflowError

log = logging.getLogger(__name__)

TEXT_MODULE = "samflow.predict.text"
HOOK = "text_prompt_tokens"
PRESENCE_HOOK = "text_presence"
PRESENCE_THRESHOLD_HOOK = "text_presence_threshold"

# The prompt adapter the caller chose for the text prompts of the current call (a path or the text models), if any.
_TEXT_ADAPTER: ContextVar[Any] = ContextVar("samflow_text_adapter", default=None)


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


@contextmanager
def using_text_adapter(adapter: Any) -> Iterator[None]:
    """Text prompts decoded inside the block (on this thread: concurrent calls keep their own) use `adapter`, a
    prompt-adapter file or a `samflow.predict.text.TextModels`; None keeps the package's own choice."""
    token = _TEXT_ADAPTER.set(adapter)
    try:
        yield
    finally:
        _TEXT_ADAPTER.reset(token)


def current_text_adapter() -> Any:
    """The adapter `using_text_adapter` set for this call, or None."""
    return _TEXT_ADAPTER.get()


def _presence_hook(name: str) -> Callable[..., Any] | None:
    try:
        module = importlib.import_module(TEXT_MODULE)
    except ImportError:
        return None
    hook = getattr(module, name, None)
    return hook if callable(hook) else None


def text_presence_threshold(model: Any, threshold: float | bool | None = None) -> float | None:
    """The presence threshold text prompts on `model` get for a `presence_threshold` argument (None: the
    calibrated default), or None when no presence check applies (off, no calibration, or no such check in the text
    package). Asked before decoding, as a checked text is decoded into three candidates."""
    hook = _presence_hook(PRESENCE_THRESHOLD_HOOK)
    if hook is None:
        return None
    try:
        return hook(model, threshold)
    except CheckpointError as exc:
        raise TextPromptsUnavailable(f"text prompts need the text models: {exc}") from exc


def text_presence(model: Any, image: Any, texts: Sequence[str], candidates: Any, quality: Any,
                  threshold: float | bool | None = None) -> Any:
    """Whether the object of each of N `texts` is in `image` (uint8 (H, W, 3)), judged on the decoder's candidate
    masks of each text, bool (N, K, H, W), and their predicted IoU (N, K): a `PresenceResult` (present, picked,
    scores, threshold), or None when the text package has no presence decision for these models or `threshold`
    turns it off (False)."""
    hook = _presence_hook(PRESENCE_HOOK)
    if hook is None:
        return None
    try:
        return hook(model, image, texts, candidates, quality, threshold)
    except CheckpointError as exc:
        raise TextPromptsUnavailable(f"text prompts need the text models: {exc}") from exc
