"""Calibrating the presence decision of the prompt-adapter route (samflow.models.text.presence), and the figures it
is judged by, on captioned images: captions of objects that are there, and captions of objects that are not.

    records = presence_records(sam, models, samples)         # decode + CLIP-score every caption's candidates once
    calibration, figures = calibrate_presence(records)       # the threshold, weight and crop views chosen on them
    presence_figures(records, calibration)                   # absent refused, present mIoU (refused = IoU 0)

Captions (`presence_captions`), per image:
- synthetic scenes (annotations with `color` and `shape`): present = the canonical caption ("a red star") of every
  object whose colour + shape is unique in its scene, of at least `min_area` pixels (the adapter's size threshold);
  absent = `absent_per_image` colour + shape names no object of the scene has, drawn at random (seeded per image);
- COCO-style annotations with `category_id` and a category table: present = "a <name>" of each category in the
  image (its object: the instance the answer overlaps most), absent = category names not in the image.

Present mIoU counts a refused present caption as IoU 0: refusing a good answer costs what a wrong answer costs.
Choose the calibration on validation images only (samflow's: synthetic seed 23); report on held-out ones (22).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from samflow.data.captions import absent_names, caption, unique_objects
from samflow.data.samples import Sample
from samflow.errors import InputError
from samflow.models.sam.sam import Sam
from samflow.models.text.presence import Augment, PresenceCalibration, crop_embeddings
from samflow.models.text.presence_head import PresenceHead, PresenceHeadConfig
from samflow.ops.mask_descriptors import mask_descriptors
from samflow.ops.metrics import mask_iou
from samflow.predict.text import TextModels, TextSamPredictor

AUGMENTS: tuple[Augment, ...] = ("none", "hflip", "dihedral")
QUALITY_WEIGHTS = (0.0, 0.1, 0.3, 0.5)
THRESHOLDS = np.round(np.arange(0.0, 1.0, 0.0025), 4)
MIN_PRESENT_MIOU = 0.755  # the rule's floor on validation: the held-out target 0.75, plus a little margin
MIN_AREA = 200  # samflow.train.text_adapter.TextAdapterConfig().min_area: smaller objects get no text prompt
RANK_MIN_AREA = 16  # rank.rank_masks never keeps a mask under this many pixels
# Words that name nothing a synthetic scene holds (no colour, no shape): absent captions as users type them ("a
# giraffe"), in three disjoint lists: the presence head trains on the first, the threshold is chosen with the
# second, the benchmark reports on the third (words neither step ever saw).
OTHER_WORDS = {
    "train": ("dog", "cat", "car", "bicycle", "bus", "train", "truck", "boat", "bird", "horse", "sheep", "cow",
              "elephant", "bear", "zebra", "umbrella", "handbag", "tie", "suitcase", "frisbee", "kite", "bottle",
              "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "tree", "house", "flower",
              "hat", "shoe", "window"),
    "validation": ("broccoli", "carrot", "pizza", "donut", "cake", "chair", "couch", "bed", "toilet", "laptop",
                   "mouse", "remote", "keyboard", "phone", "microwave", "oven", "toaster", "sink"),
    "test": ("giraffe", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "toothbrush", "person",
             "airplane", "motorcycle", "traffic light", "fire hydrant", "stop sign", "bench", "lamp", "guitar",
             "mountain"),
}


@dataclass
class CaptionSet:
    """One image's captions: `texts`, and for each the indices of the masks it may name (empty: absent)."""

    texts: list[str]
    targets: list[list[int]]


