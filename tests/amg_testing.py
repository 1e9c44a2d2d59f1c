"""A stand-in SAM whose masks depend on the prompt and the image, for the automatic-mask-generation tests.

Random SAM weights give near-identical textures for every point, with stability scores near 0, so a comparison
with the official generator would prove little; a SAM trained well enough to give object masks takes far longer
than a test may. `ColourSam` keeps SAM's interfaces (image encoder, prompt encoder, mask decoder with and without
the samflow split, `preprocess`, `postprocess_masks`) but its decoder is a formula: the mask of a click is the
region of similar colour around it, at three colour tolerances (nested, like SAM's ambiguity-aware masks), with
smooth logits (stability scores vary) and a predicted IoU that is low on colour edges. Both generators run it
through the same calls, so it exercises every step after the decoder: IoU and stability filters, crop-edge
filter, NMS within and between crops, small-region clean-up, output formats.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samflow.data.synthetic import render_scene
from samflow.models.sam.sam import Sam

TOLERANCES = (0.35, 0.7, 1.2)  # colour distance (normalised pixels) at which each mask's logit crosses 0
SHARPNESS = 12.0  # logits per unit of colour distance: sets how stable masks are
REACH = 0.5  # logit lost per pixel of the low-res grid away from the click, beyond RADIUS
RADIUS = 14.0


class _Encoder(nn.Module):
    """Normalised pixels average-pooled 4 x 4: the 'embedding' is the image at low-res mask resolution."""

    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # gives the model a device and dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 4)


class _Prompts(nn.Module):
    """Passes point coordinates through (sparse: (B, N, 3) x, y, label); no dense embedding."""

    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.input_image_size = (img_size, img_size)
        self.image_embedding_size = (img_size // 4, img_size // 4)
        self.embed_dim = 3

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
                masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        coords, labels = points
        sparse = torch.cat([coords.to(torch.float64), labels[..., None].to(torch.float64)], dim=-1)
        return sparse, torch.zeros(1)

    def get_dense_pe(self) -> torch.Tensor:
        return torch.zeros(1)


class _Decoder(nn.Module):
    """Colour-similarity masks around the first point (official forward, plus samflow's split)."""

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor, multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
        masks, iou = self._predict(image_embeddings, sparse_prompt_embeddings)
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou[:, keep]

    def attend(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
               dense_prompt_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        masks, iou = self._predict(image_embeddings, sparse_prompt_embeddings)
        return iou, masks  # "tokens" carry the IoUs, "image tokens" the masks

    def predict_iou(self, tokens_out: torch.Tensor) -> torch.Tensor:
        return tokens_out

    def masks_from_tokens(self, tokens_out: torch.Tensor, image_tokens: torch.Tensor, grid: object,
                          index: torch.Tensor | None = None) -> torch.Tensor:
        return image_tokens if index is None else image_tokens[index]

    @staticmethod
    def _predict(features: torch.Tensor, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = features[0]  # (3, g, g)
        g = f.shape[-1]
        xy = (sparse[:, 0, :2] / 4).floor().long().clamp(0, g - 1)  # click in the low-res grid
        colour = f[:, xy[:, 1], xy[:, 0]].T  # (B, 3)
        dist = (f[None] - colour[:, :, None, None]).norm(dim=1)  # (B, g, g)
        yy, xx = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
        far = ((xx[None] - xy[:, 0, None, None]) ** 2 + (yy[None] - xy[:, 1, None, None]) ** 2).float().sqrt()
        penalty = REACH * (far - RADIUS).clamp(min=0)
        tol = torch.tensor(TOLERANCES)[None, :, None, None]
        logits = SHARPNESS * (tol - dist[:, None]) - penalty[:, None]  # (B, 3, g, g)
        # Predicted IoU: high where the click's neighbourhood is uniform, lower for looser masks.
        local = F.avg_pool2d(dist[:, None], 5, stride=1, padding=2)[:, 0]
        edge = local[torch.arange(len(xy)), xy[:, 1], xy[:, 0]]
        iou = (1.0 - edge[:, None] * 1.5 - torch.tensor([0.0, 0.02, 0.06])[None]).clamp(0, 1)
        masks = torch.cat([logits[:, :1], logits], dim=1).float()  # slot 0: the single-mask output
        return masks, torch.cat([iou[:, :1], iou], dim=1).float()


class ColourSam(nn.Module):
    """SAM's interfaces around the colour formula above; `img_size` is the long side images are resized to."""

    mask_threshold = 0.0
    image_format = "RGB"

    def __init__(self, img_size: int = 256) -> None:
        super().__init__()
        self.image_encoder = _Encoder(img_size)
        self.prompt_encoder = _Prompts(img_size)
        self.mask_decoder = _Decoder()
        self.register_buffer("pixel_mean", torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    family = "sam"

    def encode_image(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.image_encoder(x), None  # as Sam.encode_image for a non-HQ model

    preprocess = Sam.preprocess
    postprocess_masks = Sam.postprocess_masks
    postprocess_matrices = Sam.postprocess_matrices


def scene_image(seed: int, size: int | tuple[int, int] = 256) -> np.ndarray:
    """A synthetic scene of coloured shapes (some with parts, some occluded)."""
    return render_scene(10_000 + seed, size=size).image
