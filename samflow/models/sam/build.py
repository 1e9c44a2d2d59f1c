"""build_sam: a SAM model from a preset name or a config, with optional weights, ready for inference."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from samflow.devices import resolve_dtype
from samflow.errors import CheckpointError
from samflow.models.sam.checkpoint import (
    config_from_metadata,
    config_from_state_dict,
    load_into,
    read_state_dict,
)
from samflow.models.sam.config import PRESETS, SamConfig
from samflow.models.sam.sam import Sam

if TYPE_CHECKING:
    from samflow.models.sam2.model import Sam2

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
# Presets whose weights ship inside the package (trained by samflow itself; see recipes/).
SHIPPED_WEIGHTS = {"tiny": WEIGHTS_DIR / "sam_tiny.safetensors"}
# Members of the SAM family in packages of their own, which import this one: reached by module name on first use
# (a static import back would be an import circle). Each has `claims(name_or_config, state)` and `build(...)`.
FAMILY_MODULES = ("samflow.models.sam2.build",)


def _other_family(name_or_config: object, state: dict[str, torch.Tensor] | None = None) -> Any:
    for module in FAMILY_MODULES:
        family = importlib.import_module(module)
        if family.claims(name_or_config, state):
            return family
    return None


def resolve_config(name_or_config: str | SamConfig | dict[str, Any] | None) -> SamConfig | None:
    if name_or_config is None or isinstance(name_or_config, SamConfig):
        return name_or_config
    if isinstance(name_or_config, dict):
        return SamConfig(**name_or_config)
    if isinstance(name_or_config, str):
        try:
            return SamConfig.preset(name_or_config)
        except KeyError as exc:
            raise CheckpointError(str(exc.args[0])) from None
    raise TypeError(f"name_or_config must be a preset name, a SamConfig or a dict, not {type(name_or_config)}")


def build_sam(name_or_config: str | SamConfig | dict[str, Any] | None = None, checkpoint: str | Path | None = None,
              device: str | torch.device | None = None, dtype: torch.dtype | str | None = None,
              compile: bool | str = False) -> Sam | Sam2:
    """Build SAM in eval mode.

    name_or_config: "vit_b", "vit_l", "vit_h", "tiny", a SamConfig, a dict of SamConfig fields, or None to take the
    size from the checkpoint. checkpoint: an official .pth, a .safetensors (samflow's or converted), or a Hugging
    Face SAM state dict; without one, "tiny" loads its shipped weights and the other presets get random weights.
    dtype: None or "float32" (the default: exact), "bfloat16" (or torch.bfloat16; on GPUs, and on CPUs with AMX or
    AVX512-BF16: the encoder's products and attention in bfloat16, its residual sums and normalisations in fp32),
    "float16", or "auto": bfloat16 where the device runs it faster, else float32 (`samflow.devices.resolve_dtype`).
    compile: True (inductor) or a torch.compile backend name compiles the image encoder and mask decoder in place
    (parameter names are unchanged); worth it on GPUs.
    SAM 2 ("sam2.1_hiera_tiny", "_small", "_base_plus", "_large", "sam2_hiera_*"; a Sam2Config; a SAM 2
    checkpoint) builds a `samflow.models.sam2.Sam2` (see `build_sam2`).
    """
    family = _other_family(name_or_config)
    if family is not None:
        return family.build(name_or_config, checkpoint=checkpoint, device=device, dtype=dtype, compile=compile)
    config = resolve_config(name_or_config)
    if checkpoint is None and isinstance(name_or_config, str) and name_or_config in SHIPPED_WEIGHTS:
        shipped = SHIPPED_WEIGHTS[name_or_config]
        if shipped.is_file():
            checkpoint = shipped
        else:
            log.warning("shipped weights %s are missing: %s has random weights", shipped, name_or_config)
    state = None
    if checkpoint is not None:
        state, metadata = read_state_dict(checkpoint)
        family = _other_family(name_or_config, state)
        if family is not None:
            return family.build(name_or_config, checkpoint=checkpoint, state=(state, metadata), device=device,
                                dtype=dtype, compile=compile)
        if config is None:
            config = config_from_metadata(metadata) or config_from_state_dict(state)
    if config is None:
        raise CheckpointError("build_sam needs a preset name, a config, or a checkpoint to infer the size from")
    if state is None and isinstance(name_or_config, str) and name_or_config not in SHIPPED_WEIGHTS:
        log.info("%s built with random weights (no checkpoint given)", name_or_config)

    model = Sam(config)
    if state is not None:
        load_into(model, state, checkpoint)
    model.eval()
    model = model.to(device=device, dtype=getattr(torch, resolve_dtype(dtype, device or "cpu")))
    if compile:
        backend = "inductor" if compile is True else compile
        model.image_encoder.compile(backend=backend)
        model.mask_decoder.compile(backend=backend, dynamic=True)  # prompt counts vary from call to call
    return model


__all__ = ["PRESETS", "SamConfig", "build_sam"]
