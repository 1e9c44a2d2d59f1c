"""COCO run-length encoding (RLE) of binary masks, byte-identical to pycocotools and vectorised over masks.

Two forms travel:
- compressed: ``{"size": [h, w], "counts": str}``, the form of COCO and SA-1B JSON files;
- uncompressed: ``{"size": [h, w], "counts": [int, ...]}``, the form of ``segment_anything``'s
  ``mask_to_rle_pytorch`` (and of COCO ``iscrowd`` annotations).

Runs are taken in column-major (Fortran) order and start with a run of zeros (of length 0 when the first pixel is
set). The compressed string stores each count, as a delta against the count two places back from the fourth count
on, in little-endian groups of 5 bits: one character per group, ``48 + bits``, with 0x20 set while more follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from samflow.errors import InputError
from samflow.ops.image import image_limits

__all__ = [
    "area",
    "area_from_rle",
    "bbox",
    "compressed_to_uncompressed",
    "decode",
    "encode",
    "mask_to_uncompressed_rle",
    "masks_to_uncompressed_rle",
    "to_uncompressed",
    "uncompressed_to_compressed",
]

Rle = dict[str, Any]

# Enough 5-bit groups for any count delta of a 32-bit run length (pycocotools stores counts as uint32).
_MAX_GROUPS = 8


# --------------------------------------------------------------------------------------------------- runs


def _as_mask_stack(masks: Any) -> tuple[np.ndarray, bool]:
    """Return masks as a bool (N, H, W) numpy array and whether the input was a single (H, W) mask."""
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    arr = np.asarray(masks)
    if arr.ndim not in (2, 3):
        raise InputError(f"masks must have shape (H, W) or (N, H, W), got shape {tuple(arr.shape)}")
    if arr.dtype != np.bool_:
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise InputError(f"masks must be bool or numeric, got dtype {arr.dtype}")
        arr = arr != 0
    single = arr.ndim == 2
    return (arr[None] if single else arr), single


def _run_counts(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths of all masks at once.

    Returns ``(counts, offsets)``: the counts of mask i are ``counts[offsets[i]:offsets[i + 1]]``.
    """
    n, h, w = masks.shape
    hw = h * w
    if hw == 0:
        # pycocotools writes a single empty run for a mask without pixels.
        return np.zeros(n, np.int64), np.arange(n + 1, dtype=np.int64)
    # A run starts where a pixel differs from its predecessor in column-major order. Within a column the
    # predecessor is the pixel above; comparing rows keeps the big pass over contiguous memory (no transpose).
    # flatnonzero is an order of magnitude faster than a 3-d nonzero; the indices are unravelled by hand.
    idx = np.flatnonzero(masks[:, 1:, :] != masks[:, :-1, :])
    k, rem = np.divmod(idx, max((h - 1) * w, 1))  # idx is empty when h == 1
    y, x = np.divmod(rem, w)
    y += 1
    # The first pixel of a column follows the last pixel of the previous column (a zero before column 0).
    prev = np.zeros((n, w), dtype=bool)
    prev[:, 1:] = masks[:, -1, :-1]
    k0, x0 = np.nonzero(masks[:, 0, :] != prev)
    # Run starts are few (mask boundaries), so sorting them into column-major order is cheap.
    keys = np.concatenate([k * hw + x * h + y, k0 * hw + x0 * h]).astype(np.int64, copy=False)
    keys.sort()
    which = keys // hw
    starts = keys - which * hw
    per_mask = np.bincount(which, minlength=n)
    first = np.concatenate([[0], np.cumsum(per_mask)[:-1]])
    # Each mask's runs span [0, s1), [s1, s2), ..., [sk, hw): a leading 0 and a trailing hw per mask.
    ends = np.insert(starts, first + per_mask, hw)
    begins = np.insert(starts, first, 0)
    counts = ends - begins
    offsets = np.concatenate([[0], np.cumsum(per_mask + 1)])
    return counts, offsets


