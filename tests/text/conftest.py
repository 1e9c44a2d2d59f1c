"""Fixtures of the text-prompt tests: a small random open_clip model saved as a local checkpoint, a small SAM,
an untrained adapter, and the shipped text models when they are present."""

from __future__ import annotations

import pytest
import torch
from text_testing import SMALL_CLIP, SMALL_SAM

from samflow.models.text.clip_config import ClipConfig
from samflow.models.text.clip_loading import build_open_clip, save_clip


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the CPU is shared: one thread is faster than two here


@pytest.fixture(scope="session")
def clip_config() -> ClipConfig:
    return ClipConfig(SMALL_CLIP, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), name="small")


@pytest.fixture(scope="session")
def clip_file(tmp_path_factory, clip_config):
    """A random small CLIP saved as safetensors with its config embedded and a calibrated threshold."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "small_clip.safetensors"
    save_clip(build_open_clip(clip_config), clip_config, path, rank_threshold=0.3)
    return path


@pytest.fixture(scope="session")
def small_sam():
    from samflow.models.sam import build_sam

    torch.manual_seed(0)
    return build_sam(SMALL_SAM, device="cpu")


@pytest.fixture
def ctx(tmp_path):
    from samflow.engine.cache import EmbeddingCache
    from samflow.engine.context import ItemContext
    from samflow.engine.registry import load_node_types
    from samflow.pool import ModelPool

    load_node_types()
    return ItemContext("item", tmp_path, ModelPool(), EmbeddingCache(max_bytes=1 << 26))
