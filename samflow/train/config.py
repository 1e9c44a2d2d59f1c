"""TrainConfig: every knob of a training run as data, loaded from YAML (`samflow train CONFIG.yaml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from samflow.errors import InputError


class DataConfig(BaseModel):
    """Where training images come from.

    kind=synthetic renders scene i of `seed` on the fly (as `samflow synth --seed` would write it);
    kind=sa1b reads a folder in SA-1B layout; kind=coco reads `annotations` (JSON) with images in `path`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["synthetic", "sa1b", "coco"] = "synthetic"
    seed: int = Field(1, ge=0)
    num_scenes: int | None = Field(None, gt=0, description="synthetic: cycle over this many scenes (None: endless)")
    scene_size: int = Field(256, ge=32)
    path: str | None = None
    annotations: str | None = None

    @model_validator(mode="after")
    def _check_paths(self) -> DataConfig:
        if self.kind in ("sa1b", "coco") and not self.path:
            raise ValueError(f"data.kind={self.kind} needs data.path")
        if self.kind == "coco" and not self.annotations:
            raise ValueError("data.kind=coco needs data.annotations (the COCO JSON)")
        return self


class TrainConfig(BaseModel):
    """A training run: the paper's interactive recipe (point/box prompt, then correction clicks) at small scale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | dict[str, Any] = Field("tiny", description="a preset name or a dict of SamConfig fields")
    init_checkpoint: str | None = Field(None, description="start from these weights (official .pth included)")
    out_dir: str = "runs/train"
    data: DataConfig = DataConfig()

    steps: int = Field(1000, gt=0)
    images_per_batch: int = Field(4, gt=0)
    objects_per_image: int = Field(4, gt=0)
    rounds: int = Field(3, ge=1, description="interactive rounds per object: first prompt + (rounds-1) corrections")
    first_prompt_only_steps: int = Field(
        0, ge=0, description="curriculum: before this step only the first prompt is trained (1 round, ~3x cheaper)"
    )
    box_prob: float = Field(0.5, ge=0, le=1, description="chance that the first prompt is a box, not a point")
    box_noise: float = Field(0.1, ge=0, description="box corner noise std, as a fraction of the box side")
    box_noise_max: float = Field(20.0, ge=0, description="cap of the box corner noise, in pixels")

    lr: float = Field(4e-4, gt=0)
    encoder_lr_scale: float = Field(1.0, gt=0, description="image-encoder LR = lr * this")
    weight_decay: float = Field(0.1, ge=0)
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.05, ge=0, le=1, description="cosine decay ends at lr * this")
    grad_clip: float | None = Field(1.0, gt=0)
    freeze_image_encoder: bool = False

    focal_weight: float = Field(20.0, ge=0)
    focal_alpha: float = Field(0.25, le=1, description="weight of positive pixels in the focal loss; < 0: none")
    dice_weight: float = Field(1.0, ge=0)
    iou_weight: float = Field(1.0, ge=0)
    loss_resolution: Literal["low", "full"] = Field(
        "low", description="low: on the decoder's 4h x 4w grid against area-averaged targets (fast); full: input size"
    )

    seed: int = 0
    device: str | None = Field(None, description="None: cuda when available, else cpu")
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    num_threads: int | None = Field(None, gt=0, description="torch CPU threads (None: torch's default)")
    data_workers: int = Field(
        0, ge=0, description="processes that prepare batches ahead of the model (0: in the training process)"
    )
    checkpoint_every_s: float = Field(300.0, gt=0)
    log_every: int = Field(20, gt=0)
    export: str | None = Field(None, description="after the last step, also write the weights here")
    export_dtype: Literal["float32", "float16", "bfloat16"] = "float16"

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false.
        return "off" if value is False else value

    def resolved_out_dir(self, base: Path | None = None) -> Path:
        out = Path(self.out_dir)
        return out if out.is_absolute() or base is None else base / out


def read_yaml_recipe(path: str | Path, what: str = "recipe") -> Any:
    """The YAML document at `path` (safe loader; empty is {}); a missing or malformed file is an InputError
    naming it as `what`. Shared by every training recipe reader."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from None


def load_train_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a YAML training config; `overrides` (non-None values) replace top-level keys."""
    path = Path(path)
    raw = read_yaml_recipe(path, "training config")
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of training options")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig(**raw)
    except ValidationError as exc:
        raise InputError(f"{path}: invalid training config:\n{exc}") from None
