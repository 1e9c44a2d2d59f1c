"""The two-way transformer of the mask decoder: prompt tokens and image tokens attend to each other.

The image side may have batch 1 while the tokens have batch B (one image, many prompts): every image-side
projection of the first layer then runs once and is broadcast, instead of once per prompt as in the official code
(which copies the image embedding B times first). Results are the same.

Once the image tokens are per prompt (every layer after the first), the cross attentions are computed in a
reassociated order: a handful of prompt tokens meet 4096 image tokens, so the image side is multiplied by small
(heads x tokens)-wide matrices instead of being projected to keys, values and queries first. Same arithmetic up to
rounding, about half the work per prompt.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Hashable

import torch
from torch import nn

from samflow.models.sam.common import MLPBlock
from samflow.models.sam.factored_tokens import FactoredImageTokens, ImageCache


class Attention(nn.Module):
    """Attention with optional down-projection of the embedding size after projecting to q, k, v."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim / downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        b, n, c = x.shape
        x = x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)
        return x.expand(batch, -1, -1, -1) if b != batch else x

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (Bq, Nq, C), k and v (Bk, Nk, C); a batch of 1 broadcasts against the other side."""
        return self.attend(self.q_proj(q), self.k_proj(k), self.v_proj(v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention over already projected q (Bq, Nq, Ci), k and v (Bk, Nk, Ci), then the output projection."""
        batch = max(q.shape[0], k.shape[0])
        q, k, v = self._heads(q, batch), self._heads(k, batch), self._heads(v, batch)
        # One side is always a handful of prompt tokens, so the score matrix is small (N x T): plain matmuls beat
        # a fused kernel, which is built for long sequences on both sides.
        attn = torch.matmul(q, k.transpose(-2, -1)).mul_(1.0 / math.sqrt(q.shape[-1])).softmax(dim=-1)
        out = torch.matmul(attn, v)
        return self.out_proj(out.transpose(1, 2).reshape(batch, -1, self.internal_dim))


def _head_weights(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """A projection weight (Ci, C) split by output head: (heads, d, C)."""
    ci, c = weight.shape
    return weight.view(num_heads, ci // num_heads, c)


def tokens_to_image(attn: Attention, queries: torch.Tensor, keys: torch.Tensor,
                    key_bias: torch.Tensor) -> torch.Tensor:
    """`attn(queries, keys + pe, keys)` for few queries (B, T, C) over many keys (B or 1, N, C).

    key_bias (N, Ci) is k_proj(pe) (bias included). Scores q.(K Wk + b) are taken as (q Wk).K + q.b and the
    attention-weighted values as (P K) Wv + bv (P's rows sum to one): the keys are never projected.
    """
    b, t, _ = queries.shape
    heads = attn.num_heads
    q = attn.q_proj(queries)
    d = q.shape[-1] // heads
    q = q.view(b, t, heads, d).transpose(1, 2) * (1.0 / math.sqrt(d))  # (B, H, T, d)
    # (B, H*T, C): each head's queries pulled back through its key projection.
    pulled = torch.matmul(q, _head_weights(attn.k_proj.weight, heads)).reshape(b, heads * t, -1)
    scores = torch.matmul(q, key_bias.view(-1, heads, d).permute(1, 2, 0)).view(b, heads * t, -1)
    if keys.shape[0] == b:
        keys_t = keys.transpose(1, 2).expand(b, -1, -1)
        # In place saves a large buffer; under autocast the operands' dtypes differ and it must not be in place.
        same = scores.dtype == pulled.dtype == keys.dtype
        scores = scores.baddbmm_(pulled, keys_t) if same else torch.baddbmm(scores, pulled, keys_t)
    else:
        scores = scores.add_(torch.matmul(pulled.reshape(b * heads * t, -1), keys[0].t()).view(b, heads * t, -1))
    probs = scores.softmax(dim=-1)
    if keys.shape[0] == b:
        mixed = torch.bmm(probs, keys)  # (B, H*T, C)
    else:
        mixed = torch.matmul(probs.view(b * heads * t, -1), keys[0]).view(b, heads * t, -1)
    out = torch.matmul(mixed.view(b, heads, t, -1), _head_weights(attn.v_proj.weight, heads).transpose(1, 2))
    out = out.add_(attn.v_proj.bias.view(heads, 1, d)) if attn.v_proj.bias is not None else out
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, heads * d))


