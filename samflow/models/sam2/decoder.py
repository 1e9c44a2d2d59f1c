"""SAM 2's mask decoder: SAM's two-way transformer and hypernetwork heads, plus an object-score token and head, a
sigmoid on the IoU head, and the high-resolution skip connections (`conv_s0`, `conv_s1`) added into the upscaling.

Keys are the official ones under `sam_mask_decoder.*`. It reuses samflow's SAM decoder and transformer, so prompts
decoded together share the image-side work and the upscaling runs as channels-last matmuls (see
`samflow.models.sam.mask_decoder`); the high-resolution features are added in that same layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samflow.models.sam import common
from samflow.models.sam.common import MLP
from samflow.models.sam.mask_decoder import UPSCALE_CHUNK_TOKENS, MaskDecoder, _Identity
from samflow.models.sam.transformer import TwoWayTransformer


class Sam2TwoWayTransformer(TwoWayTransformer):
    """SAM's two-way transformer with SAM 2's MLP layout (`mlp.layers.0/1`, ReLU): the same arithmetic."""

    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__(depth, embedding_dim, num_heads, mlp_dim)
        for layer in self.layers:
            layer.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, 2)


class Sam2MaskDecoder(MaskDecoder):
    factored_image_tokens = False  # its mask step reads the image tokens themselves

    def __init__(self, *, transformer_dim: int, transformer: TwoWayTransformer, num_multimask_outputs: int = 3,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256, pred_obj_scores_mlp: bool = True,
                 dynamic_multimask_via_stability: bool = True, dynamic_multimask_stability_delta: float = 0.05,
                 dynamic_multimask_stability_thresh: float = 0.98, use_multimask_token_for_obj_ptr: bool = True,
                 ) -> None:
        super().__init__(transformer_dim=transformer_dim, transformer=transformer,
                         num_multimask_outputs=num_multimask_outputs, iou_head_depth=iou_head_depth,
                         iou_head_hidden_dim=iou_head_hidden_dim)
        self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1)
        self.pred_obj_score_head = (MLP(transformer_dim, transformer_dim, 1, 3) if pred_obj_scores_mlp
                                    else nn.Linear(transformer_dim, 1))
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self._high_res_layout: tuple[_Identity, list[torch.Tensor]] | None = None

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor, multimask_output: bool, repeat_image: bool = False,
                high_res_features: list[torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks for B prompts, as the official SAM 2 decoder.

        image_embeddings (1 or B, C, h, w) (a batch of 1 is shared by all prompts; `repeat_image` is accepted for
        the official signature and changes nothing); high_res_features [(1 or B, C/8, 4h, 4w), (1 or B, C/4, 2h,
        2w)] after conv_s0 / conv_s1. Returns low-res logits (B, K, 4h, 4w), IoU predictions (B, K), the SAM output
        tokens (B, 3 or 1, C) and object-score logits (B, 1); K = 3 with `multimask_output`, else 1 (the single-mask
        token, or when it is unstable the best of the three, with dynamic multimask).
        """
        del repeat_image
        if high_res_features is None:
            raise ValueError("SAM 2's decoder needs the high-resolution features (conv_s0 and conv_s1 outputs)")
        tokens_out, image_tokens = self.attend(image_embeddings, image_pe, sparse_prompt_embeddings,
                                               dense_prompt_embeddings)
        masks = self.masks_from_tokens(tokens_out, image_tokens, image_embeddings.shape[-2:],
                                       high_res=high_res_features)
        iou_pred = self.predict_iou(tokens_out)
        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, 0:1], iou_pred[:, 0:1]
        mask_tokens_out = tokens_out[:, 2 : 2 + self.num_mask_tokens]
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]
        else:
            sam_tokens_out = mask_tokens_out[:, 0:1]
        return masks, iou_pred, sam_tokens_out, self.predict_object_score(tokens_out)

    # --- the steps, separately callable (as SAM's decoder) -----------------------------------------------------

    def output_token_weights(self) -> torch.Tensor:
        """The learned output tokens before the prompt tokens: object-score token, IoU token, mask tokens (T, C)."""
        return torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], dim=0)

    def predict_iou(self, tokens_out: torch.Tensor) -> torch.Tensor:
        """IoU predictions (B, num_mask_tokens), through a sigmoid (iou_prediction_use_sigmoid)."""
        return torch.sigmoid(self.iou_prediction_head(tokens_out[:, 1, :]))

    def predict_object_score(self, tokens_out: torch.Tensor) -> torch.Tensor:
        """Object-score logits (B, 1): > 0 when the prompt hits an object."""
        return self.pred_obj_score_head(tokens_out[:, 0, :])

    def masks_from_tokens(self, tokens_out: torch.Tensor, image_tokens: torch.Tensor,
                          grid: tuple[int, int] | torch.Size, index: torch.Tensor | None = None,
                          high_res: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Low-res logits (B, num_mask_tokens, 4h, 4w); `index` picks prompts (see SAM's decoder)."""
        if high_res is None:
            raise ValueError("SAM 2's decoder needs the high-resolution features (conv_s0 and conv_s1 outputs)")
        h, w = grid
        mask_tokens_out = tokens_out[:, 2 : 2 + self.num_mask_tokens, :]
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        s0, s1 = self._blocked_high_res(high_res, h, w)
        if index is not None:
            hyper_in, image_tokens = hyper_in[index], image_tokens[index]
            s0 = s0 if s0.shape[0] == 1 else s0[index]
            s1 = s1 if s1.shape[0] == 1 else s1[index]
        return self._upscaled_masks_high_res(image_tokens, hyper_in, h, w, s0, s1)

    # --- internals ----------------------------------------------------------------------------------------------

    def _blocked_high_res(self, high_res: list[torch.Tensor], h: int, w: int) -> list[torch.Tensor]:
        """The skip features in the order the upscaling produces pixels: feat_s1 (B, h*w*4, C/4) as (i, j, di,
        dj), feat_s0 (B, h*w*16, C/8) as (i, j, di1, dj1, di2, dj2). Kept for the last shared image at inference."""
        feat_s0, feat_s1 = high_res
        key = None
        if not torch.is_grad_enabled() and feat_s0.shape[0] == 1 and not feat_s0.is_inference():
            key = _Identity(feat_s0, (id(feat_s1), feat_s1._version))
            if self._high_res_layout is not None and self._high_res_layout[0] == key:
                return self._high_res_layout[1]
        b0, b1 = feat_s0.shape[0], feat_s1.shape[0]
        c0, c1 = feat_s0.shape[1], feat_s1.shape[1]
        s1 = feat_s1.view(b1, c1, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1).reshape(b1, h * w * 4, c1)
        s0 = feat_s0.view(b0, c0, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1).reshape(b0, h * w * 16, c0)
        layout = [s0, s1]
        if key is not None:
            self._high_res_layout = (key, layout)
        return layout

    def _upscaled_masks_high_res(self, tokens: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int,
                                 s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        """`act1(ln1(dc1(src) + feat_s1))`, `act2(dc2(.) + feat_s0)`, then the hypernetwork product; as SAM's
        `_upscaled_masks` (stride-2 transposed convolutions as per-pixel matmuls, channels last, a few grid rows
        at a time at inference), with the skip features added in the same pixel order. -> (B, K, 4h, 4w)."""
        conv1, norm, act1, conv2, act2 = self.output_upscaling
        b, n, _ = tokens.shape
        c1, c2 = conv1.out_channels, conv2.out_channels
        w1 = conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, 4 * c1)
        w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
        hyper_t = hyper_in.transpose(1, 2)
        k = hyper_in.shape[1]

        grad = torch.is_grad_enabled()

        def add(x: torch.Tensor, *terms: torch.Tensor) -> torch.Tensor:  # in place unless autograd records
            for t in terms:
                x = x + t if grad else x.add_(t)
            return x

        def logits(start: int, stop: int) -> torch.Tensor:  # grid tokens [start, stop) -> (B, m*16, K)
            m = stop - start
            y = add(torch.matmul(tokens[:, start:stop], w1).view(b, m * 4, c1), conv1.bias, s1[:, 4 * start : 4 * stop])
            y = act1(F.layer_norm(y, (c1,), norm.weight, norm.bias, norm.eps))
            y = add(torch.matmul(y, w2).view(b, m * 16, c2), conv2.bias, s0[:, 16 * start : 16 * stop])
            return torch.matmul(act2(y), hyper_t)

        if grad or b * n <= UPSCALE_CHUNK_TOKENS or not common.cache_blocked(tokens):
            masks = logits(0, n)
        else:  # at inference a few grid rows at a time, so the 16x wider intermediates stay in cache
            step = max(w, UPSCALE_CHUNK_TOKENS // (b * w) * w)
            masks = torch.cat([logits(i, min(n, i + step)) for i in range(0, n, step)], dim=1)
        masks = masks.view(b, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(b, k, 4 * h, 4 * w)

    def _get_stability_scores(self, mask_logits: torch.Tensor) -> torch.Tensor:
        mask_logits = mask_logits.flatten(-2)
        delta = self.dynamic_multimask_stability_delta
        area_i = torch.sum(mask_logits > delta, dim=-1).float()
        area_u = torch.sum(mask_logits > -delta, dim=-1).float()
        return torch.where(area_u > 0, area_i / area_u, 1.0)

    def _dynamic_multimask_via_stability(self, all_mask_logits: torch.Tensor,
                                         all_iou_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The single-mask output where it is stable, else the multimask output with the highest IoU (as SAM 2)."""
        multimask_logits, multimask_iou = all_mask_logits[:, 1:], all_iou_scores[:, 1:]
        best = torch.argmax(multimask_iou, dim=-1)
        rows = torch.arange(multimask_iou.shape[0], device=all_iou_scores.device)
        best_logits = multimask_logits[rows, best].unsqueeze(1)
        best_iou = multimask_iou[rows, best].unsqueeze(1)
        single_logits, single_iou = all_mask_logits[:, 0:1], all_iou_scores[:, 0:1]
        stable = self._get_stability_scores(single_logits) >= self.dynamic_multimask_stability_thresh
        logits = torch.where(stable[..., None, None].expand_as(single_logits), single_logits, best_logits)
        iou = torch.where(stable.expand_as(single_iou), single_iou, best_iou)
        return logits, iou

