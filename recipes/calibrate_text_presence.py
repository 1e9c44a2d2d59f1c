"""Calibrate the presence decision of a prompt adapter on VALIDATION images and (with --write) store it in the
adapter file's metadata, where `samflow.segment(image, text=...)` and TextSamPredictor read their default from.

    python recipes/calibrate_text_presence.py                 # tiny's shipped adapter, synthetic:23:400 (~5 min)
    python recipes/calibrate_text_presence.py --write         # ... and write it into the adapter file
    # the trained presence head (shipped for tiny): trained on synthetic:24:1500, calibrated on 23 (~15 min)
    python recipes/calibrate_text_presence.py --head-data synthetic:24:1500 --head-hidden 128 --write
    # your own adapter, on a COCO-format validation split (category names are the captions):
    python recipes/calibrate_text_presence.py --sam sam_vit_b_01ec64.pth --data coco/annotations/instances_val.json \
        --images coco/val2017 --max-images 500 --write

What it does (samflow.train.text_presence): every image's captions, those of objects that are there and
--absent-per-image of objects that are not, are decoded with the adapter (the decoder's three candidates), each
candidate's masked crop scored against its caption by CLIP, and the decision chosen that refuses the most absent
captions while the present captions' mIoU (a refused present caption counting as IoU 0) stays at least --min-miou:
over crop views (none, hflip, dihedral), the weight of SAM's predicted IoU among the candidates that pass, and the
threshold. The chosen decision, with its figures and this run's data in its provenance, is printed.

With --head-data, a presence head (samflow.models.text.presence_head: CLIP's cosine, SAM's predicted IoU, the
mask's shape and colour descriptors and the text's embedding -> the probability that a candidate is the right
answer) is first trained on those TRAINING images' records (--head-hidden, --head-weight-decay, --head-steps: chosen
on the validation scenes, 23, among hidden 32/64/128 x weight decay 0.01/0.1/0.3; the shipped head: 128, 0.1), then its threshold is calibrated on the
validation images by the same rule, and the head is written into the adapter file with its calibration. Every
image also gets --other-per-image absent captions of words naming nothing a scene holds ("a dog"; OTHER_WORDS):
the head learns from the training words that a text outside the scenes' vocabulary is absent, and the validation
figures count the validation words apart (other words refused); the benchmark's are a third list.

Validation images only: samflow's synthetic seeds are CLIP's training (11) and calibration (12) scenes, the
adapter's training scenes (21), the held-out text scenes (22, where benchmarks/text_presence.py reports) and the held
-out SAM scenes (1000); seed 23 is the validation set of this decision. Never calibrate on the scenes you report.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from samflow.evaluation.datasets import load_dataset
from samflow.models.sam.build import SHIPPED_WEIGHTS, build_sam
from samflow.models.text.adapter import load_adapter, save_adapter
from samflow.predict.text import default_adapter_path, load_text_models
from samflow.train.text_presence import (
    MIN_PRESENT_MIOU,
    OTHER_WORDS,
    calibrate_presence,
    fit_presence_head,
    presence_figures,
    presence_records,
)

HELD_OUT = {"synthetic:22", "synthetic:1000", "synthetic:21", "synthetic:11", "synthetic:12"}
NOT_FOR_THE_HEAD = {"synthetic:22", "synthetic:23", "synthetic:1000"}  # evaluation and calibration scenes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sam", default="tiny", help="preset with shipped weights, or a SAM checkpoint")
    parser.add_argument("--adapter", help="adapter file (default: beside the SAM weights)")
    parser.add_argument("--data", default="synthetic:23:400", help="validation images: synthetic:SEED:N, an SA-1B "
                                                                   "folder or a COCO JSON (with --images)")
    parser.add_argument("--images", help="COCO: the folder of the images")
    parser.add_argument("--max-images", type=int)
    parser.add_argument("--absent-per-image", type=int, default=6)
    parser.add_argument("--other-per-image", type=int, default=3,
                        help="absent captions of other words per image (OTHER_WORDS: validation words here, "
                             "training words for the head)")
    parser.add_argument("--min-miou", type=float, default=MIN_PRESENT_MIOU)
    parser.add_argument("--seed", type=int, default=0, help="seeds the draw of absent captions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="store the calibration in the adapter file")
    parser.add_argument("--head-data", help="training images for a presence head (synthetic:24:1500 for tiny)")
    parser.add_argument("--head-hidden", type=int, default=64)
    parser.add_argument("--head-weight-decay", type=float, default=0.1)
    parser.add_argument("--head-steps", type=int, default=1500)
    args = parser.parse_args()
    if ":".join(args.data.split(":")[:2]) in HELD_OUT:
        parser.error(f"{args.data} is not a validation set (training or held-out scenes); use synthetic:23:N")
    if args.head_data and (":".join(args.head_data.split(":")[:2]) in NOT_FOR_THE_HEAD
                           or args.head_data == args.data):
        parser.error(f"--head-data {args.head_data}: train the head on other scenes than the validation and "
                     "held-out ones (synthetic:24:N)")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    adapter_path = args.adapter or default_adapter_path(args.sam)
    sam = build_sam(args.sam if args.sam in SHIPPED_WEIGHTS else None,
                    checkpoint=SHIPPED_WEIGHTS.get(args.sam, args.sam), device="cpu")
    models = load_text_models(args.sam, adapter=adapter_path, device="cpu")
    name, dataset = load_dataset(args.data, args.images)
    categories = getattr(dataset, "categories", None)
    count = len(dataset) if args.max_images is None else min(args.max_images, len(dataset))
    records = presence_records(sam, models, (dataset[i] for i in range(count)), seed=args.seed,
                               absent_per_image=args.absent_per_image, categories=categories,
                               other_words=OTHER_WORDS["validation"], other_per_image=args.other_per_image)
    provenance = {"data": name, "images": count, "absent_per_image": args.absent_per_image, "seed": args.seed,
                  "script": "recipes/calibrate_text_presence.py",
                  "present": "captions of objects in the image (synthetic: colour + shape unique in the scene, "
                             ">= 200 px; COCO: its categories)",
                  "absent": "captions of colour + shape combinations (or categories) not in the image, drawn at "
                            "random",
                  "other_words": f"{args.other_per_image} per image of OTHER_WORDS['validation']"}
    head = None
    if args.head_data:
        head_name, head_set = load_dataset(args.head_data, args.images)
        training = presence_records(sam, models, (head_set[i] for i in range(len(head_set))), seed=args.seed,
                                    absent_per_image=args.absent_per_image, augments=("dihedral",),
                                    categories=getattr(head_set, "categories", None),
                                    other_words=OTHER_WORDS["train"], other_per_image=args.other_per_image)
        head = fit_presence_head(training, hidden=args.head_hidden, weight_decay=args.head_weight_decay,
                                 steps=args.head_steps)
        provenance["head"] = {"data": head_name, "captions": len(training), "hidden": args.head_hidden,
                              "weight_decay": args.head_weight_decay, "steps": args.head_steps,
                              "labels": "candidate right = caption present and mask IoU >= 0.5",
                              "other_words": f"{args.other_per_image} per image of OTHER_WORDS['train']"}
        _, cosine_rule = calibrate_presence(records, args.min_miou)
        print(f"the cosine rule on {name}: absent refused {cosine_rule['absent_refused']:.1%}, present mIoU "
              f"{cosine_rule['present_miou']:.4f}, other words refused "
              f"{cosine_rule.get('absent_refused_other_words', float('nan')):.1%}")
    calibration, figures = calibrate_presence(records, args.min_miou, provenance=provenance, head=head)
    print(f"{name}: {figures['present_captions']} present, {figures['absent_captions']} absent captions "
          f"({time.perf_counter() - started:.0f} s)")
    print(f"without the check: present mIoU {figures['present_miou_unchecked']:.4f}, nothing refused")
    for augment in records.cosines if head is None else ():  # the best of each crop view, for the record
        _, best = calibrate_presence(records, args.min_miou, augments=[augment])
        print(f"  views {augment:<8}: threshold {best['threshold']:.4f} weight {best['quality_weight']:.1f}: "
              f"absent refused {best['absent_refused']:.1%}, present mIoU {best['present_miou']:.4f}")
    print(f"chosen: threshold {calibration.threshold:.4f}, quality_weight {calibration.quality_weight}, views "
          f"{calibration.augment}: absent refused {figures['absent_refused']:.1%}, present mIoU "
          f"{figures['present_miou']:.4f} (present refused {figures['present_refused']:.1%}; other words refused "
          f"{figures.get('absent_refused_other_words', float('nan')):.1%})")
    assert presence_figures(records, calibration, head=head) == figures
    print(json.dumps(calibration.model_dump(), indent=2))
    if args.write:
        adapter = load_adapter(adapter_path)
        before = {k: v.clone() for k, v in adapter.state_dict().items()}
        before = {k: v for k, v in before.items() if not k.startswith("presence_head.")}
        adapter.presence = calibration
        adapter.presence_head = head
        save_adapter(adapter, adapter_path)
        after = load_adapter(adapter_path)
        assert after.presence == calibration
        assert all(torch.equal(before[k], v) for k, v in after.state_dict().items() if not k.startswith("presence_"))
        print(f"wrote the calibration into {adapter_path} (weights unchanged)")


if __name__ == "__main__":
    main()
