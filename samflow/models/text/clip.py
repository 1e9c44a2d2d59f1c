"""CLIP through open_clip, from local files only: a config (built-in name, JSON file, or embedded in the weights)
plus a checkpoint path. Never downloads: Hugging Face text towers and tokenizers are refused with a clear error.

`ClipModel` bundles the open_clip model, its offline tokenizer (open_clip's `SimpleTokenizer`, whose BPE vocabulary
ships inside the package) and its pixel statistics; it returns L2-normalised embeddings and caches text embeddings.
`get_clip` loads one per (config, weights, device) per process, through samflow's model pool.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samflow.devices import resolve_device
from samflow.errors import CheckpointError, InputError
from samflow.models.weights import read_tensor_file
from samflow.pool import ModelPool, default_model_pool

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
# Text models trained by samflow itself (recipes/clip_tiny.yaml): name -> (open_clip config JSON, weights).
SHIPPED_CLIP = {"clip_tiny": (WEIGHTS_DIR / "clip_tiny.json", WEIGHTS_DIR / "clip_tiny.safetensors")}
DEFAULT_CLIP = "clip_tiny"

# safetensors metadata keys written by `save_clip`.
CONFIG_KEY = "open_clip_config"
THRESHOLD_KEY = "samflow_rank_threshold"

# open_clip's defaults (OpenAI CLIP statistics), used when a config names none.
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TEXT_CACHE_SIZE = 4096


@dataclass(frozen=True)
class ClipConfig:
    """An open_clip model config (`embed_dim`, `vision_cfg`, `text_cfg`, ...) and the pixel statistics it expects."""

    model_cfg: dict[str, Any]
    mean: tuple[float, float, float] = _OPENAI_MEAN
    std: tuple[float, float, float] = _OPENAI_STD
    name: str = "custom"

    @property
    def image_size(self) -> int:
        size = self.model_cfg["vision_cfg"].get("image_size", 224)
        return int(size if isinstance(size, int) else size[0])

    @property
    def context_length(self) -> int:
        return int(self.model_cfg["text_cfg"].get("context_length", 77))

    def to_json(self) -> str:
        """The open_clip hub layout (`model_cfg` + `preprocess_cfg`), which `from_mapping` reads back."""
        return json.dumps({"model_cfg": self.model_cfg, "preprocess_cfg": {"mean": list(self.mean),
                                                                          "std": list(self.std)},
                           "name": self.name}, sort_keys=True)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], name: str = "custom") -> ClipConfig:
        """Read either a bare open_clip model config or the hub layout with `model_cfg` / `preprocess_cfg`."""
        model_cfg = dict(raw.get("model_cfg", raw))
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in model_cfg]
        if missing:
            raise InputError(f"CLIP config {name!r} lacks {', '.join(missing)} (an open_clip model config has "
                             "embed_dim, vision_cfg and text_cfg)")
        pre = raw.get("preprocess_cfg", {}) if "model_cfg" in raw else {}
        return cls(copy.deepcopy(model_cfg), tuple(pre.get("mean", _OPENAI_MEAN)), tuple(pre.get("std", _OPENAI_STD)),
                   str(raw.get("name", name)))


def resolve_clip_config(model: str | Path | Mapping[str, Any] | None,
                        metadata: Mapping[str, str] | None = None) -> ClipConfig:
    """A config from: samflow's shipped name, a JSON file, an open_clip built-in name, a mapping, or metadata."""
    if isinstance(model, Mapping):
        return ClipConfig.from_mapping(model)
    if model is None:
        raw = (metadata or {}).get(CONFIG_KEY)
        if raw is None:
            raise CheckpointError("no CLIP config given and the checkpoint carries none: pass a model name or an "
                                  "open_clip config JSON")
        return ClipConfig.from_mapping(json.loads(raw))
    text = str(model)
    if text in SHIPPED_CLIP:
        return _read_config_file(SHIPPED_CLIP[text][0], text)
    if text.endswith(".json") or Path(text).is_file():
        return _read_config_file(Path(text), Path(text).stem)
    import open_clip

    cfg = open_clip.get_model_config(text)
    if cfg is None:
        from samflow.errors import nearest

        known = list(SHIPPED_CLIP) + open_clip.list_models()
        hint = nearest(text, known)
        raise InputError(f"unknown CLIP model {text!r}" + (f"; did you mean {', '.join(hint)}?" if hint else "")
                         + " (give an open_clip model name, samflow's 'clip_tiny', or a config JSON file)")
    return ClipConfig(cfg, name=text)


def _read_config_file(path: Path, name: str) -> ClipConfig:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"CLIP config file {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"CLIP config file {path} is not readable JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"CLIP config file {path} does not hold a JSON object")
    return ClipConfig.from_mapping(raw, name)


