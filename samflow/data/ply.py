"""Writing coloured point clouds as binary PLY files (the encoding is `samflow.ops.ply`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samflow.fileio import write_atomic
from samflow.ops.ply import encode_ply


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray | None = None,
              comment: str | None = "written by samflow") -> Path:
    """Write points float (M, 3) with colours uint8 (M, 3) (grey when None) to `path`; return it.

    The file is written beside its final name and renamed, so a reader never sees half a cloud.
    """
    write_atomic(path, encode_ply(points, colors, comment))
    return Path(path)
