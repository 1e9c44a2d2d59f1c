"""Run a training recipe on a lent machine within a time budget, so the whole LR schedule fits.

    python recipes/fit_to_lease.py recipes/tiny_stage4.yaml --budget-s 380 --out OUT [--set key=value ...]

The cosine schedule needs the step count up front, and a lent GPU's speed is not known until it runs. So this
trains a few probe steps of both kinds (one round, all rounds) in a scratch folder, sets `steps` (and
`first_prompt_only_steps` in the recipe's proportion) to what fits the budget, writes that resolved recipe to OUT,
and trains in slices, exporting the latest weights (fp16) to OUT after each slice: a lease cut short still returns
its last weights. At the end OUT holds the exported model, the fp32 final weights in two halves (a lease returns
files of at most 16 MiB; `--join` puts them back together) and the metrics.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import traceback
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from samflow.engine.overrides import yaml_overrides
from samflow.train.config import TrainConfig, load_train_config
from samflow.train.loop import FINAL_NAME, METRICS_NAME, WEIGHTS_NAME, export_weights, train

PROBE_ONE_ROUND, PROBE_ALL_ROUNDS = 25, 12


def probe_step_seconds(config: TrainConfig) -> tuple[float, float]:
    """Median seconds of a one-round and of an all-rounds step (data wait included), from a scratch run."""
    with tempfile.TemporaryDirectory() as scratch:
        probe = config.model_copy(update={
            "out_dir": scratch, "steps": 10**6, "first_prompt_only_steps": PROBE_ONE_ROUND, "log_every": 1,
            "export": None, "checkpoint_every_s": 1e9})
        train(probe, progress=False, max_steps=PROBE_ONE_ROUND + PROBE_ALL_ROUNDS)
        records = [json.loads(line) for line in (Path(scratch) / METRICS_NAME).read_text().splitlines()]
    cost = {r["step"]: r["sec"] + r["data_sec"] for r in records}
    one = statistics.median(cost[s] for s in range(6, PROBE_ONE_ROUND + 1))
    every = statistics.median(cost[s] for s in range(PROBE_ONE_ROUND + 2, PROBE_ONE_ROUND + PROBE_ALL_ROUNDS + 1))
    return one, every


def fit_steps(config: TrainConfig, seconds: float, one: float, every: float) -> TrainConfig:
    """`config` with `steps` (a multiple of 50) filling `seconds`, the one-round share kept."""
    share = config.first_prompt_only_steps / config.steps
    steps = max(50, int(seconds / (share * one + (1 - share) * every)) // 50 * 50)
    return config.model_copy(update={"steps": steps, "first_prompt_only_steps": round(share * steps)})


def split_weights(path: Path, out: Path) -> list[Path]:
    """Write `path`'s tensors as two safetensors files (half the keys each, same metadata)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        keys = sorted(f.keys())
        tensors = {k: f.get_tensor(k) for k in keys}
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
    paths = []
    for i, part in enumerate(halves):
        dst = out / f"{path.stem}.part{i}.safetensors"
        save_file({k: tensors[k] for k in part}, str(dst), metadata=metadata)
        paths.append(dst)
    return paths


def join_weights(parts: list[Path], dst: Path) -> Path:
    """Inverse of split_weights."""
    tensors, metadata = {}, None
    for part in parts:
        with safe_open(str(part), framework="pt") as f:
            metadata = f.metadata()
            tensors.update({k: f.get_tensor(k) for k in f.keys()})
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?")
    parser.add_argument("--budget-s", type=float, default=380, help="seconds for probe + training + export")
    parser.add_argument("--out", type=Path, help="folder for what comes back")
    parser.add_argument("--slice-s", type=float, default=90, help="export the latest weights this often")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="override a recipe key")
    parser.add_argument("--join", nargs="+", type=Path, help="PART0 PART1 DST: join split fp32 weights")
    args = parser.parse_args()
    if args.join:
        print(join_weights(args.join[:-1], args.join[-1]))
        return
    begin = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    config = load_train_config(args.recipe, **yaml_overrides(args.sets))
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True  # what autocast leaves in fp32 may use TF32 on a lease
    try:
        one, every = probe_step_seconds(config)
    except Exception:  # noqa: BLE001 - on a lease, a failing mixed-precision path must not waste the machine
        if config.amp == "off":
            raise
        traceback.print_exc()
        print("probe failed under autocast: training in fp32 instead", flush=True)
        config = config.model_copy(update={"amp": "off"})
        one, every = probe_step_seconds(config)
    reserve = 25.0  # final checkpoint, export, split
    left = args.budget_s - (time.perf_counter() - begin) - reserve
    config = fit_steps(config, left * 0.92, one, every)  # slices restart the data workers: keep a margin
    print(f"probe: {one:.3f} s/step (one round), {every:.3f} s/step (all rounds); {left:.0f} s left "
          f"-> steps {config.steps}, one-round steps {config.first_prompt_only_steps}", flush=True)
    (args.out / "recipe.yaml").write_text(yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False))
    out_dir = config.resolved_out_dir()
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a lease starts bare; a stale run here would be resumed with another schedule
    slice_steps = max(10, int(args.slice_s / (0.5 * (one + every))))
    while True:
        result = train(config, max_steps=slice_steps, progress=False)
        print(f"step {result.step}/{config.steps}  loss {result.losses[-1]:.4f}  "
              f"{time.perf_counter() - begin:.0f} s", flush=True)
        if result.finished:
            break
        export_weights(out_dir / WEIGHTS_NAME, args.out / "partial_fp16.safetensors")
    (args.out / "partial_fp16.safetensors").unlink(missing_ok=True)
    shutil.copy(config.export, args.out / Path(config.export).name)
    split_weights(out_dir / FINAL_NAME, args.out)
    shutil.copy(out_dir / METRICS_NAME, args.out / METRICS_NAME)
    print(f"done in {time.perf_counter() - begin:.0f} s: {sorted(p.name for p in args.out.iterdir())}")


if __name__ == "__main__":
    main()
