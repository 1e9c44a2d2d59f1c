"""`samflow video GRAPH.yaml --input frame=clip.mp4 --out DIR`: run a graph over every frame of a video."""

from __future__ import annotations

import argparse
import logging

from samflow.commands._graph_options import add_graph_arguments, graph_inputs, load_graph
from samflow.errors import InputError
from samflow.scale.video import frame_input, run_video

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "video", help="run a graph over the frames of a video or a folder of frames",
        description="Run a YAML graph once per frame, decoding one frame at a time (memory does not grow with the "
                    "video). The graph's Frame (or Image) input takes the frames: give it a video file or a folder "
                    "of images; its other inputs take one file each, shared by every frame. Writes "
                    "OUT/frames.jsonl (one line per frame), a PNG per mask (OUT/<output>/<frame>_<set>.png), "
                    "OUT/run.json, and with --overlay OUT/overlay.mp4. Exit 1 if any frame failed.")
    add_graph_arguments(parser, input_help="the frames (a video file or a folder of images) and any other graph input")
    parser.add_argument("--overlay", nargs="?", const=True, default=False, metavar="OUTPUT",
                        help="also write OUT/overlay.mp4 (of the first Masks output, or of OUTPUT)")
    parser.add_argument("--fps", type=float, help="a frame folder's rate (frame times = index / fps); the "
                                                  "overlay's rate (default: the video's)")
    parser.add_argument("--timestamps", metavar="CSV", help="a frame folder's times: a CSV with a time column "
                                                            "(timestamp_s, timestamp_ns...) and optionally 'file'")
    parser.add_argument("--start", type=int, default=0, help="first frame index (default 0)")
    parser.add_argument("--step", type=int, default=1, help="run every STEP-th frame (default 1)")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--cache-mb", type=int, default=0, metavar="MB",
                        help="in-memory embedding cache (default 0: video frames rarely repeat)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samflow.data.frames import open_frames

    graph = load_graph(args)
    inputs = graph_inputs(args)
    name = frame_input(graph)
    if name not in inputs:
        raise InputError(f"give the frames with --input {name}=VIDEO_OR_FOLDER")
    unknown = [key for key in inputs if key not in graph.inputs]
    if unknown:
        raise InputError(f"the graph has no input {', '.join(unknown)} (inputs: {', '.join(graph.inputs)})")
    frames = open_frames(inputs.pop(name), fps=args.fps, timestamps=args.timestamps, start=args.start,
                         step=args.step, max_frames=args.max_frames)
    report = run_video(graph, frames, args.out, shared=inputs, overlay=args.overlay, fps=args.fps,
                       cache_bytes=args.cache_mb * 2**20, progress=False if args.no_progress else None)
    log.info("%d frames: %d ok, %d failed in %.1f s; see %s/run.json%s", report.frames, report.ok, report.failed,
             report.seconds, args.out, f" and {report.overlay}" if report.overlay else "")
    return 1 if report.failed else 0
