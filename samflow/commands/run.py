"""`samflow run GRAPH.yaml --input NAME=PATH ... --out DIR`: run a graph over files."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from samflow.commands._engine_options import add_engine_arguments, check_local, ray_options, stop_cleanly
from samflow.commands._graph_options import SET_HELP, add_graph_arguments, graph_inputs, load_graph
from samflow.engine.cache import EmbeddingCache
from samflow.engine.graph import Graph
from samflow.engine.scheduler import Scheduler
from samflow.errors import InputError
from samflow.scale.runner import MANIFEST, plan_items, run_graph

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run a graph over images into an output folder",
        description="Run a YAML graph once per item. Each --input is a file, a folder or a glob; one item per image "
                    "(inputs given one file are shared by all items). Each item is written to OUT/<item>/ when it "
                    "succeeds, items already there are skipped, failures are recorded and the run goes on; "
                    "OUT/run.json records per-node runs, seconds and cache hits, and per-item status (of every item "
                    "the folder holds; stopped by Ctrl-C or SIGTERM, the items not reached are pending). "
                    "Exit 1 if any item failed, 130/143 when stopped by Ctrl-C/SIGTERM.")
    add_graph_arguments(parser, input_help="a graph input: a file, a folder or a glob (repeat per input)",
                        set_help=f"{SET_HELP} (e.g. --set encoder.device=cuda)")
    parser.add_argument("--cache", metavar="DIR", help="on-disk embedding cache: reruns over the same images "
                                                        "skip the encoder")
    parser.add_argument("--cache-mb", type=int, metavar="MB", help="in-memory cache budget (default: sized "
                                                                    "for the device)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="threads for independent branches (default 1); with --engine ray: Ray workers "
                             "(default: as many as the cluster allows)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_arguments(parser, workers=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    graph = load_graph(args)
    budget = args.cache_mb * 2**20 if args.cache_mb is not None else None
    check_local(args)
    with stop_cleanly() as stop:
        try:
            if args.engine == "ray":
                return _run_on_ray(args, graph, budget)
            return _run_here(args, graph, budget)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the runner has written run.json on the way out
            return stop.exit_status(Path(args.out) / MANIFEST)


def _run_here(args: argparse.Namespace, graph: Graph, budget: int | None) -> int:
    items = plan_items(graph, graph_inputs(args))
    cache = EmbeddingCache(max_bytes=budget, disk_dir=args.cache)
    with Scheduler(graph, cache=cache, max_workers=args.workers or 1) as scheduler:
        report = run_graph(scheduler, items, args.out, progress=False if args.no_progress else None,
                           graph_source=args.graph)
    counts = report.counts()
    log.info("%d ok, %d failed, %d skipped (done before) in %.1f s; see %s/run.json", counts["ok"],
             counts["failed"], counts["skipped"], report.seconds, args.out)
    for item in report.failed:
        log.error("failed: %s: %s", item["id"], item["error"])
    return 1 if report.failed else 0


def _run_on_ray(args: argparse.Namespace, graph: Graph, budget: int | None) -> int:
    from samflow.scale import distributed
    from samflow.scale.jobs import GraphJob

    if args.cache:
        raise InputError("--cache (an on-disk embedding cache) is not shared by Ray workers; leave it out")
    items = distributed.plan_items(graph, graph_inputs(args))
    report = distributed.execute(GraphJob(graph, args.graph, budget), items, args.out,
                                 ray_options(args))
    for item in report.failed:
        log.error("failed: %s: %s", item["id"], item["error"])
    return 1 if report.failed else 0
