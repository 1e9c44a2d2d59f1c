"""COCO RLE: byte equality with pycocotools, round trips, segment_anything's uncompressed form, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samflow.errors import InputError
from samflow.ops import rle

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

mask_utils = pytest.importorskip("pycocotools.mask")
amg = pytest.importorskip("segment_anything.utils.amg")

SIZES = [(1, 1), (1, 9), (9, 1), (7, 13), (480, 641)]


def _blobs(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Masks with a few discs each: realistic runs, plus shapes touching the borders."""
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        for _ in range(3):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.5, max(h, w) / 3 + 1)
            out[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return out


def _cases(h: int, w: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(h * 1000 + w)
    starts_with_one = rng.random((3, h, w)) < 0.5
    starts_with_one[:, 0, 0] = True
    return {
        "random": rng.random((4, h, w)) < 0.5,
        "sparse": rng.random((3, h, w)) < 0.05,
        "blobs": _blobs(rng, 3, h, w),
        "empty": np.zeros((2, h, w), dtype=bool),
        "full": np.ones((2, h, w), dtype=bool),
        "starts_with_one": starts_with_one,
    }


def _reference(masks: np.ndarray) -> list[dict]:
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_encode_matches_pycocotools_bytes(size: tuple[int, int]) -> None:
    for name, masks in _cases(*size).items():
        ours = rle.encode(masks)
        ref = _reference(masks)
        assert [r["counts"] for r in ours] == [r["counts"].decode("ascii") for r in ref], name
        assert all(r["size"] == list(size) for r in ours)
        assert all(isinstance(r["counts"], str) for r in ours)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_round_trip_and_measures_match_pycocotools(size: tuple[int, int]) -> None:
    for name, masks in _cases(*size).items():
        ours = rle.encode(masks)
        ref = _reference(masks)
        decoded = rle.decode(ours)
        assert decoded.dtype == np.bool_ and decoded.shape == masks.shape
        np.testing.assert_array_equal(decoded, masks, err_msg=name)
        # Our decoder reads pycocotools' bytes too.
        np.testing.assert_array_equal(rle.decode(ref), masks, err_msg=name)
        assert rle.area(ours) == [int(a) for a in mask_utils.area(ref)], name
        np.testing.assert_array_equal(rle.bbox(ours), mask_utils.toBbox(ref), err_msg=name)


def test_single_mask_in_single_dict_out() -> None:
    mask = _blobs(np.random.default_rng(0), 1, 31, 17)[0]
    out = rle.encode(mask)
    assert isinstance(out, dict)
    ref = _reference(mask[None])[0]
    assert out["counts"] == ref["counts"].decode()
    assert rle.decode(out).shape == (31, 17)
    assert rle.area(out) == int(mask_utils.area(ref))
    np.testing.assert_array_equal(rle.bbox(out), mask_utils.toBbox(ref))
    assert rle.bbox(out).shape == (4,)


def test_accepts_uint8_torch_and_fortran_inputs() -> None:
    masks = _blobs(np.random.default_rng(1), 3, 40, 30)
    expected = rle.encode(masks)
    assert rle.encode(masks.astype(np.uint8) * 255) == expected
    assert rle.encode(torch.from_numpy(masks)) == expected
    assert rle.encode(np.asfortranarray(masks)) == expected
    assert rle.encode(masks[:, ::-1, :][:, ::-1, :]) == expected  # non-contiguous view


def test_zero_masks_and_zero_pixels() -> None:
    assert rle.encode(np.zeros((0, 5, 6), dtype=bool)) == []
    # pycocotools writes one empty run for a mask without pixels.
    ref = mask_utils.encode(np.zeros((0, 5, 1), dtype=np.uint8, order="F"))[0]
    assert rle.encode(np.zeros((0, 5), dtype=bool)) == {"size": [0, 5], "counts": ref["counts"].decode()}


def test_large_counts_and_long_strings() -> None:
    # Long runs need several 6-bit groups and negative deltas; check against pycocotools.
    masks = np.zeros((2, 2000, 1500), dtype=bool)
    masks[0, 1500:, 1200:] = True
    masks[1, :3, :] = True
    masks[1, 1999, 1499] = True
    ours = rle.encode(masks)
    assert [r["counts"] for r in ours] == [r["counts"].decode() for r in _reference(masks)]
    np.testing.assert_array_equal(rle.decode(ours), masks)


def test_uncompressed_matches_segment_anything() -> None:
    rng = np.random.default_rng(2)
    for h, w in [(1, 1), (7, 13), (48, 64)]:
        masks = torch.from_numpy(rng.random((3, h, w)) < 0.3)
        masks[0] = True
        masks[1, 0, 0] = False
        ref = amg.mask_to_rle_pytorch(masks)
        ours = rle.masks_to_uncompressed_rle(masks)
        assert ours == ref
        assert all(type(c) is int for r in ours for c in r["counts"])
        assert [rle.uncompressed_to_compressed(r) for r in ref] == [amg.coco_encode_rle(r) for r in ref]
        assert [rle.area_from_rle(r) for r in ref] == [amg.area_from_rle(r) for r in ref]
        for r in ref:
            np.testing.assert_array_equal(rle.decode(r), amg.rle_to_mask(r))
        assert rle.to_uncompressed(masks[0].numpy()) == ref[0]
        assert rle.mask_to_uncompressed_rle(masks.numpy()) == ref


def test_compressed_to_uncompressed_round_trip() -> None:
    masks = _blobs(np.random.default_rng(3), 4, 50, 70)
    for comp in rle.encode(masks):
        unc = rle.compressed_to_uncompressed(comp)
        assert isinstance(unc["counts"], list)
        assert rle.uncompressed_to_compressed(unc) == comp


def test_bbox_of_run_wrapping_columns_and_odd_counts() -> None:
    # Uncompressed counts from elsewhere: a run that wraps into the next column, and a trailing zero run.
    wrap = {"size": [4, 3], "counts": [3, 2, 7]}
    assert list(rle.bbox(wrap)) == list(mask_utils.toBbox(mask_utils.frPyObjects(wrap, 4, 3)))
    assert list(rle.bbox({"size": [4, 3], "counts": [12]})) == [0.0, 0.0, 0.0, 0.0]
    assert rle.bbox([]).shape == (0, 4)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros(5, dtype=bool), "shape"),
        (np.zeros((1, 2, 3, 4), dtype=bool), "shape"),
        (np.array([["a"]]), "dtype"),
    ],
)
def test_encode_rejects_bad_masks(bad: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        rle.encode(bad)
    with pytest.raises(ValueError):  # InputError is a ValueError, as the official code raises
        rle.encode(bad)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"size": [2, 2], "counts": "1"}, "cover"),  # 1 pixel of 4
        ({"size": [2, 2], "counts": "4 "}, "between"),  # space is below '0'
        ({"size": [2, 2], "counts": "4\x7f"}, "between"),
        ({"size": [2, 2], "counts": "P"}, "middle"),  # continuation bit set on the last character
        ({"size": [2, 2], "counts": "ä"}, "ASCII"),
        ({"size": [2, 2], "counts": [1, -1, 4]}, "negative"),
        ({"size": [2, 2], "counts": [[1, 3]]}, "flat"),
        ({"size": [2, 2], "counts": ["x"]}, "string or a list"),
        ({"size": [2], "counts": [4]}, "height, width"),
        ({"size": [2, 2]}, "'size' and 'counts'"),
        ("not an rle", "RLE dict"),
    ],
)
def test_decode_rejects_malformed(bad: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        rle.decode(bad)  # type: ignore[arg-type]


def test_decode_list_errors() -> None:
    with pytest.raises(InputError, match="empty"):
        rle.decode([])
    with pytest.raises(InputError, match="one size"):
        rle.decode([{"size": [1, 2], "counts": [2]}, {"size": [2, 1], "counts": [2]}])
    with pytest.raises(InputError, match="N, H, W"):
        rle.masks_to_uncompressed_rle(torch.zeros(3, 3, dtype=torch.bool))
