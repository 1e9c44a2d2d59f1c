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

Data: samflow's synthetic scenes (`data_seed`, `num_scenes`; held out: `eval_seed`, `eval_scenes`), or your own
(`data:` / `eval_data:`, each `{kind: sa1b, path: FOLDER}` or `{kind: coco, path: IMAGES, annotations: JSON}`, the
first `num_scenes` / `eval_scenes` images of each) for any SAM checkpoint, the official vit_b/l/h included
(recipes/text_adapter_official.yaml). Captions where the data has them (`captions: auto`: COCO category names, an
annotation's `caption`); SA-1B has none, which the paper's recipe does not need (`text_mix: 0`); the modality shift
then comes from `shift_captions` (unpaired), or is left at zero. The adapter is written beside the checkpoint
(`<stem>_text_adapter.safetensors`, where `samflow.segment(..., checkpoint=...)` looks) unless `out` says where,
with the CLIP it was trained with recorded in it (the text models load that CLIP by default).

This module holds the run's config and its loop; the object sets and caption embeddings are
`samflow.train.text_adapter_data`, the decoder pass and losses `text_adapter_losses`, the held-out figures
`text_adapter_eval`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from samflow.models.sam.build import SHIPPED_WEIGHTS, build_sam
from samflow.models.sam.checkpoint import model_fingerprint
from samflow.models.sam.sam import Sam
from samflow.models.text.adapter import AdapterConfig, PromptAdapter, adapter_path_for, save_adapter
from samflow.models.text.clip import ClipModel
from samflow.models.text.clip_config import SHIPPED_CLIP
from samflow.models.text.clip_loading import load_clip
from samflow.train.config import DataConfig
from samflow.train.recipes import load_recipe_section, recipe_main, run_progress, set_warmup_cosine_lr
from samflow.train.text_adapter_data import (
    CaptionSource,
    CaptionTable,
    ObjectSet,
    build_dataset_objects,
    build_objects,
    modality_shift,
    template_embeddings,
)
from samflow.train.text_adapter_eval import evaluate, pointing_accuracy
from samflow.train.text_adapter_losses import adapter_loss, decode, heatmap_loss

log = logging.getLogger(__name__)


class TextAdapterConfig(BaseModel):
    """An adapter training run (the `text_adapter:` section of a training YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sam: str = Field("tiny", description="SAM preset (its shipped weights) or a SAM checkpoint path (official .pth "
                                        "included)")
    sam_model: str | dict[str, Any] | None = Field(None, description="the checkpoint's preset or SamConfig fields "
                                                                     "(None: read from the checkpoint)")
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
    num_scenes: int = Field(600, gt=0, description="training scenes or images (SAM features and crops computed "
                                                   "once)")
    eval_seed: int = 22
    eval_scenes: int = Field(200, gt=0)
    data: DataConfig | None = Field(None, description="training images of your own (sa1b or coco; None: the "
                                                      "synthetic scenes of data_seed)")
    eval_data: DataConfig | None = Field(None, description="held-out images of your own (None: synthetic eval_seed)")
    captions: CaptionSource = Field("auto", description="auto: the names the data gives (COCO categories, "
                                                        "annotation captions); none: crops only")
    max_objects_per_image: int = Field(16, gt=0, description="your data: objects per image, drawn at random")
    shift_captions: list[str] = Field(default_factory=list, description="data without names: captions whose "
                                                                        "mean text embedding estimates the "
                                                                        "modality shift (empty: no shift)")
    min_area: int = Field(200, ge=1, description="objects of fewer pixels get no text prompt (size threshold; "
                                                 "pixels of the image as stored)")
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


def _sam_checkpoint(name: str) -> Path | None:
    if name in SHIPPED_WEIGHTS:
        return SHIPPED_WEIGHTS[name]
    return Path(name)


def _objects(config: TextAdapterConfig, data: DataConfig | None, seed: int, count: int, sam: Sam, clip: ClipModel,
             keep_masks: bool) -> ObjectSet:
    if data is None or data.kind == "synthetic":
        return build_objects(sam, clip, seed if data is None else data.seed, count, config.min_area)
    from samflow.train.data import SceneSource

    dataset = SceneSource(data).dataset
    assert dataset is not None
    return build_dataset_objects(sam, clip, dataset, count, config.min_area, config.max_objects_per_image,
                                 config.captions, getattr(dataset, "categories", None), config.seed, keep_masks)


def prepare_objects(config: TextAdapterConfig, sam: Sam, clip: ClipModel) -> tuple[ObjectSet, ObjectSet]:
    """The training and held-out object sets of `config` (SAM features, CLIP crop embeddings, targets)."""
    started = time.perf_counter()
    train_set = _objects(config, config.data, config.data_seed, config.num_scenes, sam, clip, keep_masks=False)
    eval_set = _objects(config, config.eval_data, config.eval_seed, config.eval_scenes, sam, clip, keep_masks=True)
    log.info("prepared %d training and %d held-out objects in %.0f s", len(train_set.names), len(eval_set.names),
             time.perf_counter() - started)
    return train_set, eval_set


def load_frozen_models(config: TextAdapterConfig) -> tuple[Sam, ClipModel]:
    """SAM and CLIP of `config`, frozen, on its device (`auto`: cuda when available)."""
    from samflow.devices import resolve_device

    device = resolve_device(config.device)
    model = config.sam_model if config.sam_model is not None else (config.sam if config.sam in SHIPPED_WEIGHTS
                                                                   else None)
    sam = build_sam(model, checkpoint=_sam_checkpoint(config.sam), device=device)
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
    adapter.text_shift.copy_(modality_shift(train_set, names, templates, config.shift_captions, clip))
    captions = CaptionTable(names, templates, adapter) if config.text_mix > 0 and names else None
    started = time.perf_counter()
    pretrain_heatmaps(adapter, sam, train_set, config, generator, captions)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses: list[float] = []
    step = 0
    while (progress := run_progress(step, config.steps, started, config.max_minutes)) < 1:
        lr = set_warmup_cosine_lr(optimizer, config.lr, step, config.warmup_steps, progress)
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
    adapter.clip_source = _clip_source(config)
    save_adapter(adapter, out)
    log.info("wrote %s: %s", out, {k: round(v, 4) for k, v in figures.items()})
    return figures


def _clip_source(config: TextAdapterConfig) -> dict[str, str | None]:
    """Where the text models find this run's CLIP again: a shipped name as it is, files as absolute paths."""
    def absolute(value: str | None) -> str | None:
        return str(Path(value).resolve()) if value and Path(value).exists() else value

    if config.clip in SHIPPED_CLIP and config.clip_checkpoint is None:
        return {"model": config.clip, "checkpoint": None}
    return {"model": absolute(config.clip), "checkpoint": absolute(config.clip_checkpoint)}


def load_text_adapter_config(path: str | Path) -> TextAdapterConfig:
    """The `text_adapter:` section of the recipe at `path`."""
    return load_recipe_section(path, "text_adapter", TextAdapterConfig)


def main(argv: list[str] | None = None) -> int:
    return recipe_main(argv, "Train SAM's text prompt adapter (SAM frozen).", "YAML with a text_adapter: section",
                       load_text_adapter_config, train_text_adapter)


if __name__ == "__main__":
    sys.exit(main())
