"""Turning what users pass as an image into the uint8 (H, W, 3) RGB array SAM expects."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from samflow.errors import InputError

# The file suffixes read as images wherever a folder or glob is expanded.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}

# Decoded-size bounds of image files, checked from the header before any pixel is decoded (a 500 KB PNG can hold
# 13000x13000 pixels: 0.5 GB of RGB, several GB once the pipeline works on it). 64 MP covers every camera; the
# environment variables raise or lower them for a whole process (the CLI, the API, workers alike).
MAX_IMAGE_PIXELS = 64_000_000
MAX_IMAGE_SIDE = 16_384


def image_limits() -> tuple[int, int]:
    """(max pixels, max side) of image files: SAMFLOW_MAX_IMAGE_PIXELS / SAMFLOW_MAX_IMAGE_SIDE, else the defaults."""
    limits = []
    for name, default in (("SAMFLOW_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS), ("SAMFLOW_MAX_IMAGE_SIDE", MAX_IMAGE_SIDE)):
        raw = os.environ.get(name)
        try:
            value = int(raw) if raw else default
        except ValueError:
            raise InputError(f"{name}={raw!r}: expected a whole number of pixels") from None
        if value < 1:
            raise InputError(f"{name}={raw!r}: expected a positive number of pixels")
        limits.append(value)
    return limits[0], limits[1]


def check_image_size(width: int, height: int, name: str = "image", max_pixels: int | None = None,
                     max_side: int | None = None) -> None:
    """InputError when a (width, height) image is empty or larger than the bounds (`image_limits()` by default)."""
    default_pixels, default_side = image_limits()
    max_pixels = max_pixels or default_pixels
    max_side = max_side or default_side
    if width < 1 or height < 1:
        raise InputError(f"{name} is empty ({width}x{height} pixels)")
    if max(width, height) > max_side or width * height > max_pixels:
        raise InputError(f"{name} is {width}x{height} pixels; at most {max_side} per side and {max_pixels:,} in all "
                         "are read (set SAMFLOW_MAX_IMAGE_SIDE / SAMFLOW_MAX_IMAGE_PIXELS to change the bounds)")


def to_rgb_uint8(image: object, name: str = "image") -> np.ndarray:
    """Convert a PIL image or numpy array to uint8 (H, W, 3) RGB.

    Rules: (H, W) and (H, W, 1) grayscale are repeated to three channels; (H, W, 4) RGBA drops alpha; uint8 is
    taken as is; uint16 is scaled by 255/65535; bool becomes 0/255; floats are taken as 0..1 when their maximum is
    at most 1, else as 0..255, then clipped and rounded. Wrong ndim, zero size, NaN or infinity raise InputError.
    """
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise InputError(f"{name} must be a PIL image or a numpy array, not {type(image).__name__}")
    arr = image
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"{name} must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {image.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name} is empty: shape {image.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return np.round(arr.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError(f"{name} contains NaN or infinite values")
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(np.round(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 255:
            raise InputError(f"{name} has integer values outside 0..255 (dtype {arr.dtype}); pass uint8 or uint16")
        return arr.astype(np.uint8)
    raise InputError(f"{name} has unsupported dtype {arr.dtype}")


def load_image(path: str | Path, max_pixels: int | None = None, max_side: int | None = None) -> np.ndarray:
    """Read an image file as uint8 (H, W, 3) RGB: the one image loader (graph inputs, annotate, demo, the API).

    A missing or undecodable file raises InputError naming it: "image file not found: X", "cannot read image
    X: not a recognised image format", or "cannot read image X: <the decoder's words>" for a corrupt one. Its size
    is checked against `check_image_size` from the header, before decoding (decompression bombs)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file not found: {path}")
    try:
        with warnings.catch_warnings():  # PIL warns past 89 MP; the bounds below decide
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            check_image_size(*img.size, name=f"image {path}", max_pixels=max_pixels, max_side=max_side)
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                return to_rgb_uint8(np.asarray(img).astype(np.uint16), name=str(path))
            return np.ascontiguousarray(np.asarray(img.convert("RGB")))
    except InputError:  # the size bound (an InputError is also a ValueError: keep its own words)
        raise
    except UnidentifiedImageError:
        raise InputError(f"cannot read image {path}: not a recognised image format") from None
    except Image.DecompressionBombError as exc:  # past 178 MP PIL refuses to open at all
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        limit, side = max_pixels or image_limits()[0], max_side or image_limits()[1]
        raise InputError(f"image {path} has {size}; at most {side} per side and {limit:,} in all are read (set "
                         "SAMFLOW_MAX_IMAGE_SIDE / SAMFLOW_MAX_IMAGE_PIXELS to change the bounds)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt files, malformed headers
        raise InputError(f"cannot read image {path}: {exc}") from None
