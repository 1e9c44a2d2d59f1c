"""`samflow demo --text "a red star"`: the text-to-mask graph (graphs/text_to_mask.yaml) on a synthetic scene or any
image, drawn as two pictures: the prompt adapter's mask and the best CLIP-ranked proposal (or "no match")."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def grid_points(height: int, width: int, per_side: int = 6) -> list[list[float]]:
    """Cell centres of a per_side x per_side grid over an image: the clicks whose masks are ranking proposals."""
    xs = (np.arange(per_side) + 0.5) * width / per_side
    ys = (np.arange(per_side) + 0.5) * height / per_side
    return [[float(x), float(y)] for y in ys for x in xs]


def text_to_mask_graph(text: str | list[str], size: tuple[int, int] = (256, 256), model: str = "tiny",
                       checkpoint: str | None = None, per_side: int = 6) -> Any:
    """graphs/text_to_mask.yaml in Python: text -> adapter -> decoder; grid proposals -> clip.rank."""
    from samflow.engine.graph import Graph
    from samflow.engine.types import Image

    g = Graph(description="a text prompt -> the mask of the object it names (prompt adapter) and the best "
                          "CLIP-ranked proposal")
    image = g.input("image", Image)
    encoder = g.add("sam.encoder", "encoder", params={"model": model, "checkpoint": checkpoint}, image=image)
    prompt = g.add("clip.text", "prompt", params={"text": text})
    segment = g.add("sam.decoder", "segment", params={"multimask": False}, embedding=encoder.embedding,
                    text=prompt.text)
    grid = g.add("prompt.points", "grid", params={"points": grid_points(*size, per_side), "separate": True})
    proposals = g.add("sam.decoder", "proposals", params={"multimask": True}, embedding=encoder.embedding,
                      points=grid.points)
    rank = g.add("clip.rank", "rank", params={"top_k": 1}, image=image, masks=proposals.masks, text=prompt.text)
    g.output("segment", segment.masks)
    g.output("ranked", rank.masks)
    g.output("rank_scores", rank.scores)
    return g.validate()


def run_text_demo(out_dir: str | Path, text: str, image: np.ndarray | None = None, seed: int = 7,
                  model: str = "tiny", checkpoint: str | None = None) -> dict[str, Path]:
    """Segment what `text` names in `image` (default: synthetic scene `seed`); write text_adapter.png and
    text_rank.png into `out_dir`; returns the files."""
    from samflow.demos.scenes import draw_segmentation
    from samflow.engine.scheduler import Scheduler
    from samflow.engine.types import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if image is None:
        from samflow.data.synthetic import render_scene, scene_rng

        image = render_scene(scene_rng(seed, 1), 256).image
    graph = text_to_mask_graph(text, image.shape[:2], model, checkpoint)
    outputs = Scheduler(graph).run(image=Image(image), output_dir=out / "text_run")
    files = {}
    segment = outputs["segment"].best()
    files["text_adapter"] = out / "text_adapter.png"
    draw_segmentation(image, segment, title=f'adapter: "{text}"').save(files["text_adapter"])
    ranked, scores = outputs["ranked"], outputs["rank_scores"].values
    title = f'CLIP rank: "{text}" ' + (f"score {scores[0, 0]:.2f}" if len(ranked) else "no match above threshold")
    files["text_rank"] = out / "text_rank.png"
    draw_segmentation(image, ranked.best() if len(ranked) else np.zeros((0, *image.shape[:2]), bool),
                      title=title).save(files["text_rank"])
    log.info("text %r: adapter mask of %d px; ranking kept %d mask(s)", text, int(segment.sum()), len(ranked))
    return files
