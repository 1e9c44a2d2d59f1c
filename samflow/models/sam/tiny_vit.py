"""TinyViT, MobileSAM's image encoder: (B, 3, S, S) normalised, padded image -> (B, 256, S/16, S/16) embedding.

Parameter names and shapes are those of MobileSAM's `tiny_vit_sam.TinyViT` (the released `mobile_sam.pt` keys under
`image_encoder.`), including the unused classifier (`norm_head`, `head`) and the BatchNorm statistics. Four stages:
a convolutional one (MBConv blocks) at 1/4 of the input, then windowed-attention stages at 1/8, 1/16 and 1/16 (the
last patch merging keeps the resolution), and SAM's neck.

At inference the computation is written for speed, with the reference's arithmetic: each convolution + BatchNorm
pair runs as one convolution with the normalisation folded into its weights, and attention runs through
`scaled_dot_product_attention` with the learned position biases as its additive mask. Windowing pads as the
reference does (padding tokens take part in attention, as there).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from samflow.models.sam.common import LayerNorm2d


class Conv2d_BN(nn.Sequential):  # noqa: N801 (the reference's name, kept with its `c` / `bn` keys)
    """A bias-free convolution followed by BatchNorm; at inference one convolution with the norm folded in."""

    def __init__(self, a: int, b: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1,
                 bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(a, b, ks, stride, pad, groups=groups, bias=False))
        bn = nn.BatchNorm2d(b)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.constant_(bn.bias, 0)
        self.add_module("bn", bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, bn = self.c, self.bn
        if self.training or bn.running_var is None:
            return bn(c(x))
        scale = bn.weight.float() * torch.rsqrt(bn.running_var.float() + bn.eps)
        weight = (c.weight.float() * scale[:, None, None, None]).to(x.dtype)
        bias = (bn.bias.float() - bn.running_mean.float() * scale).to(x.dtype)
        return F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, c.groups)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: (B, 3, S, S) -> (B, C, S/4, S/4)."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(Conv2d_BN(in_chans, embed_dim // 2, 3, 2, 1), nn.GELU(),
                                 Conv2d_BN(embed_dim // 2, embed_dim, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, plus the input, then GELU."""

    def __init__(self, in_chans: int, out_chans: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(in_chans * expand_ratio)
        self.conv1 = Conv2d_BN(in_chans, hidden, ks=1)
        self.act1 = nn.GELU()
        self.conv2 = Conv2d_BN(hidden, hidden, ks=3, stride=1, pad=1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2d_BN(hidden, out_chans, ks=1, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))
        return self.act3(y + x)


class PatchMerging(nn.Module):
    """(B, C, H, W) or (B, H*W, C) tokens -> (B, H'*W', C') tokens; `stride` 2 halves the grid, 1 keeps it."""

    def __init__(self, input_resolution: tuple[int, int], dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.act = nn.GELU()
        self.conv1 = Conv2d_BN(dim, out_dim, 1, 1, 0)
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            h, w = self.input_resolution
            x = x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
        x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2)


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks on the (B, C, H, W) grid, then patch merging into tokens."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_features)
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class Attention(nn.Module):
    """Multi-head attention within a window of `resolution` tokens, with a learned bias per head and offset
    (|dy|, |dx|) between query and key."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float,
                 resolution: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.key_dim = key_dim
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, self.dh + 2 * key_dim * num_heads)
        self.proj = nn.Linear(self.dh, dim)
        points = list(itertools.product(range(resolution[0]), range(resolution[1])))
        offsets: dict[tuple[int, int], int] = {}
        idxs = []
        for p1 in points:
            for p2 in points:
                offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(offsets.setdefault(offset, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer("attention_bias_idxs", torch.tensor(idxs, dtype=torch.long).view(len(points), -1),
                             persistent=False)
        self._bias: tuple[tuple, torch.Tensor] | None = None

    def bias(self, dtype: torch.dtype) -> torch.Tensor:
        """(heads, N, N) additive attention bias; at inference built once per weights version."""
        table = self.attention_biases
        if torch.is_grad_enabled() and table.requires_grad:
            return table[:, self.attention_bias_idxs].to(dtype)
        key = (table._version, table.data_ptr(), table.device, dtype)
        if self._bias is None or self._bias[0] != key:
            self._bias = (key, table.detach()[:, self.attention_bias_idxs].to(dtype))
        return self._bias[1]

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Projected tokens (B, N, heads * (2 * key_dim + d)) -> (B, heads, N, d) attention output."""
        b, n, _ = qkv.shape
        # per head q, k, v side by side, as the reference lays them out
        q, k, v = qkv.view(b, n, self.num_heads, -1).permute(0, 2, 1, 3).split([self.key_dim, self.key_dim, self.d],
                                                                                dim=3)
        # A 4-d mask broadcast over the windows (stride 0) takes CPUs' fused kernel (a 3-d one the slow path).
        mask = self.bias(q.dtype)[None].expand(b, -1, -1, -1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, C) -> (B, N, C)."""
        b, n, _ = x.shape
        out = self.attend(self.qkv(self.norm(x)))
        return self.proj(out.transpose(1, 2).reshape(b, n, self.dh))


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), a depthwise 3x3 convolution, an MLP (residual); on (B, H*W, C) tokens."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], num_heads: int, window_size: int,
                 mlp_ratio: float, local_conv_size: int = 3) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.window_size = window_size
        self.attn = Attention(dim, dim // num_heads, num_heads, attn_ratio=1, resolution=(window_size, window_size))
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2d_BN(dim, dim, ks=local_conv_size, stride=1, pad=local_conv_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.input_resolution
        b, n, c = x.shape
        if h == self.window_size and w == self.window_size:
            x = x + self.attn(x)
        else:
            x = x + self._windowed_attention(x, h, w)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)

    def _windowed_attention(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The reference pads the grid with zero tokens to whole windows and runs norm, qkv, attention and the
        projection on every window token. Here norm and qkv run on real tokens only, which go straight into the
        window layout (one copy); padding slots get what the reference computes for a zero token, qkv(norm(0)) =
        qkv(norm.bias); the output goes back to the grid (one copy) and only real tokens are projected."""
        attn, s = self.attn, self.window_size
        b, n, c = x.shape
        qkv = attn.qkv(attn.norm(x)).view(b, h, w, -1)
        width = qkv.shape[-1]
        nh, nw = -(-h // s), -(-w // s)
        windows = qkv.new_empty(b, nh, nw, s, s, width)
        as_grid = windows.permute(0, 1, 3, 2, 4, 5)  # (b, nh, s, nw, s, width): a view
        rest_h, rest_w = h - (nh - 1) * s, w - (nw - 1) * s
        if rest_h < s or rest_w < s:
            fill = attn.qkv(attn.norm.bias.to(qkv.dtype))
            as_grid[:, -1, rest_h:] = fill
            as_grid[:, :, :, -1, rest_w:] = fill
        for rows, cols in _pieces(h, w, s):
            _piece(as_grid, rows, cols).copy_(_grid_piece(qkv, rows, cols, s))
        out = attn.attend(windows.view(b * nh * nw, s * s, width))  # (windows, heads, s*s, d)
        heads, d = out.shape[1], out.shape[3]
        out_grid = out.view(b, nh, nw, heads, s, s, d).permute(0, 1, 4, 2, 5, 3, 6)  # (b, nh, s, nw, s, heads, d)
        result = x.new_empty(b, h, w, heads, d)
        for rows, cols in _pieces(h, w, s):
            _grid_piece(result, rows, cols, s).copy_(_piece(out_grid, rows, cols))
        return attn.proj(result.view(b, n, heads * d))


def _pieces(h: int, w: int, s: int) -> list[tuple[tuple[slice, int], tuple[slice, int]]]:
    """The grid as at most four blocks of windows: ((window slice, rows used per window), same for columns)."""
    def axis(size: int) -> list[tuple[slice, int]]:
        full, rest = divmod(size, s)
        return ([(slice(0, full), s)] if full else []) + ([(slice(full, full + 1), rest)] if rest else [])

    return [(r, c) for r in axis(h) for c in axis(w)]


def _piece(as_grid: torch.Tensor, rows: tuple[slice, int], cols: tuple[slice, int]) -> torch.Tensor:
    """One block of a (b, nh, s, nw, s, ...) window view, real tokens only."""
    return as_grid[:, rows[0], : rows[1], cols[0], : cols[1]]


def _grid_piece(grid: torch.Tensor, rows: tuple[slice, int], cols: tuple[slice, int], s: int) -> torch.Tensor:
    """The same block of a (b, h, w, ...) grid, as (b, window rows, rows used, window cols, cols used, ...)."""
    (wr, nr), (wc, nc) = rows, cols
    r0, c0 = wr.start * s, wc.start * s
    kr, kc = wr.stop - wr.start, wc.stop - wc.start
    block = grid[:, r0 : r0 + (kr - 1) * s + nr, c0 : c0 + (kc - 1) * s + nc]
    return block.reshape(grid.shape[0], kr, nr if kr == 1 else s, kc, nc if kc == 1 else s, *grid.shape[3:])


class BasicLayer(nn.Module):
    """An attention stage: TinyViT blocks, then (except for the last stage) patch merging."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, input_resolution, num_heads, window_size, mlp_ratio)
                                    for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class TinyViT(nn.Module):
    """MobileSAM's TinyViT image encoder (four stages) with SAM's neck to `out_chans` channels.

    `forward` returns the embedding (B, out_chans, S/16, S/16); `forward_with_interm` also the second stage's output
    (B, S/16, S/16, embed_dims[2]) channels-last, the early features Light HQ-SAM's decoder fuses.
    """

    def __init__(self, img_size: int = 1024, in_chans: int = 3, num_classes: int = 1000,
                 embed_dims: tuple[int, ...] = (64, 128, 160, 320), depths: tuple[int, ...] = (2, 2, 6, 2),
                 num_heads: tuple[int, ...] = (2, 4, 5, 10), window_sizes: tuple[int, ...] = (7, 7, 14, 7),
                 mlp_ratio: float = 4.0, mbconv_expand_ratio: float = 4.0, out_chans: int = 256) -> None:
        super().__init__()
        if len(embed_dims) != 4 or len(depths) != 4:
            raise ValueError("TinyViT has four stages")
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        first = img_size // 4
        # stage resolutions: 1/4, 1/8, 1/16, 1/16 of the input (the last merging has stride 1)
        sides = [first, first // 2, first // 4, first // 4]
        self.grid = sides[-1]
        self.layers = nn.ModuleList()
        for i in range(4):
            res = (sides[i], sides[i])
            downsample = (PatchMerging(res, embed_dims[i], embed_dims[i + 1], stride=2 if i < 2 else 1)
                          if i < 3 else None)
            if i == 0:
                self.layers.append(ConvLayer(embed_dims[0], depths[0], mbconv_expand_ratio, downsample))
            else:
                self.layers.append(BasicLayer(embed_dims[i], res, depths[i], num_heads[i], window_sizes[i],
                                              mlp_ratio, downsample))
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(_init_weights)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.seq[0].c.weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_interm(x, keep_interm=False)[0]

    def forward_with_interm(self, x: torch.Tensor, keep_interm: bool = True
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # Channels-last throughout: the convolutions run faster on CPUs, and the attention stages' (B, H*W, C)
        # tokens are then the convolutions' layout with no copy in between.
        x = self.layers[0](self.patch_embed(x.contiguous(memory_format=torch.channels_last)))
        interm = None
        g = self.grid
        for i in range(1, len(self.layers)):
            x = self.layers[i](x)
            if i == 1 and keep_interm:
                interm = x.view(x.shape[0], g, g, -1)
        b, _, c = x.shape
        return self.neck(x.view(b, g, g, c).permute(0, 3, 1, 2)).contiguous(), interm


def _init_weights(module: nn.Module) -> None:
    # As the reference: truncated-normal linear weights, zero biases, unit layer norms (random weights only).
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.constant_(module.bias, 0)
    elif isinstance(module, nn.LayerNorm):
        nn.init.constant_(module.bias, 0)
        nn.init.constant_(module.weight, 1.0)
