"""The reference implementations of MobileSAM and HQ-SAM, built with the sizes of a SamConfig (test-only).

HQ-SAM: PyPI `segment-anything-hq` (its own ViT that returns the early features, `MaskDecoderHQ`, `Sam`). MobileSAM:
its TinyViT is the one `segment-anything-hq` carries (`modeling/tiny_vit_sam.py`, MobileSAM's file with the early
features added to the return value); with the official `segment_anything` prompt encoder, mask decoder and `Sam`
it is MobileSAM's model (`mobile_sam.build_sam_vit_t`). Both packages are test dependencies, imported lazily.
The reference TinyViT fixes the embedding grid at 64x64: image_size 1024 only.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from samflow.models.sam.config import SamConfig


class _TinyViTOnly(nn.Module):
    """The reference TinyViT returning the embedding alone (as MobileSAM's own file does); its keys gain `inner.`
    (`reference_state_dict` and `load_reference` translate)."""

    def __init__(self, tiny_vit: nn.Module) -> None:
        super().__init__()
        self.inner = tiny_vit
        self.img_size = tiny_vit.img_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[0]


def reference_tiny_vit(config: SamConfig) -> nn.Module:
    from segment_anything_hq.modeling.tiny_vit_sam import TinyViT

    if config.image_size != 1024:
        raise ValueError("the reference TinyViT works at image_size 1024 only")
    return TinyViT(img_size=1024, in_chans=3, num_classes=config.tiny_vit_num_classes,
                   embed_dims=list(config.tiny_vit_embed_dims), depths=list(config.tiny_vit_depths),
                   num_heads=list(config.tiny_vit_num_heads), window_sizes=list(config.tiny_vit_window_sizes),
                   mlp_ratio=config.encoder_mlp_ratio, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False,
                   mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8)


def reference_model(config: SamConfig) -> nn.Module:
    """The reference model of `config`'s family with its sizes, random weights, eval mode: MobileSAM (segment_anything
    Sam with the TinyViT), HQ-SAM (segment_anything_hq Sam with its ViT or the TinyViT, MaskDecoderHQ)."""
    if config.hq:
        from segment_anything_hq import modeling as m

        decoder_class, extra = m.MaskDecoderHQ, {"vit_dim": config.interm_dim}
    else:
        from segment_anything import modeling as m

        decoder_class, extra = m.MaskDecoder, {}
    grid = config.embedding_size
    if config.encoder == "tiny_vit":
        encoder = reference_tiny_vit(config)
        if not config.hq:
            encoder = _TinyViTOnly(encoder)
    else:
        encoder = m.ImageEncoderViT(
            depth=config.encoder_depth, embed_dim=config.encoder_embed_dim, img_size=config.image_size,
            mlp_ratio=config.encoder_mlp_ratio, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=config.encoder_num_heads, patch_size=config.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=tuple(config.encoder_global_attn_indexes), window_size=config.window_size,
            out_chans=config.prompt_embed_dim)
    model = m.Sam(
        image_encoder=encoder,
        prompt_encoder=m.PromptEncoder(embed_dim=config.prompt_embed_dim, image_embedding_size=(grid, grid),
                                       input_image_size=(config.image_size, config.image_size),
                                       mask_in_chans=config.mask_in_chans),
        mask_decoder=decoder_class(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=m.TwoWayTransformer(depth=config.decoder_depth, embedding_dim=config.prompt_embed_dim,
                                            mlp_dim=config.decoder_mlp_dim, num_heads=config.decoder_num_heads),
            transformer_dim=config.prompt_embed_dim, iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim, **extra),
        pixel_mean=list(config.pixel_mean), pixel_std=list(config.pixel_std),
    )
    return model.eval()


def reference_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The reference model's weights under the released checkpoints' keys."""
    state = {}
    for key, value in model.state_dict().items():
        state[key.replace("image_encoder.inner.", "image_encoder.")] = value
    return state


def load_reference(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load released-layout weights into a reference model (strictly)."""
    if isinstance(model.image_encoder, _TinyViTOnly):
        state = {k.replace("image_encoder.", "image_encoder.inner.", 1) if k.startswith("image_encoder.") else k: v
                 for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    # The reference TinyViT caches its attention biases (`ab`) when put in eval mode: eval() again after loading,
    # as MobileSAM's README does after building (its builder calls eval() before loading the checkpoint).
    model.eval()


def perturb(model: nn.Module, scale: float = 0.02, seed: int = 0) -> nn.Module:
    """Gaussian noise on every floating-point tensor; BatchNorm variances kept positive."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=gen) * scale)
                if key.endswith("running_var"):
                    tensor.abs_().add_(0.5)
    return model


def family_twins(config: SamConfig, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A samflow model and the reference model of its family holding the same (perturbed random) weights."""
    from samflow.models.sam.build import build_sam

    torch.manual_seed(seed)
    ours = perturb(build_sam(config), seed=seed)
    ref = reference_model(ours.config)
    load_reference(ref, ours.state_dict())
    return ours, ref
