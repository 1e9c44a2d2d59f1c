"""SAM 2's prompt encoder: SAM's (same modules, same keys under `sam_prompt_encoder.*`), with box corners also
accepted as points labelled 2 (top-left) and 3 (bottom-right), which is how SAM 2's image predictor sends boxes."""

from __future__ import annotations

import torch

from samflow.models.sam.prompt_encoder import PromptEncoder

# -1 padding, 0 background, 1 foreground, 2 box top-left, 3 box bottom-right.
SAM2_POINT_LABELS = (-1, 0, 1, 2, 3)


class Sam2PromptEncoder(PromptEncoder):
    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # to the pixel centre
        if pad:
            points = torch.cat([points, points.new_zeros((points.shape[0], 1, 2))], dim=1)
            labels = torch.cat([labels, -labels.new_ones((labels.shape[0], 1))], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        embedding = torch.where(labels == -1, self.not_a_point_embed.weight.to(embedding.dtype), embedding)
        for label, table in enumerate(self.point_embeddings):
            embedding = embedding + torch.where(labels == label, table.weight, 0.0)
        return embedding
