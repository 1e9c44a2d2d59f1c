"""samflow.ops.thresholded_resize against the official post-processing (two bilinear F.interpolate steps, as
segment_anything's Sam.postprocess_masks): counts, boxes and masks agree except at pixels within float rounding
of a threshold, and agree exactly with each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samflow.errors import InputError
from samflow.models.sam.sam import _resize_weights
from samflow.ops import amg
from samflow.ops.thresholded_resize import ResizePlan, threshold_masks, threshold_stats

# (low-res side, model side, input size, original size): the shipped tiny on a 1024 px image (8x), odd sizes, SAM on
# a photo (the second step shrinks), a large upscale.
CASES = [
    (128, 256, (192, 256), (768, 1024)),
    (64, 256, (256, 171), (600, 401)),
    (256, 1024, (683, 1024), (534, 800)),
    (32, 128, (128, 128), (1000, 1000)),
]
THRESHOLDS = (1.0, -1.0)  # the mask threshold 0 +- the stability offset
NEAR = 1e-4  # pixels this close to a threshold may round either way


def _official(low: torch.Tensor, side: int, input_size: tuple[int, int], original_size: tuple[int, int]):
    up = F.interpolate(low[:, None], (side, side), mode="bilinear", align_corners=False)
    up = up[..., : input_size[0], : input_size[1]]
    return F.interpolate(up, original_size, mode="bilinear", align_corners=False)[:, 0]


def _logits(n: int, side: int, seed: int) -> torch.Tensor:
    """Smooth random logits of blobs of several sizes, plus edge cases: all below, all above, flat at the mask
    threshold, and a large scale."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        cells = 2 + i % 7
        base = torch.randn(1, 1, cells, cells, generator=gen) * 6 + torch.randn(1, generator=gen).item() * 3
        out.append(F.interpolate(base, (side, side), mode="bicubic", align_corners=False)[0, 0])
    out.extend([torch.full((side, side), -20.0), torch.full((side, side), 20.0), torch.zeros(side, side),
                out[0] * 1000])
    return torch.stack(out)


def _plan(case) -> ResizePlan:
    low_side, side, input_size, original_size = case
    rows, _ = _resize_weights(low_side, side, input_size[0], original_size[0])
    cols, _ = _resize_weights(low_side, side, input_size[1], original_size[1])
    return ResizePlan.from_matrices(rows, cols)


@pytest.mark.parametrize("case", CASES)
def test_counts_and_boxes_match_the_official_resize(case) -> None:
    low_side, side, input_size, original_size = case
    low = _logits(24, low_side, seed=low_side)
    full = _official(low, side, input_size, original_size)
    counts, boxes = threshold_stats(_plan(case), low, THRESHOLDS, 0.0)
    assert counts.shape == (len(low), 2) and boxes.shape == (len(low), 4)
    for k, t in enumerate(THRESHOLDS):
        ref = (full > t).flatten(1).sum(1)
        near = ((full - t).abs() < NEAR).flatten(1).sum(1)
        assert torch.all((counts[:, k] - ref).abs() <= near), f"threshold {t}"
    ref_boxes = torch.from_numpy(amg.masks_to_boxes((full > 0).numpy()))
    same = (threshold_masks(_plan(case), low, 0.0) == (full > 0)).flatten(1).all(1)
    assert same.sum() >= len(low) - 2  # pixels that round the other way are rare
    assert torch.equal(boxes[same], ref_boxes[same])
    assert counts[-4].tolist() == [0, 0] and counts[-3].tolist() == [full[0].numel()] * 2  # all below / above
    assert boxes[-4].tolist() == [0, 0, 0, 0] and boxes[-2].tolist() == [0, 0, 0, 0]  # empty: as masks_to_boxes
    assert boxes[-3].tolist() == [0, 0, original_size[1] - 1, original_size[0] - 1]


@pytest.mark.parametrize("case", CASES)
def test_masks_agree_with_their_counts_and_the_official_resize(case) -> None:
    low_side, side, input_size, original_size = case
    low = _logits(12, low_side, seed=low_side + 1)
    plan = _plan(case)
    masks = threshold_masks(plan, low, 0.0)
    counts, boxes = threshold_stats(plan, low, (0.0,), 0.0)
    assert masks.shape == (len(low), *original_size) and masks.dtype == torch.bool
    # Exactly what the counts and boxes said: one pixel formula for both.
    assert torch.equal(masks.flatten(1).sum(1), counts[:, 0])
    assert np.array_equal(amg.masks_to_boxes(masks.numpy()), boxes.numpy())
    full = _official(low, side, input_size, original_size)
    differ = masks != (full > 0)
    assert torch.all(full[differ].abs() < NEAR)


def test_edge_blocks_are_evaluated_pixel_by_pixel() -> None:
    """A mask whose edge runs through every tile (stripes): nothing decided from a tile's patch alone."""
    case = CASES[0]
    low_side, side, input_size, original_size = case
    stripes = torch.arange(low_side, dtype=torch.float32).remainder(4).sub(1.5)[None, :].expand(low_side, -1)
    low = torch.stack([stripes, stripes.t().contiguous()])
    full = _official(low, side, input_size, original_size)
    counts, boxes = threshold_stats(_plan(case), low, (0.0,), 0.0)
    assert torch.equal(counts[:, 0], (full > 0).flatten(1).sum(1))
    assert np.array_equal(boxes.numpy(), amg.masks_to_boxes((full > 0).numpy()))


def test_bad_input_is_refused() -> None:
    plan = _plan(CASES[0])
    with pytest.raises(InputError, match=r"low-res logits must be \(N, >=97, >=128\)"):
        threshold_stats(plan, torch.zeros(2, 64, 64), THRESHOLDS, 0.0)
    with pytest.raises(InputError, match="non-negative"):
        ResizePlan.from_matrices(-torch.eye(4), torch.eye(4))
    with pytest.raises(InputError, match="at least one low-res position"):
        ResizePlan.from_matrices(torch.zeros(3, 4), torch.eye(4))
    with pytest.raises(InputError, match=r"\(out, low\)"):
        ResizePlan.from_matrices(torch.zeros(3), torch.eye(4))
