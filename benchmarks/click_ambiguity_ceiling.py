"""The best most-confident single-click mIoU on synthetic scenes, set by ambiguous clicks alone.

    python benchmarks/click_ambiguity_ceiling.py [--seed 1000] [--scenes 200] [--scene-size 256]

The paper's protocol clicks each object at the pixel farthest from its boundary. A shape with an inner part is
annotated twice (the whole, which includes the part, and the part), and when the part sits near the middle both
clicks fall inside the part, a few pixels apart: the same prompt, two right answers. A model that gives one mask
for such a click scores 1 on one object of the pair and IoU(part, whole) on the other at best, whatever its masks'
quality; the oracle (best of three) is not limited this way. Printed per object size, as `samflow eval` reports.
"""

from __future__ import annotations

import argparse

import numpy as np

from samflow.data.synthetic import render_scene, scene_rng
from samflow.evaluation.points import _peak, size_category
from samflow.ops.metrics import mask_iou


def ceiling(seed: int, scenes: int, scene_size: int) -> tuple[dict[str, tuple[int, float]], dict[str, float]]:
    best: dict[str, list[float]] = {"all": []}
    pairs, gaps = 0, []
    for index in range(1, scenes + 1):
        masks = render_scene(scene_rng(seed, index), scene_size).masks
        masks = masks[masks.reshape(len(masks), -1).any(axis=1)]
        clicks = [_peak(m)[1:] for m in masks]
        for i, mask in enumerate(masks):
            x, y = clicks[i]
            # Confusable: each object's click lies inside the other's mask (a part and its whole).
            partners = [j for j in range(len(masks)) if j != i and masks[j][y, x] and mask[clicks[j][1], clicks[j][0]]]
            score = 1.0
            if partners:
                overlap = max(float(mask_iou(mask, masks[j])) for j in partners)
                score = (1 + overlap) / 2  # one answer for two objects: right for one, IoU(part, whole) for the other
                pairs += 1
                gaps.append(min(float(np.hypot(x - clicks[j][0], y - clicks[j][1])) for j in partners))
            best["all"].append(score)
            best.setdefault(size_category(int(mask.sum())), []).append(score)
    figures = {"ambiguous_share": pairs / max(len(best["all"]), 1),
               "median_click_gap_px": float(np.median(gaps)) if gaps else 0.0}
    return {name: (len(v), float(np.mean(v))) for name, v in best.items()}, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--scene-size", type=int, default=256)
    args = parser.parse_args()
    per_size, figures = ceiling(args.seed, args.scenes, args.scene_size)
    print(f"{args.scenes} scenes (seed {args.seed}): {figures['ambiguous_share']:.1%} of the objects share their "
          f"first click with another (median {figures['median_click_gap_px']:.1f} px apart)")
    print(f"{'objects':<10}{'n':>6}{'1-click ceiling':>18}")
    for name in ("all", "small", "medium", "large"):
        if name in per_size:
            n, value = per_size[name]
            print(f"{name:<10}{n:>6}{value:>18.3f}")


if __name__ == "__main__":
    main()