def build_open_clip(config: ClipConfig) -> nn.Module:
    """An open_clip model with random weights from a config; refuses configs that would download anything."""
    import open_clip

    cfg = copy.deepcopy(config.model_cfg)
    text_cfg, vision_cfg = cfg["text_cfg"], cfg["vision_cfg"]
    if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"):
        raise InputError(f"CLIP model {config.name!r} uses a Hugging Face text tower/tokenizer, which would be "
                         "downloaded; samflow loads text models offline only (use a config with open_clip's own "
                         "text transformer)")
    if "multimodal_cfg" in cfg:
        raise InputError(f"CLIP model {config.name!r} is a CoCa model; only CLIP-style models are supported")
    if vision_cfg.get("timm_model_name"):
        vision_cfg["timm_model_pretrained"] = False  # weights come from our checkpoint, never from timm's hub
    model_class = open_clip.CustomTextCLIP if cfg.pop("custom_text", False) else open_clip.CLIP
    try:
        return model_class(**cfg)
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"CLIP config {config.name!r} is not a valid open_clip config: {exc}") from None


def read_clip_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a CLIP checkpoint (.safetensors, or .pt/.pth/.bin read with weights_only=True)."""
    state, metadata = read_tensor_file(path, "CLIP checkpoint")
    if next(iter(state)).startswith("module."):  # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, metadata


def load_clip_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path, name: str) -> None:
    """Strictly load `state`, naming missing / unexpected / mis-shaped keys briefly."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict

    try:
        state = convert_state_dict(model, state)  # third-party layouts (e.g. big_vision, timm) -> open_clip
    except Exception as exc:  # its converters assume their formats; a junk dict must still get our message
        log.debug("open_clip could not convert %s: %s", source, exc)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    expected = model.state_dict()
    if "logit_scale" in state and state["logit_scale"].ndim != expected["logit_scale"].ndim:
        state["logit_scale"] = state["logit_scale"].reshape(expected["logit_scale"].shape)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} (model: {tuple(v.shape)})" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing keys: {_brief(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected keys: {_brief(unexpected)}" if unexpected else "",
                 f"{len(wrong)} tensors of another shape: {_brief(wrong, 3)}" if wrong else ""]
        raise CheckpointError(f"CLIP checkpoint {source} does not fit the open_clip model {name!r}: "
                              + "; ".join(p for p in parts if p)
                              + ". Check that the config (model name or JSON) is the one the weights were trained with.")
    model.load_state_dict(state, strict=True)


def _brief(keys: Sequence[str], limit: int = 4) -> str:
    return ", ".join(keys[:limit]) + (f" ... ({len(keys) - limit} more)" if len(keys) > limit else "")


