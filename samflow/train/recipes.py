"""What the trainers run from one YAML section (`text_clip:`, `text_adapter:`) share: the section as a typed config,
the `python -m samflow.train.<trainer> RECIPE.yaml` entry point, and their schedule (steps or a time budget,
warm-up then cosine annealing)."""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel, ValidationError

from samflow.errors import InputError
from samflow.train.config import read_yaml_recipe

Config = TypeVar("Config", bound=BaseModel)


def load_recipe_section(path: str | Path, section: str, config_type: type[Config], *, bare: bool = False) -> Config:
    """The `section:` mapping of the YAML recipe at `path` as `config_type`. With `bare`, a recipe without that
    section is the section itself (its options at the top level). A missing section or invalid options are an
    InputError naming the file."""
    path = Path(path)
    raw = read_yaml_recipe(path)
    body = raw.get(section, raw if bare else None) if isinstance(raw, dict) else None
    if not isinstance(body, dict):
        raise InputError(f"{path}: expected a `{section}:` section" + (" (or its options at the top level)"
                                                                      if bare else ""))
    try:
        return config_type(**body)
    except ValidationError as exc:
        raise InputError(f"{path}: invalid {section} section:\n{exc}") from None


def recipe_main(argv: list[str] | None, description: str, recipe_help: str, load: Callable[[str], Config],
                train: Callable[[Config], Any]) -> int:
    """Parse `RECIPE` from `argv`, log to stderr at INFO, and `train(load(RECIPE))`; 0 when it returns."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("recipe", help=recipe_help)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(load(args.recipe))
    return 0


def run_progress(step: int, steps: int, started: float, max_minutes: float | None) -> float:
    """How far a run is, 1 or more when it is done: in steps, or in minutes since `started` (time.perf_counter),
    whichever is further, so that a time budget still ends with a full anneal."""
    progress = step / steps
    if max_minutes:
        progress = max(progress, (time.perf_counter() - started) / 60 / max_minutes)
    return progress


def set_warmup_cosine_lr(optimizer: torch.optim.Optimizer, lr: float, step: int, warmup_steps: int,
                         progress: float) -> float:
    """Set every param group's learning rate to `lr` warmed up linearly over `warmup_steps` and annealed on a
    cosine to 0 at `progress` 1 (from run_progress); returns it."""
    lr = lr * min(1.0, (step + 1) / max(warmup_steps, 1)) * 0.5 * (1 + math.cos(math.pi * progress))
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
