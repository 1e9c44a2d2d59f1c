"""Measuring exported graphs: a sample embedding and prompts in the official interface, ONNX against torch, and
the mask agreement of two decoders (the int8 one against fp32)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from samflow.export.decoder import DECODER_INPUTS
from samflow.models.sam import Sam
from samflow.ops.metrics import mask_iou
from samflow.ops.transforms import preprocess_shape

# The original image size the checks decode at: landscape, and not the export's example size.
CHECK_IMAGE_SIZE = (600, 800)


def sample_image(size: int, seed: int = 0) -> np.ndarray:
    """A smooth uint8 (size, size, 3) picture with a few flat discs: something for the encoder to see."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.stack([xx * 255 / max(size - 1, 1), yy * 255 / max(size - 1, 1), (xx + yy) % 256], -1)
    for _ in range(5):
        cy, cx = rng.uniform(0, size, 2)
        radius = rng.uniform(size / 12, size / 4)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = rng.integers(0, 256, 3)
    return image.astype(np.uint8)


def sample_input(model: Sam, seed: int = 0) -> torch.Tensor:
    """The sample picture as the encoder's input: (1, 3, S, S), normalised and padded by `Sam.preprocess`."""
    image = torch.from_numpy(sample_image(model.config.image_size, seed)).permute(2, 0, 1).float()
    return model.preprocess(image[None].to(model.pixel_mean))


@torch.no_grad()
def sample_embedding(model: Sam, seed: int = 0) -> torch.Tensor:
    """samflow's torch embedding of the sample picture: (1, C, h, w) float32 on the CPU."""
    return model.image_encoder(sample_input(model, seed)).float().cpu()


def sample_prompts(model: Sam, count: int = 8, orig_size: tuple[int, int] = CHECK_IMAGE_SIZE,
                   seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`count` decoder feeds (all inputs but the embedding) in the official interface, cycling through one click,
    three clicks, a box, a box with a negative click, and a click with a mask input; coordinates lie inside the
    resized image of `orig_size`."""
    rng = np.random.default_rng(seed)
    h, w = preprocess_shape(*orig_size, model.config.image_size)
    low = 4 * model.config.embedding_size
    yy, xx = np.mgrid[0:low, 0:low].astype(np.float32)

    def points(n: int) -> np.ndarray:
        return np.stack([rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)], -1).astype(np.float32)

    def box() -> tuple[np.ndarray, np.ndarray]:
        corners = np.sort(points(2), axis=0)  # top-left then bottom-right
        return corners, np.array([2, 3], np.float32)

    pad = (np.zeros((1, 2), np.float32), np.array([-1], np.float32))
    feeds = []
    for i in range(count):
        kind = i % 5
        mask = np.zeros((1, 1, low, low), np.float32)
        has_mask = np.zeros(1, np.float32)
        if kind == 0:
            parts = [(points(1), np.ones(1, np.float32)), pad]
        elif kind == 1:
            parts = [(points(3), rng.integers(0, 2, 3).astype(np.float32)), pad]
        elif kind == 2:
            parts = [box()]
        elif kind == 3:
            parts = [(points(1), np.zeros(1, np.float32)), box()]
        else:
            parts = [(points(1), np.ones(1, np.float32)), pad]
            cy, cx, r = rng.uniform(low / 4, 3 * low / 4, 3)
            mask[0, 0] = 8.0 * (1.0 - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / max(r, 1.0))
            has_mask[0] = 1.0
        feeds.append({
            "point_coords": np.concatenate([p for p, _ in parts])[None],
            "point_labels": np.concatenate([lab for _, lab in parts])[None],
            "mask_input": mask,
            "has_mask_input": has_mask,
            "orig_im_size": np.array(orig_size, np.float32),
        })
    return feeds


def with_embedding(feed: Mapping[str, np.ndarray], embedding: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
    array = embedding.numpy() if isinstance(embedding, torch.Tensor) else embedding
    return {"image_embeddings": np.ascontiguousarray(array, dtype=np.float32), **feed}


def relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (0 when both are all zeros)."""
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    diff = float(np.abs(actual.astype(np.float64) - expected).max()) if expected.size else 0.0
    return diff / scale if scale else diff


@torch.no_grad()
def decoder_difference(session: Any, module: nn.Module, embedding: torch.Tensor,
                       prompts: Sequence[Mapping[str, np.ndarray]], names: Sequence[str],
                       input_names: Sequence[str] = DECODER_INPUTS) -> dict[str, float]:
    """The largest relative difference of each output (by name) between an ONNX session and the torch module it
    was exported from (taking `input_names`), over `prompts`."""
    worst = dict.fromkeys(names, 0.0)
    for prompt in prompts:
        feed = with_embedding(prompt, embedding)
        want = module(*(torch.from_numpy(feed[name]) for name in input_names))
        feed = {name: feed[name] for name in input_names}
        got = session.run(list(names), feed)
        for name, a, b in zip(names, got, want):
            worst[name] = max(worst[name], relative_difference(a, b.numpy()))
    return worst


@dataclass(frozen=True)
class Agreement:
    """How far a decoder's masks (thresholded at 0) agree with a reference decoder's, over sample prompts."""

    prompts: int
    pixel_agreement: float  # fraction of all mask pixels on the same side of the threshold
    mean_iou: float  # mean over prompts and masks of the two masks' IoU (two empty masks: 1)
    min_iou: float
    max_iou_prediction_difference: float  # largest |difference| of the predicted IoUs

    def describe(self) -> str:
        return (f"{self.pixel_agreement:.2%} of mask pixels agree, mask IoU mean {self.mean_iou:.4f} "
                f"(min {self.min_iou:.4f}), predicted IoU within {self.max_iou_prediction_difference:.4f} "
                f"over {self.prompts} prompts")

    def to_record(self) -> dict[str, float | int]:
        return {"prompts": self.prompts, "pixel_agreement": self.pixel_agreement, "mean_iou": self.mean_iou,
                "min_iou": self.min_iou, "max_iou_prediction_difference": self.max_iou_prediction_difference}


def mask_agreement(reference: Any, other: Any, embedding: torch.Tensor | np.ndarray,
                   prompts: Sequence[Mapping[str, np.ndarray]], masks: str = "masks") -> Agreement:
    """Agreement of `other`'s masks (output `masks`) with `reference`'s: two onnxruntime sessions of one
    interface."""
    inputs = [i.name for i in reference.get_inputs()]
    same = total = 0
    ious: list[float] = []
    iou_diff = 0.0
    for prompt in prompts:
        feed = {k: v for k, v in with_embedding(prompt, embedding).items() if k in inputs}
        ref_masks, ref_iou = reference.run([masks, "iou_predictions"], feed)
        got_masks, iou = other.run([masks, "iou_predictions"], feed)
        a, b = ref_masks > 0, got_masks > 0
        same += int((a == b).sum())
        total += a.size
        ious += [float(v) for v in np.asarray(mask_iou(a, b)).ravel()]
        iou_diff = max(iou_diff, float(np.abs(ref_iou - iou).max()))
    return Agreement(prompts=len(prompts), pixel_agreement=same / max(total, 1),
                     mean_iou=float(np.mean(ious)) if ious else 1.0, min_iou=min(ious, default=1.0),
                     max_iou_prediction_difference=iou_diff)