def _check_size(rle: Any) -> tuple[int, int]:
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise InputError(f"an RLE must be a dict with 'size' and 'counts', got {type(rle).__name__}")
    size = rle["size"]
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"RLE 'size' must be [height, width], got {size!r}") from None
    if h < 0 or w < 0:
        raise InputError(f"RLE 'size' must not be negative, got {size!r}")
    if h * w >= 2**63:
        raise InputError(f"RLE 'size' {h}x{w} has more pixels than int64 counts can hold")
    return h, w


# ------------------------------------------------------------------------------------ string compression


def _compress_counts(counts: np.ndarray, offsets: np.ndarray) -> list[str]:
    """COCO strings of many count lists at once; only the final slicing loops per mask."""
    x = counts.astype(np.int64, copy=True)
    if x.size:
        local = np.arange(x.size) - np.repeat(offsets[:-1], np.diff(offsets))
        later = local > 2
        # Deltas against the count two back keep the numbers (and the string) short.
        x[2:][later[2:]] -= counts[:-2][later[2:]]
    shifts = 5 * np.arange(_MAX_GROUPS, dtype=np.int64)
    groups = (x[:, None] >> shifts) & 0x1F
    rest = x[:, None] >> (shifts + 5)
    # A value continues while what is left is not just the sign extension of the group just written.
    more = np.where(groups & 0x10, rest != -1, rest != 0)
    emitted = np.ones_like(more)
    emitted[:, 1:] = np.cumprod(more[:, :-1], axis=1).astype(bool)
    chars = (groups | np.where(more, 0x20, 0)) + 48
    text = chars[emitted].astype(np.uint8).tobytes().decode("ascii")
    per_value = emitted.sum(axis=1)
    char_offsets = np.concatenate([[0], np.cumsum(per_value)])[offsets].tolist()
    return [text[a:b] for a, b in zip(char_offsets[:-1], char_offsets[1:], strict=True)]


def _decompress(counts: str | bytes | bytearray) -> np.ndarray:
    """Counts (int64) of one COCO string, validated."""
    try:
        raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    except UnicodeEncodeError:
        raise InputError("malformed RLE counts: the string has non-ASCII characters") from None
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return c
    if c.min() < 0 or c.max() > 63:
        raise InputError("malformed RLE counts: characters must lie between '0' and 'o'")
    last = (c & 0x20) == 0
    if not last[-1]:
        raise InputError("malformed RLE counts: the string ends in the middle of a number")
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    value_id = np.cumsum(np.concatenate([[0], last[:-1]]))
    pos = np.arange(c.size) - starts[value_id]
    if pos.max() >= _MAX_GROUPS:
        raise InputError("malformed RLE counts: a number is longer than 32 bits")
    parts = (c & 0x1F) << (5 * pos)
    # The last group's bit 0x10 is the sign: extend it over the higher bits.
    negative = last & ((c & 0x10) != 0)
    parts[negative] |= np.int64(-1) << (5 * (pos[negative] + 1))
    x = np.add.reduceat(parts, starts)
    # Undo the deltas: from the fourth count on, each adds the count two back, i.e. a running sum per parity
    # (odd indices from 1, even indices from 2; the first count stands alone).
    out = x.copy()
    out[1::2] = np.cumsum(x[1::2])
    out[2::2] = np.cumsum(x[2::2])
    return out


def _counts_of(rle: Any) -> tuple[int, int, np.ndarray]:
    """Size and int64 counts of an RLE in either form, validated against its size."""
    h, w = _check_size(rle)
    raw = rle["counts"]
    counts = _decompress(raw) if isinstance(raw, (str, bytes, bytearray)) else _integer_counts(raw)
    if counts.size and counts.min() < 0:
        raise InputError("malformed RLE counts: run lengths must not be negative")
    hw = h * w
    # Each run fits in the mask, so the sum below cannot wrap around int64 (a wrapped sum could match h * w).
    if counts.size and int(counts.max()) > hw:
        raise InputError(f"malformed RLE counts: a run of {int(counts.max())} pixels is longer than size {h}x{w}")
    total = int(counts.sum()) if hw * counts.size < 2**63 else sum(counts.tolist())
    if total != hw:
        raise InputError(f"malformed RLE counts: runs cover {total} pixels but size {h}x{w} has {hw}")
    return h, w, counts


