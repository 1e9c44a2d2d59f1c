"""The graph of graphs/detect_then_segment.yaml, built in Python: saved detections -> one SAM mask per box.

    python examples/detect_then_segment.py --make-inputs          # write demo-data/detect, then run on it
    python examples/detect_then_segment.py --images photos/ --detections results.json --out runs/detect

Each image gets a folder with a mask per detection (PNG + JSON with label, class, confidence, SAM score), an
overlay and the detections. With supervision installed, the masks of the first image are shown as
supervision.Detections too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from samflow.engine.graph import Graph
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import Image
from samflow.scale.runner import plan_items, run_graph

DEMO = "demo-data/detect"


def build_graph(detections: str, instances: str | None = None, model: Any = "tiny", checkpoint: str | None = None,
                write: bool = True) -> Graph:
    """Exactly graphs/detect_then_segment.yaml (with the files and model given); without `write`, the masks are
    the graph's output instead of files."""
    g = Graph(description="saved detections -> SAM masks per box (one batched decoder call, refined once), "
                          "labels kept")
    image = g.input("image", Image)
    detect = g.add("detect.file", "detect", params={"file": detections, "images": instances, "score_threshold": 0.3},
                   image=image)
    encoder = g.add("sam.encoder", "encoder", params={"model": model, "checkpoint": checkpoint}, image=image)
    segment = g.add("detect.segment", "segment", params={"refine": True}, embedding=encoder.embedding,
                    detections=detect.detections)
    if write:
        g.add("masks.write", "write", params={"dir": "masks", "name": "instance"}, masks=segment.masks)
        g.add("masks.overlay", "overlay", image=image, masks=segment.masks, boxes=detect.detections)
        g.output("detections", detect.detections)
    else:
        g.output("masks", segment.masks)
    return g


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--make-inputs", action="store_true", help=f"write the demo inputs to {DEMO} first")
    parser.add_argument("--images", default=f"{DEMO}/images", help="an image file, a folder or a glob")
    parser.add_argument("--detections", default=f"{DEMO}/detections.json", help="COCO results JSON")
    parser.add_argument("--instances", default=f"{DEMO}/instances.json", help="COCO annotations (ids, names)")
    parser.add_argument("--out", default="runs/detect")
    parser.add_argument("--model", default="tiny", help="a preset name or SamConfig fields as YAML")
    parser.add_argument("--checkpoint")
    args = parser.parse_args(argv)

    if args.make_inputs:
        from samflow.data.demo import write_detect_demo

        write_detect_demo(DEMO)
    model = yaml.safe_load(args.model)
    graph = build_graph(args.detections, args.instances, model, args.checkpoint)
    with Scheduler(graph) as scheduler:
        report = run_graph(scheduler, plan_items(graph, {"image": args.images}), args.out, progress=False)
        for item in report.items:
            print(f"{item['id']}: {item['status']} {item.get('error', '')}".rstrip())
        # The same steps with the masks as output, served from the run's embedding cache.
        masks_graph = build_graph(args.detections, args.instances, model, args.checkpoint, write=False)
        _show_supervision(Scheduler(masks_graph, cache=scheduler.cache), report)
    return 1 if report.failed else 0


def _show_supervision(scheduler: Scheduler, report: Any) -> None:
    """Masks to supervision.Detections, when supervision is installed."""
    try:
        import supervision  # noqa: F401
    except ImportError:
        return
    first = next((item for item in report.items if item["status"] == "ok"), None)
    if first is None:
        return
    outputs = scheduler.run(image=first["inputs"]["image"])
    detections = outputs["masks"].to_supervision()
    print(f"{first['id']} as supervision.Detections: {len(detections)} objects, classes "
          f"{list(detections.data.get('class_name', []))}")


if __name__ == "__main__":
    sys.exit(main())
