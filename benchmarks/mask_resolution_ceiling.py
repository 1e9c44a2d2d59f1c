"""The best mIoU any SAM of a given input size can reach on synthetic scenes, set by its low-res mask grid alone.

    python benchmarks/mask_resolution_ceiling.py [--seed 1000] [--scenes 200] [--scene-size 256] [--grid 64 128]

SAM predicts logits on a grid 4x coarser than its input (64x64 for a 256-px model) and upsamples them bilinearly.
Here each ground-truth mask is area-averaged onto that grid, turned into logits and upsampled the same way: the IoU
with the truth is what a perfect decoder would score. Printed per object size, as `samflow eval` reports them.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from samflow.data.synthetic import render_scene, scene_rng
from samflow.evaluation.points import size_category


def ceiling(seed: int, scenes: int, scene_size: int, grid: int) -> dict[str, tuple[int, float]]:
    ious: dict[str, list[float]] = {"all": []}
    for index in range(1, scenes + 1):
        scene = render_scene(scene_rng(seed, index), scene_size)
        truth = torch.as_tensor(scene.masks)
        coarse = F.interpolate(truth.float()[:, None], size=(grid, grid), mode="area")
        logits = torch.logit(coarse.clamp(1e-3, 1 - 1e-3))
        best = F.interpolate(logits, size=truth.shape[-2:], mode="bilinear", align_corners=False)[:, 0] > 0
        inter = (best & truth).flatten(1).sum(1).float()
        union = (best | truth).flatten(1).sum(1).clamp(min=1).float()
        for iou, area in zip((inter / union).tolist(), truth.flatten(1).sum(1).tolist(), strict=True):
            ious["all"].append(iou)
            ious.setdefault(size_category(area), []).append(iou)
    return {name: (len(values), float(np.mean(values))) for name, values in ious.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--scene-size", type=int, default=256)
    parser.add_argument("--grid", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args()
    for grid in args.grid:
        result = ceiling(args.seed, args.scenes, args.scene_size, grid)
        cells = "  ".join(f"{name} {iou:.3f} (n={n})" for name, (n, iou) in result.items())
        print(f"logit grid {grid}x{grid} (a {4 * grid}-px SAM): {cells}")


if __name__ == "__main__":
    main()
