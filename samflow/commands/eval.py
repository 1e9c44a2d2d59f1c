"""`samflow eval DATASET ...`: the SAM paper's zero-shot experiments as evaluation tasks.

Without --task: interactive-segmentation mIoU (single point, correction clicks, box) of one or more datasets, as
before. With --task {points,instances,proposals,edges,text} --out DIR: one dataset, DIR/metrics.json, the
predictions in the task's standard format and, with --plot, PNG pictures (samflow.evaluation.*).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from samflow.devices import resolve_device
from samflow.errors import InputError
from samflow.evaluation.auto import AutoRecall, automatic_mask_recall
from samflow.evaluation.points import evaluate, load_dataset, write_points_outputs, write_reports
from samflow.models.sam.build import build_sam

log = logging.getLogger(__name__)

TASKS = ("points", "instances", "proposals", "edges", "text")


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
        help="evaluate a model: points (mIoU per click), instances and proposals (mask AP / AR), edges, text",
        description="Evaluate SAM as the paper does. Without --task: the single-point protocol (click 1 at the point "
        "farthest from the mask boundary, each next click at the point farthest from the boundary of the error "
        "region; mIoU of the most confident and of the best of three masks, per object size, and box-prompt mIoU) "
        "on each DATASET. With --task and --out DIR, one DATASET and DIR/metrics.json plus predictions: points "
        "(the same protocol), instances (box prompts from --detections, COCO/LVIS mask AP), proposals (automatic "
        "masks, mask AR@10/100/1000), edges (BSDS500 ODS/OIS/AP/R50), text (text-to-mask mIoU). DATASET: an SA-1B "
        "folder, a folder with images/ and masks/ (instance-mask PNGs), a COCO or LVIS .json (images beside it, or "
        "--images), a BSDS500 data folder (edges), synthetic:SEED:N[:SIZE] or synthetic-hard:SEED:N[:SIZE] (the "
        "evaluation-only hard style).",
    )
    p.add_argument("datasets", nargs="+", metavar="DATASET")
    p.add_argument("--task", choices=TASKS, help="the experiment to run (default: the points protocol, printed)")
    p.add_argument("--out", help="output folder of a task: metrics.json, predictions, pictures")
    p.add_argument("--plot", action="store_true", help="also draw the task's pictures as PNGs (needs matplotlib: "
                   'pip install "samflow[plot]")')
    p.add_argument("--model", default=None, help="preset (tiny, vit_b, vit_l, vit_h); default: tiny, or the "
                   "checkpoint's size")
    p.add_argument("--checkpoint", help="weights (.pth official, .safetensors, Hugging Face)")
    p.add_argument("--images", help="image folder of a COCO or LVIS dataset (default: the JSON's folder)")
    p.add_argument("--max-images", type=int, help="evaluate at most this many images per dataset")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    points = p.add_argument_group("points")
    points.add_argument("--clicks", type=_clicks, default=[1, 3, 5], help="click counts to report (default 1,3,5; "
                        "with --task points every count up to the largest)")
    points.add_argument("--no-box", action="store_true", help="skip the box-prompt evaluation")
    points.add_argument("--no-mask-input", action="store_true",
                        help="do not feed the previous mask back with correction clicks")
    points.add_argument("--json", help="also write the results to this JSON file (without --task)")
    points.add_argument("--auto", action="store_true", help="also run the automatic mask generator and report how "
                        "many objects of at least 32x32 px a generated mask recovers at IoU >= 0.75")
    points.add_argument("--auto-points", type=int, default=16, help="points per side of the automatic grid "
                        "(default 16)")
    points.add_argument("--auto-iou-thresh", type=float, default=0.88,
                        help="generator's pred_iou_thresh (default 0.88)")
    points.add_argument("--auto-stability-thresh", type=float, default=0.95,
                        help="generator's stability_score_thresh (default 0.95)")
    instances = p.add_argument_group("instances")
    instances.add_argument("--detections", help="'gt' (the ground-truth boxes) or a COCO results JSON of a "
                           "detector's boxes (image_id, category_id, bbox XYWH, score); default gt")
    instances.add_argument("--single-mask", action="store_true",
                           help="use the decoder's single-mask output instead of the most confident of three")
    grid = p.add_argument_group("proposals and edges")
    grid.add_argument("--points-per-side", type=int, help="prompt grid (default 64 for proposals, 16 for edges)")
    grid.add_argument("--points-per-batch", type=int, default=64, help="grid prompts per decoder call (default 64)")
    grid.add_argument("--box-nms-thresh", type=float, default=0.7,
                      help="box NMS of duplicate masks (default 0.7)")
    grid.add_argument("--pred-iou-thresh", type=float, default=0.88, help="proposals: predicted-IoU filter "
                      "(default 0.88)")
    grid.add_argument("--stability-thresh", type=float, default=0.95, help="proposals: stability filter "
                      "(default 0.95)")
    grid.add_argument("--crop-layers", type=int, default=0, help="proposals: zoomed-in crop layers (default 0)")
    grid.add_argument("--max-proposals", type=int, default=1000, help="proposals kept per image, most confident "
                      "first (default 1000)")
    edges = p.add_argument_group("edges")
    edges.add_argument("--split", default="test", help="BSDS500 split: test, val or train (default test)")
    edges.add_argument("--thresholds", type=int, default=99, help="edge-map thresholds (default 99, the benchmark's)")
    edges.add_argument("--max-dist", type=float, default=0.0075,
                       help="matching tolerance, a fraction of the image diagonal (default 0.0075)")
    edges.add_argument("--no-edge-nms", action="store_true", help="skip edge NMS on the edge maps")
    text = p.add_argument_group("text")
    text.add_argument("--min-area", type=int, default=200,
                      help="objects of fewer pixels get no caption (default 200, the adapter's threshold)")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    if args.max_images is not None and args.max_images < 1:
        raise InputError(f"--max-images must be positive, got {args.max_images}")
    if args.auto_points < 1:
        raise InputError(f"--auto-points must be positive, got {args.auto_points}")
    task = args.task or ("points" if args.out else None)
    if task is not None:
        if len(args.datasets) != 1:
            raise InputError(f"--task {task} evaluates one DATASET, got {len(args.datasets)}")
        if not args.out:
            raise InputError(f"--task {task} needs --out DIR (metrics.json and predictions go there)")
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise InputError(f"--out {args.out} is a file, not a folder")
    if args.detections is not None and task != "instances":
        raise InputError("--detections belongs to --task instances")
    if args.plot:
        if task is None:
            raise InputError("--plot needs --task and --out (the pictures go into the output folder)")
        from samflow.evaluation.plots import require_matplotlib

        require_matplotlib()


def run(args: argparse.Namespace) -> int:
    _check(args)
    model_name = args.model or (None if args.checkpoint else "tiny")
    device = resolve_device(args.device)
    task = args.task or ("points" if args.out else None)
    if task is None:
        return _legacy(args, build_sam(model_name, checkpoint=args.checkpoint, device=device))
    spec, out, progress = args.datasets[0], Path(args.out), not args.no_progress
    if task == "edges":  # read the dataset first: a bad folder fails before the model loads
        from samflow.evaluation.datasets import load_boundary_dataset
        from samflow.evaluation.edges import EdgeSettings, evaluate_edges, format_edges

        name, boundaries = load_boundary_dataset(spec, args.images, args.split)
        settings = EdgeSettings(points_per_side=args.points_per_side or 16, box_nms_thresh=args.box_nms_thresh,
                                points_per_batch=args.points_per_batch, edge_nms=not args.no_edge_nms)
        settings.check()
        model = build_sam(model_name, checkpoint=args.checkpoint, device=device)
        metrics = evaluate_edges(model, boundaries, out, name, settings, args.thresholds, args.max_dist,
                                 args.max_images, progress, args.plot)
        print(format_edges(metrics))
    elif task in ("instances", "proposals"):
        from samflow.evaluation.ground_truth import ground_truth

        truth = ground_truth(spec, args.images)
        if task == "instances":
            from samflow.evaluation.instances import evaluate_instances, format_instances, load_detections

            load_detections(args.detections or "gt", truth, args.max_images)  # a bad file fails before the model
            model = build_sam(model_name, checkpoint=args.checkpoint, device=device)
            metrics = evaluate_instances(model, truth, out, args.detections or "gt", not args.single_mask,
                                         args.max_images, progress, args.plot)
            print(format_instances(metrics))
        else:
            from samflow.evaluation.proposals import ProposalSettings, evaluate_proposals, format_proposals

            settings = ProposalSettings(points_per_side=args.points_per_side or 64,
                                        pred_iou_thresh=args.pred_iou_thresh,
                                        stability_score_thresh=args.stability_thresh,
                                        box_nms_thresh=args.box_nms_thresh, crop_n_layers=args.crop_layers,
                                        max_proposals=args.max_proposals, points_per_batch=args.points_per_batch)
            settings.check()
            model = build_sam(model_name, checkpoint=args.checkpoint, device=device)
            metrics = evaluate_proposals(model, truth, out, settings, args.max_images, progress, args.plot)
            print(format_proposals(metrics))
    else:
        name, dataset = load_dataset(spec, args.images)
        model = build_sam(model_name, checkpoint=args.checkpoint, device=device)
        if task == "text":
            from samflow.evaluation.text import evaluate_text, format_text

            metrics = evaluate_text(model, dataset, out, name, args.min_area, args.max_images, progress, args.plot)
            print(format_text(metrics))
        else:
            report = evaluate(model, dataset, clicks=range(1, max(args.clicks) + 1), box=not args.no_box, name=name,
                              max_images=args.max_images, progress=progress, use_mask_input=not args.no_mask_input,
                              keep_predictions=True)
            if args.auto:
                report.auto = _auto(args, model, dataset).to_dict()
            print(report.format())
            write_points_outputs(report, out, args.plot)
    print(f"wrote {out / 'metrics.json'}")
    return 0


def _auto(args: argparse.Namespace, model: Any, dataset: Any) -> AutoRecall:
    recall = automatic_mask_recall(model, dataset, points_per_side=args.auto_points,
                                   pred_iou_thresh=args.auto_iou_thresh,
                                   stability_score_thresh=args.auto_stability_thresh,
                                   max_images=args.max_images, progress=not args.no_progress)
    print(recall.format())
    return recall


def _legacy(args: argparse.Namespace, model: Any) -> int:
    """Without --task: the points protocol on every DATASET, printed (and written to --json)."""
    reports = []
    for spec in args.datasets:
        name, dataset = load_dataset(spec, args.images)
        report = evaluate(model, dataset, clicks=args.clicks, box=not args.no_box, name=name,
                          max_images=args.max_images, progress=not args.no_progress,
                          use_mask_input=not args.no_mask_input)
        print(report.format())
        if args.auto:
            report.auto = _auto(args, model, dataset).to_dict()
        reports.append(report)
    if args.json:
        print(f"wrote {write_reports(reports, args.json)}")
    return 0
