"""The mask decoder: a two-way transformer, then upscaled image features dotted with per-mask hypernetwork weights."""

from __future__ import annotations

import weakref
from collections.abc import Hashable

import torch
import torch.nn.functional as F
from torch import nn

from samflow.models.sam import common
from samflow.models.sam.common import MLP, LayerNorm2d
from samflow.models.sam.factored_tokens import FactoredImageTokens, cat_factored
from samflow.models.sam.transformer import TwoWayTransformer

# Prompts decoded together at inference; larger batches run in chunks of this many (their per-prompt image tokens,
# 4 MiB each at 64x64, then stay in the CPU cache between the transformer's steps).
PROMPT_CHUNK = 8
# With factored image tokens (samflow.models.sam.factored_tokens): PROMPT_CHUNK prompts per this many image
# tokens, up to 8x PROMPT_CHUNK (measured in automatic masks: 64 prompts at a 32x32 grid beat 32 by ~6%; 8 at 64x64).
FACTORED_CHUNK_TOKENS = 4096
# Image tokens upscaled at a time at inference (each becomes 16 pixels of 32 channels: 512 tokens ~ 1 MiB).
UPSCALE_CHUNK_TOKENS = 512


class MaskDecoder(nn.Module):
    # Whether `attend` may return the per-prompt image tokens factored (its `masks_from_tokens` takes them);
    # subclasses whose mask step reads the tokens otherwise set it False.
    factored_image_tokens = True

    def __init__(self, *, transformer_dim: int, transformer: TwoWayTransformer, num_multimask_outputs: int = 3,
                 activation: type[nn.Module] = nn.GELU, iou_head_depth: int = 3,
                 iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)
        self._source: tuple[Hashable, torch.Tensor] | None = None

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
                multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks for B prompts.

        image_embeddings: (1, C, h, w) shared by all prompts, or (B, C, h, w) one per prompt; image_pe (1, C, h, w);
        sparse (B, T, C); dense (B, C, h, w). Returns low-res mask logits (B, K, 4h, 4w) and IoU predictions (B, K),
        K = 3 with `multimask_output` (the ambiguity-aware masks), else 1.
        """
        masks, iou_pred = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings,
                                             dense_prompt_embeddings)
        mask_slice = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, mask_slice], iou_pred[:, mask_slice]

    def predict_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                      sparse_prompt_embeddings: torch.Tensor,
                      dense_prompt_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens_out, image_tokens = self.attend(image_embeddings, image_pe, sparse_prompt_embeddings,
                                               dense_prompt_embeddings)
        masks = self.masks_from_tokens(tokens_out, image_tokens, image_embeddings.shape[-2:])
        return masks, self.predict_iou(tokens_out)

    # The three steps of predict_masks, separately callable: automatic mask generation predicts IoUs for every
    # prompt but upscales masks only for those that pass its IoU threshold.

    def attend(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
               dense_prompt_embeddings: torch.Tensor,
               image_key: Hashable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The two-way transformer: output tokens (B, T, C) and image tokens (B, h*w, C); with factored image tokens
        (see `_factored_ok`) a FactoredImageTokens, and only the learned output tokens' rows (the prompt's own
        tokens, never read after, are left out).

        `image_key`: the caller's name for this (image embedding, no-mask dense embedding) pair, equal across the
        calls that share them (e.g. the batches of one automatic-mask crop); by default one is derived from the
        embedding's identity when it can be (see `_image_key`). Under a key, the prompt-free work (the dense
        embedding's sum, the first layer's image-side projections) is done once.
        """
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = self.output_token_weights()
        output_tokens = output_tokens.unsqueeze(0).expand(batch, -1, -1).to(sparse_prompt_embeddings.dtype)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)

        if dense_prompt_embeddings.shape[0] > 1 and dense_prompt_embeddings.stride(0) == 0:
            dense_prompt_embeddings = dense_prompt_embeddings[:1]  # one dense embedding broadcast to all prompts
        if image_embeddings.shape[0] not in (1, batch):
            raise ValueError(
                f"image_embeddings has batch {image_embeddings.shape[0]}; expected 1 (shared) or {batch} (per prompt)"
            )
        if image_key is None:
            image_key = self._image_key(image_embeddings, dense_prompt_embeddings)
        elif torch.is_grad_enabled() or image_embeddings.shape[0] != 1 or dense_prompt_embeddings.shape[0] != 1:
            image_key = None
        if image_key is None:
            src = image_embeddings + dense_prompt_embeddings  # batch 1 when both are shared: the first layer is too
        else:
            src = self._shared_source(image_key, image_embeddings, dense_prompt_embeddings)
        step = PROMPT_CHUNK if not torch.is_grad_enabled() and common.cache_blocked(tokens) else batch
        if image_key is not None and self._factored_ok(src):
            if step != batch:  # factored tokens take N x R per prompt, not N x C: more prompts fit in cache
                step = PROMPT_CHUNK * max(1, min(8, FACTORED_CHUNK_TOKENS // (src.shape[-2] * src.shape[-1])))
            outs = [self.transformer.forward_factored(src, image_pe, tokens[i : i + step], image_key,
                                                      outputs=output_tokens.shape[1]) for i in range(0, batch, step)]
            return torch.cat([o[0] for o in outs]), cat_factored([o[1] for o in outs])
        if batch <= step:
            return self.transformer(src, image_pe, tokens, image_key=image_key)
        # Many prompts at inference: a few at a time, so each chunk's per-prompt image tokens stay in cache.
        outs = [self.transformer(src if src.shape[0] == 1 else src[i : i + step], image_pe, tokens[i : i + step],
                                 image_key=image_key) for i in range(0, batch, step)]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def _factored_ok(self, src: torch.Tensor) -> bool:
        """Whether this call's image tokens can stay factored (samflow.models.sam.factored_tokens): a shared
        image at inference in full precision on the CPU (measured there; on a GPU its many small per-prompt products
        cost launches, not arithmetic), outside tracing, for a decoder whose mask step takes them."""
        return (self.factored_image_tokens and src.shape[0] == 1 and not torch.is_grad_enabled()
                and common.cache_blocked(src)
                and not torch.jit.is_tracing() and src.dtype in (torch.float32, torch.float64)
                and not torch.is_autocast_enabled(src.device.type) and len(self.transformer.layers) > 0)

    def output_token_weights(self) -> torch.Tensor:
        """The learned output tokens put before the prompt tokens: IoU token, mask tokens (T, C)."""
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)

    def outputs_per_prompt(self, multimask_output: bool) -> int:
        """K, the masks `forward` returns per prompt."""
        return self.num_multimask_outputs if multimask_output else 1

    def _image_key(self, image_embeddings: torch.Tensor, dense: torch.Tensor) -> Hashable | None:
        """Identity of (image embedding, dense prompt) when both are shared by all prompts, else None.

        The embedding is held by a weak reference in the key and compared by identity and in-place version, so a
        new image that happens to reuse freed memory never matches. Only the spatially constant no-mask dense
        embedding qualifies (by value); a mask prompt's dense embedding is per call.
        """
        if torch.is_grad_enabled() or image_embeddings.shape[0] != 1 or dense.shape[0] != 1:
            return None
        if dense.stride(-1) != 0 or dense.stride(-2) != 0 or image_embeddings.is_inference():
            return None
        return _Identity(image_embeddings, tuple(dense[0, :, 0, 0].tolist()))

    def _shared_source(self, image_key: Hashable, image_embeddings: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """image_embeddings + dense for a shared image, kept for the last key, laid out channels-last (the
        transformer reads it as contiguous (1, h*w, C) tokens)."""
        cached = self._source
        if cached is not None and cached[0] == image_key:
            return cached[1]
        b, c, h, w = image_embeddings.shape
        tokens = torch.empty(b, h, w, c, dtype=image_embeddings.dtype, device=image_embeddings.device)
        src = tokens.permute(0, 3, 1, 2)
        torch.add(image_embeddings, dense, out=src)
        self._source = (image_key, src)
        return src

    def predict_iou(self, tokens_out: torch.Tensor) -> torch.Tensor:
        """IoU predictions (B, num_mask_tokens) from the transformer's output tokens."""
        return self.iou_prediction_head(tokens_out[:, 0, :])

    def masks_from_tokens(self, tokens_out: torch.Tensor, image_tokens: torch.Tensor,
                          grid: tuple[int, int] | torch.Size, index: torch.Tensor | None = None) -> torch.Tensor:
        """Low-res logits (B, num_mask_tokens, 4h, 4w): upscaled image tokens dotted with per-token weights.

        `index` (n,) picks the prompts to upscale (then the result has n rows); the per-token weights are computed
        for the whole batch first, so a prompt's logits do not depend on which others are picked.
        """
        h, w = grid
        mask_tokens_out = tokens_out[:, 1 : 1 + self.num_mask_tokens, :]
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        if index is not None:
            hyper_in = hyper_in[index]
            image_tokens = image_tokens.select(index) if isinstance(image_tokens, FactoredImageTokens) \
                else image_tokens[index]
        return self._upscaled_masks(image_tokens, hyper_in, h, w)

    def _upscaled_masks(self, tokens: torch.Tensor | FactoredImageTokens, hyper_in: torch.Tensor, h: int,
                        w: int) -> torch.Tensor:
        """`output_upscaling` and the hypernetwork product, computed channels-last as plain matmuls.

        A stride-2, kernel-2 transposed convolution is one matmul per pixel: (C) -> (2, 2, C_out). Chaining two of
        them on (B, h*w, C) tokens gives each low-res pixel its 4x4 block of outputs without any transpose of the
        32-channel features; only the K mask logits are rearranged at the end. Same arithmetic as the official
        ConvTranspose2d + LayerNorm2d path, faster on CPUs. tokens (B, h*w, C), hyper_in (B, K, C/8) -> (B, K, 4h, 4w).
        Factored tokens are multiplied by the first matmul's weight from their factors (never materialised).
        """
        conv1, norm, act1, conv2, act2 = self.output_upscaling
        b, n, _ = tokens.shape
        c1, c2 = conv1.out_channels, conv2.out_channels
        w1 = conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, 4 * c1)  # (C, di, dj, C1)
        w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
        hyper_t = hyper_in.transpose(1, 2)
        k = hyper_in.shape[1]

        factored = tokens.linear(w1, "output_upscaling") if isinstance(tokens, FactoredImageTokens) else None

        def logits(rows: slice) -> torch.Tensor:  # tokens [rows] (m of them) -> (B, m*16, K)
            y = torch.matmul(tokens[:, rows], w1) if factored is None else factored(rows)
            m = y.shape[1]
            y = y.view(b, m * 4, c1).add_(conv1.bias)
            y = act1(F.layer_norm(y, (c1,), norm.weight, norm.bias, norm.eps))
            y = act2(torch.matmul(y, w2).view(b, m * 16, c2).add_(conv2.bias))
            return torch.matmul(y, hyper_t)

        # A traced graph (ONNX export) gets one node per chunk: there the runtime does its own scheduling.
        if (torch.is_grad_enabled() or torch.jit.is_tracing() or b * n <= UPSCALE_CHUNK_TOKENS
                or not common.cache_blocked(tokens)):
            masks = logits(slice(None))
        else:  # at inference a few grid rows at a time, so the 16x wider intermediates stay in cache
            step = max(w, UPSCALE_CHUNK_TOKENS // (b * w) * w)
            masks = torch.cat([logits(slice(i, i + step)) for i in range(0, n, step)], dim=1)
        # masks (B, h*w*16, K) is in (i, j, di1, dj1, di2, dj2) order
        masks = masks.view(b, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(b, k, 4 * h, 4 * w)


class _Identity:
    """Hashable stand-in for a live tensor: equal while it is the same object at the same in-place version."""

    def __init__(self, tensor: torch.Tensor, extra: Hashable) -> None:
        self._ref = weakref.ref(tensor)
        self._version = tensor._version
        self._extra = extra
        self._hash = hash((id(tensor), self._version, extra))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Identity):
            return NotImplemented
        mine, theirs = self._ref(), other._ref()
        return (mine is not None and mine is theirs and self._version == other._version == mine._version
                and self._extra == other._extra)
