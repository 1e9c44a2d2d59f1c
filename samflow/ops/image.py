"""Turning what users pass as an image into the uint8 (H, W, 3) RGB array SAM expects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from samflow.errors import InputError

# The file suffixes read as images wherever a folder or glob is expanded.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}


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


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 (H, W, 3) RGB: the one image loader (graph inputs, annotate, demo, the API).

    A missing or undecodable file raises InputError naming it: "image file not found: X", "cannot read image
    X: not a recognised image format", or "cannot read image X: <the decoder's words>" for a corrupt one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                return to_rgb_uint8(np.asarray(img).astype(np.uint16), name=str(path))
            return np.ascontiguousarray(np.asarray(img.convert("RGB")))
    except UnidentifiedImageError:
        raise InputError(f"cannot read image {path}: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt files, malformed headers
        raise InputError(f"cannot read image {path}: {exc}") from None