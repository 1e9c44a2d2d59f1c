"""Reading depth maps: 16-bit PNG (millimetres), float `.npy` (metres) and 32-bit float TIFF (metres)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from samflow.errors import InputError

log = logging.getLogger(__name__)

PNG_MM = 0.001  # metres per unit of a 16-bit depth PNG (the millimetre convention of Kinect, TUM, NYU, ScanNet)


def read_depth(path: Path) -> tuple[np.ndarray, float]:
    """(depth as stored, float32 (H, W); its default scale in metres per unit). InputError names the file and
    the problem: missing, unreadable, not single-channel, not 16-bit / float."""
    if not path.is_file():
        raise InputError(f"depth file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path), 1.0
    if suffix in (".png", ".tif", ".tiff"):
        return _read_picture(path)
    raise InputError(f"depth file {path}: unsupported format {suffix or '(none)'}; use a 16-bit PNG in "
                     "millimetres, a float .npy in metres, or a float32 TIFF")


def _read_npy(path: Path) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)  # never unpickle a user's file
    except (OSError, ValueError) as exc:
        raise InputError(f"depth file {path}: cannot read as .npy ({exc})") from exc
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    if data.ndim != 2:
        raise InputError(f"depth file {path}: expected an (H, W) array, got shape {data.shape}")
    if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
        raise InputError(f"depth file {path}: expected numbers, got dtype {data.dtype}")
    return data.astype(np.float32, copy=False)


def _read_picture(path: Path) -> tuple[np.ndarray, float]:
    from PIL import Image, UnidentifiedImageError

    from samflow.ops.image import check_image_size

    try:
        with Image.open(path) as picture:
            check_image_size(*picture.size, name=f"depth file {path}")  # before decoding: no decompression bombs
            mode = picture.mode
            data = np.asarray(picture)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"depth file {path}: cannot read as an image ({exc})") from exc
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # PIL reads 16-bit PNGs as I;16 (uint16) or I (int32): both hold millimetres.
        return data.astype(np.float32), PNG_MM
    if mode == "F":
        return data.astype(np.float32), 1.0
    raise InputError(f"depth file {path}: a depth PNG must be 16-bit single-channel (millimetres), got image mode "
                     f"{mode} ({'8-bit' if mode in ('L', 'P', 'RGB', 'RGBA') else mode}); a colour-mapped picture of "
                     "depth cannot be read back as depth")


def write_depth_png(path: Path, metres: np.ndarray) -> None:
    """Write depth in metres as a 16-bit PNG in millimetres (invalid depth as 0)."""
    from PIL import Image

    mm = np.where(np.isfinite(metres) & (metres > 0), np.round(metres / PNG_MM), 0)
    if mm.max(initial=0) > 65535:
        raise InputError(f"depth up to {float(np.nanmax(metres)):.1f} m does not fit a 16-bit PNG in millimetres")
    Image.fromarray(mm.astype(np.uint16)).save(path)
