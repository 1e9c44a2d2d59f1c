"""The prompt adapter: a CLIP embedding (any width) -> SAM prompt tokens, fed to the mask decoder beside the point
and box tokens (the paper's text prompts).

SAM's decoder finds objects through the positional encodings of its prompt tokens; a token that only says *what*
(colour, shape) gives it nothing to attend to while SAM stays frozen (tried: near-empty masks). So the adapter also
says *where*: M query vectors from the CLIP embedding score every cell of SAM's image embedding, and each heat map
becomes a click token (SAM's positional encoding of the best cell plus its foreground-point embedding; the softmax
carries the gradient in training), which the frozen decoder reads as it reads a click. K content tokens carry the
rest. Tokens therefore depend on the image embedding: `prompt_tokens(embeddings, sam, features)`. A cell's key is a
linear map of its features, plus (`key_layers` > 0) a small conv stack's view of its neighbourhood: a colour is a
property of a cell, a shape of its surroundings (tiny's held-out text mIoU: 0.71 with linear keys, 0.75 with 2-3
conv layers, same data and steps; the click is on the object ~90% of the time either way, so the conv keys place
it better within the object).

Trained on CLIP *image* embeddings of masked object crops (samflow.train.text_adapter), used with CLIP *text*
embeddings. Contrastive CLIPs leave a constant offset between the two modalities (the "modality gap"); the adapter
stores the mean image-minus-text offset measured on its training captions and adds it to text embeddings.

Saved as safetensors beside the SAM checkpoint (`sam_tiny.safetensors` -> `sam_tiny_text_adapter.safetensors`),
with its sizes and the fingerprints of the CLIP and SAM weights it was trained with in the metadata; also, when
known, where that CLIP's weights were (`clip_source`: the text models load it by default) and the calibrated
presence decision (`presence`, samflow.models.text.presence: when a text names nothing in the image).
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

from samflow.errors import CheckpointError, InputError
from samflow.models.text.presence import PRESENCE_KEY, PresenceCalibration
from samflow.models.text.presence_head import HEAD_KEY, PresenceHead, PresenceHeadConfig
from samflow.models.weights import read_tensor_file

log = logging.getLogger(__name__)

CONFIG_KEY = "samflow_text_adapter"
CLIP_SOURCE_KEY = "samflow_text_adapter_clip"  # {"model": name or config JSON path, "checkpoint": path or null}
ADAPTER_SUFFIX = "_text_adapter.safetensors"


class AdapterConfig(BaseModel):
    """Sizes of a prompt adapter and what it was trained with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clip_dim: int = Field(gt=0, description="width of the CLIP embeddings it reads")
    num_tokens: int = Field(2, ge=0, description="content tokens it writes")
    num_clicks: int = Field(1, ge=0, description="click tokens it writes (located on SAM's image embedding)")
    hard_clicks: bool = Field(True, description="a click sits on its heat map's best cell (straight-through in "
                                                "training), so the frozen decoder sees a true click")
    token_dim: int = Field(256, gt=0, description="SAM's prompt_embed_dim")
    hidden: int = Field(256, gt=0)
    key_layers: int = Field(0, ge=0, description="3x3 conv layers that give each cell's key its neighbourhood "
                                                 "(0: a linear key per cell)")
    key_channels: int = Field(64, gt=0, description="width of those conv layers")
    clip_name: str = ""
    clip_fingerprint: str = ""
    sam_fingerprint: str = ""


