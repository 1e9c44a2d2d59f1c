"""Sam: image encoder + prompt encoder + mask decoder, with the official pre- and post-processing."""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from samflow.models.sam.config import SamConfig
from samflow.models.sam.hq_decoder import MaskDecoderHQ, encode_with_interm, keep_block_output
from samflow.models.sam.image_encoder import ImageEncoderViT
from samflow.models.sam.mask_decoder import MaskDecoder
from samflow.models.sam.prompt_encoder import PromptEncoder
from samflow.models.sam.tiny_vit import TinyViT
from samflow.models.sam.transformer import TwoWayTransformer


class Sam(nn.Module):
    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        self.config = config
        grid = config.embedding_size
        self.image_encoder = _image_encoder(config)
        self.prompt_encoder = PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        )
        # HQ-SAM: the HQ token and the fusion of the encoder's early features (family sam_hq)
        decoder_class, extra = (MaskDecoderHQ, {"vit_dim": config.interm_dim}) if config.hq else (MaskDecoder, {})
        self.mask_decoder = decoder_class(
            transformer_dim=config.prompt_embed_dim,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                num_heads=config.decoder_num_heads,
                mlp_dim=config.decoder_mlp_dim,
            ),
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
            **extra,
        )
        if config.hq and isinstance(self.image_encoder, ImageEncoderViT):
            # HQ-SAM fuses the output of the first global-attention block: a hook keeps it (see encode_image).
            self._interm_index = min(config.encoder_global_attn_indexes)  # an index: a module would be registered
            self.image_encoder.blocks[self._interm_index].register_forward_hook(keep_block_output)
        # Not persistent: official checkpoints do not hold them.
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.image_encoder.parameters()).dtype

    @property
    def family(self) -> str:
        """"sam", "mobile_sam" or "sam_hq": what its embeddings are (see SamConfig.family)."""
        return self.config.family

    def encode_image(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Preprocessed images (B, 3, S, S) -> the embedding (B, C, h, w) and, for HQ-SAM, the early encoder
        features its decoder fuses (B, h, w, C') channels-last (the reference's `interm_embeddings[0]`); else None."""
        if not self.config.hq:
            return self.image_encoder(x), None
        if isinstance(self.image_encoder, TinyViT):
            return self.image_encoder.forward_with_interm(x)
        return encode_with_interm(self.image_encoder, self.image_encoder.blocks[self._interm_index], x)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (B, 3, h, w) pixels and pad bottom-right to (image_size, image_size).

        In fp32 whatever the dtype of `x` (the result has it): a bfloat16 model's buffers hold the pixel
        statistics to 3 digits only (123.675 -> 123.5), a shift of the whole image's colours.
        """
        size = self.image_encoder.img_size
        h, w = x.shape[-2:]
        if x.is_floating_point() and x.dtype != torch.float32:
            mean = torch.tensor(self.config.pixel_mean, device=x.device).view(-1, 1, 1)
            std = torch.tensor(self.config.pixel_std, device=x.device).view(-1, 1, 1)
            return F.pad((x.float() - mean) / std, (0, size - w, 0, size - h)).to(x.dtype)
        x = (x - self.pixel_mean) / self.pixel_std
        return F.pad(x, (0, size - w, 0, size - h))

    def postprocess_masks(self, masks: torch.Tensor, input_size: tuple[int, ...],
                          original_size: tuple[int, ...]) -> torch.Tensor:
        """Low-res logits (B, K, 4h, 4w) -> logits at the original image size (B, K, H, W).

        The official steps: bilinear to (image_size, image_size), crop to `input_size`, bilinear to
        `original_size`. Bilinear resizing is separable and linear, so on the CPU (without autograd) the three are
        one (H x rows) matrix on the left and one (cols x W) on the right, restricted to the low-res rows and
        columns that reach the image (the padding's never do): two matmuls per mask instead of a 1024 x 1024
        intermediate and torch's layout copies around it. Same weights, summed in another order (~1e-7).
        """
        size = self.image_encoder.img_size
        if masks.device.type == "cpu" and not torch.is_grad_enabled() and masks.ndim == 4:
            return _resize_separable(masks, size, tuple(input_size), tuple(original_size))
        masks = F.interpolate(masks, (size, size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)

    def postprocess_matrices(self, low_size: tuple[int, int], input_size: tuple[int, ...],
                             original_size: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """`postprocess_masks` of (h, w) low-res logits as two matrices: logits = rows @ low[:r, :c] @ cols.T, rows
        (H x r) and cols (W x c) fp32, non-negative, each row a convex combination (bilinear weights)."""
        size = self.image_encoder.img_size
        rows, _ = _resize_weights(int(low_size[0]), size, int(input_size[0]), int(original_size[0]))
        cols, _ = _resize_weights(int(low_size[1]), size, int(input_size[1]), int(original_size[1]))
        return rows, cols

    @torch.no_grad()
    def forward(self, batched_input: list[dict[str, Any]], multimask_output: bool,
                hq_token_only: bool = False) -> list[dict[str, torch.Tensor]]:
        """The official batched interface: one dict per image (`image`, `original_size`, optional prompts);
        `hq_token_only` as HQ-SAM's (HQ-SAM models only)."""
        images = torch.stack([self.preprocess(x["image"]) for x in batched_input], dim=0)
        embeddings, interms = self.encode_image(images)
        outputs = []
        for i, (record, embedding) in enumerate(zip(batched_input, embeddings)):
            points = (record["point_coords"], record["point_labels"]) if "point_coords" in record else None
            sparse, dense = self.prompt_encoder(points=points, boxes=record.get("boxes"),
                                                masks=record.get("mask_inputs"))
            extra = {} if interms is None else {"hq_token_only": hq_token_only, "interm_embeddings": interms[i : i + 1]}
            low_res, iou = self.mask_decoder(embedding.unsqueeze(0), self.prompt_encoder.get_dense_pe(), sparse,
                                             dense, multimask_output, **extra)
            masks = self.postprocess_masks(low_res, record["image"].shape[-2:], record["original_size"])
            outputs.append({"masks": masks > self.mask_threshold, "iou_predictions": iou,
                            "low_res_logits": low_res})
        return outputs


def _image_encoder(config: SamConfig) -> nn.Module:
    """SAM's ViT, or MobileSAM's TinyViT (`encoder="tiny_vit"`), with `config`'s sizes."""
    if config.encoder == "tiny_vit":
        return TinyViT(img_size=config.image_size, num_classes=config.tiny_vit_num_classes,
                       embed_dims=config.tiny_vit_embed_dims, depths=config.tiny_vit_depths,
                       num_heads=config.tiny_vit_num_heads, window_sizes=config.tiny_vit_window_sizes,
                       mlp_ratio=config.encoder_mlp_ratio, out_chans=config.prompt_embed_dim)
    return ImageEncoderViT(
        img_size=config.image_size,
        patch_size=config.patch_size,
        embed_dim=config.encoder_embed_dim,
        depth=config.encoder_depth,
        num_heads=config.encoder_num_heads,
        mlp_ratio=config.encoder_mlp_ratio,
        out_chans=config.prompt_embed_dim,
        window_size=config.window_size,
        global_attn_indexes=tuple(config.encoder_global_attn_indexes),
    )


# Output rows per block of the banded row resize: each block reads only the few low-res rows it depends on.
ROW_BLOCK = 32


@functools.lru_cache(maxsize=16)
def _resize_weights(low: int, size: int, keep: int, out: int) -> tuple[torch.Tensor, int]:
    """The official resize along one axis as a matrix: `low` logits -> bilinear to `size` -> first `keep` -> bilinear
    to `out`; (out, n) fp32 for the first n low-res entries (the others have zero weight), and n."""
    eye = torch.eye(low).unsqueeze(0)  # (1, low, low): one impulse per channel
    with torch.no_grad():
        up = F.interpolate(eye, size=size, mode="linear", align_corners=False)[..., :keep]
        weights = F.interpolate(up, size=out, mode="linear", align_corners=False)[0].t().contiguous()  # (out, low)
    used = int(torch.nonzero(weights.abs().sum(0)).max()) + 1
    return weights[:, :used].contiguous(), used


@functools.lru_cache(maxsize=16)
def _banded_rows(low: int, size: int, keep: int, out: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The row matrix of `_resize_weights` cut into blocks of ROW_BLOCK output rows: weights (G, ROW_BLOCK, span)
    over low-res rows index (G, span) (each block's first nonzero row onwards; rows past the end are clamped and
    get zero weight), and the number of low-res rows used."""
    weights, used = _resize_weights(low, size, keep, out)
    blocks = -(-out // ROW_BLOCK)
    padded = torch.zeros(blocks * ROW_BLOCK, used)
    padded[:out] = weights
    padded = padded.view(blocks, ROW_BLOCK, used)
    nonzero = padded.abs().sum(1) > 0  # (G, used)
    first = [int(torch.nonzero(row).min()) if row.any() else 0 for row in nonzero]
    last = [int(torch.nonzero(row).max()) if row.any() else 0 for row in nonzero]
    span = max(b - a + 1 for a, b in zip(first, last))
    index = torch.tensor(first)[:, None] + torch.arange(span)[None, :]  # (G, span)
    inside = index < used
    gathered = torch.gather(padded, 2, index.clamp(max=used - 1)[:, None, :].expand(-1, ROW_BLOCK, -1))
    return gathered * inside[:, None, :], index.clamp(max=used - 1), used


def _resize_separable(masks: torch.Tensor, size: int, input_size: tuple[int, ...],
                      original_size: tuple[int, ...]) -> torch.Tensor:
    """`postprocess_masks` as masks[:r, :c] @ cols (c x W), then the banded row matrix (H x r) block by block."""
    lh, lw = masks.shape[-2:]
    h = int(original_size[0])
    cols, c = _resize_weights(lw, size, int(input_size[1]), int(original_size[1]))
    row_weights, index, r = _banded_rows(lh, size, int(input_size[0]), h)
    wide = torch.matmul(masks[..., :r, :c], cols.t().to(masks.dtype))  # (B, K, r, W)
    blocks = torch.matmul(row_weights.to(masks.dtype), wide[..., index, :])  # (B, K, G, ROW_BLOCK, W)
    return blocks.flatten(-3, -2)[..., :h, :]
