"""SAM 2 for images: the Hiera image encoder with its FPN neck, SAM 2's mask decoder (high-resolution skip
connections, object score), the released checkpoints' layout, and `build_sam2` (also reached by
`samflow.build_sam("sam2.1_hiera_tiny", ...)`)."""

from samflow.models.sam2.build import build_sam2
from samflow.models.sam2.checkpoint import config_from_state_dict, save_checkpoint
from samflow.models.sam2.config import PRESETS, Sam2Config
from samflow.models.sam2.model import Sam2, Sam2Features

__all__ = ["PRESETS", "Sam2", "Sam2Config", "Sam2Features", "build_sam2", "config_from_state_dict",
           "save_checkpoint"]