def presence_captions(sample: Sample, key: Sequence[int], absent_per_image: int = 6, min_area: int = MIN_AREA,
                      categories: Mapping[int, str] | None = None, other_words: Sequence[str] = (),
                      other_per_image: int = 0) -> CaptionSet:
    """Present and absent captions of `sample` (see the module doc); `key` seeds the draw of absent ones. Then
    `other_per_image` more absent captions "a <word>" of `other_words` (OTHER_WORDS: words no scene holds), drawn
    after the others so that those stay the same draw."""
    anns = sample.annotations
    rng = np.random.default_rng(list(key))
    areas = sample.masks.reshape(len(sample.masks), -1).sum(axis=1) if len(sample.masks) else np.zeros(0)
    texts: list[str] = []
    targets: list[list[int]] = []
    if anns and all("color" in a and "shape" in a for a in anns):
        for i in unique_objects(anns):
            if areas[i] >= min_area:
                texts.append(caption(anns[i]))
                targets.append([i])
        absent = [f"a {name}" for name in absent_names(anns)]
    elif categories is not None:
        by_name: dict[str, list[int]] = {}
        for i, a in enumerate(anns):
            name = categories.get(int(a.get("category_id", -1)))
            if name is not None and areas[i] >= min_area and not a.get("iscrowd"):
                by_name.setdefault(name, []).append(i)
        for name, members in by_name.items():
            texts.append(f"a {name}")
            targets.append(members)
        here = {categories.get(int(a.get("category_id", -1))) for a in anns}
        absent = [f"a {name}" for name in sorted(set(categories.values()) - here)]
    else:
        raise InputError("presence captions need synthetic scenes (colour + shape annotations) or COCO categories")
    for k in rng.choice(len(absent), size=min(absent_per_image, len(absent)), replace=False):
        texts.append(absent[int(k)])
        targets.append([])
    if other_per_image and other_words:
        for k in rng.choice(len(other_words), size=min(other_per_image, len(other_words)), replace=False):
            texts.append(f"a {other_words[int(k)]}")
            targets.append([])
    return CaptionSet(texts, targets)


@dataclass
class PresenceRecords:
    """Per caption: whether it names an object of its image, the IoU of each of the decoder's K candidates (and of
    its single mask, the answer without the check) with that object, SAM's predicted IoU of each candidate, and the
    CLIP cosine of each candidate's crop with the caption, per crop view."""

    present: np.ndarray  # (N,) bool
    iou: np.ndarray  # (N, K)
    single_iou: np.ndarray  # (N,)
    quality: np.ndarray  # (N, K)
    cosines: dict[str, np.ndarray]  # augment -> (N, K); -inf for candidates rank_masks never keeps
    texts: list[str] = field(default_factory=list)
    image: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,) image index
    descriptors: np.ndarray | None = None  # (N, K, len(DESCRIPTORS)): each candidate's mask_descriptors
    text_embeddings: np.ndarray | None = None  # (N, E): each caption's CLIP text embedding
    same_colour: np.ndarray | None = None  # (N,) bool: synthetic captions whose colour an object has
    other_word: np.ndarray | None = None  # (N,) bool: absent captions of other words (OTHER_WORDS)

    def __len__(self) -> int:
        return int(self.present.shape[0])


@torch.no_grad()
def presence_records(sam: Sam, models: TextModels, samples: Iterable[Sample], seed: int = 0,
                     absent_per_image: int = 6, min_area: int = MIN_AREA, augments: Sequence[Augment] = AUGMENTS,
                     categories: Mapping[int, str] | None = None, other_words: Sequence[str] = (),
                     other_per_image: int = 0) -> PresenceRecords:
    """Decode every caption of every sample with the adapter (three candidates and the single mask) and score each
    candidate's crop with CLIP under each crop view in `augments`. `seed` and the sample's index seed the absent
    captions, as `presence_captions` (with `other_per_image` of `other_words`)."""
    predictor = TextSamPredictor(sam, models)
    clip = models.clip
    present, ious, singles, quality, images, texts = [], [], [], [], [], []
    descriptors, text_embeddings, same_colour, other = [], [], [], []
    cosines: dict[str, list[np.ndarray]] = {a: [] for a in augments}
    for index, sample in enumerate(samples):
        captions = presence_captions(sample, (seed, index), absent_per_image, min_area, categories, other_words,
                                     other_per_image)
        if not captions.texts:
            continue
        predictor.set_image(sample.image)
        masks, scores, _ = predictor.predict(text=captions.texts, multimask_output=True, presence_threshold=False)
        single, _, _ = predictor.predict(text=captions.texts, multimask_output=False, presence_threshold=False)
        if masks.ndim == 3:
            masks, scores, single = masks[None], scores[None], single[None]
        n, k, h, w = masks.shape
        for i, members in enumerate(captions.targets):
            if members:  # the object named: the one of them the answers overlap most
                truth = sample.masks[members]
                best = mask_iou(masks[i][:, None], truth[None])  # (K, members)
                pick = int(best.max(axis=0).argmax())
                ious.append(best[:, pick])
                singles.append(float(mask_iou(single[i, 0], truth[pick])))
            else:
                ious.append(np.zeros(k))
                singles.append(0.0)
        flat = masks.reshape(n * k, h, w)
        small = (flat.reshape(n * k, -1).sum(axis=1) < RANK_MIN_AREA).reshape(n, k)
        text_emb = clip.embed_text(captions.texts)
        descriptors.append(mask_descriptors(sample.image, flat).reshape(n, k, -1))
        text_embeddings.append(text_emb.float().cpu().numpy())
        colours = {a.get("color") for a in sample.annotations}
        same_colour += [len(t.split()) > 2 and t.split()[1] in colours for t in captions.texts]
        words = {f"a {w}" for w in other_words}
        other += [not members and t in words for t, members in zip(captions.texts, captions.targets)]
        for augment in augments:
            emb = crop_embeddings(clip, sample.image, flat, augment).view(n, k, -1)
            cos = (emb * text_emb[:, None].to(emb.device)).sum(-1).cpu().numpy().astype(np.float64)
            cos[small] = -np.inf
            cosines[augment].append(cos)
        present += [bool(m) for m in captions.targets]
        quality.append(scores.astype(np.float64))
        images += [index] * n
        texts += captions.texts
    if not present:
        raise InputError("no captions: the samples hold no object a caption names")
    return PresenceRecords(np.asarray(present), np.stack(ious), np.asarray(singles), np.concatenate(quality),
                           {a: np.concatenate(c) for a, c in cosines.items()}, texts, np.asarray(images),
                           np.concatenate(descriptors), np.concatenate(text_embeddings), np.asarray(same_colour), np.asarray(other, dtype=bool))


