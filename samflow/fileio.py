"""Atomic file writes: write a hidden temporary beside the target, then rename, so readers (and reruns that skip
finished outputs) see a whole file or none. One helper for every writer in samflow."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write to; it becomes `path` when the block ends without error, and is removed if not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden, and named after the target: a leftover from an interrupted run is simply overwritten by the rerun.
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: bytes | str) -> None:
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)


def write_json_atomic(path: str | Path, data: Any, indent: int | None = 2) -> None:
    write_atomic(path, json.dumps(data, indent=indent))
