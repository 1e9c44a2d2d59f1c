"""recipes/fit_to_lease.py: the step count that fits a lease, and weights split to come back from it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from samflow.train import TrainConfig

_spec = importlib.util.spec_from_file_location("fit_to_lease", Path("recipes/fit_to_lease.py"))
fit_to_lease = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fit_to_lease)


def test_steps_fill_the_budget_and_keep_the_one_round_share():
    config = TrainConfig(steps=1000, first_prompt_only_steps=600)
    fitted = fit_to_lease.fit_steps(config, seconds=300, one=0.05, every=0.1)
    # 300 s / (0.6 * 0.05 + 0.4 * 0.1) s per step = 4285 steps, down to a multiple of 50
    assert fitted.steps == 4250 and fitted.first_prompt_only_steps == 2550


def test_split_weights_join_back_exactly(tmp_path):
    tensors = {f"w{i}": torch.randn(i + 1, 3) for i in range(5)}
    src = tmp_path / "final.safetensors"
    save_file(tensors, str(src), metadata={"samflow_config": "{}"})
    parts = fit_to_lease.split_weights(src, tmp_path)
    assert len(parts) == 2 and all(p.stat().st_size < src.stat().st_size for p in parts)
    joined = fit_to_lease.join_weights(parts, tmp_path / "joined.safetensors")
    back = load_file(str(joined))
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)
