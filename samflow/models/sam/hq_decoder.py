"""HQ-SAM's mask decoder: SAM's decoder with one more output token (the HQ token) whose mask is made from a fusion
of the encoder's early features with its late ones (the image embedding), and the encoder side that hands the early
features over.

Parameter names and shapes are those of `segment_anything_hq.modeling.MaskDecoderHQ` (the released
`sam_hq_vit_*.pth` keys under `mask_decoder.`): `hf_token`, `hf_mlp`, `compress_vit_feat`, `embedding_encoder`,
`embedding_maskfeature`. The outputs are the reference's: one mask per prompt whatever `multimask_output` says,
the SAM mask (with `multimask_output`, the one of the three ambiguity-aware masks with the best predicted IoU, and
that IoU) plus the HQ token's mask, or the HQ token's mask alone with `hq_token_only`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch
from torch import nn

from samflow.models.sam.common import MLP, LayerNorm2d
from samflow.models.sam.mask_decoder import MaskDecoder
from samflow.models.sam.transformer import TwoWayTransformer

# Prompts whose full-size (4h x 4w) features are held at once at inference: each holds ~32 MiB at a 64x64 grid.
HQ_MASK_CHUNK = 4


class MaskDecoderHQ(MaskDecoder):
    """SAM's mask decoder plus the HQ token; `vit_dim`: channels of the early encoder features."""

    factored_image_tokens = False  # its mask step reads the image tokens themselves

    is_hq = True

    def __init__(self, *, transformer_dim: int, transformer: TwoWayTransformer, num_multimask_outputs: int = 3,
                 activation: type[nn.Module] = nn.GELU, iou_head_depth: int = 3, iou_head_hidden_dim: int = 256,
                 vit_dim: int = 1024) -> None:
        super().__init__(transformer_dim=transformer_dim, transformer=transformer,
                         num_multimask_outputs=num_multimask_outputs, activation=activation,
                         iou_head_depth=iou_head_depth, iou_head_hidden_dim=iou_head_hidden_dim)
        # `num_mask_tokens` stays SAM's (4); the HQ token comes after them.
        self.vit_dim = vit_dim
        self.hf_token = nn.Embedding(1, transformer_dim)
        self.hf_mlp = MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
        self.compress_vit_feat = nn.Sequential(
            nn.ConvTranspose2d(vit_dim, transformer_dim, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 8, kernel_size=2, stride=2),
        )
        self.embedding_encoder = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
        )
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(transformer_dim // 8, transformer_dim // 4, 3, 1, 1),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.Conv2d(transformer_dim // 4, transformer_dim // 8, 3, 1, 1),
        )

    def output_token_weights(self) -> torch.Tensor:
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight], dim=0)

    def outputs_per_prompt(self, multimask_output: bool) -> int:
        return 1

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
                multimask_output: bool, hq_token_only: bool = False,
                interm_embeddings: torch.Tensor | Sequence[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks (B, 1, 4h, 4w) and IoU predictions (B, 1) for B prompts, as the reference.

        interm_embeddings: the encoder's early features (1, h, w, vit_dim) channels-last, or the reference's
        sequence whose first item is that (`Sam.encode_image` gives them).
        """
        hq_features = self.hq_features(image_embeddings, interm_embeddings)
        tokens_out, image_tokens = self.attend(image_embeddings, image_pe, sparse_prompt_embeddings,
                                               dense_prompt_embeddings)
        iou, choice = self.select(self.predict_iou(tokens_out), multimask_output)
        masks = self.hq_masks(tokens_out, image_tokens, image_embeddings.shape[-2:], hq_features, choice,
                              hq_token_only)
        return masks, iou

    def predict_masks(self, *args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError("HQ-SAM's decoder needs the encoder's early features: call it as "
                                  "mask_decoder(..., interm_embeddings=...), not predict_masks")

    # The steps of forward, separately callable (the automatic mask generator upscales only prompts that pass its
    # IoU threshold): hq_features once per image, attend and select per prompt batch, hq_masks for those kept.

    def hq_features(self, image_embeddings: torch.Tensor,
                    interm_embeddings: torch.Tensor | Sequence[torch.Tensor] | None) -> torch.Tensor:
        """The fused early/late features (1, C/8, 4h, 4w) the HQ token's mask is made from."""
        interm = first_interm(interm_embeddings)
        if interm.shape[-1] != self.vit_dim or interm.shape[1:3] != image_embeddings.shape[-2:]:
            raise ValueError(f"interm_embeddings has shape {tuple(interm.shape)}; this HQ decoder expects "
                             f"(1, {image_embeddings.shape[-2]}, {image_embeddings.shape[-1]}, {self.vit_dim})")
        dtype = self.compress_vit_feat[0].weight.dtype
        vit_features = interm.permute(0, 3, 1, 2).to(dtype)
        return self.embedding_encoder(image_embeddings) + self.compress_vit_feat(vit_features)

    def select(self, iou_pred: torch.Tensor, multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """IoU predictions (B, 1) and the SAM mask token chosen per prompt (B,): with `multimask_output` the best
        of the three ambiguity-aware ones, else the single-mask token 0."""
        if multimask_output:
            best, index = torch.max(iou_pred[:, 1 : self.num_mask_tokens], dim=1)
            return best[:, None], index + 1
        return iou_pred[:, :1], torch.zeros(iou_pred.shape[0], dtype=torch.long, device=iou_pred.device)

    def hq_masks(self, tokens_out: torch.Tensor, image_tokens: torch.Tensor, grid: tuple[int, int] | torch.Size,
                 hq_features: torch.Tensor, choice: torch.Tensor, hq_token_only: bool,
                 index: torch.Tensor | None = None) -> torch.Tensor:
        """Low-res logits (B, 1, 4h, 4w): the HQ token's mask on the fused features, plus (unless
        `hq_token_only`) the chosen SAM token's mask on the upscaled image tokens. `index` picks prompts."""
        hyper_sam = torch.stack([mlp(tokens_out[:, i + 1]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
                                dim=1)  # (B, 4, C/8): every token's weights, so a row does not depend on the others
        hyper_hq = self.hf_mlp(tokens_out[:, 1 + self.num_mask_tokens])  # (B, C/8)
        hyper_sam = hyper_sam[torch.arange(hyper_sam.shape[0], device=choice.device), choice]
        if index is not None:
            hyper_sam, hyper_hq, image_tokens = hyper_sam[index], hyper_hq[index], image_tokens[index]
        step = HQ_MASK_CHUNK if not torch.is_grad_enabled() else max(1, image_tokens.shape[0])
        parts = [self._masks(image_tokens[i : i + step], grid, hq_features, hyper_sam[i : i + step],
                             hyper_hq[i : i + step], hq_token_only) for i in range(0, image_tokens.shape[0], step)]
        if not parts:
            h, w = grid
            return image_tokens.new_zeros(0, 1, 4 * h, 4 * w)
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def _masks(self, image_tokens: torch.Tensor, grid: tuple[int, int] | torch.Size, hq_features: torch.Tensor,
               hyper_sam: torch.Tensor, hyper_hq: torch.Tensor, hq_token_only: bool) -> torch.Tensor:
        h, w = grid
        b, _, c = image_tokens.shape
        upscaled_sam = self.output_upscaling(image_tokens.transpose(1, 2).reshape(b, c, h, w))
        upscaled_hq = self.embedding_maskfeature(upscaled_sam) + hq_features
        b, c8, hh, ww = upscaled_sam.shape
        masks = torch.matmul(hyper_hq[:, None], upscaled_hq.reshape(b, c8, hh * ww))
        if not hq_token_only:
            masks = masks + torch.matmul(hyper_sam[:, None], upscaled_sam.reshape(b, c8, hh * ww))
        return masks.view(b, 1, hh, ww)


def first_interm(interm_embeddings: torch.Tensor | Sequence[torch.Tensor] | None) -> torch.Tensor:
    """(1, h, w, C) early features from what a caller passes: that tensor, or the reference's list / (1, 1, h, w, C)
    stack whose first item it is."""
    if interm_embeddings is None:
        raise ValueError("HQ-SAM's decoder needs the encoder's early features (interm_embeddings), which plain SAM "
                         "and MobileSAM embeddings do not have: encode the image with the HQ-SAM model")
    interm = interm_embeddings
    if isinstance(interm, (list, tuple)) or (isinstance(interm, torch.Tensor) and interm.ndim == 5):
        interm = interm[0]
    if interm.ndim != 4:
        raise ValueError(f"interm_embeddings must be (1, h, w, C); got shape {tuple(interm.shape)}")
    return interm


# ----------------------------------------------------------------- the encoder side: early ViT features

_capture = threading.local()


def keep_block_output(module: nn.Module, args: object, output: torch.Tensor) -> None:
    """Forward hook on the ViT block whose output HQ-SAM fuses: keeps it for `encode_with_interm` of this thread
    (a model may encode images in several threads at once)."""
    slots = getattr(_capture, "slots", None)
    if slots is not None and id(module) in slots:
        slots[id(module)] = output


def encode_with_interm(encoder: nn.Module, block: nn.Module, x: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `encoder` on `x`; return its embedding and the output (B, h, w, C) of `block`, which carries the
    `keep_block_output` hook."""
    slots: dict[int, torch.Tensor | None] = {id(block): None}
    previous = getattr(_capture, "slots", None)
    _capture.slots = slots
    try:
        features = encoder(x)
    finally:
        _capture.slots = previous
    interm = slots[id(block)]
    if interm is None:
        raise RuntimeError("the HQ-SAM encoder hook did not run: the early features are missing")
    return features, interm
