"""Automatic mask generation: samflow vs the official segment-anything generator, same weights, one process.

    python benchmarks/amg.py [--model vit_b] [--checkpoint sam_vit_b_01ec64.pth] [--points-per-side 32]
                             [--crop-layers 0 1] [--all-pass] [--repeats 1] [--threads N] [--image PATH]
                             [--scene SEED [--scene-size H W]] [--tiny-filters]

A workload where masks survive the filters: `--model tiny` (the shipped weights, on both sides) with `--scene
900001` (a held-out synthetic scene, 768x1024 by default) and `--tiny-filters` (tiny's own thresholds, 0.7 / 0.85,
as `samflow demo` uses them, next to the official defaults 0.88 / 0.95).

Both generators get the same embeddings: they are computed once per crop before timing (that time is printed as
the encoder time) and handed over, through `embed` for samflow and by replacing `predictor.set_image` for the
official generator. So the timings cover prompts -> records: decoder, filtering, upsampling, NMS, RLE.

Timed runs use glibc's settled allocator settings; peak memory is measured in one more run of each side with
large blocks mmapped and freed memory trimmed (so RSS follows live memory; every fresh block then costs page
faults, which would distort the timings).
Prints per setting: seconds per image, speed-up, peak RSS rise of each, masks found and how many match (IoU >
0.99; the two decoders are different code, so logits differ by ~1e-6). `--all-pass` adds a run with
pred_iou_thresh=0 and stability_score_thresh=0, where every candidate reaches full resolution (the worst case for
samflow's filter-first order; with random weights the default thresholds reject almost everything).
Uses ../shared/images/dog.jpg when present.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import hashlib
import statistics
import time

import numpy as np
import torch
from _common import PeakRSS, benchmark_image, best_time, cpu_report, load_average, twin_models
from PIL import Image

from samflow.ops.amg import generate_crop_boxes
from samflow.predict.amg import SamAutomaticMaskGenerator
from samflow.predict.predictor import EncodedImage, SamPredictor


def _set_malloc(mmap_threshold: int, trim_threshold: int) -> None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD, fixed from now on (no dynamic growth)
        libc.mallopt(-1, trim_threshold)  # M_TRIM_THRESHOLD
        libc.malloc_trim(0)
    except OSError:
        pass


def _memory_malloc() -> None:
    """Large blocks always mmapped and freed memory trimmed: RSS then follows live memory, for both sides alike.
    Every fresh block is then faulted in page by page, which costs time: memory is measured in runs of its own."""
    _set_malloc(1 << 20, 1 << 20)


def _timing_malloc() -> None:
    """glibc's settled defaults (the mmap threshold grows to 32 MiB after the first large free, trimming at twice
    that), fixed so that the memory runs before do not change the timed ones after."""
    _set_malloc(32 << 20, 64 << 20)


def _key(crop: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(crop).tobytes()).hexdigest() + str(crop.shape)


def _embeddings(model: torch.nn.Module, image: np.ndarray, crop_layers: int,
                overlap: float) -> tuple[dict[str, EncodedImage], float]:
    predictor = SamPredictor(model)
    boxes, _ = generate_crop_boxes(image.shape[:2], crop_layers, overlap)
    found, seconds = {}, 0.0
    for x0, y0, x1, y1 in boxes:
        crop = image[y0:y1, x0:x1]
        start = time.perf_counter()
        found[_key(crop)] = predictor.encode(crop)
        seconds += time.perf_counter() - start
    return found, seconds


def _official(ref_model: torch.nn.Module, embeddings: dict[str, EncodedImage], params: dict):
    from segment_anything import SamAutomaticMaskGenerator as OfficialGenerator

    generator = OfficialGenerator(ref_model, **params)
    predictor = generator.predictor

    def set_image(crop: np.ndarray, image_format: str = "RGB") -> None:
        encoded = embeddings[_key(crop)]
        predictor.reset_image()
        predictor.original_size = encoded.original_size
        predictor.input_size = encoded.input_size
        predictor.features = encoded.features
        predictor.is_image_set = True

    predictor.set_image = set_image
    return generator


def _official_generate(official, image: np.ndarray) -> list[dict]:
    """official.generate(image); with crops and not a single mask in any crop, segment-anything 1.0 raises at its
    very last step (the crop-box weights of an empty `torch.tensor([])`), after all the work this benchmark times:
    that case counts as its true answer, no masks, and a note is printed."""
    try:
        return official.generate(image)
    except IndexError as exc:
        print(f"  (official raised at its last step with no masks in any crop: {exc}; its time up to there counts)")
        return []


def _matches(ours: list[dict], ref: list[dict]) -> int:
    """How many official masks have a samflow mask with IoU > 0.99 (greedy, by box first)."""
    matched = 0
    used = set()
    for r in ref:
        for i, o in enumerate(ours):
            if i in used or np.abs(np.subtract(o["bbox"], r["bbox"])).max() > 2:
                continue
            inter = np.logical_and(o["segmentation"], r["segmentation"]).sum()
            union = np.logical_or(o["segmentation"], r["segmentation"]).sum()
            if inter / max(union, 1) > 0.99:
                used.add(i)
                matched += 1
                break
    return matched


CLOCK = time.perf_counter  # --cpu-time: time.process_time


def _measure(fn, repeats: int) -> tuple[float, list]:
    gc.collect()
    _timing_malloc()
    return best_time(fn, repeats, CLOCK)


def _peak(fn) -> int:
    gc.collect()
    _memory_malloc()
    with PeakRSS() as mem:
        fn()
    return mem.peak


def _compare(name: str, ours_model: torch.nn.Module, ref_model: torch.nn.Module, image: np.ndarray,
             embeddings: dict[str, EncodedImage], params: dict, repeats: int) -> None:
    def embed(crop: np.ndarray) -> EncodedImage:
        return embeddings[_key(crop)]

    # First calls allocate and initialise: not timed. No thresholds, so that no crop is left without masks.
    warm = {**params, "points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    SamAutomaticMaskGenerator(ours_model, **warm, embed=embed).generate(image)
    _official(ref_model, embeddings, warm).generate(image)

    ours = SamAutomaticMaskGenerator(ours_model, **params, embed=embed)
    official = _official(ref_model, embeddings, params)
    # Alternate the two (median of `repeats` each), so a change in machine load hits both alike.
    t_ours, t_ref = [], []
    for _ in range(repeats):
        seconds, r_ours = _measure(lambda: ours.generate(image), 1)
        t_ours.append(seconds)
        seconds, r_ref = _measure(lambda: _official_generate(official, image), 1)
        t_ref.append(seconds)
    m_ours = _peak(lambda: ours.generate(image))
    m_ref = _peak(lambda: _official_generate(official, image))
    matched = _matches(r_ours, r_ref)
    med_ours, med_ref = statistics.median(t_ours), statistics.median(t_ref)
    print(f"  {name:9s} official {med_ref:8.2f} s (min {min(t_ref):.2f})  peak +{m_ref / 2**20:7.0f} MiB  "
          f"masks {len(r_ref)}")
    print(f"  {'':9s} samflow  {med_ours:8.2f} s (min {min(t_ours):.2f})  peak +{m_ours / 2**20:7.0f} MiB  "
          f"masks {len(r_ours)}  ({matched}/{len(r_ref)} official masks matched at IoU > 0.99)")
    print(f"  {'':9s} speed-up {med_ref / med_ours:6.2f}x (medians)   peak memory ratio "
          f"{m_ours / max(m_ref, 1):.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--crop-layers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--all-pass", action="store_true", help="also run with both thresholds at 0")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--image", default=None, help="image file (default: ../shared/images/dog.jpg)")
    parser.add_argument("--scene", type=int, default=None, help="a synthetic scene of this seed instead of --image")
    parser.add_argument("--scene-size", type=int, nargs=2, default=[768, 1024], metavar=("H", "W"))
    parser.add_argument("--tiny-filters", action="store_true",
                        help="also run with pred_iou_thresh 0.7, stability_score_thresh 0.85 (tiny's filters)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time by CPU seconds, not the wall clock (with --threads 1: robust on a busy machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time

    if args.model == "tiny" and args.checkpoint is None:  # the shipped weights, not random ones
        from official_reference import official_sam

        from samflow.models.sam import build_sam

        ours_model = build_sam("tiny")
        ref_model = official_sam(ours_model.config)
        ref_model.load_state_dict(ours_model.state_dict())
        weights = " (shipped weights)"
    else:
        ours_model, ref_model = twin_models(args.model, checkpoint=args.checkpoint)
        weights = f" ({args.checkpoint})" if args.checkpoint else " (random weights)"
    if args.scene is not None:
        from samflow.data.synthetic import render_scene

        image = render_scene(args.scene, tuple(args.scene_size)).image
    else:
        image = np.asarray(Image.open(args.image).convert("RGB")) if args.image else benchmark_image()
    size = ours_model.config.image_size
    print(f"model {args.model}{weights}  image {image.shape[1]}x{image.shape[0]}"
          f"{f' (synthetic scene {args.scene})' if args.scene is not None else ''} -> {size} px  "
          f"points/side {args.points_per_side}  threads {torch.get_num_threads()}  "
          f"{'CPU time' if args.cpu_time else 'wall clock'}")
    print(f"{cpu_report()}; {load_average()}")
    settings = [("default", {})]
    if args.tiny_filters:
        settings.insert(0, ("0.7/0.85", {"pred_iou_thresh": 0.7, "stability_score_thresh": 0.85}))
    if args.all_pass:
        settings.append(("all-pass", {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}))

    with torch.inference_mode():
        for layers in args.crop_layers:
            embeddings, encoder_s = _embeddings(ours_model, image, layers, 512 / 1500)
            print(f"\ncrop_n_layers={layers}: {len(embeddings)} crop(s), encoder {encoder_s:.2f} s (not timed below)")
            for name, extra in settings:
                params = {"points_per_side": args.points_per_side, "crop_n_layers": layers, **extra}
                _compare(name, ours_model, ref_model, image, embeddings, params, args.repeats)
    print(f"\n{load_average()}")

if __name__ == "__main__":
    main()