def _integer_counts(raw: Any) -> np.ndarray:
    """List counts as int64: whole numbers only (3.0 passes, 1.5 and True do not), within int64."""
    try:
        arr = np.asarray(raw)
        if arr.dtype.kind == "O":  # big or mixed Python numbers
            if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in arr.ravel()):
                raise TypeError
            arr = np.asarray(arr.tolist(), dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise InputError("malformed RLE counts: expected a string or a flat list of whole numbers (within int64)"
                         ) from None
    if arr.ndim != 1:
        raise InputError("malformed RLE counts: expected a flat list of integers")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all() and np.abs(arr).max() < 2**62):
            raise InputError("malformed RLE counts: run lengths must be whole numbers")
    elif arr.dtype.kind not in "iu":
        kind = "text" if arr.dtype.kind in "SU" else arr.dtype.name
        raise InputError(f"malformed RLE counts: expected a string or a list of whole numbers, got {kind} values")
    if arr.dtype.kind == "u" and int(arr.max()) >= 2**63:
        raise InputError("malformed RLE counts: a run length is beyond int64")
    return arr.astype(np.int64)


# ----------------------------------------------------------------------------------------------- public


def encode(masks: Any) -> Rle | list[Rle]:
    """Compressed COCO RLE of bool/uint8 masks (numpy or torch), identical to ``pycocotools.mask.encode``.

    ``masks``: (H, W) -> one dict; (N, H, W) -> a list of N dicts. Any non-zero value counts as set.
    ``counts`` is a ``str`` (pycocotools returns bytes), ready for JSON.
    """
    stack, single = _as_mask_stack(masks)
    n, h, w = stack.shape
    counts, offsets = _run_counts(stack)
    strings = _compress_counts(counts, offsets)
    out = [{"size": [h, w], "counts": s} for s in strings]
    return out[0] if single else out


