"""`samflow annotate IMAGES --out DIR`: the data engine. Automatic masks for every image, one SA-1B JSON each.

- Each image gets `DIR/<stem>.json` (its integer id is kept in `DIR/image_ids.json`, stable between runs): `{"image": {image_id, width, height, file_name}, "annotations": [{id,
  segmentation (COCO RLE), bbox (XYWH), area, predicted_iou, stability_score, crop_box, point_coords}]}`.
- Files are written to a temporary name and renamed, so a JSON that exists is complete: a rerun skips those images
  and redoes the rest (an interrupted run resumes; leftover temporary files are overwritten).
- An image that fails (unreadable, too large for memory...) is recorded in `DIR/summary.json` and the run goes
  on; the exit status is 1 when any failed.
- `--preview` also writes `DIR/previews/<stem>.png`, the masks in translucent colours over the image.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from samflow.commands._engine_options import add_engine_arguments, annotate_on_ray, check_local
from samflow.errors import InputError
from samflow.fileio import write_atomic, write_json_atomic
from samflow.scale.runner import unique_stems

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
PREVIEWS = "previews"
IMAGE_IDS = "image_ids.json"
# Annotation ids are image_id * ID_STRIDE + index: unique across the files of an output folder.
ID_STRIDE = 1_000_000

# The AMG parameters the command exposes, with the official defaults: (name, type, default, help).
AMG_OPTIONS: list[tuple[str, type, Any, str]] = [
    ("points_per_side", int, 32, "grid of N x N click prompts"),
    ("points_per_batch", int, 64, "prompts decoded together"),
    ("pred_iou_thresh", float, 0.88, "keep masks whose predicted IoU is above this"),
    ("stability_score_thresh", float, 0.95, "keep masks whose stability score is at least this"),
    ("stability_score_offset", float, 1.0, "logit shift used by the stability score"),
    ("box_nms_thresh", float, 0.7, "box IoU above which duplicate masks are dropped"),
    ("crop_n_layers", int, 0, "also prompt on overlapping crops: 1 adds 4 crops, 2 adds 16 more"),
    ("crop_nms_thresh", float, 0.7, "box NMS threshold between crops"),
    ("crop_overlap_ratio", float, 512 / 1500, "overlap of crops, as a fraction of the image side"),
    ("crop_n_points_downscale_factor", int, 1, "points per side are divided by this per crop layer"),
    ("min_mask_region_area", int, 0, "fill holes and drop islands smaller than this many pixels"),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "annotate", help="automatic masks for images, one SA-1B JSON per image (resumable)",
        description="Run SAM's automatic mask generator over images and write one SA-1B style JSON per image "
                    "(COCO RLE masks). Images whose JSON exists are skipped, so an interrupted run resumes; "
                    "failures are listed in OUT/summary.json and the run goes on (exit 1 if any failed).")
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
    from tqdm import tqdm

    from samflow.scale.runner import IMAGE_SUFFIXES, expand_paths

    check_local(args, ray_workers=True)
    if args.engine == "ray":
        return annotate_on_ray(args, [name for name, *_ in AMG_OPTIONS])

    paths = sorted({p.resolve(): p for spec in args.images for p in expand_paths(spec, IMAGE_SUFFIXES)}.values())
    if not paths:
        raise InputError(f"no images found in {' '.join(args.images)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stems = unique_stems(paths, fallback="image")
    jobs = list(zip(_image_ids(out, stems), paths, stems))
    todo = [job for job in jobs if not (out / f"{job[2]}.json").is_file()]
    params = {name: getattr(args, name) for name, *_ in AMG_OPTIONS}
    summary: dict[str, Any] = {"images": len(jobs), "skipped": len(jobs) - len(todo), "annotated": 0, "failed": [],
                               "masks": 0, "seconds": 0.0, "model": args.model, "checkpoint": args.checkpoint,
                               "params": params}
    log.info("%d images, %d done before, %d to annotate", len(jobs), summary["skipped"], len(todo))
    started = time.perf_counter()
    try:
        if todo:
            generator = _generator(args, params)
            bar = tqdm(todo, unit="img", disable=None if not args.no_progress else True)
            for image_id, path, stem in bar:
                try:
                    count = annotate_one(generator, path, image_id, out, stem, args.preview)
                except Exception as exc:  # one bad image must not stop the run
                    log.error("failed: %s: %s", path, exc)
                    summary["failed"].append({"file": str(path), "error": f"{type(exc).__name__}: {exc}"})
                    continue
                summary["annotated"] += 1
                summary["masks"] += count
                elapsed = time.perf_counter() - started
                bar.set_postfix(masks=summary["masks"], masks_per_s=f"{summary['masks'] / max(elapsed, 1e-9):.1f}")
    finally:
        summary["seconds"] = round(time.perf_counter() - started, 3)
        summary["masks_per_second"] = round(summary["masks"] / max(summary["seconds"], 1e-9), 3)
        write_json_atomic(out / SUMMARY, summary)
    log.info("%d annotated (%d masks), %d skipped, %d failed in %.1f s; see %s", summary["annotated"],
             summary["masks"], summary["skipped"], len(summary["failed"]), summary["seconds"], out / SUMMARY)
    return 1 if summary["failed"] else 0


def _generator(args: argparse.Namespace, params: dict[str, Any]) -> Any:
    import torch

    from samflow.engine.cache import EmbeddingCache
    from samflow.models.sam import build_sam
    from samflow.predict.amg import SamAutomaticMaskGenerator, cached_embedder

    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise InputError(f"checkpoint not found: {args.checkpoint}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build_sam(args.model or (None if args.checkpoint else "tiny"), checkpoint=args.checkpoint, device=device)
    embed = cached_embedder(model, EmbeddingCache(disk_dir=args.cache)) if args.cache else None
    return SamAutomaticMaskGenerator(model, **params, output_mode="coco_rle", embed=embed)


def annotate_one(generator: Any, path: Path, image_id: int, out: Path, stem: str, preview: bool) -> int:
    """Write `out/<stem>.json` (and the preview) for one image; return its number of masks."""
    from samflow.ops.image import load_image

    image = load_image(path)
    found = generator.generate_masks(image)
    records = found.records("coco_rle")
    annotations = []
    for index, record in enumerate(records):
        annotations.append({"id": image_id * ID_STRIDE + index, **record,
                            "bbox": [float(v) for v in record["bbox"]],
                            "crop_box": [float(v) for v in record["crop_box"]]})
    height, width = image.shape[:2]
    document = {"image": {"image_id": image_id, "width": int(width), "height": int(height), "file_name": path.name},
                "annotations": annotations}
    if preview:
        (out / PREVIEWS).mkdir(exist_ok=True)
        write_atomic(out / PREVIEWS / f"{stem}.png", _preview_png(image, found))
    # The JSON last: its presence marks the image as done.
    write_json_atomic(out / f"{stem}.json", document, indent=None)
    return len(annotations)


def _preview_png(image: np.ndarray, found: Any) -> bytes:
    """PNG bytes: the masks, largest first, in translucent colours over the image."""
    import io

    from PIL import Image as PILImage

    picture = image.astype(np.float32)
    rng = np.random.default_rng(0)
    order = sorted(range(len(found)), key=found.area, reverse=True)
    for index in order:
        mask = found.mask(index)
        picture[mask] = picture[mask] * 0.45 + rng.integers(40, 256, 3) * 0.55
    buffer = io.BytesIO()
    PILImage.fromarray(picture.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_ids(out: Path, stems: list[str]) -> list[int]:
    """A stable integer id per output name: kept in OUT/image_ids.json, new names numbered after the others, so
    ids do not change when images are added to or removed from the input between runs."""
    path = out / IMAGE_IDS
    known: dict[str, int] = json.loads(path.read_text()) if path.is_file() else {}
    next_id = max(known.values(), default=0) + 1
    for stem in stems:
        if stem not in known:
            known[stem] = next_id
            next_id += 1
    write_json_atomic(path, known, indent=0)
    return [known[stem] for stem in stems]


