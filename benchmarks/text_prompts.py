"""Text prompts on held-out synthetic scenes: the figures of issue 6.

    python benchmarks/text_prompts.py [--scenes 200] [--seed 22] [--sam tiny | SAM.safetensors] [--threads 1]

For each scene, every object whose colour + shape is unique in the scene and whose area passes the adapter's size
threshold is named by its canonical caption ("a red star"). Printed:
- adapter path: mIoU of the text prompt alone, of the CLIP image embedding of its crop, and of the text plus one
  corrective click (at the error region's farthest pixel from its boundary), all in one decoder call each; for
  reference SAM with one click on the object (no text), and how often the text's located click lands on it;
- ranking path: how often CLIP ranking picks the right object (IoU >= 0.5) among SAM masks for a grid of clicks
  (3 per click; ordered by CLIP cosine + 0.1 x SAM's predicted IoU, and by the cosine alone for comparison), among
  automatic masks (`SamAutomaticMaskGenerator`, 2x the grid's points per side, default filters), and among the
  ground-truth masks (CLIP alone); how often a caption naming an absent object keeps nothing;
- timings: a cached text embedding, and the decoder with a point, with the text, with both.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from samflow.data.captions import absent_names, caption, unique_objects
from samflow.data.synthetic import render_scene, scene_rng
from samflow.demos.text import grid_points
from samflow.models.sam.build import SHIPPED_WEIGHTS, build_sam
from samflow.models.text.clip_loading import get_clip
from samflow.models.text.rank import rank_masks
from samflow.ops.metrics import mask_iou as iou
from samflow.predict.amg import SamAutomaticMaskGenerator
from samflow.predict.text import TextSamPredictor, default_adapter_path, get_adapter, text_tokens_for
from samflow.train.text_adapter import TextAdapterConfig
from samflow.train.text_adapter_data import build_objects
from samflow.train.text_adapter_eval import evaluate, pointing_accuracy


def hit(clip, image: np.ndarray, masks: np.ndarray, text: str, truth: np.ndarray, **options) -> int:
    """1 when ranking `masks` for `text` puts a mask of the object `truth` (IoU >= 0.5) first."""
    picked = rank_masks(clip, image, masks, text, **options)
    return int(picked.indices.size > 0 and iou(masks[picked.indices[0]], truth) >= 0.5)


def ranking(sam, clip, scenes: int, seed: int, min_area: int, per_side: int) -> dict[str, float]:
    predictor = TextSamPredictor(sam)
    generator = SamAutomaticMaskGenerator(sam, points_per_side=2 * per_side)
    grid_hits = cosine_hits = auto_hits = gt_hits = total = absent_kept = absent_total = 0
    for index in range(scenes):
        scene = render_scene(scene_rng(seed, index), size=sam.image_encoder.img_size)
        predictor.set_image(scene.image)
        h, w = scene.image.shape[:2]
        points = np.array(grid_points(h, w, per_side), dtype=np.float32)[:, None]
        masks, predicted_iou, _ = predictor.predict(point_coords=points, point_labels=np.ones(points.shape[:2]),
                                                    multimask_output=True)
        proposals, quality = masks.reshape(-1, h, w), predicted_iou.reshape(-1)
        embedded = clip.embed_crops(scene.image, proposals)  # once per scene, for every caption
        records = generator.generate(scene.image)
        auto = np.stack([r["segmentation"] for r in records]) if records else np.zeros((0, h, w), bool)
        auto_quality = np.array([r["predicted_iou"] for r in records], dtype=np.float32)
        auto_embedded = clip.embed_crops(scene.image, auto) if len(auto) else None
        truth_embedded = clip.embed_crops(scene.image, scene.masks)
        anns = scene.annotations
        for j in unique_objects(anns):
            if anns[j]["area"] < min_area:
                continue
            text, truth_mask = caption(anns[j]), scene.masks[j]
            grid_hits += hit(clip, scene.image, proposals, text, truth_mask, crop_embeddings=embedded, quality=quality)
            cosine_hits += hit(clip, scene.image, proposals, text, truth_mask, crop_embeddings=embedded)
            if len(auto):
                auto_hits += hit(clip, scene.image, auto, text, truth_mask, crop_embeddings=auto_embedded,
                                 quality=auto_quality)
            truth = rank_masks(clip, scene.image, scene.masks, text, crop_embeddings=truth_embedded)
            gt_hits += int(truth.indices.size > 0 and int(truth.indices[0]) == j)
            total += 1
        for name in absent_names(anns)[index % 5 :: 12]:
            absent_kept += int(rank_masks(clip, scene.image, proposals, f"a {name}",
                                          crop_embeddings=embedded).indices.size > 0)
            absent_total += 1
    return {"rank_grid_top1": grid_hits / total, "rank_grid_top1_cosine_only": cosine_hits / total,
            "rank_auto_top1": auto_hits / total,
            "rank_truth_top1": gt_hits / total, "rank_objects": total,
            "absent_rejected": 1 - absent_kept / absent_total, "absent_captions": absent_total}


def timings(sam, clip, adapter) -> dict[str, float]:
    scene = render_scene(scene_rng(0, 0), size=sam.image_encoder.img_size)
    predictor = TextSamPredictor(sam)
    predictor.set_image(scene.image)
    clip.embed_text("a red star")

    def ms(fn, n: int = 200) -> float:
        fn()
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3

    def text_tokens() -> torch.Tensor:
        return text_tokens_for(adapter, clip.embed_text("a red star"), clip.fingerprint, sam, predictor.features)

    tokens = text_tokens()
    point = torch.tensor([[[100.0, 100.0]]]), torch.ones(1, 1, dtype=torch.int)
    return {
        "text_embedding_cached_ms": ms(lambda: clip.embed_text("a red star"), 2000),
        "text_to_tokens_cached_ms": ms(text_tokens, 500),
        "decoder_point_ms": ms(lambda: predictor.predict_torch(*point, multimask_output=False)),
        "decoder_text_ms": ms(lambda: predictor.predict_torch(None, None, text_tokens=tokens, multimask_output=False)),
        "decoder_text_point_ms": ms(lambda: predictor.predict_torch(*point, text_tokens=tokens,
                                                                    multimask_output=False)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=22, help="held out: CLIP trains on 11, the adapter on 21")
    parser.add_argument("--sam", default="tiny", help="preset with shipped weights, or a SAM checkpoint")
    parser.add_argument("--adapter", help="adapter file (default: beside the SAM weights)")
    parser.add_argument("--grid", type=int, default=8, help="grid clicks per side for ranking proposals")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", choices=["adapter", "ranking", "timings"], help="one part of the figures")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = SHIPPED_WEIGHTS.get(args.sam, args.sam)
    sam = build_sam(args.sam if args.sam in SHIPPED_WEIGHTS else None, checkpoint=checkpoint, device="cpu")
    clip = get_clip("clip_tiny", device="cpu")
    adapter = get_adapter(args.adapter or default_adapter_path(args.sam), "cpu")
    min_area = TextAdapterConfig().min_area
    figures: dict[str, float] = {}
    started = time.perf_counter()
    if args.only in (None, "adapter"):
        objects = build_objects(sam, clip, args.seed, args.scenes, min_area)
        figures.update(evaluate(sam, clip, adapter, objects))
        figures["text_pointing"] = pointing_accuracy(adapter, clip, sam, objects)
    if args.only in (None, "ranking"):
        figures.update(ranking(sam, clip, args.scenes, args.seed, min_area, args.grid))
    if args.only in (None, "timings"):
        figures.update(timings(sam, clip, adapter))
    figures["seconds"] = time.perf_counter() - started
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
