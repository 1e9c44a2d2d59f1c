"""The text adapter's training data, computed once: an `ObjectSet` (SAM features of synthetic scenes and, per object,
its target, mask, CLIP crop embedding, name and click) and the caption text embeddings that stand in for crops
(`CaptionTable`, `text_embeddings`, `modality_shift`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from samflow.data.captions import TEMPLATES, caption, object_name, unique_objects
from samflow.data.synthetic import render_scene, scene_rng
from samflow.models.sam.sam import Sam
from samflow.models.text.adapter import PromptAdapter
from samflow.models.text.clip import ClipModel


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
