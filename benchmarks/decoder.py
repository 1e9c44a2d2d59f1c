"""Prompt-to-mask latency with a cached embedding, and the gain of batching many boxes into one call.

    python benchmarks/decoder.py [--model vit_b] [--prompts 64] [--repeats 5] [--threads N]

The decoder is the same for vit_b/l/h (64x64 embedding grid); the encoder runs once, outside the timings.
Rows: official SamPredictor.predict (one point), samflow predict (one point), 64 boxes as 64 calls (official and
samflow), 64 boxes in one samflow call; plus decoder-only time (low-res logits, no upsampling).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _common import benchmark_image, twin_models
from segment_anything import SamPredictor as OfficialPredictor

from samflow import SamPredictor


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ours_model, ref_model = twin_models(args.model)
    image = benchmark_image()
    ours, ref = SamPredictor(ours_model), OfficialPredictor(ref_model)
    ours.set_image(image)
    # Same embedding for both: the encoder is not what this measures.
    ref.set_torch_image(torch.zeros(1, 3, *ours.input_size), image.shape[:2])
    ref.features = ours.features.clone()

    h, w = image.shape[:2]
    point = dict(point_coords=np.array([[w * 0.5, h * 0.5]]), point_labels=np.array([1]))
    rng = np.random.default_rng(0)
    xy0 = rng.uniform(0, 0.5, (args.prompts, 2)) * [w, h]
    boxes = np.hstack([xy0, xy0 + rng.uniform(0.1, 0.5, (args.prompts, 2)) * [w, h]])

    with torch.inference_mode():
        t_ref_point = median_ms(lambda: ref.predict(**point), args.repeats)
        t_point = median_ms(lambda: ours.predict(**point), args.repeats)
        coords = torch.as_tensor(ours.transform.apply_coords(point["point_coords"], ours.original_size))[None].float()
        labels = torch.ones(1, 1, dtype=torch.int)

        def decoder_only(model):
            sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            return model.mask_decoder(ours.features, model.prompt_encoder.get_dense_pe(), sparse, dense, True)

        t_dec_ref = median_ms(lambda: decoder_only(ref_model), args.repeats)
        t_dec = median_ms(lambda: decoder_only(ours_model), args.repeats)
        reps = max(1, args.repeats // 3)
        t_ref_loop = median_ms(lambda: [ref.predict(box=b) for b in boxes], reps)
        t_loop = median_ms(lambda: [ours.predict(box=b) for b in boxes], reps)
        t_batch = median_ms(lambda: ours.predict(box=boxes), reps)

    n = args.prompts
    print(f"model {args.model}  image {w}x{h}  threads {torch.get_num_threads()}")
    print(f"one point, full predict      official {t_ref_point:7.1f} ms   samflow {t_point:7.1f} ms   "
          f"x{t_ref_point / t_point:.2f}")
    print(f"one point, decoder only      official {t_dec_ref:7.1f} ms   samflow {t_dec:7.1f} ms   "
          f"x{t_dec_ref / t_dec:.2f}")
    print(f"{n} boxes, {n} calls          official {t_ref_loop:7.0f} ms   samflow {t_loop:7.0f} ms")
    print(f"{n} boxes, one batched call  samflow {t_batch:7.0f} ms  = {t_batch / n:.1f} ms/box;  "
          f"x{t_loop / t_batch:.2f} vs {n} samflow calls, x{t_ref_loop / t_batch:.2f} vs {n} official calls")


if __name__ == "__main__":
    main()
