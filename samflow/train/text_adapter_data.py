"""The text adapter's training data, computed once: an `ObjectSet` (SAM features of each image and, per object, its
target, mask, CLIP crop embedding, name and click) and the caption text embeddings that stand in for crops
(`CaptionTable`, `text_embeddings`, `modality_shift`).

Two sources: synthetic scenes rendered at SAM's input size (`build_objects`, samflow's own recipe), and any SA-1B or
COCO dataset (`build_dataset_objects`, for an official checkpoint on your data): each image resized and padded as
SAM's encoder takes it, objects of at least `min_area` pixels (at most `max_objects` per image, drawn at random),
each embedded by CLIP as the masked crop of the original image. A name (caption) per object where the data has one:
an annotation's `caption`, a COCO category's name, a synthetic object's colour + shape; SA-1B has none, and the
paper's recipe (CLIP image embeddings of crops only) needs none.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from samflow.data.captions import TEMPLATES, object_name, unique_objects
from samflow.data.samples import Sample
from samflow.data.synthetic import render_scene, scene_rng
from samflow.models.sam.sam import Sam
from samflow.models.text.adapter import PromptAdapter
from samflow.models.text.clip import ClipModel

log = logging.getLogger(__name__)

CaptionSource = Literal["auto", "none"]
ARTICLES = ("a ", "an ", "the ")


@dataclass
class ObjectSet:
    """SAM features per image, and per object: its image, soft low-res target, full mask in SAM's input frame (kept
    for held-out sets; training needs none), CLIP image embedding, name ("" where the data names none), an interior
    click, and whether its name is unique in its image (an object without a name counts as unique: nothing else
    in the image is called the same)."""

    features: torch.Tensor  # (S, C, h, w) float16
    scene: torch.Tensor  # (M,) long
    target: torch.Tensor  # (M, 4h, 4w) float16 in [0, 1]
    masks: list[np.ndarray]  # M bool (S, S) in SAM's input frame, or (0, 0) where not kept
    image_emb: torch.Tensor  # (M, D)
    names: list[str]
    points: torch.Tensor  # (M, 2) float, in SAM input pixels
    unique: torch.Tensor  # (M,) bool

    def to(self, device: torch.device | str) -> ObjectSet:
        return ObjectSet(self.features.to(device), self.scene.to(device), self.target.to(device), self.masks,
                         self.image_emb.to(device), self.names, self.points.to(device), self.unique.to(device))

    @property
    def named(self) -> torch.Tensor:
        """(M,) bool: the objects that have a name."""
        return torch.tensor([bool(n) for n in self.names], dtype=torch.bool, device=self.unique.device)


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
            ann = scene.annotations[i]  # rendered at SAM's input size: masks and clicks are in its frame
            scene_idx.append(len(features) - 1)
            masks.append(scene.masks[i])
            names.append(object_name(ann))
            points.append(ann["point"])
            unique.append(i in solo)
    return ObjectSet(torch.cat(features), torch.tensor(scene_idx), torch.cat(targets), masks, torch.cat(embs), names,
                     torch.tensor(points, dtype=torch.float32), torch.tensor(unique))


def object_caption(ann: dict[str, Any], categories: Mapping[int, str] | None = None) -> str:
    """The name of an annotated object, or "": its `caption` (without a leading article), its COCO category's name,
    or a synthetic object's colour + shape."""
    text = ann.get("caption")
    if isinstance(text, str) and text.strip():
        text = " ".join(text.split())
        for article in ARTICLES:
            if text.lower().startswith(article):
                return text[len(article):]
        return text
    if categories is not None and "category_id" in ann:
        return str(categories.get(int(ann["category_id"]), ""))
    if "color" in ann and "shape" in ann:
        return object_name(ann)
    return ""


def canonical_caption(name: str) -> str:
    """The text prompt of a name: 'a <name>'."""
    return f"a {name}"


