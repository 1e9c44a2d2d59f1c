"""The image encoder as a traceable module: the preprocessed (1, 3, S, S) image -> the (1, C, S/p, S/p) embedding.

samflow's `ImageEncoderViT` computes attention in cache-sized pieces written into preallocated buffers, which is
fast in torch but does not trace (its piece sizes come from tensor shapes). This module runs the same weights
through the official computation (windows padded and partitioned, attention with decomposed relative positions
as explicit matmuls), with every size a Python constant of the model's config: one clean ONNX graph with the same
results up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samflow.models.sam import Sam
from samflow.models.sam.image_encoder import Attention, Block, ImageEncoderViT, get_rel_pos

ENCODER_INPUTS = ("image",)
ENCODER_OUTPUTS = ("image_embeddings",)


class OnnxEncoder(nn.Module):
    """`model.image_encoder` for export: input (1, 3, S, S) normalised and padded as `Sam.preprocess` makes it."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.encoder: ImageEncoderViT = model.image_encoder
        self.grid = model.config.embedding_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        encoder = self.encoder
        x = encoder.patch_embed(image)
        if encoder.pos_embed is not None:
            x = x + encoder.pos_embed
        for block in encoder.blocks:
            x = self._block(block, x)
        return encoder.neck(x.permute(0, 3, 1, 2))

    def _block(self, block: Block, x: torch.Tensor) -> torch.Tensor:
        g, s = self.grid, block.window_size
        y = block.norm1(x)
        if s:
            y = _windowed(block.attn, y, g, s)
        else:
            y = _attention(block.attn, y, g, g)
        x = x + y
        return x + block.mlp(block.norm2(x))


def _windowed(attn: Attention, x: torch.Tensor, grid: int, s: int) -> torch.Tensor:
    """Attention within s x s windows of a (1, grid, grid, C) token grid, zero-padded bottom-right to whole windows
    after the norm (as the official code does: padding tokens project to the qkv bias)."""
    c = x.shape[-1]
    n = -(-grid // s)
    padded = n * s
    x = F.pad(x, (0, 0, 0, padded - grid, 0, padded - grid))
    windows = x.reshape(1, n, s, n, s, c).permute(0, 1, 3, 2, 4, 5).reshape(n * n, s, s, c)
    out = _attention(attn, windows, s, s)
    out = out.reshape(1, n, n, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(1, padded, padded, c)
    return out[:, :grid, :grid, :]


def _attention(attn: Attention, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Multi-head attention over (B, h, w, C) tokens, with decomposed relative positions when the block has them."""
    b, c = x.shape[0], x.shape[-1]
    heads, d = attn.num_heads, attn.head_dim
    qkv = attn.qkv(x).reshape(b, h * w, 3, heads, d).permute(2, 0, 3, 1, 4).reshape(3, b * heads, h * w, d)
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = torch.matmul(q * attn.scale, k.transpose(-2, -1))
    if attn.use_rel_pos:
        rh = get_rel_pos(h, h, attn.rel_pos_h)  # (h, h, d)
        rw = get_rel_pos(w, w, attn.rel_pos_w)  # (w, w, d)
        rq = q.reshape(b * heads, h, w, d)
        rel_h = torch.einsum("bhwc,hkc->bhwk", rq, rh)
        rel_w = torch.einsum("bhwc,wkc->bhwk", rq, rw)
        scores = (scores.view(b * heads, h, w, h, w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :])
        scores = scores.view(b * heads, h * w, h * w)
    out = torch.matmul(scores.softmax(dim=-1), v)
    out = out.view(b, heads, h, w, d).permute(0, 2, 3, 1, 4).reshape(b, h, w, c)
    return attn.proj(out)
