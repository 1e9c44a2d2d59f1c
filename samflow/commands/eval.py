"""`samflow eval DATASET ...`: interactive-segmentation mIoU (single point, correction clicks, box) of a model."""

from __future__ import annotations

import argparse
import logging

from samflow.devices import resolve_device
from samflow.errors import InputError
from samflow.evaluation.auto import automatic_mask_recall
from samflow.evaluation.points import evaluate, load_dataset, write_reports
from samflow.models.sam.build import build_sam

log = logging.getLogger(__name__)


def _clicks(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated click counts like 1,3,5, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"click counts must be positive, got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="mIoU of a model: first click at the mask centre, correction clicks, box prompts",
        description="Evaluate SAM with the paper's single-point protocol: click 1 at the point farthest from the "
        "mask boundary, each next click at the point farthest from the boundary of the error region; mIoU of the "
        "most confident and of the best of three masks, per object size, and box-prompt mIoU. DATASET: an SA-1B "
        "folder, a COCO .json (images beside it, or --images), or synthetic:SEED:N[:SIZE].",
    )
    p.add_argument("datasets", nargs="+", metavar="DATASET")
    p.add_argument("--model", default=None, help="preset (tiny, vit_b, vit_l, vit_h); default: tiny, or the "
                   "checkpoint's size")
    p.add_argument("--checkpoint", help="weights (.pth official, .safetensors, Hugging Face)")
    p.add_argument("--clicks", type=_clicks, default=[1, 3, 5], help="click counts to report (default 1,3,5)")
    p.add_argument("--no-box", action="store_true", help="skip the box-prompt evaluation")
    p.add_argument("--no-mask-input", action="store_true",
                   help="do not feed the previous mask back with correction clicks")
    p.add_argument("--images", help="image folder of a COCO dataset (default: the JSON's folder)")
    p.add_argument("--max-images", type=int, help="evaluate at most this many images per dataset")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--auto", action="store_true", help="also run the automatic mask generator and report how many "
                   "objects of at least 32x32 px a generated mask recovers at IoU >= 0.75")
    p.add_argument("--auto-points", type=int, default=16, help="points per side of the automatic grid (default 16)")
    p.add_argument("--auto-iou-thresh", type=float, default=0.88, help="generator's pred_iou_thresh (default 0.88)")
    p.add_argument("--auto-stability-thresh", type=float, default=0.95,
                   help="generator's stability_score_thresh (default 0.95)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    if args.max_images is not None and args.max_images < 1:
        raise InputError(f"--max-images must be positive, got {args.max_images}")
    if args.auto_points < 1:
        raise InputError(f"--auto-points must be positive, got {args.auto_points}")
    model_name = args.model or (None if args.checkpoint else "tiny")
    device = resolve_device(args.device)
    model = build_sam(model_name, checkpoint=args.checkpoint, device=device)
    reports = []
    for spec in args.datasets:
        name, dataset = load_dataset(spec, args.images)
        report = evaluate(model, dataset, clicks=args.clicks, box=not args.no_box, name=name,
                          max_images=args.max_images, progress=not args.no_progress,
                          use_mask_input=not args.no_mask_input)
        print(report.format())
        if args.auto:
            recall = automatic_mask_recall(model, dataset, points_per_side=args.auto_points,
                                           pred_iou_thresh=args.auto_iou_thresh,
                                           stability_score_thresh=args.auto_stability_thresh,
                                           max_images=args.max_images, progress=not args.no_progress)
            print(recall.format())
            report.auto = recall.to_dict()
        reports.append(report)
    if args.json:
        print(f"wrote {write_reports(reports, args.json)}")
    return 0
