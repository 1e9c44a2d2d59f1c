"""Which CLIP: an open_clip model config (`ClipConfig`) from samflow's shipped name, a JSON file, an open_clip
built-in name, a mapping, or the metadata a checkpoint carries (`resolve_clip_config`); and where samflow's own
text models and their metadata live."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samflow.errors import CheckpointError, InputError

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
