"""The graph of graphs/lift_3d.yaml, built in Python: detections -> SAM masks -> a point cloud per object.

    python examples/lift_3d.py --make-inputs                     # write demo-data/lift, then run on it
    python examples/lift_3d.py --image rgb.png --depth depth.png --intrinsics camera.json \
        --detections results.json --instances instances.json --out runs/lift

Each image gets clouds/cloud_<n>.ply (binary PLY, metres, camera frame) with cloud_all.ply and cloud.json, mcc/<n>/ (the inputs of
MCC-style reconstruction) and an overlay; the point count and centroid of each object are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from samflow.engine.graph import Graph
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import Image
from samflow.engine.types.geometry import Depth, Intrinsics
from samflow.scale.runner import plan_items, run_graph

DEMO = "demo-data/lift"


def build_graph(detections: str, instances: str | None = None, model: Any = "tiny", checkpoint: str | None = None
                ) -> Graph:
    """Exactly graphs/lift_3d.yaml (with the files and model given)."""
    g = Graph(description="masks + depth + pinhole intrinsics -> per-object point clouds and MCC reconstruction "
                          "inputs")
    image = g.input("image", Image)
    depth = g.input("depth", Depth)
    camera = g.input("intrinsics", Intrinsics)
    detect = g.add("detect.file", "detect", params={"file": detections, "images": instances}, image=image)
    encoder = g.add("sam.encoder", "encoder", params={"model": model, "checkpoint": checkpoint}, image=image)
    segment = g.add("detect.segment", "segment", params={"refine": True}, embedding=encoder.embedding,
                    detections=detect.detections)
    lift = g.add("lift.depth", "lift", params={"voxel_size_m": 0.01, "outlier_neighbors": 12}, image=image,
                 depth=depth, masks=segment.masks, intrinsics=camera)
    g.add("lift.write", "write", params={"merged": True}, clouds=lift.clouds)
    g.add("mcc.export", "mcc", image=image, depth=depth, masks=segment.masks, intrinsics=camera)
    g.add("masks.overlay", "overlay", image=image, masks=segment.masks, boxes=detect.detections)
    g.output("detections", detect.detections)
    return g


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--make-inputs", action="store_true", help=f"write the demo inputs to {DEMO} first")
    parser.add_argument("--image", default=f"{DEMO}/image.png")
    parser.add_argument("--depth", default=f"{DEMO}/depth.png", help="16-bit PNG (mm) or float .npy (m)")
    parser.add_argument("--intrinsics", default=f"{DEMO}/intrinsics.json")
    parser.add_argument("--detections", default=f"{DEMO}/detections.json", help="COCO results JSON")
    parser.add_argument("--instances", default=f"{DEMO}/instances.json", help="COCO annotations (ids, names)")
    parser.add_argument("--out", default="runs/lift")
    parser.add_argument("--model", default="tiny", help="a preset name or SamConfig fields as YAML")
    parser.add_argument("--checkpoint")
    args = parser.parse_args(argv)

    if args.make_inputs:
        from samflow.data.synthetic_depth import write_depth_demo

        write_depth_demo(DEMO)
    graph = build_graph(args.detections, args.instances, yaml.safe_load(args.model), args.checkpoint)
    items = plan_items(graph, {"image": args.image, "depth": args.depth, "intrinsics": args.intrinsics})
    with Scheduler(graph) as scheduler:
        report = run_graph(scheduler, items, args.out, progress=False)
    for item in report.items:
        print(f"{item['id']}: {item['status']} {item.get('error', '')}".rstrip())
        if item["status"] == "ok":
            for cloud in json.loads((Path(args.out) / item["id"] / "clouds" / "cloud.json").read_text()):
                print(f"  {cloud['label']}: {cloud['points']} points, centroid {cloud.get('centroid')}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
