"""Run a graph, or the data engine, over a dataset on Ray Data: same graphs, same files as in one process.

    from samflow.scale import distributed
    report = distributed.run("graphs/point_prompt.yaml", "photos/", "runs/points", workers=4, gpus_per_worker=1)
    report = distributed.annotate("s3://bucket/photos/", "runs/sa", workers=8, gpus_per_worker=1)

How a run goes:
1. The driver lists the inputs (local folder or glob, or a URI pyarrow reads) and leaves out items whose outputs
   exist (resume): they never reach the cluster.
2. The rest becomes a Ray Dataset of (item id, input paths). `map_batches` runs it through a pool of actors
   (`ActorPoolStrategy`), each holding one started job: its models and its scheduler, so embeddings are shared
   inside a worker as in-process.
3. Workers send back each item's file bytes; the driver writes them atomically and records the item once. A worker
   that dies is replaced by Ray and its batch retried; an item that fails (a corrupt image) is an
   error record. The manifest (`OUT/run.json` for graphs, `OUT/summary.json` for the data engine) accounts for
   every input once: ok, failed, skipped (done before), or pending (the run stopped first; rerun to finish).

Outputs are written by the driver, so OUT only needs to be reachable from it; inputs must be readable by every
worker (a shared folder, or an object store URI).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from samflow.errors import InputError, SamflowError
from samflow.scale import sources
from samflow.scale.jobs import GraphJob, Job

if TYPE_CHECKING:
    from samflow.engine.graph import Graph

log = logging.getLogger(__name__)

__all__ = ["ClusterError", "DistributedReport", "RayOptions", "annotate", "execute", "plan_images", "plan_items",
           "run"]

Item = tuple[str, dict[str, str]]

# Ray reads this when it is imported: "0" makes a cluster started here use loopback addresses only (a local
# cluster needs no port open to the network).
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class ClusterError(SamflowError):
    """Ray is missing, the cluster cannot be reached, or workers kept dying on a batch."""


@dataclass
class RayOptions:
    """How to use the cluster.

    address: None starts a local cluster (or uses the one this process already joined with `ray.init`);
    "auto" joins the cluster this machine belongs to; "ray://host:10001" a remote one through Ray Client.
    workers: actors in the pool (None: from 1 up to what the cluster's resources allow).
    gpus_per_worker / cpus_per_worker: resources of each actor (fractions share a GPU); a worker runs torch with
    int(cpus_per_worker) threads (at least 1).
    batch_size: items per `map_batches` call, also the unit retried when a worker dies (Ray Data replaces a
    dead actor and retries its batch, without limit by default).
    progress: Ray's progress output and samflow's progress lines (None: Ray's default).
    init_args: extra `ray.init` arguments when this run starts or joins the cluster (e.g. num_cpus,
    object_store_memory). remote_args: extra actor options (runtime_env, resources, accelerator_type, ...).
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    batch_size: int = 8
    progress: bool | None = None
    progress_every: float = 10.0
    init_args: dict[str, Any] = field(default_factory=dict)
    remote_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise InputError(f"workers must be at least 1, got {self.workers}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.gpus_per_worker < 0 or self.cpus_per_worker < 0:
            raise InputError("gpus_per_worker and cpus_per_worker must not be negative")


@dataclass
class DistributedReport:
    """What a run did: per-item records in input order, the workers' summed counters, timings (`seconds` in all,
    `cluster_seconds` to start or join the cluster, `first_result_seconds` from then to the first item back: the
    workers' start, model loading included)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    cluster_seconds: float = 0.0
    first_result_seconds: float = 0.0

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [item for item in self.items if item["status"] == "failed"]

    def counts(self) -> dict[str, int]:
        counts = {"ok": 0, "failed": 0, "skipped": 0, "pending": 0}
        for item in self.items:
            counts[item["status"]] += 1
        return counts

    def summary(self) -> dict[str, Any]:
        """Throughput over the processing time (the cluster's start excluded): images/s, masks/s, failures."""
        counts = self.counts()
        processed = counts["ok"] + counts["failed"]
        masks = sum(item.get("masks", 0) for item in self.items if item["status"] == "ok")
        busy = max(self.seconds - self.cluster_seconds, 1e-9)
        return {"processed": processed, "failures": counts["failed"], "masks": masks,
                "images_per_s": round(processed / busy, 3) if processed else 0.0,
                "masks_per_s": round(masks / busy, 3) if processed else 0.0,
                "seconds": round(self.seconds, 3), "cluster_start_s": round(self.cluster_seconds, 3),
                "first_result_s": round(self.first_result_seconds, 3)}


# ----------------------------------------------------------------------------------------------------- the API


def run(graph: Graph | str | Path, dataset: Any, out: str | Path, *, address: str | None = None, workers: int | None = None,
        gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, batch_size: int = 8,
        progress: bool | None = None, cache_bytes: int | None = None, graph_source: str | None = None,
        init_args: Mapping[str, Any] | None = None,
        remote_args: Mapping[str, Any] | None = None) -> DistributedReport:
    """Run `graph` (a Graph, or a YAML file) once per item of `dataset` on Ray, writing `out/<item>/` as
    `samflow run` does, plus `out/run.json`.

    dataset: a path, folder, glob or URI (for a graph with one input); {input name: spec} (zipped as
    `samflow run --input` does); a list of (item id, {input: path}); or a `ray.data.Dataset` with a column of
    paths per graph input and an optional `id` column.
    """
    from samflow.engine.graph import Graph

    if isinstance(graph, (str, Path)):
        graph_source = graph_source or str(graph)
        graph = Graph.load(graph)
    items = _items_of(graph, dataset)
    options = RayOptions(address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                         cpus_per_worker=cpus_per_worker, batch_size=batch_size,
                         progress=progress, init_args=dict(init_args or {}), remote_args=dict(remote_args or {}))
    return execute(GraphJob(graph, graph_source, cache_bytes), items, out, options)


def annotate(images: str | Path | Sequence[str | Path], out: str | Path, *, model: str | None = None,
             checkpoint: str | Path | None = None, device: str | None = None, preview: bool = False,
             cache: str | Path | None = None, address: str | None = None, workers: int | None = None,
             gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, batch_size: int = 8,
             progress: bool | None = None, init_args: Mapping[str, Any] | None = None,
             remote_args: Mapping[str, Any] | None = None, **amg_params: Any) -> DistributedReport:
    """`samflow annotate` on Ray: one SA-1B JSON per image in `out` (the same bytes as in-process with equal
    torch threads), `out/image_ids.json`, and `out/summary.json` (the in-process fields plus per-item records).

    images: files, folders, globs or URIs. amg_params: the command's mask generation options
    (points_per_side=32, pred_iou_thresh=0.88, ...; see `samflow annotate --help`).
    """
    from samflow.scale.annotate import AMG_OPTIONS
    from samflow.scale.jobs import AnnotateJob

    defaults = {name: default for name, _, default, _ in AMG_OPTIONS}
    unknown = sorted(set(amg_params) - set(defaults))
    if unknown:
        raise InputError(f"unknown mask generation option(s) {', '.join(unknown)}; known: {', '.join(defaults)}")
    specs = [images] if isinstance(images, (str, Path)) else list(images)
    job = AnnotateJob({**defaults, **amg_params}, model=model, checkpoint=str(checkpoint) if checkpoint else None,
                      device=device, preview=preview, cache_dir=str(cache) if cache else None)
    options = RayOptions(address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                         cpus_per_worker=cpus_per_worker, batch_size=batch_size, progress=progress,
                         init_args=dict(init_args or {}), remote_args=dict(remote_args or {}))
    return execute(job, plan_images(specs, out), out, options)


def plan_images(specs: Sequence[str | Path], out: str | Path) -> list[Item]:
    """(stem, {image, image_id}) per image, as `samflow annotate` lists them: local files deduplicated and sorted
    as the command does, then URIs; ids from (and added to) `out/image_ids.json`."""
    from samflow.ops.image import IMAGE_SUFFIXES
    from samflow.scale.annotate import image_ids
    from samflow.scale.runner import expand_paths, unique_stems

    local = [spec for spec in specs if not sources.is_uri(spec)]
    remote = [str(spec) for spec in specs if sources.is_uri(spec)]
    paths = [str(p) for p in sorted({p.resolve(): p for spec in local
                                     for p in expand_paths(spec, IMAGE_SUFFIXES)}.values())]
    paths += sorted({uri for spec in remote for uri in sources.list_files(spec, IMAGE_SUFFIXES)})
    if not paths:
        raise InputError(f"no images found in {' '.join(str(spec) for spec in specs)}")
    Path(out).mkdir(parents=True, exist_ok=True)
    stems = unique_stems(paths, fallback="image")
    ids = image_ids(Path(out), stems)
    return [(stem, {"image": path, "image_id": str(image_id)}) for stem, path, image_id in zip(stems, paths, ids)]


def plan_items(graph: Graph, specs: Mapping[str, str | Path]) -> list[Item]:
    """(item id, {input: path}) per item, by `samflow run`'s rules, for local paths and URIs alike."""
    from samflow.scale import runner

    return runner.plan_items(graph, specs, list_files=sources.list_files)


def execute(job: Job, items: Sequence[Item], out: str | Path, options: RayOptions | None = None
            ) -> DistributedReport:
    """Run `job` over `items` on Ray into `out`: resume, stream, commit, account (see the module's doc)."""
    options = options or RayOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids = [item_id for item_id, _ in items]
    repeated = sorted(item_id for item_id, count in Counter(ids).items() if count > 1)
    if repeated:
        raise InputError(f"item ids must be unique; repeated: {', '.join(repeated[:5])}")
    records: dict[str, dict[str, Any]] = {}
    todo: list[Item] = []
    for item_id, inputs in items:
        if job.is_done(out, item_id):  # resume: done items never reach the cluster
            records[item_id] = {"id": item_id, "inputs": dict(inputs), "status": "skipped",
                                "reason": "done in an earlier run"}
        else:
            todo.append((item_id, dict(inputs)))
    report = DistributedReport()
    started = time.perf_counter()
    log.info("%d items: %d to process, %d done before", len(items), len(todo), len(items) - len(todo))
    try:
        if todo:
            with _cluster(options) as cluster_seconds:
                report.cluster_seconds = cluster_seconds
                _process(job, todo, out, options, records, report, started)
    finally:
        report.seconds = time.perf_counter() - started
        inputs_of = dict(items)
        report.items = [records.get(item_id) or {"id": item_id, "inputs": dict(inputs_of[item_id]),
                                                 "status": "pending", "reason": "the run stopped before it"}
                        for item_id in ids]
        _write_manifest(out / job.manifest_name, job, report, options)
    summary = report.summary()
    log.info("ray: %d ok, %d failed, %d skipped (done before) in %.1f s (cluster start %.1f s): %.2f images/s, "
             "%.1f masks/s; see %s", report.counts()["ok"], summary["failures"], report.counts()["skipped"],
             report.seconds, report.cluster_seconds, summary["images_per_s"], summary["masks_per_s"],
             out / job.manifest_name)
    return report


# ------------------------------------------------------------------------------------------------- the driver


def _process(job: Job, todo: list[Item], out: Path, options: RayOptions, records: dict[str, dict[str, Any]],
             report: DistributedReport, started: float) -> None:
    import ray

    from samflow.scale.ray_worker import stats_add

    pending = {item_id for item_id, _ in todo}
    inputs_of = dict(todo)
    last_log = time.perf_counter()
    done = failed = 0
    # closing(): an interrupted driver stops the Ray execution too, instead of leaving it to the garbage collector.
    try:
        with closing(_results(job, todo, options)) as results:
            for batch in results:
                if not done:
                    report.first_result_seconds = time.perf_counter() - started - report.cluster_seconds
                for row in batch.to_pylist():
                    item_id = row["id"]
                    if item_id not in pending:  # a retried batch delivered twice: the first copy counted
                        log.debug("ignoring a second result for %s", item_id)
                        continue
                    pending.discard(item_id)
                    records[item_id] = _commit(job, out, row, inputs_of[item_id])
                    if row["stats"]:
                        stats_add(report.stats, json.loads(row["stats"]))
                    done += 1
                    failed += records[item_id]["status"] == "failed"
                if options.progress is not False and time.perf_counter() - last_log >= options.progress_every:
                    last_log = time.perf_counter()
                    elapsed = last_log - started - report.cluster_seconds
                    log.info("%d/%d items (%d failed), %.2f images/s", done, len(todo), failed,
                             done / max(elapsed, 1e-9))
    except ray.exceptions.RayError as exc:
        raise ClusterError(f"the Ray job failed after {done} of {len(todo)} items: {_first_line(exc)}; what "
                           "finished is written, rerun the same command to process the rest") from exc


def _results(job: Job, todo: list[Item], options: RayOptions) -> Iterator[Any]:
    """The dataset of results, streamed: one pyarrow table per batch as workers finish them."""
    import ray

    from samflow.scale.ray_worker import FAULT_ENV, BatchWorker  # pyarrow: installed with Ray Data

    context = ray.data.DataContext.get_current()
    if options.progress is not None:
        context.enable_progress_bars = options.progress
    rows = [{"id": item_id, "inputs": json.dumps(job.to_worker(inputs))} for item_id, inputs in todo]
    # One block per batch: a worker's death costs a retry of one batch, not of a big block.
    blocks = min(math.ceil(len(rows) / options.batch_size), 100_000)
    dataset = ray.data.from_items(rows, override_num_blocks=blocks)
    if options.workers is not None:
        compute = ray.data.ActorPoolStrategy(size=options.workers)
    else:
        compute = ray.data.ActorPoolStrategy(min_size=1, max_size=None)
    # Ray Data's actor pools restart dead actors and retry their tasks by default: that is the retry we rely on.
    remote = {"num_cpus": options.cpus_per_worker, **options.remote_args}
    if options.gpus_per_worker:
        remote["num_gpus"] = options.gpus_per_worker
    threads = max(1, int(options.cpus_per_worker))
    results = dataset.map_batches(BatchWorker, fn_constructor_args=(job, os.environ.get(FAULT_ENV), threads),
                                  batch_size=options.batch_size, batch_format="pyarrow", compute=compute,
                                  **remote)
    yield from results.iter_batches(batch_size=None, batch_format="pyarrow")


def _commit(job: Job, out: Path, row: dict[str, Any], inputs: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {"id": row["id"], "inputs": inputs, "status": row["status"],
                              "seconds": round(row["seconds"], 6), "worker": row["worker"]}
    if row["status"] != "ok":
        log.warning("item %s failed: %s", row["id"], row["error"])
        return {**record, "error": row["error"]}
    try:
        job.commit(out, row["id"], list(zip(row["names"], row["blobs"])))
    except OSError as exc:  # e.g. a full disk: recorded per item, so the manifest still says what is missing
        log.error("cannot write the outputs of %s: %s", row["id"], exc)
        return {**record, "status": "failed", "error": f"cannot write outputs: {exc}"}
    return {**record, "outputs": row["outputs"], "masks": row["masks"]}


@contextmanager
def _cluster(options: RayOptions) -> Iterator[float]:
    """Join (or start) the cluster for the run; yields the seconds that took. A cluster this process had
    already joined is left as it was; one joined here is left at the end."""
    if options.address is None:
        os.environ.setdefault(_LOOPBACK_ENV, "0")
    try:
        import ray
        import ray.data  # noqa: F401  (fails here, not later, when only ray core is installed)
    except ImportError as exc:
        raise ClusterError("the Ray engine needs Ray Data: pip install 'samflow[ray]'") from exc
    if ray.is_initialized():
        yield 0.0
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, **options.init_args}
    if options.address is not None:
        kwargs["address"] = options.address
    started = time.perf_counter()
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ClusterError(f"cannot start or join the Ray cluster ({options.address or 'local'}): {exc}") from exc
    seconds = time.perf_counter() - started
    log.info("ray cluster %s ready in %.1f s: %s", options.address or "(local)", seconds,
             ", ".join(f"{k} {v:g}" for k, v in sorted(ray.cluster_resources().items()) if k in ("CPU", "GPU")))
    try:
        yield seconds
    finally:
        ray.shutdown()


def _write_manifest(path: Path, job: Job, report: DistributedReport, options: RayOptions) -> None:
    from samflow.fileio import write_json_atomic

    stats = dict(report.stats)
    nodes = {name: {**node, "seconds": round(node.get("seconds", 0.0), 6)}
             for name, node in stats.pop("nodes", {}).items()}
    manifest = {**job.manifest_extra(report), "engine": "ray", "seconds": round(report.seconds, 6),
                "counts": report.counts(), "summary": report.summary(),
                "ray": {"address": options.address, "workers": options.workers, "batch_size": options.batch_size,
                        "gpus_per_worker": options.gpus_per_worker, "cpus_per_worker": options.cpus_per_worker},
                **({"nodes": nodes} if nodes else {}), **stats, "items": report.items}
    write_json_atomic(path, manifest)


def _items_of(graph: Graph, dataset: Any) -> list[Item]:
    if isinstance(dataset, (str, Path)):
        if len(graph.inputs) != 1:
            raise InputError(f"the graph takes {len(graph.inputs)} inputs ({', '.join(graph.inputs)}); "
                             "give the dataset as {input name: path}")
        return plan_items(graph, {next(iter(graph.inputs)): dataset})
    if isinstance(dataset, Mapping):
        return plan_items(graph, dataset)
    if type(dataset).__module__.startswith("ray.data"):
        return _items_of_ray_dataset(graph, dataset)
    items = []
    for entry in dataset:
        try:
            item_id, inputs = entry
            items.append((str(item_id), {name: str(path) for name, path in inputs.items()}))
        except (TypeError, ValueError, AttributeError):
            raise InputError(f"dataset entries must be (item id, {{input: path}}) pairs, got {entry!r}") from None
    return items


def _items_of_ray_dataset(graph: Graph, dataset: Any) -> list[Item]:
    """Items from a Ray Dataset of paths (a column per graph input, optional `id`): only these strings are read."""
    from samflow.scale.runner import unique_stems

    columns = set(dataset.columns())
    missing = [name for name in graph.inputs if name not in columns]
    if missing:
        raise InputError(f"the dataset has no column for graph input(s) {', '.join(missing)} "
                         f"(columns: {', '.join(sorted(columns))})")
    wanted = [*graph.inputs, *(["id"] if "id" in columns else [])]
    lead = next(iter(graph.inputs))
    # Ray hands rows back in any order: sort, so item ids (made unique in order) are the same every run.
    if set(wanted) != columns:  # read only the paths, not e.g. image bytes; no extra stage when nothing else
        dataset = dataset.select_columns(wanted)
    rows = sorted(dataset.take_all(), key=lambda row: str(row.get("id", row[lead])))
    ids = ([str(row["id"]) for row in rows] if "id" in columns
           else unique_stems([str(row[lead]) for row in rows]))
    return [(item_id, {name: str(row[name]) for name in graph.inputs}) for item_id, row in zip(ids, rows)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
