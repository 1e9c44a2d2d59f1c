"""Carrying trained weights to a finer patch grid (samflow/models/sam/regrid.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from official_reference import official_sam

from samflow.errors import CheckpointError
from samflow.models.sam import SamConfig, build_sam
from samflow.models.sam.regrid import regrid_patch_filter, regrid_pos_embed, regrid_rel_pos, regrid_state_dict
from samflow.models.sam.sam import Sam

COARSE = SamConfig(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
                   image_size=64, patch_size=16, window_size=2, prompt_embed_dim=32, decoder_mlp_dim=64,
                   iou_head_hidden_dim=32)
FINE = COARSE.model_copy(update={"patch_size": 8, "window_size": 4})


def test_patch_filter_sees_what_the_old_one_saw_on_an_upsampled_image():
    torch.manual_seed(0)
    old = torch.randn(5, 3, 16, 16, dtype=torch.float64)
    image = torch.randn(1, 3, 32, 48, dtype=torch.float64)
    new = regrid_patch_filter(old, 2)
    assert new.shape == (5, 3, 8, 8)
    upsampled = F.interpolate(image, scale_factor=2, mode="nearest")
    torch.testing.assert_close(F.conv2d(image, new, stride=8), F.conv2d(upsampled, old, stride=16))


def test_position_tables_keep_their_values_at_matching_places():
    torch.manual_seed(0)
    table = torch.randn(2 * 4 - 1, 6)  # offsets -3..3
    fine = regrid_rel_pos(table, 2 * 8 - 1, 2)  # offsets -7..7 at half the step
    assert fine.shape == (15, 6)
    # A fine offset 2k is the old offset k; odd offsets lie between their neighbours.
    torch.testing.assert_close(fine[7 + 2 * torch.arange(-3, 4)], table)
    torch.testing.assert_close(fine[7 + 1], (table[3] + table[4]) / 2)
    pos = torch.full((1, 4, 4, 6), 0.5)
    assert torch.equal(regrid_pos_embed(pos, 2), torch.full((1, 8, 8, 6), 0.5))


def test_regridded_state_loads_into_the_fine_model_and_the_official_classes():
    torch.manual_seed(0)
    state = Sam(COARSE).state_dict()
    fine = regrid_state_dict(state, COARSE, FINE)
    model = Sam(FINE)
    model.load_state_dict(fine, strict=True)
    official_sam(FINE).load_state_dict(fine, strict=True)
    # The decoder and prompt encoder are untouched.
    assert torch.equal(fine["mask_decoder.iou_token.weight"], state["mask_decoder.iou_token.weight"])


def test_regrid_refuses_other_size_changes():
    with pytest.raises(CheckpointError, match="encoder_embed_dim"):
        regrid_state_dict(Sam(COARSE).state_dict(), COARSE, FINE.model_copy(update={"encoder_embed_dim": 64}))
    with pytest.raises(CheckpointError, match="must divide"):
        regrid_state_dict(Sam(COARSE).state_dict(), COARSE, COARSE.model_copy(update={"patch_size": 32,
                                                                                       "image_size": 64}))


def test_training_from_a_coarser_checkpoint_regrids_it(tmp_path):
    from samflow.models.sam.checkpoint import save_checkpoint
    from samflow.train import TrainConfig
    from samflow.train.loop import build_model

    coarse = build_sam(COARSE)
    path = save_checkpoint(coarse, tmp_path / "coarse.safetensors")
    config = TrainConfig(model=FINE.model_dump(), init_checkpoint=str(path), out_dir=str(tmp_path / "run"))
    model = build_model(config, torch.device("cpu"))
    assert model.config.patch_size == 8
    expected = regrid_patch_filter(coarse.image_encoder.patch_embed.proj.weight.detach(), 2)
    torch.testing.assert_close(model.image_encoder.patch_embed.proj.weight.detach(), expected)
