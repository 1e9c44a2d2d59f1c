"""A small SAM whose masks depend on the prompt, for the automatic-mask-generation tests.

Random weights give near-identical blobs for every point (and stability scores of 0), which would make a
comparison with the official generator vacuous. So the prompt encoder and mask decoder of a small model are
trained briefly on synthetic scenes (a click -> the mask of the object under it), on top of a frozen random
encoder. Training is seeded; the weights are cached by pytest (keyed by this file's content) so reruns skip it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from samflow import SamConfig
from samflow.data.synthetic import render_scene

# 256 px input (16 x 16 embedding grid, 64 x 64 low-res masks) with a narrow encoder and a 32-channel decoder:
# small enough to train in seconds, the official classes accept the sizes.
AMG_CONFIG = SamConfig(
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    image_size=256,
    window_size=4,
    prompt_embed_dim=32,
    decoder_mlp_dim=128,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
)

SCENES = 24
STEPS = 150
POINTS_PER_SCENE = 8
SCENES_PER_STEP = 4
LR = 3e-3


def _targets(scene, points: np.ndarray) -> np.ndarray:
    """bool (P, H, W): for each point the smallest annotated region containing it, else the background."""
    masks = scene.masks
    background = ~masks.any(axis=0)
    out = np.empty((len(points), *masks.shape[1:]), dtype=bool)
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    for i, (x, y) in enumerate(points.astype(int)):
        inside = np.flatnonzero(masks[:, y, x])
        out[i] = masks[inside[np.argmin(areas[inside])]] if inside.size else background
    return out


def _sample_points(scene, rng: np.random.Generator) -> np.ndarray:
    """float (P, 2): three in four points on an object (a uniformly chosen annotation), the rest anywhere."""
    points = rng.uniform(0, 255, (POINTS_PER_SCENE, 2))
    for i in range(POINTS_PER_SCENE):
        if rng.random() < 0.75:
            ys, xs = np.nonzero(scene.masks[rng.integers(len(scene.masks))])
            if xs.size:
                j = rng.integers(xs.size)
                points[i] = (xs[j] + 0.5, ys[j] + 0.5)
    return points


def train_small_sam(seed: int = 0, steps: int = STEPS) -> torch.nn.Module:
    """Train the prompt encoder and mask decoder of an AMG_CONFIG model; returns it in eval mode."""
    from samflow.models.sam import build_sam
    from samflow.predictor import SamPredictor

    torch.manual_seed(seed)
    model = build_sam(AMG_CONFIG)
    rng = np.random.default_rng(seed)
    scenes = [render_scene(seed * 1000 + i, size=256) for i in range(SCENES)]
    pixels = torch.cat([SamPredictor(model)._prepare(s.image, "RGB")[0] for s in scenes]).float()
    pixels = model.preprocess(pixels)
    optimiser = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=LR, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in range(steps):
        chosen = rng.choice(SCENES, SCENES_PER_STEP, replace=False)
        coords, targets = [], []
        for index in chosen:
            points = _sample_points(scenes[index], rng)
            coords.append(points)
            target = torch.from_numpy(_targets(scenes[index], points)).float()[:, None]
            targets.append(F.interpolate(target, size=(64, 64), mode="area")[:, 0])
        embeddings = model.image_encoder(pixels[torch.as_tensor(chosen)])
        feats = embeddings.repeat_interleave(POINTS_PER_SCENE, dim=0)
        coords_t = torch.as_tensor(np.concatenate(coords), dtype=torch.float)[:, None]
        labels = torch.ones(coords_t.shape[:2], dtype=torch.int)
        target = torch.cat(targets)[:, None]  # (B, 1, 64, 64) soft
        sparse, dense = model.prompt_encoder(points=(coords_t + 0.0, labels), boxes=None, masks=None)
        image_pe = model.prompt_encoder.get_dense_pe()
        logits, iou = model.mask_decoder(feats, image_pe, sparse, dense, multimask_output=True)
        bce = F.binary_cross_entropy_with_logits(logits, target.expand_as(logits), reduction="none").mean((-1, -2))
        prob = logits.sigmoid()
        inter = (prob * target).sum((-1, -2))
        dice = 1 - (2 * inter + 1) / (prob.sum((-1, -2)) + target.sum((-1, -2)) + 1)
        per_mask = bce + dice
        best = per_mask.argmin(dim=1)
        with torch.no_grad():
            hard = logits > 0
            true_iou = (hard & (target > 0.5)).sum((-1, -2)) / ((hard | (target > 0.5)).sum((-1, -2)) + 1e-6)
        rows = torch.arange(len(best))
        loss = per_mask[rows, best].mean() + per_mask.mean() * 0.1 + F.mse_loss(iou, true_iou.float())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    model.eval()
    return model


def trained_checkpoint(directory: Path, seed: int = 0) -> Path:
    """The trained weights as a samflow safetensors file under `directory` (trained on first use)."""
    from samflow.models.sam import save_checkpoint

    key = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    path = Path(directory) / f"amg_sam_{seed}_{key}.safetensors"
    if not path.is_file():
        save_checkpoint(train_small_sam(seed), path)
    return path


def scene_image(seed: int, size: int | tuple[int, int] = 256) -> np.ndarray:
    """A synthetic scene not seen in training."""
    return render_scene(10_000 + seed, size=size).image
