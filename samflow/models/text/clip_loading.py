"""CLIP from local files only, and back to them: build an open_clip model from a config (refusing anything that would
download), read and strictly load its weights (`load_clip`, once per process with `get_clip`), and write them as
safetensors with the config embedded (`save_clip`)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samflow.devices import resolve_device
from samflow.errors import CheckpointError, InputError
from samflow.models.text.clip import ClipModel
from samflow.models.text.clip_config import (
    CONFIG_KEY,
    DEFAULT_CLIP,
    SHIPPED_CLIP,
    THRESHOLD_KEY,
    ClipConfig,
    resolve_clip_config,
)
from samflow.models.weights import read_tensor_file
from samflow.pool import ModelPool, default_model_pool

log = logging.getLogger(__name__)


def build_open_clip(config: ClipConfig) -> nn.Module:
    """An open_clip model with random weights from a config; refuses configs that would download anything."""
    import open_clip

    cfg = copy.deepcopy(config.model_cfg)
    text_cfg, vision_cfg = cfg["text_cfg"], cfg["vision_cfg"]
    if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"):
        raise InputError(f"CLIP model {config.name!r} uses a Hugging Face text tower/tokenizer, which would be "
                         "downloaded; samflow loads text models offline only (use a config with open_clip's own "
                         "text transformer)")
    if "multimodal_cfg" in cfg:
        raise InputError(f"CLIP model {config.name!r} is a CoCa model; only CLIP-style models are supported")
    if vision_cfg.get("timm_model_name"):
        vision_cfg["timm_model_pretrained"] = False  # weights come from our checkpoint, never from timm's hub
    model_class = open_clip.CustomTextCLIP if cfg.pop("custom_text", False) else open_clip.CLIP
    try:
        return model_class(**cfg)
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"CLIP config {config.name!r} is not a valid open_clip config: {exc}") from None


def read_clip_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a CLIP checkpoint (.safetensors, or .pt/.pth/.bin read with weights_only=True)."""
    state, metadata = read_tensor_file(path, "CLIP checkpoint")
    if next(iter(state)).startswith("module."):  # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, metadata


def load_clip_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path, name: str) -> None:
    """Strictly load `state`, naming missing / unexpected / mis-shaped keys briefly."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict

    try:
        state = convert_state_dict(model, state)  # third-party layouts (e.g. big_vision, timm) -> open_clip
    except Exception as exc:  # its converters assume their formats; a junk dict must still get our message
        log.debug("open_clip could not convert %s: %s", source, exc)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    expected = model.state_dict()
    if "logit_scale" in state and state["logit_scale"].ndim != expected["logit_scale"].ndim:
        state["logit_scale"] = state["logit_scale"].reshape(expected["logit_scale"].shape)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} (model: {tuple(v.shape)})" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing keys: {_brief(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected keys: {_brief(unexpected)}" if unexpected else "",
                 f"{len(wrong)} tensors of another shape: {_brief(wrong, 3)}" if wrong else ""]
        raise CheckpointError(f"CLIP checkpoint {source} does not fit the open_clip model {name!r}: "
                              + "; ".join(p for p in parts if p)
                              + ". Check that the config (model name or JSON) is the one the weights were trained with.")
    model.load_state_dict(state, strict=True)


def _brief(keys: Sequence[str], limit: int = 4) -> str:
    return ", ".join(keys[:limit]) + (f" ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_clip(model: str | Path | Mapping[str, Any] | None = DEFAULT_CLIP, checkpoint: str | Path | None = None,
              device: str | torch.device | None = None, dtype: torch.dtype | str | None = None) -> ClipModel:
    """Load an open_clip model from local files.

    model: samflow's shipped 'clip_tiny', an open_clip built-in name ('ViT-B-32'), an open_clip config JSON file,
    a config mapping, or None to read the config embedded in the checkpoint. checkpoint: a local weights file
    (.safetensors, .pt, .pth, .bin); for 'clip_tiny' the shipped file is the default. Without weights for any other
    model the result has random weights (a warning says so).
    """
    if checkpoint is None and isinstance(model, str) and model in SHIPPED_CLIP:
        checkpoint = SHIPPED_CLIP[model][1]
        if not Path(checkpoint).is_file():
            raise CheckpointError(f"the shipped CLIP weights {checkpoint} are missing; train them with "
                                  "`python -m samflow.train.text_clip recipes/clip_tiny.yaml`")
    state: dict[str, torch.Tensor] | None = None
    metadata: dict[str, str] = {}
    if checkpoint is not None:
        state, metadata = read_clip_state_dict(checkpoint)
    config = resolve_clip_config(model, metadata)
    net = build_open_clip(config)
    if state is not None:
        load_clip_weights(net, state, checkpoint, config.name)
    else:
        log.warning("CLIP model %r has random weights (no checkpoint given)", config.name)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    net = net.to(device=device or "cpu", dtype=dtype)
    threshold = metadata.get(THRESHOLD_KEY)
    return ClipModel(net, config, float(threshold) if threshold else None, source=str(checkpoint or ""))


def get_clip(model: str | Path | None = DEFAULT_CLIP, checkpoint: str | Path | None = None,
             device: str | None = None, pool: ModelPool | None = None) -> ClipModel:
    """`load_clip`, once per (model, checkpoint, device) per process: every caller shares the loaded model."""
    device = resolve_device(device)
    spec = str(Path(model).resolve()) if model is not None and str(model).endswith(".json") else model
    key = ("clip", spec, str(Path(checkpoint).resolve()) if checkpoint else None, device)
    return (pool if pool is not None else default_model_pool()).get(key, lambda: load_clip(model, checkpoint, device))


def save_clip(clip: ClipModel | nn.Module, config: ClipConfig, path: str | Path, *,
              rank_threshold: float | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write CLIP weights as safetensors with the config (and calibrated threshold) embedded; atomically."""
    from safetensors.torch import save_file

    net = clip.model if isinstance(clip, ClipModel) else clip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in net.state_dict().items()}
    metadata = {CONFIG_KEY: config.to_json()}
    if rank_threshold is not None:
        metadata[THRESHOLD_KEY] = f"{rank_threshold:.6f}"
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path
