"""Sam2: SAM 2 for images — the Hiera image encoder with its FPN neck, SAM's prompt encoder, SAM 2's mask decoder,
and the no-memory embedding, with the official state-dict layout (the image part of a released SAM 2 checkpoint).

Images go the way SAM2ImagePredictor sends them: the features of the three finest FPN levels, the two finest
through the decoder's conv_s0 / conv_s1 (the high-resolution skip connections), and `no_mem_embed` added to the
coarsest (the image embedding), as SAM 2 does for a frame without memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from samflow.models.sam2.config import Sam2Config
from samflow.models.sam2.decoder import Sam2MaskDecoder, Sam2TwoWayTransformer
from samflow.models.sam2.hiera import Hiera
from samflow.models.sam2.neck import FpnNeck, ImageEncoder
from samflow.models.sam2.prompt_encoder import Sam2PromptEncoder

FAMILY = "sam2"


@dataclass(frozen=True)
class Sam2Features:
    """What the decoder needs of an image: the embedding (B, C, h, w) (with no_mem_embed) and the two
    high-resolution maps [(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)] (after conv_s0 / conv_s1)."""

    image_embed: torch.Tensor
    high_res_feats: tuple[torch.Tensor, torch.Tensor]

    def __getitem__(self, index: int) -> Sam2Features:
        """The features of one image of a batch, with batch 1."""
        one = slice(index, index + 1) if index != -1 else slice(-1, None)
        return Sam2Features(self.image_embed[one], tuple(f[one] for f in self.high_res_feats))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.image_embed.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.image_embed, *self.high_res_feats))


class Sam2(nn.Module):
    mask_threshold: float = 0.0
    image_format: str = "RGB"
    family: str = FAMILY

    def __init__(self, config: Sam2Config) -> None:
        super().__init__()
        self.config = config
        trunk = Hiera(embed_dim=config.embed_dim, num_heads=config.num_heads, stages=config.stages,
                      global_att_blocks=config.global_att_blocks, window_spec=config.window_spec,
                      window_pos_embed_bkg_spatial_size=config.window_pos_embed_bkg_spatial_size,
                      dim_mul=config.dim_mul, head_mul=config.head_mul, mlp_ratio=config.mlp_ratio)
        neck = FpnNeck(config.d_model, list(config.stage_dims[::-1]), fpn_interp_model=config.fpn_interp_model,
                       fuse_type=config.fuse_type, fpn_top_down_levels=config.fpn_top_down_levels)
        self.image_encoder = ImageEncoder(trunk, neck, scalp=1)
        grid = config.embedding_size
        self.sam_prompt_encoder = Sam2PromptEncoder(
            embed_dim=config.d_model,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        )
        self.sam_mask_decoder = Sam2MaskDecoder(
            transformer_dim=config.d_model,
            transformer=Sam2TwoWayTransformer(config.decoder_depth, config.d_model, config.decoder_num_heads,
                                              config.decoder_mlp_dim),
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
            pred_obj_scores_mlp=config.pred_obj_scores_mlp,
            dynamic_multimask_via_stability=config.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta=config.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=config.dynamic_multimask_stability_thresh,
        )
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, config.d_model))
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.image_encoder.trunk.patch_embed.proj.weight.dtype

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) pixels on the 0..1 scale, already resized to image_size -> normalised (in fp32, then the
        input's dtype), as SAM2Transforms' Normalize."""
        if x.dtype == torch.float32:
            return (x - self.pixel_mean.float()) / self.pixel_std.float()
        return ((x.float() - self.pixel_mean.float()) / self.pixel_std.float()).to(x.dtype)

    def forward_image(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalised (B, 3, S, S) -> the FPN levels kept for SAM (finest first), the two finest through conv_s0
        and conv_s1: as SAM2Base.forward_image's `backbone_fpn`."""
        encoder, decoder = self.image_encoder, self.sam_mask_decoder
        levels = encoder.neck(encoder.trunk(x), heads={0: decoder.conv_s0, 1: decoder.conv_s1})
        return levels[: len(levels) - encoder.scalp]

    def encode_image(self, x: torch.Tensor) -> Sam2Features:
        """Normalised (B, 3, S, S) -> Sam2Features, no_mem_embed added to the embedding (SAM2ImagePredictor)."""
        s0, s1, embed = self.forward_image(x)
        embed = embed + self.no_mem_embed.view(1, -1, 1, 1)
        return Sam2Features(embed, (s0, s1))

    def decode(self, features: Sam2Features, points: tuple[torch.Tensor, torch.Tensor] | None = None,
               boxes: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
               multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompts for one image (features with batch 1) as SAM2ImagePredictor sends them: each box becomes two
        points labelled 2 and 3 placed before the prompt's points, and the point set is padded.

        points ((B, P, 2) in the resized image_size frame, (B, P) labels), boxes (B, 4) XYXY in that frame,
        mask_input (B, 1, 4h, 4w) low-res logits. Returns low-res logits (B, K, 4h, 4w), IoU (B, K) and object
        score logits (B, 1).
        """
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            corner_labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).repeat(corners.shape[0], 1)
            if points is not None:
                points = (torch.cat([corners, points[0]], dim=1), torch.cat([corner_labels, points[1]], dim=1))
            else:
                points = (corners, corner_labels)
        sparse, dense = self.sam_prompt_encoder(points=points, boxes=None, masks=mask_input)
        low_res, iou, _, object_score = self.sam_mask_decoder(
            image_embeddings=features.image_embed,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            high_res_features=list(features.high_res_feats),
        )
        return low_res, iou, object_score

    @staticmethod
    def postprocess_masks(masks: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Low-res logits (B, K, 4h, 4w) -> logits at the original image size (bilinear, as SAM2Transforms)."""
        return F.interpolate(masks.float(), tuple(original_size), mode="bilinear", align_corners=False)
