"""Shared fixtures of the graph tests: a small SAM checkpoint, test images and a graph text using them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

# A SAM small enough for CPU tests (128 px input, 8 x 8 embedding grid), same modules as the real ones.
SMALL_SAM = {"encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2, "encoder_global_attn_indexes": [1],
             "image_size": 128, "window_size": 4}


def make_checkpoint(directory: Path, seed: int = 0) -> Path:
    """Random SAM weights saved as safetensors, so every process loads the very same model."""
    from samflow.models.sam import build_sam, save_checkpoint

    path = directory / f"small_sam_{seed}.safetensors"
    if not path.is_file():
        torch.manual_seed(seed)
        save_checkpoint(build_sam(SMALL_SAM), path)
    return path


def make_images(directory: Path, count: int, size: tuple[int, int] = (96, 128)) -> list[Path]:
    """`count` PNGs of shapes on noise (distinct content, so distinct cache keys)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        rng = np.random.default_rng(index)
        data = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
        y0, x0 = rng.integers(5, size[0] // 2), rng.integers(5, size[1] // 2)
        data[y0 : y0 + size[0] // 3, x0 : x0 + size[1] // 3] = rng.integers(150, 255, 3)
        path = directory / f"img{index}.png"
        PILImage.fromarray(data).save(path)
        paths.append(path)
    return paths


POINTS_A = [[30.0, 40.0], [60.0, 50.0]]
LABELS_A = [1, 0]
BOXES = [[10.0, 12.0, 70.0, 80.0], [40.0, 20.0, 120.0, 90.0]]
POINTS_B = [[90.0, 30.0], [20.0, 70.0]]


def three_decoders_yaml(checkpoint: Path) -> str:
    """One encoder feeding three decoders: points, boxes, and another points prompt."""
    model = "{" + ", ".join(f"{k}: {v}" for k, v in SMALL_SAM.items()) + "}"
    return f"""\
samflow: 1
inputs:
  image: Image
nodes:
  encoder: {{type: sam.encoder, params: {{model: {model}, checkpoint: '{checkpoint}', device: cpu}},
            inputs: {{image: $inputs.image}}}}
  clicks_a: {{type: prompt.points, params: {{points: {POINTS_A}, labels: {LABELS_A}}}}}
  boxes:    {{type: prompt.boxes, params: {{boxes: {BOXES}}}}}
  clicks_b: {{type: prompt.points, params: {{points: {POINTS_B}}}}}
  by_points: {{type: sam.decoder, inputs: {{embedding: $encoder.embedding, points: $clicks_a.points}}}}
  by_boxes:  {{type: sam.decoder, params: {{multimask: false}},
              inputs: {{embedding: $encoder.embedding, boxes: $boxes.boxes}}}}
  by_points_b: {{type: sam.decoder, inputs: {{embedding: $encoder.embedding, points: $clicks_b.points}}}}
outputs:
  points_masks: $by_points.masks
  boxes_masks: $by_boxes.masks
  points_b_masks: $by_points_b.masks
"""


class EncoderCounter:
    """Counts forward calls of every SAM image encoder while active (a global forward hook)."""

    def __enter__(self) -> EncoderCounter:
        from samflow.models.sam.image_encoder import ImageEncoderViT

        self.calls = 0

        def hook(module: torch.nn.Module, args: object, output: object) -> None:
            if isinstance(module, ImageEncoderViT):
                self.calls += 1

        self._handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()
