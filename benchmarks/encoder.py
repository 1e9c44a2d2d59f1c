"""Image-encoder speed and peak memory: samflow vs the official segment-anything, same weights, one process.

    python benchmarks/encoder.py [--model vit_b] [--repeats 3] [--threads N] [--checkpoint sam_vit_b_01ec64.pth]
                                 [--bf16] [--no-floor]

Prints seconds per image, the speed-up ratio, peak RSS rise of each, and the max relative difference of the
embeddings; and the matmul floor (every GEMM of the encoder at its shape, timed alone: benchmarks/encoder_floor.py)
with each implementation's distance from it. The three are timed in turn, `repeats` rounds, best of each, so a
shared machine whose speed drifts affects all three alike. Uses ../shared/images/dog.jpg when present.
`--bf16` adds samflow built with dtype="bfloat16" (same weights); `--no-floor` skips the floor (for vit_h it
takes as long as an encoder run). Prints the CPU's flags and the load average.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import PeakRSS, benchmark_image, cpu_report, load_average, twin_models
from encoder_floor import floor_seconds

from samflow import SamPredictor
from samflow.models.sam import build_sam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", help="also samflow with dtype='bfloat16'")
    parser.add_argument("--no-floor", action="store_true", help="skip the matmul floor")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time by CPU seconds, not the wall clock (with --threads 1: robust on a busy machine)")
    args = parser.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)

    ours, ref = twin_models(args.model, checkpoint=args.checkpoint)
    image = benchmark_image()
    predictor = SamPredictor(ours)
    pixels, _ = predictor._prepare(image, "RGB")
    x = ours.preprocess(pixels.float())
    size = ours.config.image_size
    print(f"model {args.model}  input {tuple(image.shape)} -> {size}x{size}  threads {torch.get_num_threads()}  "
          f"{'CPU time' if args.cpu_time else 'wall clock'}")
    print(f"{cpu_report()}; {load_average()}")

    times: dict[str, float] = {"official": float("inf"), "samflow": float("inf"), "floor": float("inf")}
    runs = {"official": (ref.image_encoder, x), "samflow": (ours.image_encoder, x)}
    if args.bf16:
        bf16 = build_sam(ours.config, dtype="bfloat16")
        bf16.load_state_dict(ours.state_dict())
        runs["samflow bf16"] = (bf16.image_encoder, ours.preprocess(pixels.float()).bfloat16())
        times["samflow bf16"] = float("inf")
    peaks, outputs = {}, {}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for name, (encoder, inputs) in runs.items():
                with PeakRSS() as mem:
                    start = clock()
                    outputs[name] = encoder(inputs)
                    times[name] = min(times[name], clock() - start)
                peaks[name] = max(peaks.get(name, 0), mem.peak)
            if not args.no_floor:
                times["floor"] = min(times["floor"], floor_seconds(ours.config, repeats=1))
    e_ref = outputs["official"].float()
    floor = times["floor"]
    for name in runs:
        rel = ((outputs[name].float() - e_ref).abs().max() / e_ref.abs().max()).item()
        print(f"{name:12s} {times[name]:8.2f} s/image   peak +{peaks[name] / 2**20:7.0f} MiB   "
              + (f"{times[name] / floor:5.2f}x the floor   " if not args.no_floor else "")
              + f"x{times['official'] / times[name]:.2f} official   max |diff| / max |ref| = {rel:.2e}")
    if not args.no_floor:
        print(f"floor        {floor:8.2f} s/image   (the encoder's GEMMs alone, same shapes)")
    print(load_average())

if __name__ == "__main__":
    main()
