"""A Ray run where one input kills every worker that reaches it (a segfault, the OOM killer: the process dies, no
exception): does the run end, with that input failed and the rest done, and how long does it take?

    python benchmarks/ray_fault.py [--images 8] [--culprit 3] [--workers 2] [--batch-size 2] [--max-crashes 2]
                                   [--size 256] [--timeout 600] [--compare]

Writes --images synthetic scenes, then runs graphs/point_prompt.yaml over them on a local Ray cluster through
`samflow.scale.distributed.execute` with a job whose `process` calls `os._exit(1)` on image number --culprit (the
fault lives in this script, not in samflow: the job reaches the workers by value). Prints whether the run ended,
each status count, the culprit's record, the worker deaths per input, the seconds (cluster start apart), and with
--compare the same run without the fault. A run still going after --timeout seconds is stopped and reported as
not ending (what samflow did before it bounded the retries: Ray Data retries a dead worker's batch for ever).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import tempfile
import time
from pathlib import Path

from PIL import Image

from samflow.data.synthetic import render_scene, scene_file_stem
from samflow.models.sam import build_sam, save_checkpoint
from samflow.scale.jobs import GraphJob

REPO = Path(__file__).resolve().parents[1]


class CrashOn(GraphJob):
    """Kills its worker process whenever it reaches the input file named `culprit`."""

    def __init__(self, graph, culprit: str | None) -> None:
        super().__init__(graph)
        self.culprit = culprit

    def process(self, item_id, inputs):
        if self.culprit is not None and Path(inputs["image"]).name == self.culprit:
            os._exit(1)
        return super().process(item_id, inputs)


class DidNotEnd(Exception):
    pass


def _alarm(signum, frame):
    raise DidNotEnd


def run_once(args: argparse.Namespace, images: Path, out: Path, culprit: str | None) -> dict:
    from samflow.engine.graph import Graph
    from samflow.scale import distributed

    graph = Graph.load(args.graph, overrides={"encoder.checkpoint": str(args.checkpoint)})
    items = distributed.plan_items(graph, {"image": images})
    options = distributed.RayOptions(workers=args.workers, batch_size=args.batch_size, progress=False,
                                     max_crashes=args.max_crashes)
    started = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(args.timeout)
    ended = True
    try:
        distributed.execute(CrashOn(graph, culprit), items, out, options)
    except DidNotEnd:
        ended = False
    finally:
        signal.alarm(0)
    seconds = time.perf_counter() - started
    manifest = json.loads((out / "run.json").read_text())
    return {"ended": ended, "seconds": seconds, "counts": manifest["counts"], "manifest": manifest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--culprit", type=int, default=3, help="which image (1-based) kills its workers")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-crashes", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=600, help="seconds before the run is called endless")
    parser.add_argument("--compare", action="store_true", help="also time the run without the fault")
    parser.add_argument("--graph", default=str(REPO / "graphs" / "point_prompt.yaml"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local cluster listens on loopback only

    import ray

    with tempfile.TemporaryDirectory(prefix="samflow-fault-") as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        for index in range(1, args.images + 1):
            Image.fromarray(render_scene([7, index], args.size).image).save(
                root / "images" / f"{scene_file_stem(index)}.png")
        culprit = f"{scene_file_stem(args.culprit)}.png"
        args.checkpoint = root / "tiny.safetensors"
        save_checkpoint(build_sam("tiny"), args.checkpoint)

        started = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        cluster_start = time.perf_counter() - started
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            faulty = run_once(args, root / "images", root / "faulty", culprit)
            clean = run_once(args, root / "images", root / "clean", None) if args.compare else None
        finally:
            ray.shutdown()

    items = {item["id"]: item for item in faulty["manifest"]["items"]}
    bad = items[Path(culprit).stem]
    rest_done = all(item["status"] == "ok" for item_id, item in items.items() if item_id != bad["id"])
    print(f"{args.images} images of {args.size} px, {args.workers} Ray workers, batch {args.batch_size}, "
          f"max_crashes {args.max_crashes}; {culprit} kills every worker that reaches it; {os.cpu_count()} CPUs")
    print(f"cluster start {cluster_start:.2f} s (not counted below)")
    print(f"run ended: {faulty['ended']} after {faulty['seconds']:.2f} s; counts {faulty['counts']}")
    print(f"{bad['id']}: {bad['status']}: {bad.get('error', bad.get('reason'))}")
    print(f"worker deaths per input: {faulty['manifest'].get('worker_crashes', {})}")
    print(f"that input failed and the rest done: {bad['status'] == 'failed' and rest_done}")
    if clean is not None:
        print(f"without the fault: {clean['seconds']:.2f} s, counts {clean['counts']}; the fault cost "
              f"{faulty['seconds'] - clean['seconds']:.2f} s ({args.max_crashes} worker restarts and retried batches)")


if __name__ == "__main__":
    main()
