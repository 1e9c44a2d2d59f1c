"""Text models for SAM: CLIP (open_clip, local files only) text and image embeddings, the prompt adapter that turns
a CLIP embedding into SAM prompt tokens, CLIP ranking of mask proposals, and the presence check of the adapter's
masks (a text naming nothing in the image gets none). Plain torch: text prompting through a predictor is
`samflow.predict.text`.

    from samflow.models.text import load_clip, load_adapter, rank_masks
"""

from samflow.models.text.adapter import (
    AdapterConfig,
    PromptAdapter,
    adapter_path_for,
    load_adapter,
    save_adapter,
)
from samflow.models.text.clip import ClipModel
from samflow.models.text.clip_config import ClipConfig
from samflow.models.text.clip_loading import get_clip, load_clip, save_clip
from samflow.models.text.crops import masked_crops
from samflow.models.text.presence import PresenceCalibration, PresenceResult, decide_presence
from samflow.models.text.rank import RankResult, rank_masks

__all__ = [
    "AdapterConfig",
    "ClipConfig",
    "ClipModel",
    "PresenceCalibration",
    "PresenceResult",
    "PromptAdapter",
    "RankResult",
    "adapter_path_for",
    "get_clip",
    "load_adapter",
    "load_clip",
    "masked_crops",
    "decide_presence",
    "rank_masks",
    "save_adapter",
    "save_clip",
]
