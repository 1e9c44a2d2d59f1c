"""Helpers of the detector / gaze / video / 3D tests: a PLY reader of our own and a one-thread torch fixture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A strict reader of the binary little-endian PLY files samflow writes: (points (M, 3), colours (M, 3))."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[0] == "ply" and header[1] == "format binary_little_endian 1.0"
    count = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    properties = [line.split()[1:] for line in header if line.startswith("property")]
    kinds = {"float": "<f4", "uchar": "u1", "double": "<f8", "int": "<i4"}
    dtype = np.dtype([(name, kinds[kind]) for kind, name in properties])
    assert len(data) - end == count * dtype.itemsize  # nothing more, nothing less
    records = np.frombuffer(data[end:], dtype=dtype, count=count)
    points = np.stack([records["x"], records["y"], records["z"]], axis=1)
    colors = np.stack([records["red"], records["green"], records["blue"]], axis=1)
    return points, colors


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These tests run small tensors only: a second thread adds only contention (10x slower on a busy 2-core
    machine). Restored after the module."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
