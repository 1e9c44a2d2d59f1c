"""Image-encoder time per image across the SAM family on this CPU: samflow against the reference code and against
vit_b, random weights, fp32, one image at a time.

    python benchmarks/family.py                 # mobile_sam and vit_b at 1024 px, tiny and TinyViT at 256 px
    python benchmarks/family.py --hq --repeats 5

Rounds are interleaved (every encoder once per round) and the best round is reported, so a machine shared with
other work disturbs the ratios less. References (test dependencies): `segment_anything` (vit_b), the TinyViT of
`segment_anything_hq` (MobileSAM's), HQ-SAM's ViT (`--hq`). Prints the CPU flags and the ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from samflow.models.sam import SamConfig, build_sam  # noqa: E402


def cpu_flags() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    model = re.search(r"Model name:\s*(.+)", text)
    flags = re.search(r"Flags:\s*(.+)", text)
    wanted = [f for f in (flags.group(1).split() if flags else [])
              if f.startswith(("avx", "amx", "fma", "f16c")) or f in ("sse4_2",)]
    return f"{model.group(1).strip() if model else 'unknown CPU'}; flags: {' '.join(wanted) or '(none listed)'}"


def encoders(hq: bool) -> dict[str, tuple[Callable[[], object], int]]:
    """name -> (a function encoding one random image, its input side)."""
    from official_reference import official_sam
    from sam_family_reference import reference_model

    torch.manual_seed(0)
    out: dict[str, tuple[Callable[[], object], int]] = {}

    def add(name: str, module: torch.nn.Module, size: int, call: Callable | None = None) -> None:
        x = torch.randn(1, 3, size, size)
        fn = call or module
        out[name] = ((lambda: fn(x)), size)

    vit_b = build_sam("vit_b")
    add("samflow vit_b", vit_b.image_encoder, 1024)
    official = official_sam(vit_b.config)
    official.load_state_dict(vit_b.state_dict())
    add("official vit_b", official.image_encoder, 1024)
    mobile = build_sam("mobile_sam")
    add("samflow mobile_sam", mobile.image_encoder, 1024)
    reference = reference_model(mobile.config)
    add("reference mobile_sam", reference.image_encoder, 1024)
    add("samflow tiny", build_sam("tiny").image_encoder, 256)
    small = build_sam(SamConfig(encoder="tiny_vit", image_size=256))
    add("samflow TinyViT-5M @256", small.image_encoder, 256)
    if hq:
        sam_hq = build_sam("sam_hq_vit_b")
        add("samflow sam_hq_vit_b", sam_hq.image_encoder, 1024, sam_hq.encode_image)
        ref_hq = reference_model(sam_hq.config)
        ref_hq.load_state_dict(sam_hq.state_dict())
        add("reference sam_hq_vit_b", ref_hq.image_encoder, 1024)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (best one reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--hq", action="store_true", help="also HQ-SAM vit_b (its encoder returns early features)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_flags()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    runs = encoders(args.hq)
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for fn, _ in runs.values():
            fn()  # warm-up
        for _ in range(args.repeats):
            for name, (fn, _) in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    best = {name: min(values) for name, values in times.items()}
    print(f"\n{'encoder':28s} {'px':>5s} {'best s':>8s}  all rounds")
    for name, values in times.items():
        print(f"{name:28s} {runs[name][1]:5d} {best[name]:8.3f}  " + " ".join(f"{v:.3f}" for v in values))
    print("\nratios (best rounds):")
    pairs = [("samflow mobile_sam", "reference mobile_sam"), ("samflow vit_b", "official vit_b"),
             ("samflow mobile_sam", "samflow vit_b"), ("reference mobile_sam", "official vit_b"),
             ("samflow TinyViT-5M @256", "samflow tiny"), ("samflow sam_hq_vit_b", "reference sam_hq_vit_b"),
             ("samflow sam_hq_vit_b", "samflow vit_b")]
    for a, b in pairs:
        if a in best and b in best:
            print(f"  {a} / {b}: {best[a] / best[b]:.3f}")


if __name__ == "__main__":
    main()
