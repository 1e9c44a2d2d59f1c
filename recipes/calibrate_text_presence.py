"""Calibrate the presence decision of a prompt adapter on VALIDATION images and (with --write) store it in the
adapter file's metadata, where `samflow.segment(image, text=...)` and TextSamPredictor read their default from.

    python recipes/calibrate_text_presence.py                 # tiny's shipped adapter, synthetic:23:400 (~5 min)
    python recipes/calibrate_text_presence.py --write         # ... and write it into the adapter file
    # your own adapter, on a COCO-format validation split (category names are the captions):
    python recipes/calibrate_text_presence.py --sam sam_vit_b_01ec64.pth --data coco/annotations/instances_val.json \
        --images coco/val2017 --max-images 500 --write

What it does (samflow.train.text_presence): every image's captions, those of objects that are there and
--absent-per-image of objects that are not, are decoded with the adapter (the decoder's three candidates), each
candidate's masked crop scored against its caption by CLIP, and the decision chosen that refuses the most absent
captions while the present captions' mIoU (a refused present caption counting as IoU 0) stays at least --min-miou:
over crop views (none, hflip, dihedral), the weight of SAM's predicted IoU among the candidates that pass, and the
threshold. The chosen decision, with its figures and this run's data in its provenance, is printed.

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
    calibrate_presence,
    presence_figures,
    presence_records,
)

HELD_OUT = {"synthetic:22", "synthetic:1000", "synthetic:21", "synthetic:11", "synthetic:12"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sam", default="tiny", help="preset with shipped weights, or a SAM checkpoint")
    parser.add_argument("--adapter", help="adapter file (default: beside the SAM weights)")
    parser.add_argument("--data", default="synthetic:23:400", help="validation images: synthetic:SEED:N, an SA-1B "
                                                                   "folder or a COCO JSON (with --images)")
    parser.add_argument("--images", help="COCO: the folder of the images")
    parser.add_argument("--max-images", type=int)
    parser.add_argument("--absent-per-image", type=int, default=6)
    parser.add_argument("--min-miou", type=float, default=MIN_PRESENT_MIOU)
    parser.add_argument("--seed", type=int, default=0, help="seeds the draw of absent captions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="store the calibration in the adapter file")
    args = parser.parse_args()
    if ":".join(args.data.split(":")[:2]) in HELD_OUT:
        parser.error(f"{args.data} is not a validation set (training or held-out scenes); use synthetic:23:N")
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
                               absent_per_image=args.absent_per_image, categories=categories)
    provenance = {"data": name, "images": count, "absent_per_image": args.absent_per_image, "seed": args.seed,
                  "script": "recipes/calibrate_text_presence.py",
                  "present": "captions of objects in the image (synthetic: colour + shape unique in the scene, "
                             ">= 200 px; COCO: its categories)",
                  "absent": "captions of colour + shape combinations (or categories) not in the image, drawn at "
                            "random"}
    calibration, figures = calibrate_presence(records, args.min_miou, provenance=provenance)
    print(f"{name}: {figures['present_captions']} present, {figures['absent_captions']} absent captions "
          f"({time.perf_counter() - started:.0f} s)")
    print(f"without the check: present mIoU {figures['present_miou_unchecked']:.4f}, nothing refused")
    for augment in records.cosines:  # the best of each crop view, for the record
        _, best = calibrate_presence(records, args.min_miou, augments=[augment])
        print(f"  views {augment:<8}: threshold {best['threshold']:.4f} weight {best['quality_weight']:.1f}: "
              f"absent refused {best['absent_refused']:.1%}, present mIoU {best['present_miou']:.4f}")
    print(f"chosen: threshold {calibration.threshold:.4f}, quality_weight {calibration.quality_weight}, views "
          f"{calibration.augment}: absent refused {figures['absent_refused']:.1%}, present mIoU "
          f"{figures['present_miou']:.4f} (present refused {figures['present_refused']:.1%})")
    assert presence_figures(records, calibration) == figures
    print(json.dumps(calibration.model_dump(), indent=2))
    if args.write:
        adapter = load_adapter(adapter_path)
        before = {k: v.clone() for k, v in adapter.state_dict().items()}
        adapter.presence = calibration
        save_adapter(adapter, adapter_path)
        after = load_adapter(adapter_path)
        assert after.presence == calibration and all(torch.equal(before[k], v) for k, v in after.state_dict().items())
        print(f"wrote the calibration into {adapter_path} (weights unchanged)")


if __name__ == "__main__":
    main()
