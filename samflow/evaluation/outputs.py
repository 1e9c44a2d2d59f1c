"""What every evaluation task writes into its output folder: JSON files (atomically, so a file that exists is whole)
and 8-bit PNG maps."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from samflow.fileio import atomic_path, write_atomic

__all__ = ["write_json", "write_png"]


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: Any, indent: int | None = None) -> Path:
    """Write `data` as JSON (compact unless `indent`); returns the path."""
    path = Path(path)
    write_atomic(path, json.dumps(_plain(data), indent=indent))
    return path


def write_png(path: str | Path, values: np.ndarray) -> Path:
    """Write a map in [0, 1] (or bool) as an 8-bit grey PNG (round(255 v), as MATLAB's uint8 does)."""
    path = Path(path)
    pixels = np.round(np.clip(np.asarray(values, dtype=np.float64), 0, 1) * 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
    return path