class PromptAdapter(nn.Module):
    """CLIP embedding (N, D) + SAM image embedding -> prompt tokens (N, M + 1 + K, C): M soft clicks, a padding
    token (as SAM appends after clicks), K content tokens."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        c, m, k = config.token_dim, config.num_clicks, config.num_tokens
        self.net = nn.Sequential(
            nn.Linear(config.clip_dim, config.hidden), nn.GELU(),
            nn.Linear(config.hidden, config.hidden), nn.GELU(),
            nn.Linear(config.hidden, (m + k) * c),
        )
        self.key = nn.Linear(c, c)  # image-embedding cells -> keys the click queries are compared with
        # A linear key sees one cell: it finds a colour but hardly a shape, which is a property of a neighbourhood.
        # The conv stack adds what the cell's surroundings say; its last layer starts at zero (= the linear key).
        self.key_context = _key_context(c, config.key_channels, config.key_layers) if config.key_layers else None
        self._last_context: tuple[torch.Tensor, tuple[int, ...], torch.Tensor] | None = None  # features, versions, keys
        self.log_scale = nn.Parameter(torch.tensor(0.0))  # heat-map sharpness
        # Learned per-token offsets, like SAM's point-type embeddings: tokens start distinct from one another.
        self.token_embed = nn.Parameter(torch.randn(k, c) * 0.1)
        self.click_embed = nn.Parameter(torch.zeros(m, c))
        # image mean - text mean of the CLIP it was trained with (see module doc); zeros until measured.
        self.register_buffer("text_shift", torch.zeros(config.clip_dim))
        # Saved in the file's metadata beside the weights: the calibrated presence decision (None: never
        # calibrated, so texts are never refused by default) and where the CLIP it was trained with lies.
        self.presence: PresenceCalibration | None = None
        self.clip_source: dict[str, str | None] | None = None
        # The trained presence score (samflow.models.text.presence_head) a `scorer="head"` calibration applies
        # its threshold to; a submodule once set, so its tensors are saved with the adapter's.
        self.presence_head: PresenceHead | None = None

    @property
    def device(self) -> torch.device:
        return self.token_embed.device

    def text_to_image_space(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Move L2-normalised text embeddings across the modality gap (and renormalise)."""
        shifted = text_embeddings.to(self.text_shift.device, self.text_shift.dtype) + self.text_shift
        return F.normalize(shifted, dim=-1)

    def heatmaps(self, queries: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Logits (N, M, h*w) of M click queries (N, M, C) over image features (N or 1, C, h, w)."""
        # q . (W f + b) = (q W) . f + q . b: the queries are projected instead of every cell (hw/M times less work).
        folded = queries @ self.key.weight  # (N, M, C)
        cells = features.flatten(2).to(queries.dtype)  # (N or 1, C, hw)
        scale = self.log_scale.exp() / queries.shape[-1] ** 0.5
        logits = folded @ cells + (queries @ self.key.bias)[..., None]
        if self.key_context is not None:
            logits = logits + queries @ self._context(features).to(queries.dtype)
        return logits * scale

    def _context(self, features: torch.Tensor) -> torch.Tensor:
        """The conv stack's keys (N or 1, C, hw) of `features`. At inference every text prompt on an image asks for
        the same image's keys: they are kept for the last features tensor seen, until it or a weight changes."""
        assert self.key_context is not None
        if torch.is_grad_enabled():
            return self.key_context(features.to(self.key.weight.dtype)).flatten(2)
        versions = (features._version, *(p._version for p in self.key_context.parameters()))
        last = self._last_context
        if last is not None and last[0] is features and last[1] == versions:
            return last[2]
        context = self.key_context(features.to(self.key.weight.dtype)).flatten(2)
        self._last_context = (features, versions, context)
        return context

    def forward(self, embeddings: torch.Tensor, sam: Any, features: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (N, M + 1 + K, C) and click heat-map logits (N, M, h*w) for CLIP embeddings (N, D) already in
        the image-embedding space, on SAM image features (1 or N, C, h, w)."""
        cfg = self.config
        out = self.net(embeddings.to(self.token_embed.dtype)).view(-1, cfg.num_clicks + cfg.num_tokens,
                                                                   cfg.token_dim)
        queries, content = out[:, : cfg.num_clicks], out[:, cfg.num_clicks :] + self.token_embed
        pe_layer = sam.prompt_encoder
        if tuple(features.shape[-2:]) != tuple(pe_layer.image_embedding_size):
            raise InputError(f"image embedding grid {tuple(features.shape[-2:])} does not match this SAM's "
                             f"{tuple(pe_layer.image_embedding_size)}: encode the image with the same model")
        logits = self.heatmaps(queries, features)
        weights = logits.softmax(-1)
        if cfg.hard_clicks:
            # Forward: the best cell, exactly a click there; backward: the softmax (straight-through).
            hard = F.one_hot(weights.argmax(-1), weights.shape[-1]).to(weights.dtype)
            weights = hard + weights - weights.detach()
        dense_pe = pe_layer.get_dense_pe().flatten(2)[0].T.to(queries.dtype)  # (hw, C)
        clicks = weights @ dense_pe + pe_layer.point_embeddings[1].weight.to(queries.dtype)
        pad = pe_layer.not_a_point_embed.weight.to(queries.dtype).expand(len(out), 1, -1)
        tokens = torch.cat([clicks + self.click_embed, pad, content], dim=1)
        return tokens, logits

    def prompt_tokens(self, embeddings: torch.Tensor, sam: Any, features: torch.Tensor,
                      text: bool = True) -> torch.Tensor:
        """Prompt tokens (N, T, C) for CLIP embeddings (N, D), text (moved across the gap) or image."""
        embeddings = embeddings.to(self.device, torch.float32)
        if text:
            embeddings = self.text_to_image_space(embeddings)
        tokens, _ = self(embeddings, sam, features.to(self.device))
        return tokens


def _key_context(channels: int, width: int, layers: int) -> nn.Sequential:
    stack: list[nn.Module] = [nn.Conv2d(channels, width, 1), nn.GELU()]
    for _ in range(layers):
        stack += [nn.Conv2d(width, width, 3, padding=1), nn.GELU()]
    last = nn.Conv2d(width, channels, 1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*stack, last)


def adapter_path_for(sam_checkpoint: str | Path) -> Path:
    """Where the adapter of a SAM checkpoint lives: beside it, `<stem>_text_adapter.safetensors`."""
    path = Path(sam_checkpoint)
    return path.with_name(path.stem + ADAPTER_SUFFIX)


def save_adapter(adapter: PromptAdapter, path: str | Path, extra_metadata: dict[str, str] | None = None) -> Path:
    """Write the adapter as safetensors with its config (and presence calibration, CLIP source) embedded;
    atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in adapter.state_dict().items()}
    metadata = {CONFIG_KEY: adapter.config.model_dump_json()}
    if adapter.presence is not None:
        metadata[PRESENCE_KEY] = adapter.presence.model_dump_json()
    if adapter.clip_source is not None:
        metadata[CLIP_SOURCE_KEY] = json.dumps(adapter.clip_source, sort_keys=True)
    if adapter.presence_head is not None:
        metadata[HEAD_KEY] = adapter.presence_head.config.model_dump_json()
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={**metadata, **(extra_metadata or {})})
    tmp.replace(path)
    return path