def _interior_click(mask: torch.Tensor) -> tuple[float, float]:
    """(x, y) of the pixel of `mask` (S, S) farthest from its boundary, found on a grid of at most 256 a side."""
    from samflow.ops.distance import farthest_point

    side = mask.shape[-1]
    step = max(1, side // 256)
    small = mask[::step, ::step].numpy()
    point = farthest_point(small) if small.any() else None
    if point is None:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        return float(xs[len(xs) // 2]), float(ys[len(ys) // 2])
    return float(point[0] * step + step // 2), float(point[1] * step + step // 2)


@torch.no_grad()
def build_dataset_objects(sam: Sam, clip: ClipModel, dataset: Sequence[Sample], count: int, min_area: int,
                          max_objects: int = 16, captions: CaptionSource = "auto",
                          categories: Mapping[int, str] | None = None, seed: int = 0,
                          keep_masks: bool = True) -> ObjectSet:
    """The ObjectSet of the first `count` images of an SA-1B or COCO `dataset` (see the module doc); `captions`
    "none" ignores any names the data has (the paper's recipe); `keep_masks`: the full-resolution masks for
    held-out figures (a training set needs none)."""
    from samflow.predict.predictor import SamPredictor
    from samflow.train.data import to_model_input

    predictor = SamPredictor(sam)
    size = sam.image_encoder.img_size
    low = 4 * sam.prompt_encoder.image_embedding_size[0]
    features, scene_idx, targets, masks, embs, names, points, unique = [], [], [], [], [], [], [], []
    for index in range(min(count, len(dataset))):
        sample = dataset[index]
        if not len(sample.masks):
            continue
        areas = sample.masks.reshape(len(sample.masks), -1).sum(axis=1)
        keep = [i for i in np.flatnonzero(areas >= min_area) if not sample.annotations[i].get("iscrowd")] \
            if sample.annotations else list(np.flatnonzero(areas >= min_area))
        if len(keep) > max_objects:
            keep = sorted(np.random.default_rng([seed, index]).choice(keep, max_objects, replace=False).tolist())
        if not keep:
            continue
        _, frame = to_model_input(sample.image, sample.masks[keep], size)  # bool (K, S, S), as the encoder sees it
        alive = [j for j in range(len(keep)) if bool(frame[j].any())]  # an object can vanish when downscaled
        if not alive:
            continue
        keep, frame = [keep[j] for j in alive], frame[alive]
        features.append(predictor.encode(sample.image).features.half().cpu())
        targets.append(F.adaptive_avg_pool2d(frame.float()[:, None], low)[:, 0].half())
        embs.append(clip.embed_crops(sample.image, sample.masks[keep]).cpu())
        labels = [object_caption(sample.annotations[i], categories) if captions == "auto" and sample.annotations
                  else "" for i in keep]
        counts = Counter(labels)
        for j, label in enumerate(labels):
            scene_idx.append(len(features) - 1)
            masks.append(frame[j].numpy() if keep_masks else np.zeros((0, 0), bool))
            names.append(label)
            points.append(_interior_click(frame[j]))
            unique.append(not label or counts[label] == 1)
    if not features:
        raise ValueError(f"no object of at least {min_area} pixels in the first {count} images of the data")
    return ObjectSet(torch.cat(features), torch.tensor(scene_idx), torch.cat(targets), masks, torch.cat(embs), names,
                     torch.tensor(points, dtype=torch.float32), torch.tensor(unique))


@torch.no_grad()
def template_embeddings(clip: ClipModel, names: list[str]) -> tuple[list[str], torch.Tensor]:
    """The distinct non-empty `names` (sorted) and every caption template's CLIP text embedding of each, (U, T, D)."""
    distinct = sorted({n for n in names if n})
    if not distinct:
        return [], torch.zeros((0, len(TEMPLATES), clip.embed_dim), device=clip.device)
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
        if share <= 0 or not self.names:
            return emb
        draw = torch.rand(len(names), generator=generator) < share
        use = [j for j in torch.nonzero(draw).flatten().tolist() if names[j] in self.row]  # unnamed: their crop
        if not use:
            return emb
        template = torch.randint(len(TEMPLATES), (len(use),), generator=generator).tolist()
        rows = [self.row[names[j]] for j in use]
        emb = emb.clone()
        emb[use] = self.table[rows, template].to(emb.device, emb.dtype)
        return emb


def text_embeddings(clip: ClipModel, names: list[str], rng: np.random.Generator | None = None) -> torch.Tensor:
    """Caption embeddings (M, D): the canonical 'a <name>' or, with `rng`, a random caption template per name."""
    texts = [TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(n) if rng is not None else canonical_caption(n)
             for n in names]
    return clip.embed_text(texts).cpu()


def modality_shift(objects: ObjectSet, names: list[str], templates: torch.Tensor,
                   captions: Sequence[str] = (), clip: ClipModel | None = None) -> torch.Tensor:
    """Mean image embedding minus mean text embedding: over the named objects and their names (all caption
    templates; `names`, `templates` as template_embeddings returns them); with no name at all, over every object
    and the unrelated `captions` (embedded by `clip`: the gap between the modalities is mostly one offset, which
    unpaired means still estimate); with neither, zeros (no shift, the paper's recipe)."""
    if names:
        known = set(names)
        named = torch.tensor([n in known for n in objects.names], device=objects.image_emb.device)
        image_mean = objects.image_emb[named].mean(0)
        counts = Counter(objects.names)
        weights = torch.tensor([counts[n] for n in names], dtype=torch.float32, device=templates.device)
        text_mean = (templates.mean(1) * weights[:, None]).sum(0) / weights.sum()
        return image_mean - text_mean.to(image_mean.device)
    if captions and clip is not None:
        text_mean = clip.embed_text(list(captions)).mean(0)
        return objects.image_emb.mean(0) - text_mean.to(objects.image_emb.device)
    log.warning("no object has a name and no shift_captions are given: text prompts get no modality shift")
    return torch.zeros_like(objects.image_emb[0])
