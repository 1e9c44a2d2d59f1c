"""Text prompts, both ways, on a synthetic scene (or your image): the prompt adapter and CLIP ranking.

    python examples/text_prompt.py --text "a red star" --out runs/text_example
    python examples/text_prompt.py --text "a blue ring" --image photo.png --out runs/text_example

1. As a graph (graphs/text_to_mask.yaml built in Python): clip.text -> sam.decoder (adapter) and grid proposals ->
   clip.rank, run by the scheduler; masks and overlays land in OUT/graph/.
2. With the Python API: the same text as prompt tokens beside a corrective click, in one decoder call; and CLIP
   ranking of the grid masks, which returns nothing when the text names nothing in the picture.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from samflow.data.captions import absent_names
from samflow.data.synthetic import render_scene, scene_rng
from samflow.demos.text import grid_points, text_to_mask_graph
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import Image
from samflow.models.sam import build_sam
from samflow.models.text import rank_masks
from samflow.ops.distance import farthest_point
from samflow.ops.metrics import mask_iou
from samflow.predict.text import TextSamPredictor, load_text_models

log = logging.getLogger("text_prompt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", default="a red star")
    parser.add_argument("--image", help="an image file (default: synthetic scene --seed)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="runs/text_example")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    truth, absent = None, None
    if args.image:
        image = Image.load(args.image).data
    else:
        scene = render_scene(scene_rng(args.seed, 1))
        image = scene.image
        named = [i for i, a in enumerate(scene.annotations) if args.text.endswith(f"{a['color']} {a['shape']}")]
        truth = scene.masks[named[0]] if len(named) == 1 else None
        absent = f"a {absent_names(scene.annotations)[0]}"

    # 1. The graph: one encoder run shared by the adapter decoder and the proposal decoder.
    graph = text_to_mask_graph(args.text, image.shape[:2])
    outputs = Scheduler(graph).run(image=Image(image), output_dir=Path(args.out) / "graph")
    log.info("graph: adapter mask %d px; ranking kept %d mask(s)", int(outputs["segment"].best().sum()),
             len(outputs["ranked"]))

    # 2. The API. Text models load once per process (shipped clip_tiny + tiny's adapter).
    sam = build_sam("tiny")
    models = load_text_models("tiny")
    predictor = TextSamPredictor(sam, models)
    predictor.set_image(image)
    mask = predictor.predict(text=args.text, multimask_output=False)[0][0]
    if truth is not None:
        # A corrective click where the text's mask is most wrong, decoded with the text in one call.
        missed, extra = truth & ~mask, mask & ~truth
        region, label = (missed, 1) if missed.sum() >= extra.sum() else (extra, 0)
        click = farthest_point(region)
        fixed = mask
        if click is not None:
            fixed = predictor.predict(point_coords=np.array([click]), point_labels=np.array([label]),
                                      text=args.text, multimask_output=False)[0][0]
        log.info("API: text IoU %.3f, text + one click IoU %.3f", float(mask_iou(mask, truth)),
                 float(mask_iou(fixed, truth)))

    h, w = image.shape[:2]
    points = np.array(grid_points(h, w, 8), dtype=np.float32)[:, None]
    masks, predicted_iou, _ = predictor.predict(point_coords=points, point_labels=np.ones(points.shape[:2]))
    proposals = masks.reshape(-1, h, w)
    # SAM's predicted IoU breaks near-ties in CLIP's scores in favour of clean masks.
    ranked = rank_masks(models.clip, image, proposals, args.text, top_k=3, quality=predicted_iou.reshape(-1))
    log.info("API: ranking kept %d of %d proposals above %.3f (%s): scores %s", ranked.indices.size,
             len(proposals), ranked.threshold, ranked.mode, np.round(ranked.scores, 3).tolist())
    if absent is not None:
        kept = rank_masks(models.clip, image, proposals, absent).indices.size
        log.info("API: %r, absent from the scene, keeps %d mask(s)", absent, kept)
        # The adapter always places its click somewhere; the presence check (CLIP on its candidate masks, at the
        # threshold calibrated for tiny's adapter) refuses a text whose object is not there: an all-False mask.
        refused = not predictor.predict(text=absent, multimask_output=False)[0].any()
        decision = predictor.last_presence
        if decision is not None:
            log.info("API: the adapter %s %r (CLIP cosine %.3f, threshold %.3f)", "refuses" if refused else "keeps",
                     absent, float(decision.scores[0]), decision.threshold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
