"""Absent objects on the prompt-adapter route: how many captions naming nothing in the image get no mask, and what
the check costs the captions that do name an object (issue 18, item 2). Through `samflow.segment(image, text=...)`,
as users call it, on HELD-OUT scenes (the threshold was chosen on seed 23 by recipes/calibrate_text_presence.py).

    python benchmarks/text_presence.py [--scenes 200] [--seed 22] [--sam tiny | SAM.pth] [--adapter FILE]
                                       [--threshold COSINE]

Per scene (samflow.train.text_presence.presence_captions): present captions are the canonical captions ("a red star")
of the objects whose colour + shape is unique in the scene and whose area passes the adapter's size threshold
(200 px); absent captions are 6 colour + shape names that no object of the scene has, drawn at random (seeded by
scene), and 3 other words naming nothing a scene holds ("a giraffe": OTHER_WORDS["test"], words neither the
presence head's training nor its calibration saw). All of a scene's captions go in one call. Printed:
- absent_refused: the share of absent captions that got no mask;
- present_miou: the mIoU over present captions, a refused present caption counting as IoU 0 (the definition of the
  issue's target); present_miou_kept: over the present captions kept; present_refused: their share refused;
- present_miou_unchecked: the same captions with presence_threshold=False (the decoder's single mask, as before);
- absent_refused_same_colour: absent captions whose colour is an object's in the scene (only the shape is wrong);
- absent_refused_other_words: the other words' captions refused (not in absent_refused);
- threshold, scorer, quality_weight, views: the adapter's calibrated decision (or --threshold, a cosine); scorer
  "head": the threshold is the trained presence head's probability (samflow.models.text.presence_head), and the
  scenes it was trained on are printed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from samflow.data.samples import Sample
from samflow.data.synthetic import render_scene, scene_rng
from samflow.engine.cache import EmbeddingCache
from samflow.models.sam.build import SHIPPED_WEIGHTS
from samflow.ops.metrics import mask_iou
from samflow.predict.api import segment
from samflow.predict.segmenter import Segmenter
from samflow.train.text_presence import OTHER_WORDS, presence_captions


def measure(scenes: int, seed: int = 22, sam: str = "tiny", adapter: str | None = None,
            threshold: float | None = None, segmenter: Segmenter | None = None) -> dict[str, float]:
    """The figures of the module doc on scenes 1..`scenes` of synthetic `seed`."""
    segmenter = segmenter or Segmenter(cache=EmbeddingCache(max_bytes=64 * 2**20))
    options = {"model": sam, "segmenter": segmenter, "device": "cpu", "adapter": adapter}
    if sam not in SHIPPED_WEIGHTS:
        options.update(model="vit_b", checkpoint=sam)  # the size comes from the checkpoint
    present_iou, present_kept, unchecked, absent_refused, same_colour, other = [], [], [], [], [], []
    other_words = {f"a {word}" for word in OTHER_WORDS["test"]}
    for index in range(scenes):
        scene = render_scene(scene_rng(seed, index + 1), size=256)  # scene i as `samflow synth` numbers it
        captions = presence_captions(Sample(scene.image, scene.masks, scene.annotations), (0, index),
                                     other_words=OTHER_WORDS["test"], other_per_image=3)
        if not captions.texts:
            continue
        result = segment(scene.image, text=captions.texts, presence_threshold=threshold, **options)
        baseline = segment(scene.image, text=captions.texts, presence_threshold=False, **options)
        answers = dict(zip(result.labels, result.masks))
        colours = {a["color"] for a in scene.annotations}
        for i, (text, members) in enumerate(zip(captions.texts, captions.targets)):
            if members:
                truth = scene.masks[members]
                present_kept.append(text in answers)
                present_iou.append(float(mask_iou(answers[text], truth).max()) if text in answers else 0.0)
                unchecked.append(float(mask_iou(baseline.masks[i], truth).max()))
            elif text in other_words:
                other.append(text not in answers)
            else:
                absent_refused.append(text not in answers)
                if text.split()[1] in colours:
                    same_colour.append(text not in answers)
    kept = np.asarray(present_kept)
    ious = np.asarray(present_iou)
    return {"absent_refused": float(np.mean(absent_refused)), "present_miou": float(ious.mean()),
            "present_miou_kept": float(ious[kept].mean()) if kept.any() else float("nan"),
            "present_refused": float(1 - kept.mean()), "present_miou_unchecked": float(np.mean(unchecked)),
            "absent_refused_same_colour": float(np.mean(same_colour)) if same_colour else float("nan"),
            "absent_refused_other_words": float(np.mean(other)) if other else float("nan"),
            "present_captions": len(present_iou), "absent_captions": len(absent_refused),
            "other_word_captions": len(other)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=22, help="held out: the threshold was chosen on 23")
    parser.add_argument("--sam", default="tiny", help="preset with shipped weights, or a SAM checkpoint")
    parser.add_argument("--adapter", help="adapter file (default: beside the SAM weights)")
    parser.add_argument("--threshold", type=float, help="a presence threshold (default: the calibrated one)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from samflow.predict.text import default_adapter_path, get_adapter

    calibration = get_adapter(args.adapter or default_adapter_path(args.sam), "cpu").presence
    started = time.perf_counter()
    figures: dict[str, object] = dict(measure(args.scenes, args.seed, args.sam, args.adapter, args.threshold))
    figures["threshold"] = args.threshold if args.threshold is not None else (
        calibration.threshold if calibration else "none (not calibrated: nothing is refused)")
    if calibration is not None:
        scorer = calibration.scorer if args.threshold is None else "cosine (--threshold)"
        figures.update(scorer=scorer, quality_weight=calibration.quality_weight, views=calibration.augment,
                       calibrated_on=calibration.provenance.get("data", "?"))
        if calibration.scorer == "head" and args.threshold is None:
            figures["head_trained_on"] = calibration.provenance.get("head", {}).get("data", "?")
    figures["seconds"] = time.perf_counter() - started
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
