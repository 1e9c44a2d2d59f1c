"""Constants and skip marks shared by the text-prompt tests (imported by module name, as tests/graph_testing.py)."""

from __future__ import annotations

import pytest

from samflow.models.text.clip_config import SHIPPED_CLIP

# A CLIP small enough to build in milliseconds: 32 px images, 2 blocks per tower.
SMALL_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 16, "layers": 1, "width": 32, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, "mlp_ratio": 2.0},
}
SMALL_SAM = {"encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2, "encoder_global_attn_indexes": [1],
             "image_size": 128, "window_size": 4}


def shipped_text_models_present() -> bool:
    from samflow.models.sam.build import SHIPPED_WEIGHTS
    from samflow.predict.text import default_adapter_path

    return SHIPPED_CLIP["clip_tiny"][1].is_file() and SHIPPED_WEIGHTS["tiny"].is_file() \
        and default_adapter_path("tiny").is_file()


needs_shipped_clip = pytest.mark.skipif(not SHIPPED_CLIP["clip_tiny"][1].is_file(),
                                        reason="samflow/weights/clip_tiny.safetensors is not trained yet")
needs_shipped_text = pytest.mark.skipif(not shipped_text_models_present(),
                                        reason="the shipped SAM tiny weights or its text adapter are missing")
