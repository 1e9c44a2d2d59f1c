"""The ViT image encoder: patch embedding, windowed and global attention blocks, neck to `out_chans` channels.

Parameter names and shapes are the official ones. The computation is written for speed: attention runs through
`scaled_dot_product_attention` (a fused kernel: the (N x N) attention matrix is never stored), with the decomposed
relative-position terms expanded into its additive mask piece by piece; windowed blocks project only real tokens (padding tokens are
filled with what the official code computes for them, the qkv bias).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samflow.models.sam import common
from samflow.models.sam.common import LayerNorm2d, MLPBlock

# Elements of the relative-position bias built at once (2 Mi floats = 8 MiB in fp32: it stays in the L3 cache).
BIAS_CHUNK_ELEMENTS = 2 * 2**20


class PatchEmbed(nn.Module):
    """(B, 3, H, W) image -> (B, H/p, W/p, C) patch tokens."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Made contiguous here, once: a permuted view would keep the whole residual stream channels-first in
        # memory, and every layer norm and residual sum over C would then stride across it (bf16: 1.4x slower).
        return self.proj(x).permute(0, 2, 3, 1).contiguous()


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position embeddings for every (query, key) coordinate pair along one axis: (q_size, k_size, C).

    A table trained for another size is linearly resized, as the official code does.
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist,
                                mode="linear")
        rel_pos = resized.reshape(-1, max_rel_dist).permute(1, 0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


class Attention(nn.Module):
    """Multi-head attention over a (B, H, W, C) token grid with decomposed relative positions."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, use_rel_pos: bool, input_size: tuple[int, int]):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, self.head_dim))

    def attend(self, qkv: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """qkv: (B, h*w, 3*C) projected tokens -> (B, h*w, C) attention output (before `proj`)."""
        b, n, _ = qkv.shape
        # One copy into (3, B, heads, N, d): every per-head slice below is then contiguous for the fused kernel.
        packed = qkv.view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).contiguous()
        return self.attend_heads(packed, h, w).transpose(1, 2).reshape(b, n, -1)

    def attend_heads(self, packed: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """packed: (3, B, heads, h*w, d) contiguous q, k, v -> (B, heads, h*w, d) attention output."""
        q, k, v = packed.unbind(0)
        b, n = q.shape[0], q.shape[2]
        if not self.use_rel_pos:
            return F.scaled_dot_product_attention(q, k, v)
        # bias[q, k] = <q, Rh[qh - kh]> + <q, Rw[qw - kw]>: two small per-row tables, expanded into the fused
        # attention's additive mask one head and a few grid rows at a time, so each piece of the (N x N) bias is
        # written and read back while it is still in the CPU cache, and the whole never exists.
        rh = get_rel_pos(h, h, self.rel_pos_h).to(q.dtype)  # (h, h, d)
        rw = get_rel_pos(w, w, self.rel_pos_w).to(q.dtype)  # (w, w, d)
        rq = q.view(b, self.num_heads, h, w, self.head_dim)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", rq, rh).contiguous()[..., :, None]  # (b, heads, h, w, kh, 1)
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", rq, rw).contiguous()[..., None, :]  # (b, heads, h, w, 1, kw)
        if not common.cache_blocked(q):  # GPU: every head and row in one fused call
            bias = (rel_h + rel_w).view(b, self.num_heads, n, n)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        rows = max(1, BIAS_CHUNK_ELEMENTS // max(1, b * w * n))
        out = torch.empty_like(q)
        # Without autograd every piece is written into one reused buffer: a fresh 8 MiB tensor per piece costs
        # more in page faults than the additions themselves.
        reuse = not (torch.is_grad_enabled() and (rel_h.requires_grad or rel_w.requires_grad))
        buffer: torch.Tensor | None = None
        for head in range(self.num_heads):
            hs = slice(head, head + 1)
            for r in range(0, h, rows):
                grid_rows, tokens = slice(r, min(h, r + rows)), slice(r * w, min(h, r + rows) * w)
                piece = (b, 1, grid_rows.stop - r, w, h, w)
                if reuse and (buffer is None or buffer.shape != piece):
                    buffer = q.new_empty(piece)
                bias = torch.add(rel_h[:, hs, grid_rows], rel_w[:, hs, grid_rows], out=buffer if reuse else None)
                bias = bias.view(b, 1, -1, n)
                out[:, hs, tokens] = F.scaled_dot_product_attention(q[:, hs, tokens], k[:, hs], v[:, hs],
                                                                    attn_mask=bias, scale=self.scale)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        out = self.attend(self.qkv(x).reshape(b, h * w, -1), h, w)
        return self.proj(out).view(b, h, w, -1)


class Block(nn.Module):
    """Pre-norm transformer block; `window_size > 0` attends within non-overlapping windows."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, use_rel_pos: bool,
                 window_size: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(dim, num_heads, qkv_bias, use_rel_pos, attn_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.norm1.weight.dtype
        if x.dtype == low:
            x = x + (self._windowed_attention(self.norm1(x)) if self.window_size else self.attn(self.norm1(x)))
            return x + self.mlp(self.norm2(x))
        # Reduced-precision weights (bfloat16) with an fp32 residual stream: the layer norms' statistics and the
        # residual sums stay in fp32 (in bf16 they would lose the small updates of every block); the matmuls,
        # the attention and GELU run in the weights' precision (with fp32 accumulation inside the kernels).
        h = _fp32_norm(self.norm1, x).to(low)
        x = x + (self._windowed_attention(h) if self.window_size else self.attn(h))
        return x + self.mlp(_fp32_norm(self.norm2, x).to(low))

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        s, heads = self.window_size, self.attn.num_heads
        d = c // heads
        nh, nw = -(-h // s), -(-w // s)
        qkv = self.attn.qkv(x).view(b, h, w, 3, heads, d)
        # Tokens go from the grid straight into the fused kernel's layout, (3, windows, heads, s*s, d), in one copy
        # (no padded grid, no window grid in between).
        packed = qkv.new_empty(3, b, nh, nw, heads, s, s, d)
        if h % s or w % s:
            # The official code pads the normed tokens with zeros before the projection, so padding tokens
            # project to the qkv bias (and take part in attention): fill with exactly that.
            bias = self.attn.qkv.bias
            fill = bias.to(qkv.dtype) if bias is not None else qkv.new_zeros(3 * c)
            packed.copy_(fill.view(3, 1, 1, 1, heads, 1, 1, d).expand_as(packed))
        grid = packed.permute(1, 2, 5, 3, 6, 0, 4, 7)  # (b, nh, s, nw, s, 3, heads, d): a view
        for rows, cols in _window_pieces(h, w, s):
            grid[:, rows[0], : rows[1], cols[0], : cols[1]].copy_(_as_windows(qkv, rows, cols, s))
        out = self.attn.attend_heads(packed.view(3, b * nh * nw, heads, s * s, d), s, s)
        # Back to the grid, padding dropped, in one copy; the projection then runs on real tokens only.
        out = out.view(b, nh, nw, heads, s, s, d).permute(0, 1, 4, 2, 5, 3, 6)  # (b, nh, s, nw, s, heads, d)
        result = x.new_empty(b, h, w, heads, d)
        for rows, cols in _window_pieces(h, w, s):
            _as_windows(result, rows, cols, s).copy_(out[:, rows[0], : rows[1], cols[0], : cols[1]])
        return self.attn.proj(result.view(b, h, w, c))


def _fp32_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """`norm(x)` computed in fp32 whatever the precision of its weights."""
    return F.layer_norm(x.float(), norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps)


def _window_pieces(h: int, w: int, s: int) -> list[tuple[tuple[slice, int], tuple[slice, int]]]:
    """The grid split into at most four blocks of whole windows (full ones, the partial last row/column), each as
    ((window slice, tokens used per window) for rows, the same for columns)."""
    def axis(n: int) -> list[tuple[slice, int]]:
        full, rest = divmod(n, s)
        return ([(slice(0, full), s)] if full else []) + ([(slice(full, full + 1), rest)] if rest else [])

    return [(r, c) for r in axis(h) for c in axis(w)]


def _as_windows(grid: torch.Tensor, rows: tuple[slice, int], cols: tuple[slice, int], s: int) -> torch.Tensor:
    """The tokens of one piece of a (b, h, w, ...) grid as (b, window rows, used rows, window cols, used cols, ...)."""
    (wr, nr), (wc, nc) = rows, cols
    r0, c0 = wr.start * s, wc.start * s
    block = grid[:, r0 : r0 + (wr.stop - wr.start - 1) * s + nr, c0 : c0 + (wc.stop - wc.start - 1) * s + nc]
    b, tail = grid.shape[0], grid.shape[3:]
    return block.view(b, wr.stop - wr.start, nr, wc.stop - wc.start, nc, *tail)


class ImageEncoderViT(nn.Module):
    """(B, 3, S, S) normalised, padded image -> (B, out_chans, S/p, S/p) image embedding."""

    def __init__(self, img_size: int = 1024, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, out_chans: int = 256,
                 qkv_bias: bool = True, use_abs_pos: bool = True, use_rel_pos: bool = True, window_size: int = 14,
                 global_attn_indexes: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim)) if use_abs_pos else None
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, use_rel_pos,
                  0 if i in global_attn_indexes else window_size, (grid, grid))
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x in the weights' dtype. With fp32 weights everything runs in fp32 (or as autocast says). With
        reduced-precision weights (bfloat16, float16) the tokens between blocks, the layer norms and the neck's
        normalisations are fp32 and the products run in the weights' precision; the embedding comes out in the
        weights' dtype."""
        low = self.patch_embed.proj.weight.dtype
        x = self.patch_embed(x)
        if low != torch.float32:
            x = x.float()  # the residual stream
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        if low == torch.float32:
            return self.neck(x)
        conv1, norm1, conv2, norm2 = self.neck
        x = norm1(conv1(x.to(low)).float())
        return norm2(conv2(x.to(low)).float()).to(low)
