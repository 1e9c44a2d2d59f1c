"""`samflow annotate IMAGES --out DIR`: the data engine's command; the outputs, resume and failure records are
those of `samflow.scale.annotate` (in process) and `samflow.scale.distributed` (`--engine ray`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from samflow.commands._engine_options import add_engine_arguments, annotate_on_ray, check_local, stop_cleanly
from samflow.errors import InputError
from samflow.ops.image import IMAGE_SUFFIXES
from samflow.scale.annotate import AMG_OPTIONS, SUMMARY, annotate_images
from samflow.scale.runner import expand_paths


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "annotate", help="automatic masks for images, one SA-1B JSON per image (resumable)",
        description="Run SAM's automatic mask generator over images and write one SA-1B style JSON per image "
                    "(COCO RLE masks). Images whose JSON exists are skipped, so an interrupted run resumes; "
                    "failures are listed in OUT/summary.json and the run goes on (exit 1 if any failed). "
                    "OUT/summary.json describes every image the folder holds; stopped by Ctrl-C or SIGTERM "
                    "(exit 130/143), it lists the images not reached as pending.")
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="image files, folders or globs")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--model", default=None,
                        help="SAM preset (tiny, vit_b, vit_l, vit_h); default: tiny, or the checkpoint's size")
    parser.add_argument("--checkpoint", default=None, help="weights file (.pth or .safetensors)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1...; default cuda when available")
    parser.add_argument("--cache", metavar="DIR", default=None,
                        help="on-disk embedding cache shared with `samflow run`: reruns skip the encoder")
    parser.add_argument("--preview", action="store_true", help="also write OUT/previews/<image>.png overlays")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    amg = parser.add_argument_group("mask generation (defaults are the official ones)")
    for name, kind, default, text in AMG_OPTIONS:
        amg.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=f"{text} (default {default:g})")
    add_engine_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_local(args, ray_workers=True)
    with stop_cleanly() as stop:
        try:
            if args.engine == "ray":
                return annotate_on_ray(args, [name for name, *_ in AMG_OPTIONS])
            return _annotate_here(args)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the engine has written summary.json on the way out
            return stop.exit_status(Path(args.out) / SUMMARY)


def _annotate_here(args: argparse.Namespace) -> int:
    paths = sorted({p.resolve(): p for spec in args.images for p in expand_paths(spec, IMAGE_SUFFIXES)}.values())
    if not paths:
        raise InputError(f"no images found in {' '.join(args.images)}")
    params = {name: getattr(args, name) for name, *_ in AMG_OPTIONS}
    summary = annotate_images(paths, Path(args.out), params, model=args.model, checkpoint=args.checkpoint,
                              device=args.device, cache_dir=args.cache, preview=args.preview,
                              progress=not args.no_progress)
    return 1 if summary["failed_now"] else 0