def load_adapter(path: str | Path, device: str | torch.device | None = None) -> PromptAdapter:
    """A prompt adapter from its safetensors file (config from the metadata); clear errors for bad files."""
    path = Path(path)
    state, metadata = read_tensor_file(path, "text prompt adapter", missing_hint=(
        "; train one with `samflow train recipes/sam_tiny_text_adapter.yaml` (see samflow.train.text_adapter)"))
    if CONFIG_KEY not in metadata:
        raise CheckpointError(f"{path} is not a samflow text prompt adapter (no {CONFIG_KEY} metadata)")
    adapter = PromptAdapter(AdapterConfig(**json.loads(metadata[CONFIG_KEY])))
    if HEAD_KEY in metadata:
        try:
            adapter.presence_head = PresenceHead(PresenceHeadConfig.model_validate_json(metadata[HEAD_KEY]))
        except ValueError as exc:
            raise CheckpointError(f"{path}: unreadable presence head metadata: {exc}") from None
    expected = adapter.state_dict()
    if set(state) != set(expected) or any(state[k].shape != v.shape for k, v in expected.items()):
        raise CheckpointError(f"{path}: tensors do not match the adapter sizes in its metadata")
    adapter.load_state_dict(state)
    try:
        if PRESENCE_KEY in metadata:
            adapter.presence = PresenceCalibration.model_validate_json(metadata[PRESENCE_KEY])
            if adapter.presence.scorer == "head" and adapter.presence_head is None:
                raise ValueError("its presence calibration applies to a presence head the file does not hold")
        if CLIP_SOURCE_KEY in metadata:
            source = json.loads(metadata[CLIP_SOURCE_KEY])
            adapter.clip_source = {"model": source.get("model"), "checkpoint": source.get("checkpoint")}
    except (ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: unreadable presence or CLIP metadata: {exc}") from None
    return adapter.eval().to(device or "cpu")
