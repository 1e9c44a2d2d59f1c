"""`samflow demo-data`: write small synthetic inputs for the detector, gaze-video and 3D-lifting recipes."""

from __future__ import annotations

import argparse
import logging

from samflow.commands._graph_options import add_out_argument
from samflow.data.demo import DEFAULT_DIR, PARTS, write_demo

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo-data", help="write synthetic inputs for graphs/detect_then_segment, gaze_video and lift_3d",
        description="Write the inputs the recipes name in their params: DIR/detect (scenes, COCO detections), "
                    "DIR/gaze (a video of a moving shape, 2D and Aria gaze CSVs that follow it, intrinsics) and "
                    "DIR/lift (RGB, 16-bit depth PNG and .npy, intrinsics, detections). The recipes expect "
                    f"the default DIR ({DEFAULT_DIR}) under the repository root.")
    add_out_argument(parser, default=str(DEFAULT_DIR))
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="write only these parts")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    written = write_demo(args.out, tuple(args.only))
    for part, paths in written.items():
        log.info("%s: %s", part, ", ".join(str(path) for path in paths.values()))
    return 0
