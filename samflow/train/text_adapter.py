"""Train SAM's text prompt adapter, as in the paper: for objects above a size threshold the prompt is the CLIP
*image* embedding of the object's masked crop, mapped by the adapter to prompt tokens; at inference a CLIP *text*
embedding takes its place. SAM stays frozen (its point/box training is `samflow train`'s main loop), so only the
small adapter learns, on SAM features and CLIP embeddings computed once.

    samflow train recipes/sam_tiny_text_adapter.yaml        (a YAML with a `text_adapter:` section)
    python -m samflow.train.text_adapter recipes/sam_tiny_text_adapter.yaml

Part of the batches add one positive click beside the adapter tokens, so text and clicks combine in one decoder
call as they do at inference. Objects under the size threshold are left out: a point or box prompts them better.
`text_mix` > 0 departs from the paper: that share of prompts are the object's caption through CLIP's text tower
(a random template), so the adapter also learns from the embeddings it will be given. `device: auto` trains on a
GPU when there is one (the data is kept there: under 1 GB for 1000 scenes).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from samflow.data.captions import TEMPLATES, caption, object_name, unique_objects
from samflow.data.synthetic import render_scene, scene_rng
from samflow.errors import InputError
from samflow.models.sam.build import SHIPPED_WEIGHTS, build_sam
from samflow.models.sam.checkpoint import model_fingerprint
from samflow.models.sam.sam import Sam
from samflow.models.text.adapter import AdapterConfig, PromptAdapter, adapter_path_for, save_adapter
from samflow.models.text.clip import ClipModel, load_clip
from samflow.train.config import read_yaml_recipe

log = logging.getLogger(__name__)


class TextAdapterConfig(BaseModel):
    """An adapter training run (the `text_adapter:` section of a training YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sam: str = Field("tiny", description="SAM preset (its shipped weights) or a SAM checkpoint path")
    clip: str = Field("clip_tiny", description="CLIP model (name or config JSON), as load_clip")
    clip_checkpoint: str | None = None
    out: str | None = Field(None, description="adapter file; default: beside the SAM checkpoint")
    num_tokens: int = Field(2, ge=0, description="content tokens")
    num_clicks: int = Field(1, ge=0, description="click tokens located on SAM's image embedding")
    heatmap_weight: float = Field(1.0, ge=0, description="weight of the click heat-map loss")
    heatmap_steps: int = Field(1500, ge=0, description="first steps on the heat-map loss alone (fast: no decoder)")
    heatmap_batch: int = Field(128, gt=0)
    hidden: int = Field(256, gt=0)
    key_layers: int = Field(0, ge=0, description="conv layers giving each cell's key its neighbourhood (0: linear)")
    key_channels: int = Field(64, gt=0)
    data_seed: int = 21
    num_scenes: int = Field(600, gt=0, description="training scenes (SAM features and crops computed once)")
    eval_seed: int = 22
    eval_scenes: int = Field(200, gt=0)
    min_area: int = Field(200, ge=1, description="objects of fewer pixels get no text prompt (size threshold)")
    steps: int = Field(1500, gt=0)
    batch_size: int = Field(32, gt=0)
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    point_prob: float = Field(0.25, ge=0, le=1, description="batches that add one positive click to the text")
    text_mix: float = Field(0.0, ge=0, le=1, description="share of prompts made from caption text embeddings "
                                                         "(a random template, moved across the modality gap) "
                                                         "instead of crop image embeddings (0: the paper's recipe)")
    embedding_noise: float = Field(0.03, ge=0, description="gaussian noise on the CLIP embedding (robustness)")
    max_minutes: float | None = Field(None, gt=0)
    num_threads: int | None = 1
    device: str = Field("cpu", description="cpu, cuda, ... or auto (cuda when available)")
    seed: int = 0


@dataclass
class ObjectSet:
    """SAM features per scene, and per object: its scene, soft low-res target, full mask, CLIP image embedding,
    canonical caption, an interior click, and whether its colour + shape is unique in its scene."""

    features: torch.Tensor  # (S, C, h, w) float16
    scene: torch.Tensor  # (M,) long
    target: torch.Tensor  # (M, 4h, 4w) float16 in [0, 1]
    masks: list[np.ndarray]  # M bool (H, W)
    image_emb: torch.Tensor  # (M, D)
    names: list[str]
    points: torch.Tensor  # (M, 2) float, in SAM input pixels (scenes are rendered at SAM's input size)
    unique: torch.Tensor  # (M,) bool

    def to(self, device: torch.device | str) -> ObjectSet:
        return ObjectSet(self.features.to(device), self.scene.to(device), self.target.to(device), self.masks,
                         self.image_emb.to(device), self.names, self.points.to(device), self.unique.to(device))


@torch.no_grad()
def build_objects(sam: Sam, clip: ClipModel, seed: int, count: int, min_area: int) -> ObjectSet:
    """Render scenes, encode them with SAM once, and embed every object of at least `min_area` pixels with CLIP."""
    from samflow.predict.predictor import SamPredictor

    predictor = SamPredictor(sam)
    features, scene_idx, targets, masks, embs, names, points, unique = [], [], [], [], [], [], [], []
    low = 4 * sam.prompt_encoder.image_embedding_size[0]
    for index in range(count):
        scene = render_scene(scene_rng(seed, index), size=sam.image_encoder.img_size)
        keep = [i for i, a in enumerate(scene.annotations) if a["area"] >= min_area]
        if not keep:
            continue
        encoded = predictor.encode(scene.image)
        features.append(encoded.features.half().cpu())
        solo = set(unique_objects(scene.annotations))
        m = torch.from_numpy(scene.masks[keep]).float()[:, None]
        targets.append(F.adaptive_avg_pool2d(m, low)[:, 0].half())
        embs.append(clip.embed_crops(scene.image, scene.masks[keep]).cpu())
        for i in keep:
            ann = scene.annotations[i]
            scene_idx.append(len(features) - 1)
            masks.append(scene.masks[i])
            names.append(object_name(ann))
            points.append(ann["point"])
            unique.append(i in solo)
    return ObjectSet(torch.cat(features), torch.tensor(scene_idx), torch.cat(targets), masks, torch.cat(embs), names,
                     torch.tensor(points, dtype=torch.float32), torch.tensor(unique))


@torch.no_grad()
def template_embeddings(clip: ClipModel, names: list[str]) -> tuple[list[str], torch.Tensor]:
    """The distinct `names` (sorted) and every caption template's CLIP text embedding of each, (U, T, D)."""
    distinct = sorted(set(names))
    texts = [t.format(n) for n in distinct for t in TEMPLATES]
    return distinct, clip.embed_text(texts).view(len(distinct), len(TEMPLATES), -1)


class CaptionTable:
    """Every caption template's text embedding for every object name, moved across the adapter's modality gap:
    text prompts for training batches (`text_mix`) at the cost of an index."""

    def __init__(self, names: list[str], templates: torch.Tensor, adapter: PromptAdapter) -> None:
        """`names`, `templates` as template_embeddings returns them."""
        self.names = names
        self.row = {n: i for i, n in enumerate(names)}
        with torch.no_grad():
            self.table = adapter.text_to_image_space(templates)

    def mix(self, emb: torch.Tensor, names: list[str], share: float, generator: torch.Generator) -> torch.Tensor:
        """`emb` (N, D) with about `share` of its rows replaced by a random caption of the row's name."""
        if share <= 0:
            return emb
        use = torch.nonzero(torch.rand(len(names), generator=generator) < share).flatten().tolist()
        if not use:
            return emb
        template = torch.randint(len(TEMPLATES), (len(use),), generator=generator).tolist()
        rows = [self.row[names[j]] for j in use]
        emb = emb.clone()
        emb[use] = self.table[rows, template].to(emb.device, emb.dtype)
        return emb


def text_embeddings(clip: ClipModel, names: list[str], rng: np.random.Generator | None) -> torch.Tensor:
    """Caption embeddings (M, D): canonical 'a <name>' or, with `rng`, a random template per name."""
    texts = [caption({"color": n.split()[0], "shape": n.split()[1], "bbox": [0, 0, 1e9, 1e9]}, 256, rng)
             for n in names]
    return clip.embed_text(texts).cpu()


def modality_shift(objects: ObjectSet, names: list[str], templates: torch.Tensor) -> torch.Tensor:
    """Mean image embedding minus mean text embedding over the same objects (all caption templates); `names`,
    `templates` as template_embeddings returns them for the objects' names."""
    image_mean = objects.image_emb.mean(0)
    counts = Counter(objects.names)
    weights = torch.tensor([counts[n] for n in names], dtype=torch.float32, device=templates.device)
    text_mean = (templates.mean(1) * weights[:, None]).sum(0) / weights.sum()
    return image_mean - text_mean.to(image_mean.device)


def decode(sam: Sam, features: torch.Tensor, tokens: torch.Tensor, points: torch.Tensor | None = None,
           labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-mask low-res logits (N, 4h, 4w) and predicted IoU (N,) for adapter tokens (N, T, C), optionally
    with one click per prompt (N, 2) in SAM input pixels (positive unless `labels` (N,) say otherwise), placed
    before the text tokens as TextSamPredictor places them; features (N or 1, C, h, w)."""
    pe = sam.prompt_encoder
    sparse = tokens
    if points is not None:
        if labels is None:
            labels = torch.ones(len(points), dtype=torch.int, device=points.device)
        point_tokens = pe._embed_points(points[:, None], labels[:, None], pad=True)
        sparse = torch.cat([point_tokens.to(tokens.dtype), tokens], dim=1)
    h, w = pe.image_embedding_size
    dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(len(tokens), -1, h, w)
    low_res, iou = sam.mask_decoder.predict_masks(features, pe.get_dense_pe(), sparse, dense)
    return low_res[:, 0], iou[:, 0]


def heatmap_loss(heat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each click's heat map (N, M, h*w logits) against the object's area on the same grid: a
    direct signal for *where*, besides the mask loss through the frozen decoder."""
    side = int(round(heat.shape[-1] ** 0.5))
    area = F.adaptive_avg_pool2d(target[:, None], side).flatten(1)
    area = area / area.sum(1, keepdim=True).clamp(min=1e-6)
    return -(area[:, None] * heat.log_softmax(-1)).sum(-1).mean()


def _noisy(emb: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
    if not noise:
        return emb
    return F.normalize(emb + noise * torch.randn(emb.shape, generator=generator).to(emb.device), dim=-1)


def sample_prompts(objects: ObjectSet, size: int, config: TextAdapterConfig, generator: torch.Generator,
                   captions: CaptionTable | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`size` random objects (their indices, on the data's device) and their prompt embeddings: crop image
    embeddings, `text_mix` of them replaced by captions, with `embedding_noise`."""
    index = torch.randint(len(objects.names), (size,), generator=generator)
    emb = objects.image_emb[index.to(objects.image_emb.device)]
    if captions is not None:
        emb = captions.mix(emb, [objects.names[i] for i in index.tolist()], config.text_mix, generator)
    return index.to(objects.features.device), _noisy(emb, config.embedding_noise, generator)


def pretrain_heatmaps(adapter: PromptAdapter, sam: Sam, objects: ObjectSet, config: TextAdapterConfig,
                      generator: torch.Generator, captions: CaptionTable | None = None) -> None:
    """Teach the click queries where objects are (heat-map loss only): no decoder pass, so hundreds of steps cost
    what a few joint steps do; the joint phase then starts from clicks that land on their objects."""
    if not config.heatmap_steps or not config.num_clicks:
        return
    params = [p for n, p in adapter.named_parameters() if n.startswith(("net.", "key.", "key_context.", "log_scale"))]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    cfg = adapter.config
    for step in range(config.heatmap_steps):
        lr = config.lr * 0.5 * (1 + math.cos(math.pi * step / config.heatmap_steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index, emb = sample_prompts(objects, config.heatmap_batch, config, generator, captions)
        out = adapter.net(emb).view(-1, cfg.num_clicks + cfg.num_tokens, cfg.token_dim)
        heat = adapter.heatmaps(out[:, : cfg.num_clicks], objects.features[objects.scene[index]].float())
        loss = heatmap_loss(heat, objects.target[index].float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 250 == 0 or step == config.heatmap_steps - 1:
            log.info("heat-map step %d/%d loss %.3f", step, config.heatmap_steps, float(loss.detach()))


@torch.no_grad()
def pointing_accuracy(adapter: PromptAdapter, clip: ClipModel, sam: Sam, objects: ObjectSet) -> float:
    """How often the first click of a caption's text prompt lands on its object (objects unique in their scene)."""
    rows = torch.nonzero(objects.unique).flatten().to(objects.features.device)
    emb = adapter.text_to_image_space(text_embeddings(clip, [objects.names[i] for i in rows.tolist()], None))
    cfg = adapter.config
    out = adapter.net(emb).view(-1, cfg.num_clicks + cfg.num_tokens, cfg.token_dim)
    heat = adapter.heatmaps(out[:, :1], objects.features[objects.scene[rows]].float())[:, 0]
    side = int(round(heat.shape[-1] ** 0.5))
    cell = heat.argmax(-1)
    area = F.adaptive_avg_pool2d(objects.target[rows].float()[:, None], side).flatten(1)
    return float((area[torch.arange(len(rows), device=cell.device), cell] > 0.25).float().mean())


def adapter_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from samflow.train.losses import dice_loss, sigmoid_focal_loss

    return (20 * sigmoid_focal_loss(logits, target) + dice_loss(logits, target)).mean()


@torch.no_grad()
def evaluate(sam: Sam, clip: ClipModel, adapter: PromptAdapter, objects: ObjectSet, *, click: bool = True
             ) -> dict[str, float]:
    """Full-resolution mIoU over the objects unique in their scene: text path, image path, and text + one
    corrective click (at the pixel of the error region farthest from its boundary, the usual protocol), each one
    decoder call."""
    from samflow.ops.distance import farthest_point

    rows = torch.nonzero(objects.unique).flatten().cpu()
    text_emb = text_embeddings(clip, [objects.names[i] for i in rows], None)
    size = sam.image_encoder.img_size
    device = objects.features.device
    sums = {"text": 0.0, "image": 0.0, "text_click": 0.0, "point": 0.0}
    for start in range(0, len(rows), 64):
        part = rows[start : start + 64]
        feats = objects.features[objects.scene[part.to(device)]].float()
        gt = torch.from_numpy(np.stack([objects.masks[i] for i in part])).to(device)
        tokens = {"text": adapter.prompt_tokens(text_emb[start : start + 64], sam, feats, text=True),
                  "image": adapter.prompt_tokens(objects.image_emb[part.to(device)], sam, feats, text=False)}
        preds = {}
        for name, tok in tokens.items():
            logits, _ = decode(sam, feats, tok)
            preds[name] = F.interpolate(logits[:, None], (size, size), mode="bilinear", align_corners=False)[:, 0] > 0
            sums[name] += float(_iou(preds[name], gt).sum())
        # Reference: SAM with one click at the object's interior point (the synthetic annotation's), no text.
        logits, _ = decode(sam, feats, tokens["text"][:, :0], objects.points[part.to(device)])
        full = F.interpolate(logits[:, None], (size, size), mode="bilinear", align_corners=False)[:, 0] > 0
        sums["point"] += float(_iou(full, gt).sum())
        if click:
            coords, labels = [], []
            for j, i in enumerate(part.tolist()):
                pred, truth = preds["text"][j].cpu().numpy(), objects.masks[i]
                fn, fp = truth & ~pred, pred & ~truth
                region, label = (fn, 1) if fn.sum() >= fp.sum() else (fp, 0)
                coords.append(farthest_point(region) or tuple(objects.points[i].int().tolist()))
                labels.append(label if region.any() else 1)
            logits, _ = decode(sam, feats, tokens["text"], torch.tensor(coords, dtype=torch.float32, device=device),
                               torch.tensor(labels, dtype=torch.int, device=device))
            full = F.interpolate(logits[:, None], (size, size), mode="bilinear", align_corners=False)[:, 0] > 0
            sums["text_click"] += float(_iou(full, gt).sum())
    figures = {f"{k}_miou": v / max(len(rows), 1) for k, v in sums.items() if click or k != "text_click"}
    figures["objects"] = float(len(rows))
    return figures


def _iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    return inter / union.clamp(min=1)


def _sam_checkpoint(name: str) -> Path | None:
    if name in SHIPPED_WEIGHTS:
        return SHIPPED_WEIGHTS[name]
    return Path(name)


def prepare_objects(config: TextAdapterConfig, sam: Sam, clip: ClipModel) -> tuple[ObjectSet, ObjectSet]:
    """The training and held-out object sets of `config` (SAM features, CLIP crop embeddings, targets)."""
    started = time.perf_counter()
    train_set = build_objects(sam, clip, config.data_seed, config.num_scenes, config.min_area)
    eval_set = build_objects(sam, clip, config.eval_seed, config.eval_scenes, config.min_area)
    log.info("prepared %d training and %d held-out objects in %.0f s", len(train_set.names), len(eval_set.names),
             time.perf_counter() - started)
    return train_set, eval_set


def load_frozen_models(config: TextAdapterConfig) -> tuple[Sam, ClipModel]:
    """SAM and CLIP of `config`, frozen, on its device (`auto`: cuda when available)."""
    from samflow.devices import resolve_device

    device = resolve_device(config.device)
    sam = build_sam(config.sam if config.sam in SHIPPED_WEIGHTS else None, checkpoint=_sam_checkpoint(config.sam),
                    device=device)
    sam.requires_grad_(False)
    return sam, load_clip(config.clip, config.clip_checkpoint, device=device)


def train_text_adapter(config: TextAdapterConfig, prepared: tuple[Sam, ClipModel, ObjectSet, ObjectSet] | None = None
                       ) -> dict[str, Any]:
    """Train the adapter of `config`, evaluate it on held-out scenes, write it; returns the figures. `prepared`
    (SAM, CLIP, training and held-out sets, from load_frozen_models and prepare_objects) lets several runs share
    the frozen models and the data."""
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    if prepared is None:
        sam, clip = load_frozen_models(config)
        train_set, eval_set = prepare_objects(config, sam, clip)
    else:
        sam, clip, train_set, eval_set = prepared
    device = sam.device
    train_set, eval_set = train_set.to(device), eval_set.to(device)

    adapter = PromptAdapter(AdapterConfig(clip_dim=clip.embed_dim, num_tokens=config.num_tokens,
                                          num_clicks=config.num_clicks,
                                          token_dim=sam.prompt_encoder.embed_dim, hidden=config.hidden,
                                          key_layers=config.key_layers, key_channels=config.key_channels,
                                          clip_name=clip.config.name, clip_fingerprint=clip.fingerprint,
                                          sam_fingerprint=model_fingerprint(sam))).to(device)
    names, templates = template_embeddings(clip, train_set.names)
    adapter.text_shift.copy_(modality_shift(train_set, names, templates))
    captions = CaptionTable(names, templates, adapter) if config.text_mix > 0 else None
    started = time.perf_counter()
    pretrain_heatmaps(adapter, sam, train_set, config, generator, captions)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses: list[float] = []
    step = 0
    while True:
        progress = step / config.steps
        if config.max_minutes:
            progress = max(progress, (time.perf_counter() - started) / 60 / config.max_minutes)
        if progress >= 1:
            break
        lr = config.lr * min(1.0, (step + 1) / max(config.warmup_steps, 1)) * 0.5 * (1 + math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index, emb = sample_prompts(train_set, config.batch_size, config, generator, captions)
        feats = train_set.features[train_set.scene[index]].float()
        tokens, heat = adapter(emb, sam, feats)
        points = train_set.points[index] if torch.rand((), generator=generator) < config.point_prob else None
        logits, _ = decode(sam, feats, tokens, points)
        target = train_set.target[index].float()
        loss = adapter_loss(logits.float(), target) + config.heatmap_weight * heatmap_loss(heat, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 100 == 0:
            log.info("step %d (%.0f%%) loss %.4f lr %.1e, %.1f min", step, 100 * progress, np.mean(losses[-100:]), lr,
                     (time.perf_counter() - started) / 60)
        step += 1
    minutes = (time.perf_counter() - started) / 60
    adapter.eval()
    figures = evaluate(sam, clip, adapter, eval_set)
    if config.num_clicks:
        figures["text_pointing"] = pointing_accuracy(adapter, clip, sam, eval_set)
    figures.update(train_minutes=minutes, steps=step, final_loss=float(np.mean(losses[-100:])) if losses else 0.0)
    out = Path(config.out) if config.out else adapter_path_for(_sam_checkpoint(config.sam))
    save_adapter(adapter, out)
    log.info("wrote %s: %s", out, {k: round(v, 4) for k, v in figures.items()})
    return figures


def load_text_adapter_config(path: str | Path) -> TextAdapterConfig:
    path = Path(path)
    raw = read_yaml_recipe(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("text_adapter"), dict):
        raise InputError(f"{path}: expected a `text_adapter:` section")
    try:
        return TextAdapterConfig(**raw["text_adapter"])
    except ValidationError as exc:
        raise InputError(f"{path}: invalid text_adapter section:\n{exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train SAM's text prompt adapter (SAM frozen).")
    parser.add_argument("recipe", help="YAML with a text_adapter: section")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train_text_adapter(load_text_adapter_config(args.recipe))
    return 0


if __name__ == "__main__":
    sys.exit(main())
