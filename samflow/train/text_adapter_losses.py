"""What the text adapter is trained on: its prompt tokens decoded through frozen SAM (`decode`, also the held-out
evaluation's forward), SAM's mask loss on the result and the heat-map loss that tells the click tokens where."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from samflow.models.sam.sam import Sam
from samflow.train.losses import dice_loss, sigmoid_focal_loss


def decode(sam: Sam, features: torch.Tensor, tokens: torch.Tensor, points: torch.Tensor | None = None,
           labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-mask low-res logits (N, 4h, 4w) and predicted IoU (N,) for adapter tokens (N, T, C), optionally
    with one click per prompt (N, 2) in SAM input pixels (positive unless `labels` (N,) say otherwise), placed
    before the text tokens as TextSamPredictor places them; features (N or 1, C, h, w)."""
    pe = sam.prompt_encoder
    sparse = tokens
    if points is not None:
        if labels is None:
            labels = torch.ones(len(points), dtype=torch.int, device=points.device)
        point_tokens = pe._embed_points(points[:, None], labels[:, None], pad=True)
        sparse = torch.cat([point_tokens.to(tokens.dtype), tokens], dim=1)
    h, w = pe.image_embedding_size
    dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(len(tokens), -1, h, w)
    low_res, iou = sam.mask_decoder.predict_masks(features, pe.get_dense_pe(), sparse, dense)
    return low_res[:, 0], iou[:, 0]


def heatmap_loss(heat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each click's heat map (N, M, h*w logits) against the object's area on the same grid: a
    direct signal for *where*, besides the mask loss through the frozen decoder."""
    side = int(round(heat.shape[-1] ** 0.5))
    area = F.adaptive_avg_pool2d(target[:, None], side).flatten(1)
    area = area / area.sum(1, keepdim=True).clamp(min=1e-6)
    return -(area[:, None] * heat.log_softmax(-1)).sum(-1).mean()


def adapter_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SAM's mask loss, focal + dice at 20:1, on single-mask logits (N, 4h, 4w) against soft targets."""
    return (20 * sigmoid_focal_loss(logits, target) + dice_loss(logits, target)).mean()
