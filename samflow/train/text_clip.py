"""Train a small CLIP (an open_clip config) on masked object crops of synthetic scenes with colour + shape captions,
then calibrate its absolute ranking threshold on held-out scenes. `recipes/clip_tiny.yaml` makes samflow's
shipped `clip_tiny`:

    python -m samflow.train.text_clip recipes/clip_tiny.yaml

Captions of the same object name ("a red star", "the red star") are all positives of each other's crops, so the
contrastive loss uses a positive *matrix* instead of the diagonal (a batch of 128 holds many crops of one name).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from samflow.data.captions import caption, is_small, object_name
from samflow.data.synthetic import render_scene, scene_rng
from samflow.models.text.clip import ClipModel
from samflow.models.text.clip_config import resolve_clip_config
from samflow.models.text.clip_loading import build_open_clip, save_clip
from samflow.models.text.crops import crop_windows, masked_crops
from samflow.train.recipes import load_recipe_section, recipe_main, run_progress, set_warmup_cosine_lr

log = logging.getLogger(__name__)


class TextClipConfig(BaseModel):
    """A small-CLIP training run on synthetic crops (the `text_clip:` section of a recipe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: str = Field("clip_tiny", description="open_clip config: samflow's name, a JSON file or a built-in name")
    out: str = Field("samflow/weights/clip_tiny.safetensors", description="where the weights are written")
    data_seed: int = 11
    num_scenes: int = Field(2000, gt=0, description="training scenes (their crops are rendered once)")
    calib_seed: int = Field(12, description="held-out scenes for the ranking threshold")
    calib_scenes: int = Field(200, gt=0)
    scene_size: int = 256
    min_area: int = Field(64, ge=1, description="objects smaller than this many pixels are not cropped")
    steps: int = Field(1500, gt=0)
    batch_size: int = Field(128, gt=1)
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    max_minutes: float | None = Field(None, gt=0, description="stop early after this long (then anneal ends)")
    num_threads: int | None = 1
    seed: int = 0
    export_dtype: str = "float16"


@dataclass
class CropSet:
    """Crops uint8 (N, 3, S, S) with their annotations (shape, colour, bbox...) and scene index."""

    crops: torch.Tensor
    annotations: list[dict[str, Any]]
    scene: np.ndarray


def render_crops(seed: int, count: int, size: int, crop_size: int, min_area: int, jitter: bool) -> CropSet:
    """Masked crops of every object of at least `min_area` pixels in scenes 0..count-1 of `seed`."""
    crops, anns, scene_ids = [], [], []
    for index in range(count):
        rng = scene_rng(seed, index)
        scene = render_scene(rng, size)
        keep = [i for i, a in enumerate(scene.annotations) if a["area"] >= min_area]
        if not keep:
            continue
        masks = scene.masks[keep]
        windows = crop_windows(masks)
        if jitter:  # a little scale and shift, as masks from SAM will not frame objects exactly like the truth
            side = windows[:, 2:] - windows[:, :2]
            scale = rng.uniform(0.9, 1.25, size=(len(keep), 1))
            shift = rng.uniform(-0.08, 0.08, size=(len(keep), 2)) * side
            centre = (windows[:, :2] + windows[:, 2:]) / 2 + shift
            windows = np.concatenate([centre - side * scale / 2, centre + side * scale / 2], axis=1)
        pixels = masked_crops(scene.image, masks, crop_size, windows=windows)
        crops.append((pixels * 255).round().to(torch.uint8))
        anns.extend(scene.annotations[i] for i in keep)
        scene_ids.extend([index] * len(keep))
    return CropSet(torch.cat(crops), anns, np.asarray(scene_ids))


def positives(anns: list[dict[str, Any]], captions: list[tuple[str, bool]], image_side: int) -> torch.Tensor:
    """bool (N crops, M captions): the caption names the crop's object ('small' only fits small objects)."""
    names = [object_name(a) for a in anns]
    small = [is_small(a, image_side) for a in anns]
    return torch.tensor([[n == cname and (s or not csmall) for cname, csmall in captions]
                         for n, s in zip(names, small)])


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, pos: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with several positives: cross-entropy against the uniform distribution over positives."""
    logits = scale * image @ text.T
    target_i = pos.float() / pos.sum(1, keepdim=True).clamp(min=1)
    target_t = pos.T.float() / pos.T.sum(1, keepdim=True).clamp(min=1)
    loss_i = -(target_i * logits.log_softmax(1)).sum(1).mean()
    loss_t = -(target_t * logits.T.log_softmax(1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def _augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips and quarter turns (shapes are drawn at any angle, so these keep every caption true)."""
    if torch.rand((), generator=generator) < 0.5:
        pixels = pixels.flip(-1)
    return torch.rot90(pixels, int(torch.randint(4, (), generator=generator)), dims=(-2, -1))


def calibrate_threshold(clip: ClipModel, calib: CropSet, image_side: int) -> dict[str, float]:
    """The cosine threshold that best separates a named object's own crop from every crop of a scene that lacks it.

    For each held-out scene: present scores = cosine of 'a <name>' with its object's crop (names unique in the
    scene); absent scores = the best cosine of an absent name over all the scene's crops. The threshold maximises
    the balanced accuracy of the two; returns it with the accuracies it reaches.
    """
    from samflow.data.captions import absent_names, unique_objects

    image_emb = clip.embed_images(calib.crops.float() / 255)
    present, absent = [], []
    for scene in np.unique(calib.scene):
        rows = np.flatnonzero(calib.scene == scene)
        anns = [calib.annotations[i] for i in rows]
        sims_rows = image_emb[rows]
        for j in unique_objects(anns):
            text = clip.embed_text(f"a {object_name(anns[j])}")[0]
            present.append(float(sims_rows[j] @ text))
        for name in absent_names(anns)[:8]:
            absent.append(float((sims_rows @ clip.embed_text(f"a {name}")[0]).max()))
    present_a, absent_a = np.sort(present), np.sort(absent)
    candidates = np.unique(np.concatenate([present_a, absent_a]))
    recall = 1 - np.searchsorted(present_a, candidates, side="left") / len(present_a)
    reject = np.searchsorted(absent_a, candidates, side="left") / len(absent_a)
    best = int(np.argmax(recall + reject))
    # Midway to the next absent score keeps a margin on both sides.
    threshold = float(candidates[best])
    return {"threshold": threshold, "present_recall": float(recall[best]), "absent_rejected": float(reject[best]),
            "present_mean": float(present_a.mean()), "absent_mean": float(absent_a.mean())}


def top1_accuracy(clip: ClipModel, calib: CropSet) -> float:
    """How often 'a <name>' picks its own object among the crops of its scene (names unique in the scene)."""
    from samflow.data.captions import unique_objects

    image_emb = clip.embed_images(calib.crops.float() / 255)
    hits = total = 0
    for scene in np.unique(calib.scene):
        rows = np.flatnonzero(calib.scene == scene)
        anns = [calib.annotations[i] for i in rows]
        for j in unique_objects(anns):
            sims = image_emb[rows] @ clip.embed_text(f"a {object_name(anns[j])}")[0]
            hits += int(int(sims.argmax()) == j)
            total += 1
    return hits / max(total, 1)


def train_text_clip(config: TextClipConfig) -> dict[str, Any]:
    """Train, calibrate and write the CLIP of `config`; returns the figures (also logged)."""
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    clip_config = resolve_clip_config(config.config)
    model = build_open_clip(clip_config)
    clip = ClipModel(model, clip_config)
    size = clip_config.image_size

    started = time.perf_counter()
    data = render_crops(config.data_seed, config.num_scenes, config.scene_size, size, config.min_area, jitter=True)
    calib = render_crops(config.calib_seed, config.calib_scenes, config.scene_size, size, config.min_area,
                         jitter=False)
    log.info("rendered %d training and %d held-out crops in %.0f s", len(data.annotations), len(calib.annotations),
             time.perf_counter() - started)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=config.lr, fused=True)
    model.train()
    started = time.perf_counter()
    losses: list[float] = []
    step = 0
    # Progress in steps or in time, whichever is further: a time budget still ends with a full anneal.
    while (progress := run_progress(step, config.steps, started, config.max_minutes)) < 1:
        lr = set_warmup_cosine_lr(optimizer, config.lr, step, config.warmup_steps, progress)
        index = torch.randint(len(data.annotations), (config.batch_size,), generator=generator)
        anns = [data.annotations[int(i)] for i in index]
        texts, keys = [], []
        for a in anns:
            text = caption(a, config.scene_size, rng)
            texts.append(text)
            keys.append((object_name(a), "small" in text.split()))
        pixels = _augment(data.crops[index].float() / 255, generator)
        image = model.encode_image(clip.normalize_pixels(pixels), normalize=True)
        text = model.encode_text(clip.tokenize(texts), normalize=True)
        loss = contrastive_loss(image, text, positives(anns, keys, config.scene_size),
                                model.logit_scale.exp().clamp(max=100))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            log.info("step %d (%.0f%%) loss %.3f lr %.2e, %.1f min", step, 100 * progress, np.mean(losses[-50:]), lr,
                     (time.perf_counter() - started) / 60)
        step += 1
    minutes = (time.perf_counter() - started) / 60
    model.eval()
    clip._text_cache.clear()  # embeddings computed during training are stale
    figures = calibrate_threshold(clip, calib, config.scene_size)
    figures["top1"] = top1_accuracy(clip, calib)
    figures.update(train_minutes=minutes, steps=step, final_loss=float(np.mean(losses[-50:])))
    out = save_clip(model, clip_config, config.out, rank_threshold=figures["threshold"],
                    dtype=getattr(torch, config.export_dtype))
    log.info("wrote %s: %s", out, {k: round(v, 4) for k, v in figures.items()})
    return figures


def load_text_clip_config(path: str | Path) -> TextClipConfig:
    """The `text_clip:` section of the recipe at `path` (or, without one, its top level)."""
    return load_recipe_section(path, "text_clip", TextClipConfig, bare=True)


def main(argv: list[str] | None = None) -> int:
    return recipe_main(argv, "Train samflow's small CLIP on synthetic crops.",
                       "YAML with a text_clip: section (recipes/clip_tiny.yaml)", load_text_clip_config,
                       train_text_clip)


if __name__ == "__main__":
    sys.exit(main())
