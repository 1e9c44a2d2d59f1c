"""Throughput in one process against a local Ray cluster, on the same images, and the cluster's fixed costs.

    python benchmarks/distributed.py [--job annotate|graph] [--images 32] [--size 256] [--workers 2]
                                     [--points-per-side 16] [--pred-iou-thresh 0.88] [--stability-score-thresh 0.95]
                                     [--graph graphs/point_prompt.yaml] [--threads N]

Writes --images synthetic scenes (samflow.data.synthetic) to a temporary folder, then runs the same work twice:
- in-process: `samflow annotate` (job annotate, the data engine) or `samflow run` (job graph) in this process;
- on Ray: a local cluster (--workers actors, one CPU and one torch thread each) through `samflow.scale.distributed`.
Prints seconds, images/s and masks/s of each, the cluster's start time, the time to the first result (workers
starting and loading models) and the steady throughput after it; and checks both wrote the same files when the
thread counts match (one torch thread in-process with --threads 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from samflow.data.synthetic import render_scene, scene_file_stem
from samflow.models.sam import build_sam, save_checkpoint

REPO = Path(__file__).resolve().parents[1]


def write_images(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(1, count + 1):
        path = folder / f"{scene_file_stem(index)}.png"
        Image.fromarray(render_scene([7, index], size).image).save(path)
        paths.append(path)
    return paths


def files(folder: Path, manifest: str) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != manifest and not p.name.startswith(".")}


def in_process(args: argparse.Namespace, images: Path, out: Path) -> tuple[float, int]:
    """(seconds, masks) of the in-process engine."""
    from samflow.cli import main

    started = time.perf_counter()
    if args.job == "graph":
        code = main(["run", args.graph, "--input", f"image={images}", "--out", str(out), "--no-progress",
                     "--set", f"encoder.checkpoint={args.checkpoint}"])
        seconds = time.perf_counter() - started
        masks = sum(len(json.loads(path.read_text())) for path in out.glob("*/masks.json"))
    else:
        code = main(["annotate", str(images), "--out", str(out), "--points-per-side", str(args.points_per_side),
                     "--pred-iou-thresh", str(args.pred_iou_thresh), "--stability-score-thresh",
                     str(args.stability_score_thresh), "--checkpoint", str(args.checkpoint), "--no-progress"])
        seconds = time.perf_counter() - started
        masks = sum(len(json.loads(p.read_text()).get("annotations", [])) for p in out.glob("*.json")
                    if p.stem.startswith("sa_"))
    if code not in (0, 1):
        raise SystemExit(f"the in-process run failed with exit code {code}")
    return seconds, masks


def on_ray(args: argparse.Namespace, images: Path, out: Path) -> dict:
    import ray

    from samflow.scale import distributed

    started = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    cluster_start = time.perf_counter() - started
    ray.data.DataContext.get_current().enable_progress_bars = False
    options = dict(workers=args.workers, batch_size=args.batch_size, progress=False)
    try:
        if args.job == "graph":
            from samflow.engine.graph import Graph

            graph = Graph.load(args.graph, overrides={"encoder.checkpoint": str(args.checkpoint)})
            report = distributed.run(graph, images, out, **options)
        else:
            report = distributed.annotate(images, out, checkpoint=args.checkpoint,
                                          points_per_side=args.points_per_side,
                                          pred_iou_thresh=args.pred_iou_thresh,
                                          stability_score_thresh=args.stability_score_thresh, **options)
    finally:
        ray.shutdown()
    summary = report.summary()
    # Warm throughput: what the workers do once started, from the seconds each item took on its worker.
    busy = sum(item.get("seconds", 0.0) for item in report.items if item["status"] in ("ok", "failed"))
    warm = summary["processed"] * args.workers / busy if busy else 0.0
    return {**summary, "cluster_start_s": cluster_start, "warm_images_per_s": warm,
            "manifest": "run.json" if args.job == "graph" else "summary.json"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", choices=("annotate", "graph"), default="annotate")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--points-per-side", type=int, default=16)
    # Official defaults; lower them for masks from untrained (random) weights.
    parser.add_argument("--pred-iou-thresh", type=float, default=0.88)
    parser.add_argument("--stability-score-thresh", type=float, default=0.95)
    parser.add_argument("--graph", default=str(REPO / "graphs" / "point_prompt.yaml"))
    parser.add_argument("--threads", type=int, help="torch threads in-process (default: torch's, all cores)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local cluster listens on loopback only
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="samflow-bench-") as tmp:
        root = Path(tmp)
        write_images(root / "images", args.images, args.size)
        # One weights file for both engines: without shipped weights "tiny" is random, and differently so per process.
        args.checkpoint = root / "tiny.safetensors"
        save_checkpoint(build_sam("tiny"), args.checkpoint)
        local_s, local_masks = in_process(args, root / "images", root / "local")
        ray_figures = on_ray(args, root / "images", root / "ray")
        same = files(root / "local", ray_figures["manifest"]) == files(root / "ray", ray_figures["manifest"])

    n = args.images
    print(f"job {args.job}: {n} images of {args.size} px, {args.workers} Ray workers x 1 thread, batch "
          f"{args.batch_size}; in-process torch threads {torch.get_num_threads()}; {os.cpu_count()} CPUs")
    print(f"{'engine':<12}{'seconds':>9}{'images/s':>10}{'masks/s':>9}")
    print(f"{'in-process':<12}{local_s:>9.2f}{n / local_s:>10.2f}{local_masks / local_s:>9.1f}")
    print(f"{'ray':<12}{ray_figures['seconds']:>9.2f}"
          f"{ray_figures['images_per_s']:>10.2f}{ray_figures['masks_per_s']:>9.1f}   (cluster start excluded)")
    print(f"ray fixed costs: cluster start {ray_figures['cluster_start_s']:.2f} s, first result after "
          f"{ray_figures['first_result_s']:.2f} s (workers start, load models); warm workers "
          f"{ray_figures['warm_images_per_s']:.2f} images/s (per-item seconds, {args.workers} workers)")
    print(f"ray / in-process throughput: {ray_figures['images_per_s'] / (n / local_s):.2f}x; same files: {same}")


if __name__ == "__main__":
    main()