def attend_image(attn: Attention, queries: torch.Tensor, keys: torch.Tensor, key_bias: torch.Tensor,
                 projected: torch.Tensor | None) -> torch.Tensor:
    """Token -> image attention of `attn` for queries (B, T, C) (positional encoding added): from `projected`
    keys (their k and v in the first 2*Ci channels) when the image side was projected, else reassociated."""
    if projected is None:
        return tokens_to_image(attn, queries, keys, key_bias)
    ci = attn.internal_dim
    return attn.attend(attn.q_proj(queries), projected[..., :ci], projected[..., ci : 2 * ci])


def project_image(keys: torch.Tensor, fused: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Image tokens (1 or B, N, C) through fused projections (weight (K, C), per-position bias (N, K))."""
    weight, bias = fused
    return torch.matmul(keys, weight.t()).add_(bias)


def shared_by_prompts(keys: torch.Tensor, queries: torch.Tensor) -> bool:
    """One image side for several prompts: projecting it once is cheaper than reassociating per prompt."""
    return keys.shape[0] == 1 < queries.shape[0]


def image_to_tokens(attn: Attention, image: torch.Tensor, image_weight: torch.Tensor | None,
                    query_bias: torch.Tensor | None, tokens_pe: torch.Tensor, tokens: torch.Tensor,
                    residual: torch.Tensor | None = None) -> torch.Tensor:
    """`attn(image queries, tokens_pe, tokens)` for many queries (1 or B, N, .) over a few tokens (B, T, C), plus
    `residual` (1 or B, N, C) when given (summed inside the last matmul: no separate pass over N x C).

    The image queries are `image @ image_weight + query_bias` (image_weight None: `image` is already projected).
    Every head's keys are laid out block-diagonally, so all scores come from one matmul of width heads*T (with the
    query projection folded in when image_weight is given), laid out (heads, T, N) so the softmax over T runs
    along contiguous N; the values are pushed through the output projection before they are mixed, and its bias
    is spread over them (each head's probabilities sum to one over its T tokens, so every image token gets the
    bias once).
    """
    b, t, _ = tokens.shape
    heads = attn.num_heads
    k = attn.k_proj(tokens_pe)
    d = k.shape[-1] // heads
    k = k.view(b, t, heads, d).transpose(1, 2) * (1.0 / math.sqrt(d))  # (B, H, T, d)
    eye = torch.eye(heads, dtype=k.dtype, device=k.device)
    block_keys = torch.einsum("bhtd,hg->bhtgd", k, eye).reshape(b, heads * t, heads * d)  # (B, H*T, Ci)
    v = attn.v_proj(tokens).view(b, t, heads, d).transpose(1, 2)  # (B, H, T, d)
    out_weight = attn.out_proj.weight.view(-1, heads, d).permute(1, 2, 0)  # (H, d, C)
    values = torch.matmul(v, out_weight).reshape(b, heads * t, -1)  # (B, H*T, C)
    if attn.out_proj.bias is not None:
        values = values + attn.out_proj.bias / heads
    keys_in = block_keys if image_weight is None else torch.matmul(block_keys, image_weight.t())  # (B, H*T, X)
    n = image.shape[1]
    if image.shape[0] == b:
        scores = torch.bmm(keys_in, image.transpose(1, 2))
    else:  # one image side for all prompts: one wide matmul
        scores = torch.matmul(keys_in.reshape(b * heads * t, -1), image[0].t()).view(b, heads * t, n)
    if image_weight is not None and query_bias is not None:
        scores = scores.add_(torch.matmul(block_keys.reshape(b * heads * t, -1), query_bias.t()).view(b, -1, n))
    # Softmax over each head's T tokens, written out: torch's softmax over a short axis is many times slower.
    scores = scores.view(b, heads, t, n)
    if torch.is_grad_enabled():
        probs = scores.softmax(dim=2).view(b, heads * t, n)
    else:
        probs = scores.sub_(scores.amax(dim=2, keepdim=True)).exp_()
        probs = probs.div_(probs.sum(dim=2, keepdim=True)).view(b, heads * t, n)
    if residual is None:
        return torch.bmm(probs.transpose(1, 2), values)
    return torch.baddbmm(residual, probs.transpose(1, 2), values)


def _softmax_over_tokens(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 2 (a head's few tokens) of (B, H, T, N) scores, in place when autograd is off: torch's
    softmax over a short axis is many times slower than this written-out one."""
    if torch.is_grad_enabled():
        return scores.softmax(dim=2)
    probs = scores.sub_(scores.amax(dim=2, keepdim=True)).exp_()
    return probs.div_(probs.sum(dim=2, keepdim=True))


