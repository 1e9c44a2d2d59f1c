"""The graph of graphs/gaze_video.yaml, built in Python and run over a video frame by frame.

    python examples/gaze_video.py --make-inputs                  # write demo-data/gaze, then run on it
    python examples/gaze_video.py --video clip.mp4 --gaze general_eye_gaze.csv --intrinsics rgb.json \
        --time-offset first --out runs/gaze

Writes runs/gaze/frames.jsonl (per frame: gaze status and point, masks), a PNG per fixated frame's mask,
overlay.mp4 and run.json, and prints how many frames had a fixation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from samflow.data.frames import open_frames
from samflow.engine.graph import Graph
from samflow.engine.types.video import Frame
from samflow.scale.video import run_video

DEMO = "demo-data/gaze"


def build_graph(gaze: str, intrinsics: str | None, model: Any = "tiny", checkpoint: str | None = None,
                time_offset: float | str = 0.0) -> Graph:
    """Exactly graphs/gaze_video.yaml (with the files and model given)."""
    g = Graph(description="eye gaze on a video -> masks of the fixated object")
    frame = g.input("frame", Frame)
    points = g.add("gaze.points", "gaze", params={"file": gaze, "intrinsics": intrinsics, "tolerance_s": 0.02,
                                                  "fixation": "ivt", "velocity_threshold": 30,
                                                  "time_offset_s": time_offset}, frame=frame)
    encoder = g.add("sam.encoder", "encoder", params={"model": model, "checkpoint": checkpoint}, image=frame)
    segment = g.add("sam.decoder", "segment", params={"multimask": True}, embedding=encoder.embedding,
                    points=points.points)
    g.output("masks", segment.masks)
    g.output("gaze", points.gaze)
    return g


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--make-inputs", action="store_true", help=f"write the demo inputs to {DEMO} first")
    parser.add_argument("--video", default=f"{DEMO}/video.mp4", help="a video file or a folder of frames")
    parser.add_argument("--gaze", default=f"{DEMO}/gaze.csv", help="2D gaze CSV or Aria MPS eye-gaze CSV")
    parser.add_argument("--intrinsics", default=f"{DEMO}/intrinsics.json")
    parser.add_argument("--time-offset", default="0", help="seconds added to gaze times, or 'first'")
    parser.add_argument("--out", default="runs/gaze")
    parser.add_argument("--model", default="tiny", help="a preset name or SamConfig fields as YAML")
    parser.add_argument("--checkpoint")
    parser.add_argument("--max-frames", type=int)
    args = parser.parse_args(argv)

    if args.make_inputs:
        from samflow.data.synthetic_video import write_gaze_demo

        write_gaze_demo(DEMO)
    offset = args.time_offset if args.time_offset == "first" else float(args.time_offset)
    graph = build_graph(args.gaze, args.intrinsics, yaml.safe_load(args.model), args.checkpoint, offset)
    report = run_video(graph, open_frames(args.video, max_frames=args.max_frames), args.out, overlay=True,
                       progress=False)
    statuses: dict[str, int] = {}
    for line in (Path(args.out) / "frames.jsonl").read_text().splitlines():
        record = json.loads(line)
        status = record["outputs"]["gaze"]["status"] if record["status"] == "ok" else "failed"
        statuses[status] = statuses.get(status, 0) + 1
    print(f"{report.frames} frames ({report.failed} failed); gaze: {statuses}; overlay: {report.overlay}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
