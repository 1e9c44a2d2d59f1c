"""Reading a weights file safely: the one reader behind SAM, CLIP, prompt-adapter and detector checkpoints.

Every load is `torch.load(weights_only=True)` or safetensors (one pass: tensors and metadata together); junk
files, pickled code and non-tensor contents become a CheckpointError that names the file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from samflow.errors import CheckpointError

# Training frameworks often nest the weights: {"model": ...} (torchvision references), {"state_dict": ...}.
WRAPPERS = ("model", "state_dict")


def read_tensor_file(path: str | Path, label: str = "checkpoint",
                     missing_hint: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of `path` (.safetensors, else a torch file), on the CPU.

    `label` names the file's role in messages ("CLIP checkpoint", "detector weights"...); `missing_hint` is
    appended to the message for a file that does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{label} {path} does not exist{missing_hint}")
    metadata: dict[str, str] = {}
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # the safe unpickler raises many types on junk input; all mean the same here
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"{label} {path} cannot be loaded safely: it is not a PyTorch checkpoint that "
                                  f"loads safely with weights_only=True ({first})") from None
    for wrapper in WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{label} {path} does not hold a state dict of tensors "
                              f"(found {type(state).__name__})")
    return state, metadata
