"""The prompt adapter: a CLIP embedding (any width) -> K SAM prompt tokens, fed to the mask decoder beside the
point and box tokens (the paper's text prompts).

Trained on CLIP *image* embeddings of masked object crops (samflow.train.text_adapter), used with CLIP *text*
embeddings. Contrastive CLIPs leave a constant offset between the two modalities (the "modality gap"); the adapter
stores the mean image-minus-text offset measured on its training captions and adds it to text embeddings, so
text lands where the adapter was trained.

Saved as safetensors beside the SAM checkpoint (`sam_tiny.safetensors` -> `sam_tiny_text_adapter.safetensors`),
with its sizes and the fingerprints of the CLIP and SAM weights it was trained with in the metadata.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from samflow.errors import CheckpointError

log = logging.getLogger(__name__)

CONFIG_KEY = "samflow_text_adapter"
ADAPTER_SUFFIX = "_text_adapter.safetensors"


class AdapterConfig(BaseModel):
    """Sizes of a prompt adapter and what it was trained with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clip_dim: int = Field(gt=0, description="width of the CLIP embeddings it reads")
    num_tokens: int = Field(2, gt=0, description="SAM prompt tokens it writes")
    token_dim: int = Field(256, gt=0, description="SAM's prompt_embed_dim")
    hidden: int = Field(256, gt=0)
    clip_name: str = ""
    clip_fingerprint: str = ""
    sam_fingerprint: str = ""


class PromptAdapter(nn.Module):
    """MLP from an L2-normalised CLIP embedding (N, D) to prompt tokens (N, K, C)."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.Linear(config.clip_dim, config.hidden), nn.GELU(),
            nn.Linear(config.hidden, config.hidden), nn.GELU(),
            nn.Linear(config.hidden, config.num_tokens * config.token_dim),
        )
        # Learned per-token offsets, like SAM's point-type embeddings: tokens start distinct from one another.
        self.token_embed = nn.Parameter(torch.randn(config.num_tokens, config.token_dim) * 0.1)
        # image mean - text mean of the CLIP it was trained with (see module doc); zeros until measured.
        self.register_buffer("text_shift", torch.zeros(config.clip_dim))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Tokens (N, K, C) from CLIP embeddings (N, D) already in the image-embedding space."""
        x = self.net(embeddings.to(self.token_embed.dtype))
        return x.view(-1, self.config.num_tokens, self.config.token_dim) + self.token_embed

    def text_to_image_space(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Move L2-normalised text embeddings across the modality gap (and renormalise)."""
        shifted = text_embeddings.to(self.text_shift.device, self.text_shift.dtype) + self.text_shift
        return F.normalize(shifted, dim=-1)

    def text_tokens(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Tokens (N, K, C) for CLIP text embeddings (N, D)."""
        return self(self.text_to_image_space(text_embeddings))

    @property
    def device(self) -> torch.device:
        return self.token_embed.device


def adapter_path_for(sam_checkpoint: str | Path) -> Path:
    """Where the adapter of a SAM checkpoint lives: beside it, `<stem>_text_adapter.safetensors`."""
    path = Path(sam_checkpoint)
    return path.with_name(path.stem + ADAPTER_SUFFIX)


def save_adapter(adapter: PromptAdapter, path: str | Path, extra_metadata: dict[str, str] | None = None) -> Path:
    """Write the adapter as safetensors with its config embedded; atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in adapter.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={CONFIG_KEY: adapter.config.model_dump_json(), **(extra_metadata or {})})
    tmp.replace(path)
    return path


def load_adapter(path: str | Path, device: str | torch.device | None = None) -> PromptAdapter:
    """A prompt adapter from its safetensors file (config from the metadata); clear errors for bad files."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"text prompt adapter {path} does not exist; train one with "
                              "`samflow train recipes/sam_tiny_text_adapter.yaml` (see samflow.train.text_adapter)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata: dict[str, Any] = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    if CONFIG_KEY not in metadata:
        raise CheckpointError(f"{path} is not a samflow text prompt adapter (no {CONFIG_KEY} metadata)")
    adapter = PromptAdapter(AdapterConfig(**json.loads(metadata[CONFIG_KEY])))
    expected = adapter.state_dict()
    if set(state) != set(expected) or any(state[k].shape != v.shape for k, v in expected.items()):
        raise CheckpointError(f"{path}: tensors do not match the adapter sizes in its metadata")
    adapter.load_state_dict(state)
    return adapter.eval().to(device or "cpu")
