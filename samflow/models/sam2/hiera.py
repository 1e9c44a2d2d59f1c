"""Hiera, SAM 2's hierarchical image trunk: four stages of windowed (and a few global) attention blocks, each stage
at half the resolution and twice the width of the one before, with query pooling at the stage changes.

Parameter names and shapes are the official ones (`image_encoder.trunk.*`), and so is the arithmetic (zero-padded
windows included); what differs is data movement, for speed on CPUs: q, k and v reach the fused attention kernel
as views of one projection, tokens enter window order in one copy and leave it inside the residual sum, the
positional embedding is kept between images, and pooling runs channels-last.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samflow.models.sam.common import MLP


class PatchEmbed(nn.Module):
    """(B, 3, H, W) image -> (B, H/4, W/4, C): a 7x7 convolution of stride 4."""

    def __init__(self, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A channels-last input makes the convolution write (B, H, W, C) contiguously.
        return self.proj(x.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)


class GeluMLP(MLP):
    """The trunk's two-layer MLP (keys `mlp.layers.0/1`) with GELU between the layers."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(dim, hidden, dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](F.gelu(self.layers[0](x)))


def _pool(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """2-D max pooling of a (B, H, W, C) grid, as the official do_pool (kernel = stride); channels-last, where
    torch's pooling is fastest."""
    return F.max_pool2d(x.contiguous().permute(0, 3, 1, 2), kernel_size=stride, stride=stride).permute(0, 2, 3, 1)


def _add(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """a + b, written into `out` (a view) when given; in place into `a` at inference."""
    if out is not None:
        return torch.add(a, b, out=out)
    return a + b if torch.is_grad_enabled() else a.add_(b)


class MultiScaleAttention(nn.Module):
    """Multi-head attention over token sets (B, N, C) with optional max-pooled queries (a stage change)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.dim, self.dim_out, self.num_heads = dim, dim_out, num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor, side: tuple[int, int]) -> torch.Tensor:
        """Tokens (B, h*w, C) of an (h, w) grid (the whole grid or one window) -> (B, h'*w', C_out) after `proj`.

        q, k and v go to the fused kernel as strided views of the one projection (no copies); the kernel's output
        is laid out (B, N, heads, d), so the projection reads it as it is.
        """
        b, n, _ = x.shape
        heads = self.num_heads
        d = self.dim_out // heads
        qkv = self.qkv(x)
        q, k, v = qkv.view(b, n, 3, heads, d).unbind(2)
        if self.q_stride:
            q = _pool(q.reshape(b, *side, self.dim_out), self.q_stride).reshape(b, -1, heads, d)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, -1, self.dim_out))


class MultiScaleBlock(nn.Module):
    """Pre-norm block: (windowed) attention, optionally pooling the queries and widening, then an MLP."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, mlp_ratio: float = 4.0,
                 q_stride: tuple[int, int] | None = None, window_size: int = 0) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.window_size = window_size
        self.q_stride = q_stride
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = GeluMLP(dim_out, int(dim_out * mlp_ratio))
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H', W', C_out), H' = H / q_stride at a stage change."""
        b, h, w, _ = x.shape
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.q_stride:
                shortcut = _pool(shortcut, self.q_stride)
        if self.window_size:
            x = self._windowed_attention(x, shortcut)
        else:
            side = (h, w)
            ho, wo = (h // self.q_stride[0], w // self.q_stride[1]) if self.q_stride else side
            x = _add(self.attn(x.reshape(b, h * w, -1), side).view(b, ho, wo, -1), shortcut)
        return _add(x, self.mlp(self.norm2(x)))

    def _windowed_attention(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """shortcut + attention within non-overlapping windows of the (B, H, W, C) normed grid.

        As the official code: the normed grid is padded with zeros to whole windows (padding tokens project to
        the qkv bias and take part in attention as keys), each window attends within itself (queries pooled at a
        stage change), and the padding is dropped. Written with one copy into window order (no padded grid in
        between) and none back: the residual sum reads the windows' output in place and writes the grid.
        """
        b, h, w, c = x.shape
        s = self.window_size
        nh, nw = -(-h // s), -(-w // s)
        if h % s == 0 and w % s == 0:
            windows = x.view(b, nh, s, nw, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nh * nw, s * s, c)
        else:
            windows = x.new_zeros(b, nh, nw, s, s, c)
            grid = windows.permute(0, 1, 3, 2, 4, 5)  # (b, nh, s, nw, s, c): a view
            for rows, cols in _window_pieces(h, w, s):
                _window_block(grid, rows, cols).copy_(_grid_block(x, rows, cols, s))
            windows = windows.view(b * nh * nw, s * s, c)
        out = self.attn(windows, (s, s))
        if self.q_stride:  # the windows and the grid shrink with the queries
            s, h, w = s // self.q_stride[0], h // self.q_stride[0], w // self.q_stride[1]
        out = out.view(b, nh, nw, s, s, -1).permute(0, 1, 3, 2, 4, 5)  # (b, nh, s, nw, s, C): a view
        result = torch.empty_like(shortcut, memory_format=torch.contiguous_format)
        grad = torch.is_grad_enabled()
        for rows, cols in _window_pieces(h, w, s):
            block = _window_block(out, rows, cols)
            if grad:  # out= is not differentiable: gather the windows, then add
                _grid_block(result, rows, cols, s).copy_(block)
            else:
                torch.add(_grid_block(shortcut, rows, cols, s), block, out=_grid_block(result, rows, cols, s))
        return result + shortcut if grad else result


Piece = tuple[int, int, int]  # (first window, last window + 1, tokens used in each of these windows)


def _window_pieces(h: int, w: int, s: int) -> list[tuple[Piece, Piece]]:
    """The grid as at most four blocks of windows: the full windows, the partial last row, column, corner."""
    def axis(n: int) -> list[Piece]:
        full, rest = divmod(n, s)
        return ([(0, full, s)] if full else []) + ([(full, full + 1, rest)] if rest else [])

    return [(r, c) for r in axis(h) for c in axis(w)]


def _grid_block(grid: torch.Tensor, rows: Piece, cols: Piece, s: int) -> torch.Tensor:
    """The tokens of a block of windows of a (b, h, w, ...) grid as (b, windows, used, windows, used, ...)."""
    (r0, r1, nr), (c0, c1, nc) = rows, cols
    block = grid[:, r0 * s : r0 * s + (r1 - r0 - 1) * s + nr, c0 * s : c0 * s + (c1 - c0 - 1) * s + nc]
    return block.unflatten(2, (c1 - c0, nc)).unflatten(1, (r1 - r0, nr))


def _window_block(windows: torch.Tensor, rows: Piece, cols: Piece) -> torch.Tensor:
    """The same block in a (b, nh, s, nw, s, ...) window grid (a view)."""
    (r0, r1, nr), (c0, c1, nc) = rows, cols
    return windows[:, r0:r1, :nr, c0:c1, :nc]


class Hiera(nn.Module):
    """(B, 3, S, S) normalised image -> the four stages' feature maps (B, C_i, S/4/2^i, S/4/2^i), finest first."""

    def __init__(self, embed_dim: int = 96, num_heads: int = 1, stages: tuple[int, ...] = (2, 3, 16, 3),
                 global_att_blocks: tuple[int, ...] = (12, 16, 20), window_spec: tuple[int, ...] = (8, 4, 14, 7),
                 window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14), q_pool: int = 3,
                 q_stride: tuple[int, int] = (2, 2), dim_mul: float = 2.0, head_mul: float = 2.0,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError(f"one window size per stage: stages={stages}, window_spec={window_spec}")
        self.window_spec = tuple(window_spec)
        self.stage_ends = [sum(stages[:i]) - 1 for i in range(1, len(stages) + 1)]
        self.q_pool_blocks = [x + 1 for x in self.stage_ends[:-1]][:q_pool]
        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))
        self.blocks = nn.ModuleList()
        stage = 1
        for i in range(sum(stages)):
            dim_out = embed_dim
            # As the official code: the window size lags a block, so the first block of a stage (the one that
            # pools) still uses the previous stage's window.
            window = 0 if i in global_att_blocks else self.window_spec[stage - 1]
            if i - 1 in self.stage_ends:
                dim_out = int(embed_dim * dim_mul)
                num_heads = int(num_heads * head_mul)
                stage += 1
            self.blocks.append(MultiScaleBlock(embed_dim, dim_out, num_heads, mlp_ratio,
                                               tuple(q_stride) if i in self.q_pool_blocks else None, window))
            embed_dim = dim_out
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends[::-1]]
        self._pos_cache: tuple[tuple, torch.Tensor] | None = None

    def _get_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        """The background positional embedding resized (bicubic) to the grid plus the tiled window embedding,
        (1, h, w, C). It depends on the weights only, so at inference it is kept until they change."""
        key = (tuple(hw), *((t.data_ptr(), t.dtype, t.device, -1 if t.is_inference() else t._version)
                            for t in (self.pos_embed, self.pos_embed_window)))
        if not torch.is_grad_enabled() and self._pos_cache is not None and self._pos_cache[0] == key:
            return self._pos_cache[1]
        h, w = hw
        window = self.pos_embed_window
        pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        pos = pos + window.tile([x // y for x, y in zip(pos.shape, window.shape)])
        pos = pos.permute(0, 2, 3, 1).contiguous()
        if not torch.is_grad_enabled():
            self._pos_cache = (key, pos)
        return pos

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = _add(x, self._get_pos_embed(x.shape[1:3]))
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
