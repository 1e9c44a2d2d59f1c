"""SAM 2's FPN neck and the image encoder (trunk + neck) with the official state-dict layout (`image_encoder.*`).

The neck maps each trunk stage to `d_model` channels with a 1x1 convolution (`neck.convs.{i}.conv`, coarsest
first) and adds the upsampled coarser level to the levels in `fpn_top_down_levels`. The official neck also computes
a sine positional encoding of every level; only the video memory uses it, so it is not computed here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FpnNeck(nn.Module):
    def __init__(self, d_model: int, backbone_channel_list: list[int], fpn_interp_model: str = "bilinear",
                 fuse_type: str = "sum", fpn_top_down_levels: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:
            level = nn.Sequential()
            level.add_module("conv", nn.Conv2d(dim, d_model, kernel_size=1))
            self.convs.append(level)
        self.fpn_interp_model = fpn_interp_model
        self.fuse_type = fuse_type
        levels = range(len(self.convs)) if fpn_top_down_levels is None else fpn_top_down_levels
        self.fpn_top_down_levels = list(levels)

    def forward(self, xs: list[torch.Tensor], heads: dict[int, nn.Conv2d] | None = None) -> list[torch.Tensor]:
        """The trunk's stages (finest first) -> one (B, d_model, h_i, w_i) map per stage, finest first.

        `heads` {level: 1x1 convolution} are applied to those levels' outputs (SAM 2's conv_s0 / conv_s1). A level
        made of its lateral alone, which no finer level takes top-down, then goes through both 1x1 convolutions as
        one (their product): its d_model-wide map is never made.
        """
        heads = heads or {}
        n = len(self.convs) - 1
        if len(xs) != n + 1:
            raise ValueError(f"the neck takes {n + 1} feature maps, got {len(xs)}")
        out: list[torch.Tensor] = [xs[0]] * (n + 1)
        prev = None
        for i in range(n, -1, -1):
            conv = self.convs[n - i].conv
            alone = i not in self.fpn_top_down_levels and (i == 0 or i - 1 not in self.fpn_top_down_levels)
            if i in heads and alone and conv.kernel_size == (1, 1) and heads[i].kernel_size == (1, 1):
                head = heads[i]
                w_head = head.weight.flatten(1)
                weight = (w_head @ conv.weight.flatten(1)).view(head.out_channels, conv.in_channels, 1, 1)
                out[i] = prev = F.conv2d(xs[i], weight, torch.addmv(head.bias, w_head, conv.bias))
                continue
            lateral = self.convs[n - i](xs[i])
            if i in self.fpn_top_down_levels and prev is not None:
                top_down = F.interpolate(prev.to(torch.float32), scale_factor=2.0, mode=self.fpn_interp_model,
                                         align_corners=None if self.fpn_interp_model == "nearest" else False,
                                         antialias=False)
                # In fp32 as the official code; back in the lateral's dtype, so reduced-precision weights keep
                # one dtype throughout (a no-op in fp32).
                prev = lateral + top_down.to(lateral.dtype)
                if self.fuse_type == "avg":
                    prev = prev / 2
            else:
                prev = lateral
            out[i] = heads[i](prev) if i in heads else prev
        return out


class ImageEncoder(nn.Module):
    """Trunk -> neck; the `scalp` coarsest levels are dropped from the output (the released models drop one)."""

    def __init__(self, trunk: nn.Module, neck: FpnNeck, scalp: int = 1) -> None:
        super().__init__()
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp
        if trunk.channel_list != neck.backbone_channel_list:
            raise ValueError(f"trunk widths {trunk.channel_list} do not match the neck's "
                             f"{neck.backbone_channel_list}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, S, S) normalised image -> FPN levels, finest first: strides 4, 8, 16 for the released models."""
        features = self.neck(self.trunk(x))
        return features[: len(features) - self.scalp] if self.scalp > 0 else features
