"""Running a graph over files into an output folder: what `samflow run` does, usable from Python too.

- Each graph input is given a file, a folder or a glob. Inputs given several files are zipped in sorted order (one
  item per file; all such inputs need the same count); an input given one file is shared by every item.
- Each item writes into `OUT/<item>/`, built in a hidden staging folder and renamed when the item succeeds, so a
  folder that exists is complete; rerunning skips such items. The folder records the inputs it was made from, so
  a rerun whose listing changed (a widened or shifted glob) never takes another file's results for its own: that
  item gets a new id instead (`samflow.scale.records`).
- A failing item is recorded and the run goes on. `OUT/run.json` records per node runs, seconds and cache hits,
  and per item its status and error, for the whole folder (earlier runs' items too). It is written when the run
  starts (every item to do pending) and when it ends, also when it is stopped (Ctrl-C, SIGTERM through the
  command): then the items not reached are pending. Leftovers of a killed run are removed when the next starts.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samflow.engine.graph import Graph
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import FilePath, Image, Payload
from samflow.errors import InputError, SamflowError
from samflow.fileio import write_json_atomic
from samflow.ops.image import IMAGE_SUFFIXES
from samflow.scale import records

log = logging.getLogger(__name__)

MANIFEST = "run.json"


@dataclass
class RunReport:
    """What a run did: per-item records (id, status, inputs, seconds, error) of its items, in order, and the
    per-node stats; `earlier`: the records of the folder's other items (earlier runs', not among these inputs)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    earlier: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [item for item in self.items if item["status"] == "failed"]

    def counts(self) -> dict[str, int]:
        """This run's items by status (ok, failed, skipped, and pending when it stopped early)."""
        return _counts(self.items)


def _counts(items: list[dict[str, Any]]) -> dict[str, int]:
    counts = records.count(items)
    if not counts["pending"]:  # the keys run.json always had
        del counts["pending"]
    return counts


def expand_paths(spec: str | Path, suffixes: set[str] | None = None) -> list[Path]:
    """The files a command-line path names: the file itself, a folder's files (filtered by suffix), or a glob."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        return [p for p in files if suffixes is None or p.suffix.lower() in suffixes]
    if glob.has_magic(str(spec)):
        return sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())
    raise InputError(f"no such file or folder: {spec}")


def plan_items(graph: Graph, specs: Mapping[str, str | Path],
               list_files: Callable[[str | Path, set[str] | None], Sequence[Any]] | None = None,
               ) -> list[tuple[str, dict[str, Any]]]:
    """(item id, {input: path}) for every item: the multi-file inputs zipped, the single-file ones shared.

    `list_files(spec, suffixes)` lists what a spec names (default: local files, `expand_paths`; the Ray engine
    passes one that also lists object-store URIs)."""
    list_files = list_files or expand_paths
    missing = [name for name in graph.inputs if name not in specs]
    unknown = [name for name in specs if name not in graph.inputs]
    if unknown:
        raise InputError(f"the graph has no input {', '.join(unknown)} (inputs: {', '.join(graph.inputs)})")
    if missing:
        raise InputError(f"give every graph input with --input NAME=PATH; missing: {', '.join(missing)}")
    files = {name: list_files(spec, IMAGE_SUFFIXES if graph.inputs[name] in (Image, FilePath) else None)
             for name, spec in specs.items()}
    empty = [f"{name}={specs[name]}" for name, paths in files.items() if not paths]
    if empty:
        raise InputError(f"no input files found for {', '.join(empty)}")
    streams = {name: paths for name, paths in files.items() if len(paths) > 1}
    counts = {len(paths) for paths in streams.values()}
    if len(counts) > 1:
        sizes = ", ".join(f"{name}: {len(paths)}" for name, paths in streams.items())
        raise InputError(f"inputs given several files must give as many each ({sizes})")
    count = counts.pop() if counts else 1
    lead = next(iter(streams), next(iter(files)))
    ids = unique_stems(files[lead][:count])
    return [(ids[i], {name: paths[i] if name in streams else paths[0] for name, paths in files.items()})
            for i in range(count)]


def unique_stems(paths: Sequence[str | Path], fallback: str = "item") -> list[str]:
    """File stems (of paths or URIs), made unique: a.png and a.jpg become a and a_2, stable for a given list.

    A suffixed id never takes a stem that another file has: a.jpg, a.png, a_2.png become a, a_3, a_2 (two
    items sharing one output folder would lose one of them)."""
    stems = [Path(path).stem or fallback for path in paths]
    reserved = set(stems)
    used: set[str] = set()
    last: dict[str, int] = {}
    ids = []
    for stem in stems:
        name = stem
        if name in used:
            n = last.get(stem, 1)
            while name in used or name in reserved:
                n += 1
                name = f"{stem}_{n}"
            last[stem] = n
        used.add(name)
        ids.append(name)
    return ids


def run_graph(scheduler: Scheduler, items: list[tuple[str, dict[str, Path]]], out_dir: str | Path,
              progress: bool | None = None, graph_source: str | None = None) -> RunReport:
    """Run every item into `out_dir/<item>/`, skipping items done before; write `out_dir/run.json`.

    Item ids are settled against the folder first (`records.settle_items`: an id whose folder holds other inputs'
    results is not reused), so the report's ids are the folders written."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records.remove_leftovers(out)
    earlier = records.earlier_items(out / MANIFEST)
    known = records.scan_items(out)
    items = records.settle_items(items, known, out)
    report = RunReport()
    started = time.perf_counter()
    done_before = {item_id for item_id, _ in items if (out / item_id).is_dir()}

    def write(final: bool) -> None:
        reached = {item["id"] for item in report.items}
        listed = report.items + [_unreached(out, item_id, inputs, item_id in done_before)
                                 for item_id, inputs in items if item_id not in reached]
        report.earlier = records.carried_over(listed, earlier, known, lambda item_id: (out / item_id).is_dir())
        if final:
            report.items = listed
        write_json_atomic(out / MANIFEST, _manifest(report, graph_source, scheduler, listed))

    write(final=False)  # every input accounted for from the start: a killed run leaves them pending
    try:
        # disable=None: a bar on a terminal, silence in logs and CI.
        for item_id, inputs in tqdm(items, unit="item", disable=None if progress is None else not progress):
            report.items.append(_run_item(scheduler, item_id, inputs, out))
    finally:
        report.seconds = time.perf_counter() - started
        report.nodes = scheduler.stats_dict()
        write(final=True)
    return report


