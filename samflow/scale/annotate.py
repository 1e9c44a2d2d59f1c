"""The data engine in one process: automatic masks for every image, one SA-1B JSON each (`samflow annotate`).

- Each image gets `DIR/<stem>.json` (its integer id is kept in `DIR/image_ids.json`, stable between runs): `{"image": {image_id, width, height, file_name}, "annotations": [{id,
  segmentation (COCO RLE), bbox (XYWH), area, predicted_iou, stability_score, crop_box, point_coords}]}`.
- Files are written to a temporary name and renamed, so a JSON that exists is complete: a rerun skips those images
  and redoes the rest (an interrupted run resumes; leftover temporary files are overwritten).
- An image that fails (unreadable, too large for memory...) is recorded in `DIR/summary.json` and the run goes
  on; the exit status is 1 when any failed.
- `--preview` also writes `DIR/previews/<stem>.png`, the masks in translucent colours over the image.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from samflow.devices import resolve_device
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


def annotate_images(paths: list[Path], out: Path, params: dict[str, Any], *, model: str | None = None,
                    checkpoint: str | None = None, device: str | None = None, cache_dir: str | None = None,
                    preview: bool = False, progress: bool = True) -> dict[str, Any]:
    """Annotate `paths` into `out` in this process (images whose JSON exists are skipped); the summary written to
    `out/summary.json` is returned. A failing image is recorded there and the run goes on."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    stems = unique_stems(paths, fallback="image")
    jobs = list(zip(image_ids(out, stems), paths, stems))
    todo = [job for job in jobs if not (out / f"{job[2]}.json").is_file()]
    summary: dict[str, Any] = {"images": len(jobs), "skipped": len(jobs) - len(todo), "annotated": 0, "failed": [],
                               "masks": 0, "seconds": 0.0, "model": model, "checkpoint": checkpoint,
                               "params": params}
    log.info("%d images, %d done before, %d to annotate", len(jobs), summary["skipped"], len(todo))
    started = time.perf_counter()
    try:
        if todo:
            generator = build_generator(params, model, checkpoint, device, cache_dir)
            bar = tqdm(todo, unit="img", disable=None if progress else True)
            for image_id, path, stem in bar:
                try:
                    count = annotate_one(generator, path, image_id, out, stem, preview)
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
    return summary


def build_generator(params: dict[str, Any], model: str | None = None, checkpoint: str | None = None,
                    device: str | None = None, cache_dir: str | None = None) -> Any:
    """The automatic mask generator for `params` (AMG_OPTIONS names) on a SAM preset or checkpoint (default tiny),
    its embeddings cached on disk in `cache_dir` when given."""
    from samflow.engine.cache import EmbeddingCache
    from samflow.models.sam import build_sam
    from samflow.predict.amg import SamAutomaticMaskGenerator, cached_embedder

    if checkpoint and not Path(checkpoint).is_file():
        raise InputError(f"checkpoint not found: {checkpoint}")
    sam = build_sam(model or (None if checkpoint else "tiny"), checkpoint=checkpoint, device=resolve_device(device))
    embed = cached_embedder(sam, EmbeddingCache(disk_dir=cache_dir)) if cache_dir else None
    return SamAutomaticMaskGenerator(sam, **params, output_mode="coco_rle", embed=embed)


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
        write_atomic(out / PREVIEWS / f"{stem}.png", preview_png(image, found))
    # The JSON last: its presence marks the image as done.
    write_json_atomic(out / f"{stem}.json", document, indent=None)
    return len(annotations)


def preview_png(image: np.ndarray, found: Any) -> bytes:
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


def image_ids(out: Path, stems: list[str]) -> list[int]:
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