def factored_tokens_to_image(attn: Attention, queries: torch.Tensor, keys: FactoredImageTokens,
                             key_bias: torch.Tensor, name: Hashable) -> torch.Tensor:
    """`attn(queries, keys + pe, keys)` with the image tokens in factored form; key_bias (N, Ci) = k_proj(pe)."""
    q = _split_heads(attn, attn.q_proj(queries), keys.batch, scaled=True)
    probs = keys.scores(q, attn.k_proj.weight, key_bias, (name, "k")).softmax(dim=-1)
    out = keys.mix(probs, attn.v_proj.weight, attn.v_proj.bias, (name, "v"))  # (B, H, T, d)
    return attn.out_proj(out.transpose(1, 2).reshape(keys.batch, -1, attn.internal_dim))


def _split_heads(attn: Attention, x: torch.Tensor, batch: int, scaled: bool = False) -> torch.Tensor:
    """Projected tokens (B, T, Ci) -> (B, H, T, d), times 1/sqrt(d) when `scaled`; sizes as Python ints and -1
    for T (constants in an exported graph)."""
    d = attn.internal_dim // attn.num_heads
    x = x.view(batch, -1, attn.num_heads, d).transpose(1, 2)
    return x * (1.0 / math.sqrt(d)) if scaled else x


