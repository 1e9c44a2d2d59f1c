"""Prompt sampling for training: token layout equal to the official encoder's, clicks in the error region."""

from __future__ import annotations

import torch

from samflow.models.sam import SamConfig
from samflow.models.sam.sam import Sam
from samflow.train.prompts import (
    BOX_BR,
    BOX_TL,
    PAD,
    add_click,
    correction_clicks,
    embed_tokens,
    first_prompts,
    mask_boxes,
)

CONFIG = SamConfig(encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2, encoder_global_attn_indexes=(0,),
                   image_size=64, window_size=0, prompt_embed_dim=32, decoder_mlp_dim=64, iou_head_hidden_dim=32)


def _masks() -> torch.Tensor:
    m = torch.zeros(3, 64, 64, dtype=torch.bool)
    m[0, 10:20, 30:50] = True
    m[1, 0:64, 0:5] = True
    m[2, 40:41, 40:41] = True
    return m


def test_boxes_and_first_prompts():
    masks = _masks()
    assert mask_boxes(masks).tolist() == [[30, 10, 49, 19], [0, 0, 4, 63], [40, 40, 40, 40]]
    gen = torch.Generator().manual_seed(0)
    coords, labels, is_box = first_prompts(masks, 0.5, 0.1, 20.0, gen)
    for i in range(3):
        if is_box[i]:
            assert labels[i].tolist() == [BOX_TL, BOX_BR]
            assert (coords[i, 0] <= coords[i, 1]).all()
        else:
            assert labels[i].tolist() == [1, PAD]
            x, y = coords[i, 0].long()
            assert masks[i, y, x]


def test_correction_clicks_land_in_the_error_region():
    gt = _masks()
    pred = torch.zeros_like(gt)
    pred[0] = gt[0]
    pred[0, 0:5, 0:5] = True  # false positive only
    pred[2] = gt[2]  # perfect
    gen = torch.Generator().manual_seed(0)
    coords, labels = correction_clicks(pred, gt, gen)
    assert labels.tolist() == [0, 1, PAD]
    x, y = coords[0].long()
    assert x < 5 and y < 5
    x, y = coords[1].long()
    assert gt[1, y, x]


def test_tokens_embed_like_the_official_prompt_encoder():
    """Mixed point/box token lists embed exactly as PromptEncoder does for the same prompts."""
    torch.manual_seed(0)
    pe = Sam(CONFIG).prompt_encoder
    with torch.no_grad():
        for p in pe.parameters():
            p.add_(torch.randn_like(p))
    points = torch.tensor([[[10.0, 12.0], [0.0, 0.0]]])
    pad = torch.tensor([[1, PAD]])
    box = torch.tensor([[[5.0, 6.0], [30.0, 40.0]]])
    box_labels = torch.tensor([[BOX_TL, BOX_BR]])
    coords, labels = torch.cat([points, box]), torch.cat([pad, box_labels])
    coords, labels = add_click(coords, labels, torch.tensor([[20.0, 21.0], [7.0, 8.0]]), torch.tensor([0, 1]))
    assert labels.tolist() == [[1, 0, PAD], [1, BOX_TL, BOX_BR]]
    ours = embed_tokens(pe, coords, labels)
    with torch.no_grad():
        ref_points, _ = pe(points=(torch.tensor([[[10.0, 12.0], [20.0, 21.0]]]), torch.tensor([[1, 0]])), boxes=None,
                           masks=None)
        ref_box, _ = pe(points=(torch.tensor([[[7.0, 8.0]]]), torch.tensor([[1]])),
                        boxes=torch.tensor([[5.0, 6.0, 30.0, 40.0]]), masks=None)
    torch.testing.assert_close(ours[0], ref_points[0])
    torch.testing.assert_close(ours[1], ref_box[0])
