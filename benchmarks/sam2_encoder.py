"""SAM 2 image-encoder speed on this CPU: samflow's Sam2 vs the reference (PyPI `sam2`) on identical random weights,
and vs samflow's SAM vit_b encoder; one process, 1024 px.

    python benchmarks/sam2_encoder.py [--model sam2.1_hiera_tiny] [--repeats 3] [--threads N] [--vit-b-official]

"Encoder" is everything that runs once per image: the Hiera trunk, the FPN neck and the decoder's conv_s0 /
conv_s1 (SAM2Base.forward_image) for SAM 2; the ViT with its neck for vit_b. The implementations are timed in turn,
`repeats` rounds, best of each, so a shared machine whose speed drifts affects all alike. Prints seconds per image,
the ratios, the max relative difference of the features, the load average and the CPU's lscpu flags.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import PeakRSS, cpu_report, load_average
from sam2_reference import official_sam2, perturb_

from samflow.models.sam import build_sam
from samflow.models.sam2.checkpoint import load_into
from samflow.models.sam2.config import PRESETS
from samflow.models.sam2.model import Sam2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2.1_hiera_tiny", choices=sorted(PRESETS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--vit-b-official", action="store_true", help="also time the official vit_b encoder")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = PRESETS[args.model]
    torch.manual_seed(0)
    ref = perturb_(official_sam2(config))
    ours = Sam2(config).eval()
    load_into(ours, ref.state_dict(), "reference")
    vit_b = build_sam("vit_b")
    size = config.image_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    print(f"model {args.model}  input {size}x{size}  threads {torch.get_num_threads()}")
    print(cpu_report())

    runs = {
        "sam2 samflow": lambda: ours.forward_image(x),
        "sam2 reference": lambda: ref.forward_image(x)["backbone_fpn"],
        "vit_b samflow": lambda: vit_b.image_encoder(x),
    }
    if args.vit_b_official:
        from official_reference import official_sam

        official = official_sam(vit_b.config)
        official.load_state_dict(vit_b.state_dict())
        runs["vit_b official"] = lambda: official.image_encoder(x)
    times = dict.fromkeys(runs, float("inf"))
    peaks: dict[str, int] = {}
    outputs: dict[str, object] = {}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for name, run in runs.items():
                with PeakRSS() as mem:
                    start = time.perf_counter()
                    outputs[name] = run()
                    times[name] = min(times[name], time.perf_counter() - start)
                peaks[name] = max(peaks.get(name, 0), mem.peak)
    rel = max(((a - b).abs().max() / b.abs().max()).item()
              for a, b in zip(outputs["sam2 samflow"], outputs["sam2 reference"]))
    for name in runs:
        print(f"{name:15s} {times[name]:7.2f} s/image   peak +{peaks[name] / 2**20:6.0f} MiB")
    t = times["sam2 samflow"]
    print(f"reference / samflow (SAM 2):        {times['sam2 reference'] / t:5.2f}x")
    print(f"samflow SAM 2 / samflow vit_b:      {t / times['vit_b samflow']:5.2f}  "
          f"(vit_b is {times['vit_b samflow'] / t:.2f}x the time)")
    if "vit_b official" in times:
        print(f"samflow SAM 2 / official vit_b:     {t / times['vit_b official']:5.2f}")
    print(f"max |diff| / max |ref| over the three feature maps: {rel:.2e}")
    print(load_average())


if __name__ == "__main__":
    main()