def to_uncompressed(masks: Any) -> Rle | list[Rle]:
    """Uncompressed RLE ``{"size": [h, w], "counts": [int, ...]}``: one dict for (H, W), a list for (N, H, W)."""
    stack, single = _as_mask_stack(masks)
    n, h, w = stack.shape
    counts, offsets = _run_counts(stack)
    flat = counts.tolist()
    bounds = offsets.tolist()
    out = [{"size": [h, w], "counts": flat[a:b]} for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return out[0] if single else out


mask_to_uncompressed_rle = to_uncompressed


def masks_to_uncompressed_rle(masks: torch.Tensor) -> list[Rle]:
    """Same output as ``segment_anything.utils.amg.mask_to_rle_pytorch`` for bool (N, H, W) masks."""
    if masks.ndim != 3:
        raise InputError(f"masks must have shape (N, H, W), got shape {tuple(masks.shape)}")
    out = to_uncompressed(masks)
    assert isinstance(out, list)
    return out


def uncompressed_to_compressed(rle: Rle) -> Rle:
    """Compressed form of an uncompressed RLE, as ``segment_anything.utils.amg.coco_encode_rle`` returns it."""
    h, w, counts = _counts_of(rle)
    text = _compress_counts(counts, np.array([0, counts.size]))[0]
    return {"size": [h, w], "counts": text}


def compressed_to_uncompressed(rle: Rle) -> Rle:
    """Uncompressed form (list counts) of an RLE in either form."""
    h, w, counts = _counts_of(rle)
    return {"size": [h, w], "counts": counts.tolist()}


def _decode_one(rle: Any) -> np.ndarray:
    h, w, counts = _counts_of(rle)
    _check_decoded_size(h, w)
    values = np.zeros(counts.size, dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape(w, h).T


def _check_decoded_size(h: int, w: int) -> None:
    """A few bytes of RLE can stand for any size: decode no more pixels per mask than an image file may have."""
    max_pixels = image_limits()[0]
    if h * w > max_pixels:
        raise InputError(f"an RLE of {h}x{w} pixels is larger than decoded masks may be ({max_pixels:,} pixels; "
                         "SAMFLOW_MAX_IMAGE_PIXELS changes it)")


def decode(rles: Rle | Sequence[Rle]) -> np.ndarray:
    """Bool mask(s) of an RLE (-> (H, W)) or a list of RLEs of one size (-> (N, H, W)); either form of counts.
    A mask over the image files' pixel bound (`samflow.ops.image.image_limits`) is an InputError, not gigabytes."""
    if isinstance(rles, dict):
        return np.ascontiguousarray(_decode_one(rles))
    rles = _rle_list(rles, "decode")
    if len(rles) == 0:
        raise InputError("cannot decode an empty list of RLEs: the mask size is unknown")
    sizes = {tuple(_check_size(r)) for r in rles}
    if len(sizes) != 1:
        raise InputError(f"all RLEs in a list must share one size, got {sorted(sizes)}")
    h, w = sizes.pop()
    _check_decoded_size(h, w)
    out = np.empty((len(rles), h, w), dtype=bool)
    for i, rle in enumerate(rles):
        out[i] = _decode_one(rle)
    return out


def area(rles: Rle | Sequence[Rle]) -> int | list[int]:
    """Number of set pixels, as ``pycocotools.mask.area``: an int for one RLE, a list for a list."""
    if isinstance(rles, dict):
        return int(_counts_of(rles)[2][1::2].sum())
    return [int(_counts_of(r)[2][1::2].sum()) for r in _rle_list(rles, "area")]


def area_from_rle(rle: Rle) -> int:
    """Area of one RLE (the name ``segment_anything.utils.amg`` uses)."""
    out = area(rle)
    assert isinstance(out, int)
    return out


def _bbox_one(rle: Any) -> np.ndarray:
    h, _, counts = _counts_of(rle)
    m = (counts.size // 2) * 2
    lengths = counts[1:m:2]  # the runs of ones; zero-length ones (non-canonical counts) set no pixel
    keep = lengths > 0
    if not keep.any():
        return np.zeros(4)
    first = np.cumsum(counts[:m])[0::2][keep]  # column-major index of each run's first pixel
    last = first + lengths[keep] - 1
    x_first, x_last = first // h, last // h
    x0, x1 = x_first.min(), x_last.max()
    if np.any(x_first < x_last):  # a run that wraps into a later column covers whole column heights in between
        y0, y1 = 0, h - 1
    else:
        y0, y1 = (first % h).min(), (last % h).max()
    return np.array([x0, y0, x1 - x0 + 1, y1 - y0 + 1], dtype=np.float64)


def bbox(rles: Rle | Sequence[Rle]) -> np.ndarray:
    """XYWH float64 boxes as ``pycocotools.mask.toBbox``: shape (4,) for one RLE, (N, 4) for a list.

    Counts with zero-length runs (not canonical) give the box of the pixels set, as pycocotools does for any mask
    with a pixel; a mask without one is [0, 0, 0, 0] (pycocotools' 32-bit arithmetic returns [w, h, 1 - w, 1 - h]
    wrapped around 2**32 there)."""
    if isinstance(rles, dict):
        return _bbox_one(rles)
    rles = _rle_list(rles, "bbox")
    return np.stack([_bbox_one(r) for r in rles]) if len(rles) else np.zeros((0, 4))


def _rle_list(rles: Any, what: str) -> Sequence[Any]:
    if not isinstance(rles, Sequence) or isinstance(rles, (str, bytes)):
        raise InputError(f"{what} expects an RLE dict or a list of them, got {type(rles).__name__}")
    return rles
