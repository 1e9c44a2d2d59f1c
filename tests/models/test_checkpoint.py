"""Loading weights: official .pth, safetensors, the Hugging Face layout, and every documented error."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from official_reference import official_sam, perturb_

from samflow import CheckpointError, SamConfig, build_sam
from samflow.models.sam import config_from_state_dict, save_checkpoint
from samflow.models.sam.sam import Sam
from tests.conftest import SMALL


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_state_dict_keys_and_shapes_equal_official(name):
    config = SamConfig.preset(name)
    with torch.device("meta"):
        ours, ref = Sam(config), official_sam(config)
    a = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert a == b


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_presets_are_recognised_from_shapes(name):
    config = SamConfig.preset(name)
    with torch.device("meta"):
        state = Sam(config).state_dict()
    assert config_from_state_dict(state) == config


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(1)
    return perturb_(build_sam(SMALL), seed=1)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_official_pth_loads_unchanged(tmp_path, small_model):
    path = tmp_path / "sam_small.pth"
    torch.save(official_sam(SMALL).state_dict() | small_model.state_dict(), path)  # plain OrderedDict, as official
    loaded = build_sam(SMALL, checkpoint=path)
    assert _same_weights(loaded, small_model)
    assert not loaded.training


def test_safetensors_round_trip_embeds_config(tmp_path, small_model):
    path = save_checkpoint(small_model, tmp_path / "small.safetensors")
    loaded = build_sam(checkpoint=path)  # size comes from the embedded config
    assert loaded.config == SMALL
    assert _same_weights(loaded, small_model)


def test_size_inferred_from_pth_without_config(tmp_path, small_model):
    path = tmp_path / "small.pth"
    torch.save(small_model.state_dict(), path)
    assert build_sam(checkpoint=path).config == SMALL


def test_wrong_size_names_the_size(tmp_path):
    # Just enough of a vit_h state dict for its size to be recognised.
    h = SamConfig.preset("vit_h")
    state = {"image_encoder.pos_embed": torch.zeros(1, 64, 64, 1280),
             "image_encoder.patch_embed.proj.weight": torch.zeros(1280, 3, 16, 16)}
    for i in range(32):
        size = 127 if i in h.encoder_global_attn_indexes else 27
        state[f"image_encoder.blocks.{i}.attn.rel_pos_h"] = torch.zeros(size, 80)
    path = tmp_path / "sam_vit_h_4b8939.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="32 encoder blocks of width 1280: this is vit_h") as err:
        build_sam("vit_b", checkpoint=path)
    assert "12 encoder blocks of width 768: this is vit_b" in str(err.value)
    assert str(path) in str(err.value)


def test_missing_and_unexpected_keys_are_listed(tmp_path, small_model):
    state = dict(small_model.state_dict())
    del state["mask_decoder.iou_token.weight"]
    state["mask_decoder.extra_head.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        build_sam(SMALL, checkpoint=path)
    msg = str(err.value)
    assert "1 missing keys: mask_decoder.iou_token.weight" in msg
    assert "1 unexpected keys: mask_decoder.extra_head.weight" in msg


def test_non_checkpoint_files(tmp_path):
    junk = tmp_path / "notes.pth"
    junk.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        build_sam(SMALL, checkpoint=junk)
    bad_st = tmp_path / "weights.safetensors"
    bad_st.write_text("{}")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        build_sam(SMALL, checkpoint=bad_st)
    with pytest.raises(CheckpointError, match="does not exist"):
        build_sam(SMALL, checkpoint=tmp_path / "missing.pth")
    not_sam = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3)}, not_sam)
    with pytest.raises(CheckpointError, match="not a SAM checkpoint"):
        build_sam(checkpoint=not_sam)


class _Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"x": _Payload()}, f)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        build_sam(SMALL, checkpoint=path)


def _to_hf_key(key: str) -> str:
    """The Hugging Face `SamModel` name of an official key, written out rule by rule from its layout."""
    if key == "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix":
        return "shared_image_embedding.positional_embedding"
    k = key.replace("image_encoder.", "vision_encoder.").replace("patch_embed.proj", "patch_embed.projection")
    k = k.replace("vision_encoder.blocks.", "vision_encoder.layers.")
    for i in (1, 2):
        k = k.replace(f".norm{i}.", f".layer_norm{i}.") if k.startswith("vision_encoder.layers") else k
    for a, b in [("neck.0.", "neck.conv1."), ("neck.1.", "neck.layer_norm1."), ("neck.2.", "neck.conv2."),
                 ("neck.3.", "neck.layer_norm2."), ("mask_downscaling.0.", "mask_embed.conv1."),
                 ("mask_downscaling.1.", "mask_embed.layer_norm1."), ("mask_downscaling.3.", "mask_embed.conv2."),
                 ("mask_downscaling.4.", "mask_embed.layer_norm2."), ("mask_downscaling.6.", "mask_embed.conv3."),
                 ("point_embeddings.", "point_embed."), ("norm_final_attn", "layer_norm_final_attn"),
                 ("output_upscaling.0.", "upscale_conv1."), ("output_upscaling.1.", "upscale_layer_norm."),
                 ("output_upscaling.3.", "upscale_conv2.")]:
        k = k.replace(a, b)
    if k.startswith("mask_decoder.transformer.layers."):
        for i in range(1, 5):
            k = k.replace(f".norm{i}.", f".layer_norm{i}.")
    if "output_hypernetworks_mlps" in k or "iou_prediction_head" in k:
        k = k.replace(".layers.0.", ".proj_in.").replace(".layers.2.", ".proj_out.").replace(".layers.1.", ".layers.0.")
    return k


def test_hugging_face_layout_is_converted(tmp_path, small_model):
    hf_state = {_to_hf_key(k): v for k, v in small_model.state_dict().items()}
    assert "vision_encoder.layers.0.layer_norm1.weight" in hf_state
    assert "mask_decoder.iou_prediction_head.proj_out.weight" in hf_state
    path = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in hf_state.items()}, str(path))
    loaded = build_sam(SMALL, checkpoint=path)
    assert _same_weights(loaded, small_model)
    x = torch.rand(1, 3, 256, 256) * 255
    with torch.no_grad():
        assert torch.equal(loaded.image_encoder(loaded.preprocess(x)), small_model.image_encoder(
            small_model.preprocess(x)))
    assert np.isfinite(loaded.prompt_encoder.get_dense_pe().numpy()).all()


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(CheckpointError, match="unknown SAM preset 'vit_x'"):
        build_sam("vit_x")