def head_probabilities(records: PresenceRecords, head: PresenceHead, augment: Augment = "dihedral") -> np.ndarray:
    """The presence head's probability (N, K) of every candidate of `records` (CLIP cosines under `augment`)."""
    if records.descriptors is None or records.text_embeddings is None:
        raise InputError("these presence records hold no mask descriptors or text embeddings (made by an older "
                         "presence_records): make them again")
    return head.probabilities(records.cosines[augment], records.quality, records.descriptors,
                              records.text_embeddings)


def presence_figures(records: PresenceRecords, threshold: float | PresenceCalibration, quality_weight: float = 0.0,
                     augment: Augment = "none", head: PresenceHead | None = None,
                     probabilities: np.ndarray | None = None) -> dict[str, float]:
    """What a presence decision does on `records`: the share of absent captions refused, the present mIoU with
    refusals counted as IoU 0 (and, for reference, without the check: the decoder's single mask), the share of
    present captions refused, and absent captions refused whose colour names an object in the image (synthetic;
    the hard ones: only the shape is wrong). A calibration whose scorer is "head" needs `head` (or its
    `probabilities` on these records, `head_probabilities`)."""
    scorer = "cosine"
    if isinstance(threshold, PresenceCalibration):
        threshold, quality_weight, augment, scorer = (threshold.threshold, threshold.quality_weight,
                                                      threshold.augment, threshold.scorer)
    elif head is not None or probabilities is not None:
        scorer = "head"
    if scorer == "head":
        if probabilities is None:
            if head is None:
                raise InputError("this presence decision is a trained head's: pass head=")
            probabilities = head_probabilities(records, head, augment)
        ok = probabilities >= threshold
        order = np.where(ok, probabilities, -np.inf)
    else:
        cos = records.cosines[augment]
        ok = cos >= threshold
        order = np.where(ok, cos + quality_weight * records.quality, -np.inf)
    picked = order.argmax(axis=1)
    kept = ok.any(axis=1)
    chosen = records.iou[np.arange(len(records)), picked] * kept
    p = records.present
    other = records.other_word if records.other_word is not None else np.zeros_like(p)
    absent = ~p & ~other  # the scene's own vocabulary (colour + shape, or categories)
    figures = {"threshold": float(threshold), "quality_weight": float(quality_weight),
               "absent_refused": float(1 - kept[absent].mean()) if absent.any() else float("nan"),
               "present_miou": float(chosen[p].mean()), "present_refused": float(1 - kept[p].mean()),
               "present_miou_unchecked": float(records.single_iou[p].mean()),
               "present_captions": int(p.sum()), "absent_captions": int(absent.sum())}
    if records.same_colour is not None and (absent & records.same_colour).any():
        figures["absent_refused_same_colour"] = float(1 - kept[absent & records.same_colour].mean())
    if other.any():
        figures["absent_refused_other_words"] = float(1 - kept[other].mean())
        figures["other_word_captions"] = int(other.sum())
    return figures


