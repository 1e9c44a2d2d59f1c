"""samflow.ops.metrics.mask_iou: one definition of mask IoU for numpy and torch (empty against empty is 1)."""

import numpy as np
import pytest
import torch

from samflow.errors import InputError
from samflow.ops.metrics import mask_iou


def _square(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


EMPTY = np.zeros((8, 8), dtype=bool)
FULL = np.ones((8, 8), dtype=bool)
LEFT = _square(8, 8, 0, 8, 0, 4)  # 32 pixels
MIDDLE = _square(8, 8, 0, 8, 2, 6)  # 32 pixels, 16 shared with LEFT: IoU 16 / 48


@pytest.mark.parametrize("backend", [np.asarray, torch.from_numpy])
def test_two_empty_masks_agree_perfectly(backend):
    assert float(mask_iou(backend(EMPTY), backend(EMPTY.copy()))) == 1.0


@pytest.mark.parametrize("backend", [np.asarray, torch.from_numpy])
def test_empty_against_non_empty_is_zero(backend):
    assert float(mask_iou(backend(EMPTY), backend(LEFT))) == 0.0
    assert float(mask_iou(backend(FULL), backend(EMPTY))) == 0.0


@pytest.mark.parametrize("backend", [np.asarray, torch.from_numpy])
def test_known_partial_overlap(backend):
    assert float(mask_iou(backend(LEFT), backend(MIDDLE))) == pytest.approx(16 / 48)
    assert float(mask_iou(backend(LEFT), backend(LEFT))) == 1.0
    assert float(mask_iou(backend(LEFT), backend(~LEFT))) == 0.0


def test_batched_shapes_broadcast():
    stack = np.stack([EMPTY, LEFT, MIDDLE])  # (3, H, W)
    assert mask_iou(stack, LEFT).shape == (3,)  # N masks against one
    assert mask_iou(stack, stack).shape == (3,)
    pairs = mask_iou(stack[:, None], stack[None])  # (3, 3): every pair
    assert pairs.shape == (3, 3)
    assert np.allclose(np.diag(pairs), 1.0)  # empty/empty included
    assert pairs[1, 2] == pytest.approx(16 / 48) and pairs[0, 1] == 0.0
    multi = torch.from_numpy(np.stack([stack, stack[::-1]]))  # (2, 3, H, W) against (2, 1, H, W)
    assert mask_iou(multi, torch.from_numpy(np.stack([LEFT, MIDDLE]))[:, None]).shape == (2, 3)
    assert mask_iou(LEFT, MIDDLE).shape == ()


def test_numpy_and_torch_agree():
    rng = np.random.default_rng(0)
    a = rng.random((4, 3, 16, 16)) < 0.3
    b = rng.random((4, 1, 16, 16)) < 0.3
    a[0, 0] = b[0, 0] = False  # one empty/empty pair
    ours = mask_iou(a, b)
    theirs = mask_iou(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float64
    assert isinstance(theirs, torch.Tensor) and theirs.dtype == torch.float32
    assert np.allclose(ours, theirs.numpy(), atol=1e-6)
    assert ours[0, 0] == 1.0
    mixed = mask_iou(torch.from_numpy(a), b)  # a numpy argument joins the tensor's side
    assert isinstance(mixed, torch.Tensor) and np.allclose(ours, mixed.numpy(), atol=1e-6)


def test_nonzero_counts_as_inside():
    assert float(mask_iou(LEFT.astype(np.uint8) * 255, LEFT)) == 1.0
    assert float(mask_iou(torch.from_numpy(LEFT).float(), torch.from_numpy(MIDDLE))) == pytest.approx(16 / 48)


@pytest.mark.parametrize("a, b", [(np.zeros(8, bool), np.zeros(8, bool)),
                                  (np.zeros((8, 8), bool), np.zeros((8, 9), bool)),
                                  (np.zeros((2, 8, 8), bool), np.zeros((3, 8, 8), bool))])
def test_shapes_that_do_not_pair_are_input_errors(a, b):
    with pytest.raises(InputError, match="mask_iou"):
        mask_iou(a, b)
