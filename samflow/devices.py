"""The one default device: the caller's choice, else the first CUDA device when there is one, else the CPU."""

from __future__ import annotations

from typing import Any


def resolve_device(device: Any = None) -> str:
    """`device` as a string (`"cpu"`, `"cuda:1"`, a torch.device); None or "auto" -> "cuda" when available, else "cpu"."""
    if device is not None and str(device) != "auto":
        return str(device)
    import torch  # here, so that importing this module stays cheap

    return "cuda" if torch.cuda.is_available() else "cpu"
