"""Image-encoder speed and peak memory: samflow vs the official segment-anything, same weights, one process.

    python benchmarks/encoder.py [--model vit_b] [--repeats 3] [--threads N] [--checkpoint sam_vit_b_01ec64.pth]

Prints seconds per image, the speed-up ratio, peak RSS rise of each, and the max relative difference of the
embeddings; and the matmul floor (every GEMM of the encoder at its shape, timed alone: benchmarks/encoder_floor.py)
with each implementation's distance from it. The three are timed in turn, `repeats` rounds, best of each, so a
shared machine whose speed drifts affects all three alike. Uses ../shared/images/dog.jpg when present.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import PeakRSS, benchmark_image, twin_models
from encoder_floor import floor_seconds

from samflow import SamPredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ours, ref = twin_models(args.model, checkpoint=args.checkpoint)
    image = benchmark_image()
    predictor = SamPredictor(ours)
    pixels, _ = predictor._prepare(image, "RGB")
    x = ours.preprocess(pixels.float())
    size = ours.config.image_size
    print(f"model {args.model}  input {tuple(image.shape)} -> {size}x{size}  threads {torch.get_num_threads()}")

    times: dict[str, float] = {"official": float("inf"), "samflow": float("inf"), "floor": float("inf")}
    runs = {"official": ref.image_encoder, "samflow": ours.image_encoder}
    peaks, outputs = {}, {}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for name, encoder in runs.items():
                with PeakRSS() as mem:
                    start = time.perf_counter()
                    outputs[name] = encoder(x)
                    times[name] = min(times[name], time.perf_counter() - start)
                peaks[name] = max(peaks.get(name, 0), mem.peak)
            times["floor"] = min(times["floor"], floor_seconds(ours.config, repeats=1))
    e_ref, e_ours = outputs["official"], outputs["samflow"]
    rel = ((e_ours - e_ref).abs().max() / e_ref.abs().max()).item()
    floor = times["floor"]
    for name in runs:
        print(f"{name:9s} {times[name]:8.2f} s/image   peak +{peaks[name] / 2**20:7.0f} MiB   "
              f"{times[name] / floor:5.2f}x the floor")
    print(f"floor     {floor:8.2f} s/image   (the encoder's GEMMs alone, same shapes)")
    print(f"speed-up  {times['official'] / times['samflow']:8.2f}x    max |diff| / max |ref| = {rel:.2e}")

if __name__ == "__main__":
    main()
