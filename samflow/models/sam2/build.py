"""build_sam2: a SAM 2 image model from a preset name, a Sam2Config or a checkpoint; and the two hooks through which
`samflow.build_sam` hands SAM 2 names and checkpoints to this package (`claims`, `build`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from samflow.devices import resolve_dtype
from samflow.errors import CheckpointError
from samflow.models.sam2.checkpoint import (
    check_family,
    config_from_metadata,
    config_from_state_dict,
    describe_state_dict,
    is_sam2_state_dict,
    load_into,
    read_checkpoint,
)
from samflow.models.sam2.config import PRESETS, Sam2Config
from samflow.models.sam2.model import Sam2

log = logging.getLogger(__name__)

NAME_PREFIXES = ("sam2_", "sam2.1_")


def resolve_config(name_or_config: str | Sam2Config | dict[str, Any] | None) -> Sam2Config | None:
    if name_or_config is None or isinstance(name_or_config, Sam2Config):
        return name_or_config
    if isinstance(name_or_config, dict):
        return Sam2Config(**name_or_config)
    if isinstance(name_or_config, str):
        try:
            return Sam2Config.preset(name_or_config)
        except KeyError as exc:
            raise CheckpointError(str(exc.args[0])) from None
    raise TypeError(f"name_or_config must be a preset name, a Sam2Config or a dict, not {type(name_or_config)}")


def claims(name_or_config: object, state: dict[str, torch.Tensor] | None = None) -> bool:
    """Whether `samflow.build_sam` should hand this request to SAM 2: a SAM 2 preset name (or a misspelt one), a
    Sam2Config, or a checkpoint with SAM 2's layout (whatever was asked for: a wrong request is explained here)."""
    if isinstance(name_or_config, str) and name_or_config.startswith(NAME_PREFIXES):
        return True
    if isinstance(name_or_config, Sam2Config):
        return True
    return state is not None and is_sam2_state_dict(state)


def build(name_or_config: object, checkpoint: str | Path | None = None,
          state: tuple[dict[str, torch.Tensor], dict[str, str]] | None = None, **options: Any) -> Sam2:
    """The `samflow.build_sam` entry: a SAM 2 name or config, or a checkpoint already read (`state`).

    A SAM 2 checkpoint asked for as an original SAM size or config gets an error naming what it is."""
    if state is not None and not claims(name_or_config):
        if name_or_config is None:
            return build_sam2(None, checkpoint=checkpoint, state=state, **options)
        asked = repr(name_or_config) if isinstance(name_or_config, str) else "an original SAM config"
        raise CheckpointError(
            f"checkpoint {checkpoint} is {describe_state_dict(state[0])}, not an original SAM one: {asked} cannot "
            f"load it. Build it with build_sam({_suggest(state[0])!r}, checkpoint=...) or build_sam(checkpoint=...)"
        )
    return build_sam2(name_or_config, checkpoint=checkpoint, state=state, **options)  # type: ignore[arg-type]


def _suggest(state: dict[str, torch.Tensor]) -> str:
    try:
        config = config_from_state_dict(state)
    except CheckpointError:
        return "sam2.1_hiera_..."
    return next((n for n, p in PRESETS.items() if p == config), "sam2.1_hiera_...")


def build_sam2(name_or_config: str | Sam2Config | dict[str, Any] | None = None,
               checkpoint: str | Path | None = None, device: str | torch.device | None = None,
               dtype: torch.dtype | str | None = None, compile: bool | str = False,
               state: tuple[dict[str, torch.Tensor], dict[str, str]] | None = None) -> Sam2:
    """Build a SAM 2 image model in eval mode.

    name_or_config: "sam2.1_hiera_tiny", "_small", "_base_plus", "_large" (or "sam2_hiera_*", release 2.0), a
    Sam2Config, a dict of its fields, or None to take the size from the checkpoint. checkpoint: a released
    `sam2.1_hiera_*.pt` / `sam2_hiera_*.pt` (its video-memory tensors are set aside and named in the log; the list
    is kept as `model.ignored_checkpoint_keys`) or samflow's safetensors (`save_checkpoint`). Without a checkpoint
    the weights are random. dtype: as samflow.build_sam (None / "float32", "bfloat16", "float16", "auto"); compile: True or a torch.compile backend compiles the image
    encoder and the mask decoder in place.
    """
    config = resolve_config(name_or_config)
    tensors = metadata = None
    if state is not None:
        tensors, metadata = state
    elif checkpoint is not None:
        tensors, metadata = read_checkpoint(checkpoint)
    if tensors is not None and config is None:
        config = config_from_metadata(metadata or {}) or _infer(tensors, checkpoint)
    if config is None:
        raise CheckpointError("build_sam2 needs a preset name, a config, or a checkpoint to infer the size from")
    model = Sam2(config)
    model.ignored_checkpoint_keys = ()  # type: ignore[assignment]
    if tensors is not None:
        model.ignored_checkpoint_keys = tuple(load_into(model, tensors, checkpoint or "state dict"))
    elif isinstance(name_or_config, str):
        log.info("%s built with random weights (no checkpoint given)", name_or_config)
    model.eval()
    model = model.to(device=device, dtype=getattr(torch, resolve_dtype(dtype, device or "cpu")))
    if compile:
        backend = "inductor" if compile is True else compile
        model.image_encoder.trunk.compile(backend=backend)  # forward_image calls the trunk and the neck
        model.image_encoder.neck.compile(backend=backend)
        model.sam_mask_decoder.compile(backend=backend, dynamic=True)  # prompt counts vary from call to call
    return model


def _infer(tensors: dict[str, torch.Tensor], checkpoint: str | Path | None) -> Sam2Config:
    check_family(tensors, checkpoint or "state dict")
    return config_from_state_dict(tensors)


__all__ = ["PRESETS", "Sam2", "Sam2Config", "build_sam2"]
