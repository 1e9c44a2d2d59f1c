"""The reference SAM 2 (PyPI `sam2`, Meta's code), built from its own hydra configs with a samflow Sam2Config's
sizes: the whole SAM2Base (video-memory modules included), so its state dict has the released checkpoints' layout.

Used by the SAM 2 parity tests and benchmarks/sam2_encoder.py. It imports sam2 lazily: a test dependency, never a runtime one.
"""

from __future__ import annotations

import torch
from torch import nn

from samflow.models.sam2.config import Sam2Config


def _list(values) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


def official_sam2(config: Sam2Config, meta: bool = False) -> nn.Module:
    """sam2.modeling.sam2_base.SAM2Base with `config`'s sizes, random weights, eval mode, on the CPU (or, with
    `meta`, on the meta device: shapes only, built in an instant).

    Built as sam2.build_sam.build_sam2 builds it (apply_postprocessing: dynamic multimask via stability), from the
    release's config file (configs/sam2.1/sam2.1_hiera_t.yaml or configs/sam2/sam2_hiera_t.yaml) with the trunk,
    neck and image size overridden.
    """
    import sam2  # noqa: F401  (initialises hydra's config module)
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    file = "configs/sam2.1/sam2.1_hiera_t.yaml" if config.version == "2.1" else "configs/sam2/sam2_hiera_t.yaml"
    trunk, neck = "++model.image_encoder.trunk", "++model.image_encoder.neck"
    overrides = [
        f"{trunk}.embed_dim={config.embed_dim}",
        f"{trunk}.num_heads={config.num_heads}",
        f"{trunk}.stages={_list(config.stages)}",
        f"{trunk}.global_att_blocks={_list(config.global_att_blocks)}",
        f"{trunk}.window_spec={_list(config.window_spec)}",
        f"{trunk}.window_pos_embed_bkg_spatial_size={_list(config.window_pos_embed_bkg_spatial_size)}",
        f"{trunk}.dim_mul={config.dim_mul}",
        f"{trunk}.head_mul={config.head_mul}",
        f"{neck}.d_model={config.d_model}",
        f"{neck}.backbone_channel_list={_list(config.stage_dims[::-1])}",
        f"{neck}.fpn_top_down_levels={_list(config.fpn_top_down_levels)}",
        f"{neck}.fpn_interp_model={config.fpn_interp_model}",
        f"{neck}.fuse_type={config.fuse_type}",
        f"++model.image_size={config.image_size}",
        f"++model.pred_obj_scores_mlp={config.pred_obj_scores_mlp}",
        f"++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability={config.dynamic_multimask_via_stability}",
        f"++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta={config.dynamic_multimask_stability_delta}",
        f"++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh={config.dynamic_multimask_stability_thresh}",
    ]
    cfg = compose(config_name=file, overrides=overrides)
    OmegaConf.resolve(cfg)
    if not meta:
        return instantiate(cfg.model, _recursive_=True).eval()
    linspace = torch.linspace  # Hiera reads its drop-path rates with .item(), which meta tensors refuse
    torch.linspace = lambda *args, **kwargs: linspace(*args, **{"device": "cpu", **kwargs})
    try:
        with torch.device("meta"):
            return instantiate(cfg.model, _recursive_=True).eval()
    finally:
        torch.linspace = linspace


def official_predictor(model: nn.Module):
    """SAM2ImagePredictor on `model`, with its feature sizes set for the model's image size (the official
    predictor has them fixed for 1024 px)."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(model)
    s = model.image_size
    predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return predictor


def perturb_(model: nn.Module, scale: float = 0.02, seed: int = 0) -> nn.Module:
    """Gaussian noise on every floating-point tensor, so nothing zero-initialised can hide a bug."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=gen) * scale)
    return model
