"""Carry trained SAM weights to a finer embedding grid (a smaller patch size at the same image size).

SAM's masks come out at 4x its embedding grid, so a model with 16 px patches cannot draw edges finer than 4 px.
Halving the patch size doubles the grid; this module rewrites a trained state dict for the finer model so that,
before any fine-tuning, it sees roughly what the old one saw on a 2x upsampled image: each new patch filter is the
sum of the old filter's sub-blocks, the absolute position embedding is resampled at the new token centres, and the
relative position tables are resampled at the new (finer) offsets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from samflow.errors import CheckpointError
from samflow.models.sam.config import SamConfig

_SAME = ("encoder_embed_dim", "encoder_depth", "encoder_num_heads", "encoder_global_attn_indexes", "image_size",
         "prompt_embed_dim", "mask_in_chans")


def _check(src: SamConfig, dst: SamConfig) -> int:
    differ = [k for k in _SAME if getattr(src, k) != getattr(dst, k)]
    if differ:
        raise CheckpointError(f"cannot regrid: the models differ in {', '.join(differ)} (only patch_size and "
                              f"window_size may change)")
    if src.patch_size % dst.patch_size:
        raise CheckpointError(f"cannot regrid from patch_size {src.patch_size} to {dst.patch_size}: the new patch "
                              f"size must divide the old one")
    return src.patch_size // dst.patch_size


def regrid_patch_filter(weight: torch.Tensor, factor: int) -> torch.Tensor:
    """(C, 3, P, P) -> (C, 3, P/f, P/f): each new tap sums an f x f block, so the new filter on an image gives what
    the old one gives on that image upsampled f times (nearest)."""
    c, ch, p, _ = weight.shape
    return weight.reshape(c, ch, p // factor, factor, p // factor, factor).sum(dim=(3, 5))


def regrid_pos_embed(pos: torch.Tensor, factor: int) -> torch.Tensor:
    """(1, n, n, C) -> (1, fn, fn, C), bilinear at the new token centres."""
    grid = pos.permute(0, 3, 1, 2).float()
    out = F.interpolate(grid, scale_factor=factor, mode="bilinear", align_corners=False)
    return out.permute(0, 2, 3, 1).to(pos.dtype).contiguous()


def regrid_rel_pos(table: torch.Tensor, new_len: int, factor: int) -> torch.Tensor:
    """(2m-1, d) table over token offsets -(m-1)..(m-1) -> (new_len, d) over offsets at the finer grid, where a new
    offset k is the old offset k / factor (linear interpolation, clamped at the ends)."""
    old_half = (table.shape[0] - 1) / 2
    new_half = (new_len - 1) / 2
    offsets = (torch.arange(new_len, dtype=torch.float64) - new_half) / factor + old_half
    offsets = offsets.clamp(0, table.shape[0] - 1)
    lo = offsets.floor().long()
    hi = (lo + 1).clamp(max=table.shape[0] - 1)
    frac = (offsets - lo).to(table.dtype)[:, None]
    return (table[lo] * (1 - frac) + table[hi] * frac).contiguous()


def regrid_state_dict(state: dict[str, torch.Tensor], src: SamConfig, dst: SamConfig) -> dict[str, torch.Tensor]:
    """A copy of `state` (made for `src`) that loads into a model built with `dst` (a finer patch grid)."""
    factor = _check(src, dst)
    out = dict(state)
    out["image_encoder.patch_embed.proj.weight"] = regrid_patch_filter(
        state["image_encoder.patch_embed.proj.weight"], factor)
    out["image_encoder.pos_embed"] = regrid_pos_embed(state["image_encoder.pos_embed"], factor)
    for i in range(dst.encoder_depth):
        side = dst.embedding_size if i in dst.encoder_global_attn_indexes else dst.window_size
        for axis in ("h", "w"):
            key = f"image_encoder.blocks.{i}.attn.rel_pos_{axis}"
            if key in state:
                out[key] = regrid_rel_pos(state[key], 2 * side - 1, factor)
    return out


__all__ = ["regrid_patch_filter", "regrid_pos_embed", "regrid_rel_pos", "regrid_state_dict"]
