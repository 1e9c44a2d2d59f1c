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
   that dies is replaced by Ray and its batch retried; an input that killed its worker `max_crashes` (2) times is
   recorded as failed ("worker crashed 2 times on this input") and the run goes on; an item that fails (a
   corrupt image) is an error record. The manifest (`OUT/run.json` for graphs, `OUT/summary.json` for the data
   engine) accounts for every input of the folder once, earlier runs' included: ok, failed, skipped (done
   before), or pending (the run stopped first; rerun to finish). An item id whose outputs were made from other
   inputs (a shifted glob) is not reused: the item gets a new one (`records`).

Outputs are written by the driver, so OUT only needs to be reachable from it; inputs must be readable by every
worker (a shared folder, or an object store URI).

This module is the public entry: `run` and `annotate`, and the dataset forms `run` accepts. The pieces live beside
it: `ray_options` (RayOptions, ClusterError), `ray_plan` (plan_images, plan_items), `ray_engine` (execute),
`ray_cluster` (joining the cluster), `ray_report` (DistributedReport and the manifest), `ray_worker` (the actors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from samflow.errors import InputError
from samflow.scale.jobs import GraphJob
from samflow.scale.ray_engine import execute
from samflow.scale.ray_options import ClusterError, RayOptions
from samflow.scale.ray_plan import Item, plan_images, plan_items
from samflow.scale.ray_report import DistributedReport

if TYPE_CHECKING:
    from samflow.engine.graph import Graph

__all__ = ["ClusterError", "DistributedReport", "RayOptions", "annotate", "execute", "plan_images", "plan_items",
           "run"]


def run(graph: Graph | str | Path, dataset: Any, out: str | Path, *, address: str | None = None, workers: int | None = None,
        gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, batch_size: int = 8,
        progress: bool | None = None, cache_bytes: int | None = None, graph_source: str | None = None,
        max_crashes: int = 2, init_args: Mapping[str, Any] | None = None,
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
                         progress=progress, max_crashes=max_crashes, init_args=dict(init_args or {}),
                         remote_args=dict(remote_args or {}))
    return execute(GraphJob(graph, graph_source, cache_bytes), items, out, options)


def annotate(images: str | Path | Sequence[str | Path], out: str | Path, *, model: str | None = None,
             checkpoint: str | Path | None = None, device: str | None = None, preview: bool = False,
             cache: str | Path | None = None, address: str | None = None, workers: int | None = None,
             gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, batch_size: int = 8,
             progress: bool | None = None, max_crashes: int = 2, init_args: Mapping[str, Any] | None = None,
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
                         max_crashes=max_crashes, init_args=dict(init_args or {}),
                         remote_args=dict(remote_args or {}))
    return execute(job, plan_images(specs, out), out, options)


def _items_of(graph: Graph, dataset: Any) -> list[Item]:
    """The items of `run`'s `dataset`, in each of the forms it accepts."""
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
