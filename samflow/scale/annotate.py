"""The data engine in one process: automatic masks for every image, one SA-1B JSON each (`samflow annotate`).

- Each image gets `DIR/<stem>.json` (its integer id and source file are kept in `DIR/image_ids.json`, stable
  between runs): `{"image": {image_id, width, height, file_name}, "annotations": [{id, segmentation (COCO RLE),
  bbox (XYWH), area, predicted_iou, stability_score, crop_box, point_coords}]}`.
- Files are written to a temporary name and renamed, so a JSON that exists is complete: a rerun skips those images
  and redoes the rest (an interrupted run resumes; leftover temporary files are removed when the next run starts).
  A stem recorded for another file (a widened or shifted glob) is not reused: the new file gets `<stem>_2`...
- An image that fails (unreadable, too large for memory...) is recorded in `DIR/summary.json` and the run goes
  on; the exit status is 1 when any failed. The summary describes the whole folder (earlier runs' images too;
  per image in `items`, `counts` by status); stopped early (Ctrl-C, SIGTERM), it marks the images not reached
  `pending`.
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
from samflow.scale import records
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
    records.remove_leftovers(out, (PREVIEWS,))
    earlier = records.earlier_items(out / SUMMARY)
    jobs = [(image_id, path, stem) for (stem, image_id), path in zip(assign_images(out, paths), paths)]
    done_before = {stem for _, _, stem in jobs if is_done(out, stem)}
    todo = [job for job in jobs if job[2] not in done_before]
    reached: dict[str, dict[str, Any]] = {}
    base = {"model": model, "checkpoint": checkpoint, "params": params}
    log.info("%d images, %d done before, %d to annotate", len(jobs), len(done_before), len(todo))
    started = time.perf_counter()

    def write() -> dict[str, Any]:
        listed = []
        for image_id, path, stem in jobs:
            record = {"id": stem, "inputs": {"image": str(path), "image_id": str(image_id)}}
            if stem in reached:
                listed.append({**record, **reached[stem]})
            elif stem in done_before:
                listed.append({**record, "status": "skipped", "reason": records.EARLIER})
            elif is_done(out, stem):  # written just as the run was stopped
                listed.append({**record, "status": "ok", "reason": "written as the run stopped"})
            else:
                listed.append({**record, "status": "pending", "reason": "the run stopped before it; rerun to finish"})
        seconds = round(time.perf_counter() - started, 3)
        folder = folder_summary(listed, earlier, out)
        items = folder.pop("items")
        summary = {**folder, "seconds": seconds, **base,
                   "masks_per_second": round(folder["masks"] / max(seconds, 1e-9), 3), "items": items}
        write_json_atomic(out / SUMMARY, summary)
        return summary

    write()  # every image accounted for from the start: a killed run leaves them pending
    try:
        if todo:
            generator = build_generator(params, model, checkpoint, device, cache_dir)
            bar = tqdm(todo, unit="img", disable=None if progress else True)
            masks = 0
            for image_id, path, stem in bar:
                begun = time.perf_counter()
                try:
                    count = annotate_one(generator, path, image_id, out, stem, preview)
                except Exception as exc:  # one bad image must not stop the run
                    log.error("failed: %s: %s", path, exc)
                    reached[stem] = {"status": "failed", "seconds": round(time.perf_counter() - begun, 6),
                                     "error": f"{type(exc).__name__}: {exc}"}
                    continue
                reached[stem] = {"status": "ok", "seconds": round(time.perf_counter() - begun, 6),
                                 "outputs": [*([f"{PREVIEWS}/{stem}.png"] if preview else []), f"{stem}.json"],
                                 "masks": count}
                masks += count
                elapsed = time.perf_counter() - started
                bar.set_postfix(masks=masks, masks_per_s=f"{masks / max(elapsed, 1e-9):.1f}")
    finally:
        summary = write()
    log.info("%d annotated (%d masks), %d skipped, %d failed in %.1f s; see %s", summary["annotated"],
             summary["masks"], summary["skipped"], len(summary["failed"]), summary["seconds"], out / SUMMARY)
    return summary


def folder_summary(listed: list[dict[str, Any]], earlier: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """`summary_fields` for `listed` (this run's images, in order) and the folder's other images: those of the
    earlier summary's `items` and of OUT/image_ids.json, their status decided by the disk."""
    known = {stem: {"image": source, "image_id": str(image_id)}
             for stem, (image_id, source) in read_image_ids(out).items() if source is not None}
    return summary_fields(listed, records.carried_over(listed, earlier, known, lambda stem: is_done(out, stem)))


def summary_fields(listed: list[dict[str, Any]], carried: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary fields both engines write, for this run's images (`listed`) and the folder's other images
    (`carried`): `annotated` and `masks` are this run's work, `failed_now` its failures (its exit status);
    `images`, `skipped`, `failed`, `counts` and `items` describe the whole folder."""
    items = listed + carried
    counts = records.count(items)
    return {"images": len(items), "skipped": counts["skipped"], "annotated": sum(i["status"] == "ok" for i in listed),
            "failed": [{"file": item["inputs"].get("image"), "error": item.get("error")}
                       for item in items if item["status"] == "failed"],
            "failed_now": sum(item["status"] == "failed" for item in listed),
            "masks": sum(item.get("masks", 0) for item in listed if item["status"] == "ok"),
            "counts": counts, "items": items}


def is_done(out: Path, stem: str) -> bool:
    """An image is done when its JSON exists (written last, atomically)."""
    return (out / f"{stem}.json").is_file()


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


def read_image_ids(out: Path) -> dict[str, tuple[int, str | None]]:
    """OUT/image_ids.json: stem -> (image id, source file; None in folders from before sources were kept)."""
    path = out / IMAGE_IDS
    if not path.is_file():
        return {}
    known: dict[str, tuple[int, str | None]] = {}
    try:
        for stem, entry in json.loads(path.read_text()).items():
            if isinstance(entry, dict):
                source = entry.get("source")
                known[str(stem)] = (int(entry["id"]), None if source is None else str(source))
            else:
                known[str(stem)] = (int(entry), None)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InputError(f"{path} is not a map of image names to ids ({type(exc).__name__}: {exc}); it keeps "
                         "the folder's image ids: repair or remove it") from exc
    return known


def assign_images(out: Path, paths: list[Path] | list[str]) -> list[tuple[str, int]]:
    """(stem, image id) per path: stable between runs, and kept with each image's source in OUT/image_ids.json.

    A file recorded before keeps its stem and id; a new file gets its stem (made unique in the listing, as
    `unique_stems` does) unless the folder has that stem for another file, then `<stem>_2`, ... New stems are
    numbered after the others, so ids do not change when images are added to or removed from the input."""
    known = read_image_ids(out)
    sources = [records.source_of(path) for path in paths]
    usual = unique_stems(paths, fallback="image")
    stems, renamed = records.settle_ids(list(zip(usual, sources)),
                                        {stem: source for stem, (_, source) in known.items()})
    for index in renamed:
        holder = known.get(usual[index], (0, None))[1]
        log.warning("%s is %s's name in %s; %s is written as %s.json", usual[index], holder or "another image's",
                    out, sources[index], stems[index])
    next_id = max((image_id for image_id, _ in known.values()), default=0) + 1
    for stem, source in zip(stems, sources):
        if stem in known:
            known[stem] = (known[stem][0], known[stem][1] or source)  # a folder from before sources: adopted
        else:
            known[stem] = (next_id, source)
            next_id += 1
    write_json_atomic(out / IMAGE_IDS, {stem: {"id": image_id, "source": source}
                                        for stem, (image_id, source) in known.items()}, indent=0)
    return [(stem, known[stem][0]) for stem in stems]
