"""Loading open_clip models from local files only: checkpoints with or without an embedded config, clear errors for
missing, junk and mismatched files, an offline tokenizer, normalised embeddings, the text cache, the shared pool."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
import torch
from text_testing import SMALL_CLIP, needs_shipped_clip

from samflow.errors import CheckpointError, InputError
from samflow.models.text.clip_loading import get_clip, load_clip
from samflow.pool import ModelPool


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: loading and tokenizing must stay offline."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_load_from_local_checkpoint_offline(clip_file, no_network):
    clip = load_clip(None, clip_file)  # the config comes from the checkpoint's metadata
    text = clip.embed_text(["a red star", "a small blue ring"])
    assert text.shape == (2, 32)
    assert torch.allclose(text.norm(dim=1), torch.ones(2), atol=1e-5)
    image = clip.embed_images(torch.rand(3, 3, 50, 50))  # any size: resized to the model's 32 px
    assert image.shape == (3, 32) and torch.allclose(image.norm(dim=1), torch.ones(3), atol=1e-5)
    assert clip.rank_threshold == pytest.approx(0.3)


def test_same_weights_through_config_json_and_pt_file(clip_file, tmp_path):
    from safetensors.torch import load_file

    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL_CLIP))
    pt = tmp_path / "small.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in load_file(str(clip_file)).items()}}, pt)
    a = load_clip(None, clip_file).embed_text("a red star")
    b = load_clip(str(config), pt).embed_text("a red star")  # bare open_clip config + DDP-style .pt
    assert torch.allclose(a, b, atol=1e-6)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_clip("clip_tiny", tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="config file .* does not exist"):
        load_clip(str(tmp_path / "nope.json"), None)


def test_junk_file_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_clip(None, junk)
    pt = tmp_path / "junk.pt"
    pt.write_bytes(b"nor this")
    with pytest.raises(CheckpointError, match="loads safely"):
        load_clip("clip_tiny", pt)


def test_mismatched_file_names_the_keys(clip_file, tmp_path):
    wider = dict(SMALL_CLIP, embed_dim=64)
    config = tmp_path / "wider.json"
    config.write_text(json.dumps(wider))
    with pytest.raises(CheckpointError, match=r"does not fit the open_clip model 'wider'.*another shape"):
        load_clip(str(config), clip_file)


def test_refuses_configs_that_would_download():
    with pytest.raises(InputError, match="Hugging Face"):
        load_clip({"embed_dim": 32, "vision_cfg": SMALL_CLIP["vision_cfg"],
                   "text_cfg": {"hf_model_name": "bert-base-uncased", "hf_tokenizer_name": "bert-base-uncased"}})
    with pytest.raises(InputError, match="unknown CLIP model 'ViT-B-3'.*ViT-B-32"):
        load_clip("ViT-B-3")


def test_text_cache_and_shared_pool(clip_file):
    pool = ModelPool()
    clip = get_clip(None, clip_file, "cpu", pool)
    assert get_clip(None, clip_file, "cpu", pool) is clip and pool.loads == 1
    first = clip.embed_text("a green triangle")
    started = time.perf_counter()
    for _ in range(100):
        again = clip.embed_text("a green triangle")
    per_call = (time.perf_counter() - started) / 100
    assert torch.equal(first, again)
    assert per_call < 1e-3, f"cached text embedding took {per_call * 1e3:.2f} ms"
    with pytest.raises(InputError):
        clip.embed_text("  ")


def test_masked_crops_grey_outside_the_mask():
    from samflow.models.text.crops import FILL, masked_crops

    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[:, :] = (200, 10, 10)
    masks = np.zeros((2, 64, 64), dtype=bool)
    masks[0, 20:40, 20:40] = True  # a square: the crop is red in the middle, grey in the corners
    crops = masked_crops(image, masks, 16)
    assert crops.shape == (2, 3, 16, 16)
    assert crops[0, 0, 8, 8] == pytest.approx(200 / 255, abs=1e-3)
    assert crops[0, :, 0, 0].tolist() == pytest.approx(list(FILL), abs=1e-3)
    assert crops[1].allclose(torch.tensor(FILL).view(3, 1, 1))  # an empty mask: all grey


@needs_shipped_clip
def test_shipped_clip_loads_by_name(no_network):
    clip = load_clip("clip_tiny")
    assert clip.rank_threshold is not None
    assert clip.embed_text("a red star").shape == (1, clip.embed_dim)
