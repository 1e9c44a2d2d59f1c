"""The prompt encoder: points, box corners and masks -> sparse tokens and a dense embedding."""

from __future__ import annotations

import math

import torch
from torch import nn

from samflow.models.sam.common import LayerNorm2d

# Point labels: -1 padding ("not a point"), 0 negative (background), 1 positive (foreground).
POINT_LABELS = (-1, 0, 1)


class PositionEmbeddingRandom(nn.Module):
    """Positional encoding with random spatial frequencies (Fourier features)."""

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """coords in [0, 1], (..., 2) -> (..., 2 * num_pos_feats)."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix.to(coords.dtype)
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell centre of an (h, w) grid: (C, h, w)."""
        h, w = size
        matrix = self.positional_encoding_gaussian_matrix
        grid = torch.ones((h, w), device=matrix.device, dtype=matrix.dtype)
        y_embed = (grid.cumsum(dim=0) - 0.5) / h
        x_embed = (grid.cumsum(dim=1) - 0.5) / w
        return self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords_input: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Pixel coordinates (..., 2) as (x, y) in an image of (h, w) -> (..., C)."""
        coords = coords_input.clone()
        coords[..., 0] = coords[..., 0] / image_size[1]
        coords[..., 1] = coords[..., 1] / image_size[0]
        return self._pe_encoding(coords.to(torch.float))


class PromptEncoder(nn.Module):
    def __init__(self, embed_dim: int, image_embedding_size: tuple[int, int], input_image_size: tuple[int, int],
                 mask_in_chans: int, activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: negative point, 1: positive point, 2: box top-left, 3: box bottom-right.
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self._dense_pe: tuple[tuple, torch.Tensor] | None = None

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid: (1, C, h, w).

        The same tensor is returned until the frequencies change, so the decoder can keep constants derived from it.
        """
        matrix = self.pe_layer.positional_encoding_gaussian_matrix
        key = (matrix.data_ptr(), -1 if matrix.is_inference() else matrix._version, matrix.dtype, torch.is_inference_mode_enabled())
        if self._dense_pe is None or self._dense_pe[0] != key:
            self._dense_pe = (key, self.pe_layer(self.image_embedding_size).unsqueeze(0))
        return self._dense_pe[1]

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # to the pixel centre
        if pad:
            points = torch.cat([points, points.new_zeros((points.shape[0], 1, 2))], dim=1)
            labels = torch.cat([labels, -labels.new_ones((labels.shape[0], 1))], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        # Select per label without boolean-index writes: padding keeps no positional term.
        labels = labels[..., None]
        embedding = torch.where(labels == -1, self.not_a_point_embed.weight.to(embedding.dtype), embedding)
        embedding = embedding + torch.where(labels == 0, self.point_embeddings[0].weight, 0.0)
        embedding = embedding + torch.where(labels == 1, self.point_embeddings[1].weight, 0.0)
        return embedding

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        coords = (boxes + 0.5).reshape(-1, 2, 2)
        corners = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        corner_embed = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0)
        return corners + corner_embed

    def _embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        return self.mask_downscaling(masks)

    @staticmethod
    def _get_batch_size(points, boxes, masks) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def _get_device(self) -> torch.device:
        return self.point_embeddings[0].weight.device

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
                masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed prompts.

        points: ((B, N, 2) coordinates in the resized image, (B, N) labels); boxes: (B, 4) XYXY; masks:
        (B, 1, 4h, 4w) low-resolution logits. Returns sparse (B, T, C) tokens and dense (B, C, h, w) embeddings;
        without a mask the dense embedding is a broadcast view of `no_mask_embed` (never written to).
        """
        bs = self._get_batch_size(points, boxes, masks)
        dtype = self.point_embeddings[0].weight.dtype
        sparse = [torch.empty((bs, 0, self.embed_dim), device=self._get_device(), dtype=dtype)]
        if points is not None:
            coords, labels = points
            sparse.append(self._embed_points(coords, labels, pad=boxes is None).to(dtype))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes).to(dtype))
        sparse_embeddings = torch.cat(sparse, dim=1)
        if masks is not None:
            dense = self._embed_masks(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse_embeddings, dense
