"""Train several variants of a text prompt adapter recipe on one set of frozen models and data, within a budget.

    python recipes/text_adapter_variants.py recipes/sam_tiny_text_adapter.yaml --out OUT \
        --set device=auto --variant linear:key_layers=0 --variant conv:key_layers=2 [--budget-s 400]

The adapter's data (SAM features and CLIP crop embeddings of every object) is the slow part on a CPU; on a lent
GPU the training steps are cheap, so one lease can compare variants. `--set` applies to all of them, each
`--variant NAME:key=value,...` adds its own; each writes OUT/adapter_NAME.safetensors, and OUT/figures.json gains
its held-out figures (text, image, text + click mIoU, pointing) as it finishes. A variant that would not fit in
what is left of the budget (judged by the slowest one so far) is skipped and says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from samflow.engine.overrides import yaml_overrides
from samflow.fileio import write_json_atomic
from samflow.train.text_adapter import (
    TextAdapterConfig,
    load_frozen_models,
    load_text_adapter_config,
    prepare_objects,
    train_text_adapter,
)


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise SystemExit(f"--variant {text!r}: expected NAME:key=value,... with a plain NAME")
    return name, yaml_overrides([pair for pair in rest.split(",") if pair])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="override for every variant")
    parser.add_argument("--variant", action="append", default=[], help="NAME:key=value,key=value")
    parser.add_argument("--budget-s", type=float, default=float("inf"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    begin = time.perf_counter()
    base = load_text_adapter_config(args.recipe)
    base = TextAdapterConfig(**{**base.model_dump(), **yaml_overrides(args.sets)})
    variants = [parse_variant(v) for v in args.variant] or [("base", {})]
    args.out.mkdir(parents=True, exist_ok=True)
    sam, clip = load_frozen_models(base)
    train_set, eval_set = prepare_objects(base, sam, clip)
    figures: dict[str, dict] = {}
    slowest = 0.0
    for name, update in variants:
        left = args.budget_s - (time.perf_counter() - begin)
        if slowest and left < slowest * 1.1:
            print(f"skipped {name}: {left:.0f} s left, a variant took up to {slowest:.0f} s", flush=True)
            continue
        started = time.perf_counter()
        config = TextAdapterConfig(**{**base.model_dump(), **update, "out": str(args.out / f"adapter_{name}.safetensors")})
        result = train_text_adapter(config, (sam, clip, train_set, eval_set))
        slowest = max(slowest, time.perf_counter() - started)
        figures[name] = {"settings": update, **{k: round(v, 4) for k, v in result.items()},
                         "seconds": round(time.perf_counter() - started, 1)}
        write_json_atomic(args.out / "figures.json", figures, indent=1)
        print(name, json.dumps(figures[name]), flush=True)


if __name__ == "__main__":
    main()
