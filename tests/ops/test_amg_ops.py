"""samflow.ops.amg against segment_anything.utils.amg (and OpenCV, which the official small-region removal uses)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from segment_anything.utils import amg as official

from samflow.errors import InputError
from samflow.ops import amg


@pytest.mark.parametrize("n, layers, scale", [(1, 0, 1), (7, 0, 1), (32, 2, 2), (16, 3, 1)])
def test_point_grids_match_official(n: int, layers: int, scale: int) -> None:
    ours = amg.build_all_layer_point_grids(n, layers, scale)
    ref = official.build_all_layer_point_grids(n, layers, scale)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("size", [(534, 800), (1200, 1800), (256, 256), (97, 31)])
@pytest.mark.parametrize("layers", [0, 1, 2])
def test_crop_boxes_match_official(size: tuple[int, int], layers: int) -> None:
    assert amg.generate_crop_boxes(size, layers, 512 / 1500) == official.generate_crop_boxes(size, layers, 512 / 1500)


def test_stability_score_matches_official() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 3, 40, 57, generator=gen) * 4
    logits[0, 0] = -10  # empty at both cutoffs: 0 / 0
    ours = amg.stability_score(logits, 0.0, 1.0)
    ref = official.calculate_stability_score(logits, 0.0, 1.0)
    assert ours.dtype == ref.dtype
    assert torch.equal(ours.nan_to_num(-1), ref.nan_to_num(-1))
    assert torch.isnan(ours[0, 0])


def test_masks_to_boxes_matches_official() -> None:
    gen = torch.Generator().manual_seed(1)
    masks = torch.rand(4, 5, 33, 47, generator=gen) > 0.995
    masks[0, 0] = False  # empty
    masks[0, 1] = True  # full
    masks[1, 2] = False
    masks[1, 2, 32, 46] = True  # a single corner pixel
    ours, ref = amg.masks_to_boxes(masks), official.batched_mask_to_box(masks)
    assert ours.dtype == ref.dtype and torch.equal(ours, ref)
    assert torch.equal(amg.masks_to_boxes(masks[2, 3]), official.batched_mask_to_box(masks[2, 3]))
    assert amg.masks_to_boxes(torch.zeros(0, 8, 8, dtype=torch.bool)).shape == (0, 4)


def test_boxes_near_crop_edge_matches_official() -> None:
    gen = torch.Generator().manual_seed(2)
    boxes = torch.randint(0, 300, (200, 4), generator=gen)
    boxes[:, 2:] = boxes[:, :2] + torch.randint(0, 300, (200, 2), generator=gen)
    for crop in ([0, 0, 600, 400], [100, 50, 400, 300], [0, 120, 350, 400]):
        ours = amg.boxes_near_crop_edge(boxes, crop, [0, 0, 600, 400])
        assert torch.equal(ours, official.is_box_near_crop_edge(boxes, crop, [0, 0, 600, 400]))


def _random_masks(seed: int, count: int) -> list[np.ndarray]:
    """Speckle and smooth blobs of many sizes: many small holes and islands, ties between sizes."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        if i % 2:
            noise = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), float(rng.uniform(0.5, 3)))
            out.append(noise > np.median(noise))
        else:
            out.append(rng.random((h, w)) < rng.uniform(0.1, 0.9))
    return out


@pytest.mark.parametrize("mode", ["holes", "islands"])
def test_remove_small_regions_matches_opencv(mode: str) -> None:
    rng = np.random.default_rng(3)
    changed = 0
    for mask in _random_masks(seed=4, count=300):
        area = int(rng.integers(1, 50))
        ours, ours_changed = amg.remove_small_regions(mask, area, mode)
        ref, ref_changed = official.remove_small_regions(mask, area, mode)
        assert ours_changed == ref_changed
        assert np.array_equal(ours, ref)
        changed += ours_changed
    assert changed > 100  # the cases are not trivial


def test_remove_small_regions_keeps_largest_island_when_all_are_small() -> None:
    mask = np.zeros((10, 12), dtype=bool)
    mask[1:3, 1:3] = True  # 4 pixels
    mask[6:9, 6:9] = True  # 9 pixels
    mask[0, 11] = True
    out, changed = amg.remove_small_regions(mask, 100, "islands")
    assert changed and out.sum() == 9 and out[6:9, 6:9].all()


def test_connected_components_use_eight_neighbours() -> None:
    mask = np.array([[1, 0, 0, 1],
                     [0, 1, 0, 1],
                     [0, 0, 0, 0],
                     [1, 1, 0, 1]], dtype=bool)
    component, sizes, _ = amg.connected_components(mask)
    # Raster order of first pixels: the diagonal pair, the right column, the bottom-left run, the lone pixel.
    assert sizes.tolist() == [2, 2, 2, 1]
    assert component.tolist() == [0, 1, 0, 1, 2, 3]
    empty_component, empty_sizes, _ = amg.connected_components(np.zeros((3, 3), dtype=bool))
    assert empty_component.size == 0 and empty_sizes.size == 0


def test_no_opencv_needed() -> None:
    assert "cv2" not in inspect.getsource(amg)


def test_bad_arguments() -> None:
    with pytest.raises(InputError):
        amg.build_point_grid(0)
    with pytest.raises(InputError):
        amg.remove_small_regions(np.ones((3, 3), bool), 4, "blobs")
