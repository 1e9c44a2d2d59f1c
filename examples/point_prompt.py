"""The graph of graphs/point_prompt.yaml, built in Python, run over images.

    python examples/point_prompt.py photos/ --out runs/example          # a file, a folder or a glob
    python examples/point_prompt.py photo.jpg --out runs/example --point 200 150

Each image gets a folder with the masks (PNG + JSON), their scores and an overlay; runs/example/run.json
records what ran. The last lines show the same graph used interactively: one image, several clicks, one encoder run.
"""

from __future__ import annotations

import argparse
import sys

from samflow.engine.graph import Graph
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import Image
from samflow.scale.runner import plan_items, run_graph


def build_graph(model: str = "tiny", point: tuple[float, float] = (120, 80)) -> Graph:
    """Exactly graphs/point_prompt.yaml: encoder -> decoder <- one click; overlay picture."""
    g = Graph(description="one foreground click -> three candidate masks with their scores")
    image = g.input("image", Image)
    encoder = g.add("sam.encoder", "encoder", params={"model": model}, image=image)
    clicks = g.add("prompt.points", "clicks", params={"points": [list(point)], "labels": [1]})
    segment = g.add("sam.decoder", "segment", params={"multimask": True}, embedding=encoder.embedding,
                    points=clicks.points)
    g.add("masks.overlay", "overlay", image=image, masks=segment.masks, points=clicks.points)
    g.output("masks", segment.masks)
    g.output("scores", segment.scores)
    return g


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", help="an image file, a folder or a glob")
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--point", nargs=2, type=float, default=(120, 80), metavar=("X", "Y"))
    args = parser.parse_args(argv)

    graph = build_graph(args.model, tuple(args.point))
    with Scheduler(graph) as scheduler:
        report = run_graph(scheduler, plan_items(graph, {"image": args.images}), args.out, progress=False)
        for item in report.items:
            print(f"{item['id']}: {item['status']} {item.get('error', '')}".rstrip())

        # Interactive use: the embedding of an image is computed once and reused for every new click.
        first = next((item for item in report.items if item["status"] != "failed"), None)
        if first is not None:
            picture = Image.load(first["inputs"]["image"])
            for x in (40, 80):
                g = build_graph(args.model, (x, 60))
                outputs = Scheduler(g, cache=scheduler.cache).run(image=picture, output_dir=args.out + "/clicks")
                print(f"click ({x}, 60): best score {outputs['scores'].values.max():.3f}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
