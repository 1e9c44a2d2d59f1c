"""`samflow train RECIPE.yaml` for the text models: a YAML whose top level is a `text_clip:` section (train the small
CLIP) or a `text_adapter:` section (train SAM's prompt adapter) is dispatched here instead of to SAM's loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SECTIONS = ("text_clip", "text_adapter")


def text_recipe_kind(path: str | Path) -> str | None:
    """'text_clip' or 'text_adapter' when the YAML at `path` is such a recipe, else None."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None  # the regular loader reports unreadable files with its own message
    if not isinstance(raw, dict):
        return None
    found = [s for s in SECTIONS if s in raw]
    return found[0] if len(found) == 1 else None


def run_text_recipe(path: str | Path) -> dict[str, Any] | None:
    """Train what a text recipe asks for and return its figures; None when `path` is not a text recipe."""
    kind = text_recipe_kind(path)
    if kind == "text_clip":
        from samflow.train.text_clip import load_text_clip_config, train_text_clip

        return train_text_clip(load_text_clip_config(path))
    if kind == "text_adapter":
        from samflow.train.text_adapter import load_text_adapter_config, train_text_adapter

        return train_text_adapter(load_text_adapter_config(path))
    return None