class ClipModel:
    """An open_clip model ready for inference: offline tokenizer, pixel statistics, normalised embeddings.

    `embed_text(texts) -> float (N, D)` and `embed_images(pixels) -> float (N, D)` are L2-normalised;
    text embeddings are cached per string (LRU), so a repeated prompt costs a dictionary lookup.
    `rank_threshold`: the absolute cosine threshold calibrated for this model (from its checkpoint), or None.
    """

    def __init__(self, model: nn.Module, config: ClipConfig, rank_threshold: float | None = None,
                 source: str = "") -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.model = model.eval()
        self.config = config
        self.rank_threshold = rank_threshold
        self.source = source
        self.tokenizer = SimpleTokenizer(context_length=config.context_length)  # BPE vocab ships with open_clip
        device, dtype = self.device, self.dtype
        self._mean = torch.tensor(config.mean, device=device, dtype=dtype).view(1, 3, 1, 1)
        self._std = torch.tensor(config.std, device=device, dtype=dtype).view(1, 3, 1, 1)
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self._fingerprint: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def embed_dim(self) -> int:
        return int(self.config.model_cfg["embed_dim"])

    @property
    def fingerprint(self) -> str:
        """A stable hash of the config and weights (cache keys; adapters record which CLIP they were trained on)."""
        if self._fingerprint is None:
            digest = hashlib.blake2b(digest_size=16)
            digest.update(json.dumps(self.config.model_cfg, sort_keys=True).encode())
            for key, value in sorted(self.model.state_dict().items()):
                digest.update(key.encode())
                digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids (N, context_length) on the model's device; over-long texts are truncated (end token kept)."""
        return self.tokenizer(list(texts)).to(self.device)

    @torch.no_grad()
    def embed_text(self, texts: str | Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings, float32 (N, D); cached per string (LRU)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = [str(t) for t in texts]
        if not texts or any(not t.strip() for t in texts):
            raise InputError("text prompts must be non-empty strings")
        with self._lock:
            found = {t: self._text_cache[t] for t in texts if t in self._text_cache}
            for t in found:
                self._text_cache.move_to_end(t)
        todo = [t for t in dict.fromkeys(texts) if t not in found]
        if todo:
            features = self.model.encode_text(self.tokenize(todo), normalize=True).float()
            fresh = dict(zip(todo, features))
            found.update(fresh)
            with self._lock:
                self._text_cache.update(fresh)
                while len(self._text_cache) > TEXT_CACHE_SIZE:
                    self._text_cache.popitem(last=False)
        return torch.stack([found[t] for t in texts])

    def normalize_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) floats in [0, 1] -> the model's input (its mean / std, its dtype and device)."""
        pixels = pixels.to(device=self.device, dtype=self.dtype)
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            pixels = F.interpolate(pixels, (self.image_size, self.image_size), mode="bilinear", antialias=True,
                                   align_corners=False)
        return (pixels - self._mean) / self._std

    def embed_images(self, pixels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """L2-normalised image embeddings, float32 (N, D), of (N, 3, S, S) pixels in [0, 1]."""
        out = []
        with torch.no_grad():
            for start in range(0, pixels.shape[0], batch_size):
                chunk = self.normalize_pixels(pixels[start : start + batch_size])
                out.append(self.model.encode_image(chunk, normalize=True).float())
        if not out:
            return torch.zeros((0, self.embed_dim), device=self.device)
        return torch.cat(out)

    def embed_crops(self, image: np.ndarray, masks: np.ndarray, **crop_options: Any) -> torch.Tensor:
        """Embeddings (N, D) of the masked crops of `masks` bool (N, H, W) in `image` uint8 (H, W, 3)."""
        from samflow.models.text.crops import masked_crops

        return self.embed_images(masked_crops(image, masks, self.image_size, **crop_options))


def load_clip(model: str | Path | Mapping[str, Any] | None = DEFAULT_CLIP, checkpoint: str | Path | None = None,
              device: str | torch.device | None = None, dtype: torch.dtype | str | None = None) -> ClipModel:
    """Load an open_clip model from local files.

    model: samflow's shipped 'clip_tiny', an open_clip built-in name ('ViT-B-32'), an open_clip config JSON file,
    a config mapping, or None to read the config embedded in the checkpoint. checkpoint: a local weights file
    (.safetensors, .pt, .pth, .bin); for 'clip_tiny' the shipped file is the default. Without weights for any other
    model the result has random weights (a warning says so).
    """
    if checkpoint is None and isinstance(model, str) and model in SHIPPED_CLIP:
        checkpoint = SHIPPED_CLIP[model][1]
        if not Path(checkpoint).is_file():
            raise CheckpointError(f"the shipped CLIP weights {checkpoint} are missing; train them with "
                                  "`python -m samflow.train.text_clip recipes/clip_tiny.yaml`")
    state: dict[str, torch.Tensor] | None = None
    metadata: dict[str, str] = {}
    if checkpoint is not None:
        state, metadata = read_clip_state_dict(checkpoint)
    config = resolve_clip_config(model, metadata)
    net = build_open_clip(config)
    if state is not None:
        load_clip_weights(net, state, checkpoint, config.name)
    else:
        log.warning("CLIP model %r has random weights (no checkpoint given)", config.name)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    net = net.to(device=device or "cpu", dtype=dtype)
    threshold = metadata.get(THRESHOLD_KEY)
    return ClipModel(net, config, float(threshold) if threshold else None, source=str(checkpoint or ""))


def get_clip(model: str | Path | None = DEFAULT_CLIP, checkpoint: str | Path | None = None,
             device: str | None = None, pool: ModelPool | None = None) -> ClipModel:
    """`load_clip`, once per (model, checkpoint, device) per process: every caller shares the loaded model."""
    device = resolve_device(device)
    spec = str(Path(model).resolve()) if model is not None and str(model).endswith(".json") else model
    key = ("clip", spec, str(Path(checkpoint).resolve()) if checkpoint else None, device)
    return (pool if pool is not None else default_model_pool()).get(key, lambda: load_clip(model, checkpoint, device))


def save_clip(clip: ClipModel | nn.Module, config: ClipConfig, path: str | Path, *,
              rank_threshold: float | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write CLIP weights as safetensors with the config (and calibrated threshold) embedded; atomically."""
    from safetensors.torch import save_file

    net = clip.model if isinstance(clip, ClipModel) else clip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in net.state_dict().items()}
    metadata = {CONFIG_KEY: config.to_json()}
    if rank_threshold is not None:
        metadata[THRESHOLD_KEY] = f"{rank_threshold:.6f}"
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path