def _unreached(out: Path, item_id: str, inputs: dict[str, Any], done_before: bool) -> dict[str, Any]:
    """The record of an item the loop has not recorded: not reached yet, or never (the run stopped)."""
    record: dict[str, Any] = {"id": item_id, "inputs": {name: str(path) for name, path in inputs.items()}}
    if done_before:
        return {**record, "status": "skipped", "reason": records.EARLIER}
    if (out / item_id).is_dir():  # committed just as the run was stopped
        return {**record, "status": "ok", "reason": "committed as the run stopped"}
    return {**record, "status": "pending", "reason": "the run stopped before it; rerun to finish"}


def _run_item(scheduler: Scheduler, item_id: str, inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    record: dict[str, Any] = {"id": item_id, "inputs": {name: str(path) for name, path in inputs.items()}}
    final = out / item_id
    if final.is_dir():
        return {**record, "status": "skipped", "reason": records.EARLIER}
    staging = records.staging_dir(out, item_id)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    started = time.perf_counter()
    try:
        outputs = scheduler.run(inputs, item_id=item_id, output_dir=staging)
        files = save_outputs(outputs, staging)
        (staging / records.ITEM_RECORD).write_bytes(records.item_record(item_id, inputs))
        os.replace(staging, final)  # the item's folder appears whole or not at all
    except SamflowError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        log.warning("item %s failed: %s", item_id, exc)
        return {**record, "status": "failed", "seconds": round(time.perf_counter() - started, 6), "error": str(exc)}
    except Exception as exc:  # a bug in a node must not lose the other items' results
        shutil.rmtree(staging, ignore_errors=True)
        log.warning("item %s failed unexpectedly", item_id, exc_info=True)
        return {**record, "status": "failed", "seconds": round(time.perf_counter() - started, 6),
                "error": f"{type(exc).__name__}: {exc}"}
    except BaseException:  # Ctrl-C or SIGTERM: no staging left behind; the manifest marks the item pending
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {**record, "status": "ok", "seconds": round(time.perf_counter() - started, 6),
            "outputs": sorted(str(path.relative_to(staging)) for path in files)}


def save_outputs(outputs: Mapping[str, Payload], directory: Path) -> list[Path]:
    """Write each graph output with its payload's `save` (masks as PNGs + JSON, images as PNG...)."""
    files: list[Path] = []
    for name, payload in outputs.items():
        files += payload.save(directory, name)
    return files


def _manifest(report: RunReport, graph_source: str | None, scheduler: Scheduler,
              listed: list[dict[str, Any]]) -> dict[str, Any]:
    """run.json: counts and items over the whole folder (this run's items, then the earlier ones)."""
    cache = scheduler.cache.stats
    items = listed + report.earlier
    return {
        "graph": graph_source,
        "seconds": round(report.seconds, 6),
        "counts": _counts(items),
        "nodes": report.nodes,
        "cache": {"hits": cache.hits, "disk_hits": cache.disk_hits, "misses": cache.misses,
                  "disk_dir": str(scheduler.cache.disk_dir) if scheduler.cache.disk_dir else None},
        "items": items,
    }