def fit_presence_head(records: PresenceRecords, augment: Augment = "dihedral", hidden: int = 32,
                      weight_decay: float = 1e-3, steps: int = 2000, lr: float = 3e-3, min_iou: float = 0.5,
                      seed: int = 0) -> PresenceHead:
    """A presence head trained on `records` (training images, never the ones it is calibrated or judged on):
    full-batch AdamW on the logistic loss of each candidate being right (its caption present and its IoU with the
    object at least `min_iou`); inputs standardised with these records' mean and spread."""
    if records.descriptors is None or records.text_embeddings is None:
        raise InputError("fitting a presence head needs records with mask descriptors and text embeddings")
    torch.manual_seed(seed)
    config = PresenceHeadConfig(text_dim=int(records.text_embeddings.shape[-1]), hidden=hidden)
    head = PresenceHead(config)
    x = head.features(records.cosines[augment], records.quality, records.descriptors, records.text_embeddings)
    flat = x.reshape(-1, x.shape[-1])
    head.mean.copy_(flat.mean(0))
    head.scale.copy_(flat.std(0).clamp_min(1e-6))
    y = torch.from_numpy(records.present[:, None] & (records.iou >= min_iou)).float()
    optimiser = torch.optim.AdamW(head.net.parameters(), lr=lr, weight_decay=weight_decay)
    head.train()
    with torch.enable_grad():
        for _ in range(steps):
            optimiser.zero_grad()
            logits = head.net((x - head.mean) / head.scale)[..., 0]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
            loss.backward()
            optimiser.step()
    return head.eval()


def calibrate_presence(records: PresenceRecords, min_present_miou: float = MIN_PRESENT_MIOU,
                       augments: Sequence[Augment] | None = None,
                       quality_weights: Sequence[float] = QUALITY_WEIGHTS, thresholds: np.ndarray = THRESHOLDS,
                       provenance: dict[str, Any] | None = None, head: PresenceHead | None = None,
                       head_augment: Augment = "dihedral") -> tuple[PresenceCalibration, dict[str, float]]:
    """The presence decision that refuses the most absent captions of `records` while their present mIoU (refused
    = IoU 0) stays at least `min_present_miou`: over crop views, predicted-IoU weights and a threshold grid (ties:
    the fewer crop views, the smaller weight, the lower threshold); with a trained `head`, over thresholds of its
    probability (views `head_augment`, as it was trained). Returns it, with its figures on `records` in its
    provenance, and the figures."""
    best: tuple[tuple[float, ...], Augment, float, float, dict[str, float]] | None = None
    if head is not None:
        probabilities = head_probabilities(records, head, head_augment)
        grid = np.unique(np.concatenate([np.round(np.arange(0.0, 1.0, 0.0025), 4),
                                         np.quantile(probabilities.max(axis=1), np.linspace(0, 1, 401))]))
        for threshold in grid:
            figures = presence_figures(records, float(threshold), probabilities=probabilities)
            if figures["present_miou"] < min_present_miou:
                continue
            key = (figures["absent_refused"], -float(threshold))
            if best is None or key > best[0]:
                best = (key, head_augment, 0.0, float(threshold), figures)
    else:
        for a_rank, augment in enumerate(augments or list(records.cosines)):
            for w_rank, weight in enumerate(quality_weights):
                for threshold in thresholds:
                    figures = presence_figures(records, float(threshold), weight, augment)
                    if figures["present_miou"] < min_present_miou:
                        continue
                    key = (figures["absent_refused"], -a_rank, -w_rank, -float(threshold))
                    if best is None or key > best[0]:
                        best = (key, augment, weight, float(threshold), figures)
    if best is None:
        raise InputError(f"no presence threshold keeps the present mIoU at {min_present_miou} on these records "
                         "(even refusing nothing): lower min_present_miou")
    _, augment, weight, threshold, figures = best
    record = {"rule": f"most absent captions refused while present mIoU (refused = IoU 0) >= {min_present_miou}",
              "validation": {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()},
              "date": datetime.date.today().isoformat(), **(provenance or {})}
    calibration = PresenceCalibration(threshold=threshold, quality_weight=weight, augment=augment,
                                      scorer="head" if head is not None else "cosine", provenance=record)
    return calibration, figures


__all__ = ["AUGMENTS", "CaptionSet", "PresenceRecords", "calibrate_presence", "fit_presence_head",
           "head_probabilities", "presence_captions", "presence_figures", "presence_records"]
