"""The official implementation (PyPI `segment-anything`), built with the sizes of a SamConfig.

Used by the parity tests and the benchmarks to compare samflow with the reference on identical weights. It imports
segment_anything lazily: it is a test dependency, never a runtime one.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from samflow.models.sam.config import SamConfig


def official_sam(config: SamConfig) -> nn.Module:
    """An official `segment_anything.modeling.Sam` with `config`'s sizes, random weights, in eval mode."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = config.embedding_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=config.encoder_depth,
            embed_dim=config.encoder_embed_dim,
            img_size=config.image_size,
            mlp_ratio=config.encoder_mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=config.encoder_num_heads,
            patch_size=config.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(config.encoder_global_attn_indexes),
            window_size=config.window_size,
            out_chans=config.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=list(config.pixel_mean),
        pixel_std=list(config.pixel_std),
    ).eval()


def perturb_(model: nn.Module, scale: float = 0.02, seed: int = 0) -> nn.Module:
    """Add Gaussian noise to every floating-point tensor, so nothing zero-initialised can hide a bug."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=gen) * scale)
    return model


def twin_models(config: SamConfig, seed: int = 0, checkpoint: str | None = None) -> tuple[nn.Module, nn.Module]:
    """A samflow model and an official model holding the same weights (perturbed random, or a checkpoint)."""
    from samflow.models.sam.build import build_sam

    torch.manual_seed(seed)
    ours = build_sam(config, checkpoint=checkpoint)
    if checkpoint is None:
        perturb_(ours, seed=seed)
    ref = official_sam(ours.config)
    ref.load_state_dict(ours.state_dict())
    return ours, ref
