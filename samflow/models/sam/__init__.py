"""SAM: image encoder, prompt encoder, two-way mask decoder (official state-dict layout), and their builders."""

from samflow.models.sam.build import build_sam
from samflow.models.sam.checkpoint import (
    config_from_state_dict,
    convert_hf_state_dict,
    model_fingerprint,
    read_state_dict,
    save_checkpoint,
)
from samflow.models.sam.config import PRESETS, SamConfig
from samflow.models.sam.sam import Sam

__all__ = [
    "PRESETS",
    "Sam",
    "SamConfig",
    "build_sam",
    "config_from_state_dict",
    "convert_hf_state_dict",
    "model_fingerprint",
    "read_state_dict",
    "save_checkpoint",
]
