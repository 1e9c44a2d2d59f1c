"""Shared fixtures: small SAM configs, twin models (samflow + official, same weights), generated images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samflow import SamConfig

# A small encoder whose 16x16 grid does not divide by the window (5): padding is exercised. The prompt encoder and
# mask decoder keep the official sizes.
SMALL = SamConfig(
    encoder_embed_dim=64,
    encoder_depth=4,
    encoder_num_heads=4,
    encoder_global_attn_indexes=(1, 3),
    image_size=256,
    window_size=5,
)


def make_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth picture with a few flat blobs, uint8 (h, w, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1).astype(np.float32)
    for _ in range(4):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(h // 10 + 1, h // 3 + 2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.integers(0, 256, 3)
    return img.astype(np.uint8)


@pytest.fixture(scope="session")
def small_config() -> SamConfig:
    return SMALL


@pytest.fixture(scope="session")
def twins():
    """(samflow model, official model) with identical perturbed weights."""
    from official_reference import twin_models

    return twin_models(SMALL, seed=0)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
