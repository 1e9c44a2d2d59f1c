"""Image-encoder speed and peak memory: samflow vs the official segment-anything, same weights, one process.

    python benchmarks/encoder.py [--model vit_b] [--repeats 2] [--threads N] [--checkpoint sam_vit_b_01ec64.pth]

Prints seconds per image, the speed-up ratio, peak RSS rise of each, and the max relative difference of the
embeddings. Uses ../shared/images/dog.jpg when present.
"""

from __future__ import annotations

import argparse

import torch
from _common import PeakRSS, benchmark_image, best_time, twin_models

from samflow import SamPredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--repeats", type=int, default=2)
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

    with torch.inference_mode():
        with PeakRSS() as mem_ref:
            t_ref, e_ref = best_time(lambda: ref.image_encoder(x), args.repeats)
        with PeakRSS() as mem_ours:
            t_ours, e_ours = best_time(lambda: ours.image_encoder(x), args.repeats)
    rel = ((e_ours - e_ref).abs().max() / e_ref.abs().max()).item()
    print(f"official  {t_ref:8.2f} s/image   peak +{mem_ref.peak / 2**20:7.0f} MiB")
    print(f"samflow   {t_ours:8.2f} s/image   peak +{mem_ours.peak / 2**20:7.0f} MiB")
    print(f"speed-up  {t_ref / t_ours:8.2f}x    max |diff| / max |ref| = {rel:.2e}")


if __name__ == "__main__":
    main()
