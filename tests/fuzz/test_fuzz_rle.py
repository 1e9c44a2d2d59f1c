"""Property tests of samflow.ops.rle against pycocotools: random masks, non-canonical counts (zero-length runs),
huge sizes (measured without decoding), and malformed RLEs (InputError, never another exception).

Deterministic (derandomize=True) and bounded (max_examples), so CI runs the same cases every time in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samflow.errors import InputError
from samflow.ops import rle

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
cmask = pytest.importorskip("pycocotools.mask")

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def masks(draw, max_side: int = 24) -> np.ndarray:
    """(N, H, W) bool masks: noise, blocks, empty and full, sizes from 1 (and 0 pixels) up."""
    n = draw(st.integers(1, 3))
    h, w = draw(st.integers(0, max_side)), draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["noise", "sparse", "block", "empty", "full"]))
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.random((n, h, w)) < 0.5
    if kind == "sparse":
        return rng.random((n, h, w)) < 0.05
    out = np.zeros((n, h, w), dtype=bool)
    if kind == "full":
        out[:] = True
    elif kind == "block" and h:
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        out[:, y0 : rng.integers(y0, h) + 1, x0 : rng.integers(x0, w) + 1] = True
    return out


@st.composite
def run_counts(draw, max_pixels: int = 600) -> tuple[int, int, list[int]]:
    """(h, w, counts): run lengths covering h * w pixels, zero-length runs anywhere (not canonical)."""
    h, w = draw(st.integers(1, 30)), draw(st.integers(1, 20))
    total = h * w
    cuts = sorted(draw(st.lists(st.integers(0, total), max_size=12)))
    counts = np.diff([0, *cuts, total]).tolist()
    if draw(st.booleans()):
        counts = [0, *counts]  # a leading empty run of zeros: the mask starts with a one
    return h, w, [int(c) for c in counts]


def _reference(stack: np.ndarray) -> list[dict]:
    return cmask.encode(np.asfortranarray(stack.transpose(1, 2, 0).astype(np.uint8)))


@FUZZ
@given(masks())
def test_encode_decode_area_bbox_match_pycocotools(stack):
    ours, ref = rle.encode(stack), _reference(stack)
    assert [r["counts"] for r in ours] == [r["counts"].decode("ascii") for r in ref]
    np.testing.assert_array_equal(rle.decode(ours), stack)
    np.testing.assert_array_equal(rle.decode(ours).transpose(1, 2, 0), cmask.decode(ref).astype(bool))
    assert rle.area(ours) == [int(a) for a in cmask.area(ref)]
    np.testing.assert_array_equal(rle.bbox(ours), cmask.toBbox(ref))
    for comp in ours:
        assert rle.uncompressed_to_compressed(rle.compressed_to_uncompressed(comp)) == comp


@FUZZ
@given(masks(max_side=16), st.booleans())
def test_merge_matches_pycocotools(stack, intersect):
    ref = _reference(stack)
    merged = cmask.merge(ref, intersect=int(intersect))
    combined = stack.all(axis=0) if intersect else stack.any(axis=0)
    assert rle.encode(combined)["counts"] == merged["counts"].decode("ascii")
    np.testing.assert_array_equal(rle.decode({"size": merged["size"], "counts": merged["counts"]}), combined)


@FUZZ
@given(run_counts())
def test_non_canonical_counts_match_pycocotools(case):
    h, w, counts = case
    ours = {"size": [h, w], "counts": counts}
    ref = cmask.frPyObjects(ours, h, w)  # pycocotools keeps the counts as given, zero runs included
    comp = rle.uncompressed_to_compressed(ours)
    assert comp["counts"] == ref["counts"].decode("ascii")
    area = rle.area(ours)
    assert area == rle.area(comp) == int(cmask.area([ref])[0])
    mask = rle.decode(comp)
    np.testing.assert_array_equal(mask, cmask.decode([ref])[..., 0].astype(bool))
    canonical = cmask.encode(np.asfortranarray(mask[..., None].astype(np.uint8)))
    # The box of the pixels set: pycocotools' for any mask with a pixel, [0, 0, 0, 0] for an empty one (where
    # pycocotools wraps its 32-bit arithmetic around on zero-length runs).
    np.testing.assert_array_equal(rle.bbox(ours), cmask.toBbox(canonical)[0])
    if area:
        np.testing.assert_array_equal(rle.bbox(comp), cmask.toBbox([ref])[0])
    assert rle.compressed_to_uncompressed(comp)["counts"] == counts


@FUZZ
@given(st.integers(1, 65_535), st.integers(1, 65_535), st.lists(st.integers(0, 2**20), max_size=8))
def test_huge_sizes_are_measured_without_decoding(h, w, inner):
    # Up to 65535 x 65535 (pycocotools' uint32 sizes): area, bbox and the string without a pixel in memory.
    total = h * w
    inner = [min(c, total // (len(inner) + 1)) for c in inner]
    counts = [*inner, total - sum(inner)]
    ours = {"size": [h, w], "counts": counts}
    ref = cmask.frPyObjects(ours, h, w)
    comp = rle.uncompressed_to_compressed(ours)
    assert comp["counts"] == ref["counts"].decode("ascii")
    assert rle.area(comp) == int(cmask.area([ref])[0])
    if rle.area(comp):
        np.testing.assert_array_equal(rle.bbox(comp), cmask.toBbox([ref])[0])
    if total > 64_000_000:
        with pytest.raises(InputError, match="larger than decoded masks may be"):
            rle.decode(comp)


_anything = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12) | st.binary(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12)

_counts = (st.text(alphabet=[chr(c) for c in range(32, 128)] + ["ä", "\x00"], max_size=30)
           | st.binary(max_size=30) | st.lists(st.integers(-(2**66), 2**66), max_size=8)
           | st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6) | _anything)
_sizes = (st.tuples(st.integers(-3, 40), st.integers(-3, 40)).map(list)
          | st.tuples(st.integers(0, 2**40), st.integers(0, 2**40)).map(list) | _anything)


@settings(FUZZ, max_examples=400)
@given(st.one_of(st.fixed_dictionaries({"size": _sizes, "counts": _counts}), _anything))
def test_malformed_rles_are_input_errors(value):
    for call in (rle.area, rle.bbox, rle.compressed_to_uncompressed, rle.uncompressed_to_compressed, rle.decode):
        try:
            call(value)
        except InputError:
            pass


@FUZZ
@given(run_counts(), st.integers(1, 3))
def test_wrapped_int64_sums_do_not_pass_as_valid(case, k):
    h, w, counts = case
    # Runs whose int64 sum wraps around to h * w: refused, not decoded into gigabytes.
    forged = [2**62] * 4 * k + counts
    with pytest.raises(InputError, match="longer than size"):
        rle.decode({"size": [h, w], "counts": forged})