class TwoWayAttentionBlock(nn.Module):
    """Self-attention of tokens, tokens -> image, MLP on tokens, image -> tokens."""

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int = 2048,
                 activation: type[nn.Module] = nn.ReLU, attention_downsample_rate: int = 2,
                 skip_first_layer_pe: bool = False) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def image_side(self, key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The three projections of image tokens in this block, fused: weight (3*Ci, C) and a bias (N, 3*Ci).

        k_proj(keys + pe) = keys @ Wk.T + (pe @ Wk.T + bk): the positional part does not depend on the image or the
        prompt, so it is folded into a per-position bias and the three narrow matmuls become one wide one.
        """
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        weight = torch.cat([t2i.k_proj.weight, t2i.v_proj.weight, i2t.q_proj.weight], dim=0)
        bias = torch.cat([t2i.k_proj(key_pe), t2i.v_proj.bias.expand(key_pe.shape[0], -1), i2t.q_proj(key_pe)], dim=1)
        return weight, bias

    def token_self_attention(self, queries: torch.Tensor, query_pe: torch.Tensor) -> torch.Tensor:
        """The block's first step, the prompt tokens attending to each other (the first layer without their
        positional encoding)."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        return self.norm1(queries)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor, fused: tuple[torch.Tensor, torch.Tensor] | None = None,
                projected: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (B, T, C) with query_pe; keys (1 or B, N, C) with key_pe (1, N, C); `fused` from image_side;
        `projected` the fused projection of these keys when already known."""
        queries = self.token_self_attention(queries, query_pe)

        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        ci = t2i.internal_dim
        if fused is None:
            fused = self.image_side(key_pe[0])
        if projected is None and shared_by_prompts(keys, queries):
            projected = project_image(keys, fused)
        # Image tokens per prompt are never projected (see the module docstring).
        queries = self.norm2(queries + attend_image(t2i, queries + query_pe, keys, fused[1][:, :ci], projected))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        if projected is not None:
            mixed = image_to_tokens(i2t, projected[..., 2 * ci :], None, None, q, queries, residual=keys)
        else:
            weight = fused[0][2 * ci :].t()  # (C, Ci): i2t.q_proj.weight.T
            mixed = image_to_tokens(i2t, keys, weight, fused[1][:, 2 * ci :], q, queries, residual=keys)
        return queries, self.norm4(mixed)

    def forward_factored(self, queries: torch.Tensor, keys: FactoredImageTokens, query_pe: torch.Tensor,
                         fused: tuple[torch.Tensor, torch.Tensor], name: Hashable) -> torch.Tensor:
        """`forward` with the image tokens in factored form (updated in place); returns the new queries."""
        queries = self.token_self_attention(queries, query_pe)

        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        ci = t2i.internal_dim
        out = factored_tokens_to_image(t2i, queries + query_pe, keys, fused[1][:, :ci], (name, "t2i"))
        queries = self.norm2(queries + out)
        queries = self.norm3(queries + self.mlp(queries))

        k = _split_heads(i2t, i2t.k_proj(queries + query_pe), keys.batch, scaled=True)
        v = _split_heads(i2t, i2t.v_proj(queries), keys.batch)
        scores = keys.scores(k, i2t.q_proj.weight, fused[1][:, 2 * ci :], (name, "i2t_q"))  # (B, H, T, N)
        keys.add_attention(_softmax_over_tokens(scores), v, i2t.out_proj, (name, "i2t"))
        keys.layer_norm(self.norm4, (name, "norm4"))
        return queries


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int,
                 activation: type[nn.Module] = nn.ReLU, attention_downsample_rate: int = 2) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, activation, attention_downsample_rate,
                                 skip_first_layer_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)
        self._constants: tuple[tuple, weakref.ref, list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        self._first_projection: tuple[Hashable, torch.Tensor] | None = None
        self._factored_cache: tuple[Hashable, ImageCache] | None = None

    def _image_side_constants(self, image_pe: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Fused image-side weights and positional biases of every layer and of the final attention.

        They depend only on the weights and the positional encoding, so at inference they are computed once and
        reused until a weight changes; with autograd on they are recomputed so gradients flow.
        """
        final = self.final_attn_token_to_image
        params = [p for layer in self.layers for p in layer.parameters()] + list(final.parameters())
        key = (tuple((t.data_ptr(), _version(t)) for t in params), _version(image_pe), image_pe.shape,
               image_pe.dtype, torch.is_inference_mode_enabled())
        cached = self._constants
        if not torch.is_grad_enabled() and cached is not None and cached[0] == key and cached[1]() is image_pe:
            return cached[2]
        pe = image_pe.flatten(2).permute(0, 2, 1)[0]
        constants = [layer.image_side(pe) for layer in self.layers]
        final_weight = torch.cat([final.k_proj.weight, final.v_proj.weight], dim=0)
        final_bias = torch.cat([final.k_proj(pe), final.v_proj.bias.expand(pe.shape[0], -1)], dim=1)
        constants.append((final_weight, final_bias))
        if not torch.is_grad_enabled():
            self._constants = (key, weakref.ref(image_pe), constants)  # a live reference: its memory is not reused
        return constants

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor,
                image_key: Hashable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding (1 or B, C, h, w), image_pe (1, C, h, w), point_embedding (B, T, C).

        `image_key` identifies a shared (batch 1) image embedding across calls: the first layer's image-side
        projections depend on nothing else, so they are kept for the last image and reused by every later prompt.
        Returns the processed tokens (B, T, C) and image tokens (B, h*w, C).
        """
        constants = self._image_side_constants(image_pe)
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        image_pe = image_pe.flatten(2).permute(0, 2, 1)
        first = None
        if image_key is not None and keys.shape[0] == 1 and self.layers and not torch.is_grad_enabled():
            full_key = (image_key, id(constants))
            cached = self._first_projection  # read once: another thread may replace it
            if cached is not None and cached[0] == full_key:
                first = cached[1]
            else:
                first = project_image(keys, constants[0])
                self._first_projection = (full_key, first)
        queries = point_embedding
        for i, (layer, fused) in enumerate(zip(self.layers, constants)):
            queries, keys = layer(queries, keys, point_embedding, image_pe, fused, first if i == 0 else None)
        final = self.final_attn_token_to_image
        weight, bias = constants[-1]
        projected = project_image(keys, (weight, bias)) if shared_by_prompts(keys, queries) else None
        attn_out = attend_image(final, queries + point_embedding, keys, bias[:, : final.internal_dim], projected)
        queries = self.norm_final_attn(queries + attn_out)
        if keys.shape[0] != queries.shape[0]:  # depth 0: the image side was never mixed with the tokens
            keys = keys.expand(queries.shape[0], -1, -1)
        return queries, keys


    def forward_factored(self, image_embedding: torch.Tensor | None, image_pe: torch.Tensor,
                         point_embedding: torch.Tensor, image_key: Hashable | None = None,
                         cache: ImageCache | None = None,
                         outputs: int | None = None) -> tuple[torch.Tensor, FactoredImageTokens]:
        """`forward` for one shared image (1, C, h, w) at inference, its image tokens returned in factored form
        (see samflow.models.sam.factored_tokens): the image-only products are kept for the last `image_key`, or
        read from (and added to) `cache` when one is given (then image_embedding may be None). `outputs`: only the
        first so many tokens are returned (the final attention, where each token only reads the image, then runs
        for those alone: the decoder reads its learned output tokens, never the prompt's)."""
        constants = self._image_side_constants(image_pe)
        if cache is None:
            full_key = (image_key, id(constants))
            cached = self._factored_cache  # read once: another thread may replace it
            if image_key is not None and cached is not None and cached[0] == full_key:
                cache = cached[1]
            else:
                cache = ImageCache(image_embedding.flatten(2).permute(0, 2, 1)[0])
                if image_key is not None:
                    self._factored_cache = (full_key, cache)
        b, t = int(point_embedding.shape[0]), int(point_embedding.shape[1])  # T sizes only the buffer, unused in export
        terms_per_layer = max([layer.cross_attn_image_to_token.num_heads for layer in self.layers], default=0) * t + 2
        keys = FactoredImageTokens(cache, b, capacity=len(self.layers) * terms_per_layer)
        queries = point_embedding
        for i, (layer, fused) in enumerate(zip(self.layers, constants)):
            queries = layer.forward_factored(queries, keys, point_embedding, fused, i)
        final = self.final_attn_token_to_image
        bias = constants[-1][1]
        if outputs is not None:
            queries, point_embedding = queries[:, :outputs], point_embedding[:, :outputs]
        attn_out = factored_tokens_to_image(final, queries + point_embedding, keys, bias[:, : final.internal_dim],
                                            "final")
        return self.norm_final_attn(queries + attn_out), keys


def _version(t: torch.Tensor) -> int:
    """In-place modification counter; inference tensors keep none (-1: trust their identity alone)."""
    return -1 if t.is_inference() else t._version
