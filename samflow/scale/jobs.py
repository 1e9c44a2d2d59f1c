"""What a distributed run does per item, split between the workers (compute) and the driver (commit).

A job is a small picklable description shipped to every worker. On a worker, `start()` loads its models once and
`process()` turns one item into the bytes of its output files. On the driver, `is_done()` tells resume which items
to leave out and `commit()` writes an item's files atomically. Workers never write into the output folder, so a
worker that dies mid-item leaves nothing behind, and the driver writes every item exactly once.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samflow.errors import InputError, SamflowError
from samflow.fileio import write_atomic
from samflow.scale import records, sources

log = logging.getLogger(__name__)


@dataclass
class ItemOutput:
    """One item's result on a worker: its files as (relative path, bytes), the names the manifest lists as its
    outputs, and how many masks it produced (for masks/s)."""

    files: list[tuple[str, bytes]]
    outputs: list[str] = field(default_factory=list)
    masks: int = 0


class Job(ABC):
    """One kind of per-item work. Subclasses keep their worker state in attributes set by `start()`, so the
    object pickles small before it starts."""

    #: file name of the run's manifest in the output folder
    manifest_name: str = "run.json"

    @abstractmethod
    def start(self) -> None:
        """Load models and the like; runs once per worker, before its first item."""

    @abstractmethod
    def process(self, item_id: str, inputs: Mapping[str, str]) -> ItemOutput:
        """Compute one item. Raises on failure (the worker turns it into an error record)."""

    def stats(self) -> dict[str, Any]:
        """Cumulative counters of this worker (nested dicts of numbers); the driver sums their increments."""
        return {}

    @abstractmethod
    def is_done(self, out: Path, item_id: str) -> bool:
        """True when an earlier run already committed this item (resume leaves it out)."""

    @abstractmethod
    def commit(self, out: Path, item_id: str, files: list[tuple[str, bytes]]) -> None:
        """Write an item's files into `out` so that they appear whole or not at all."""

    def to_worker(self, inputs: Mapping[str, str]) -> dict[str, str]:
        """An item's inputs as workers get them: local paths made absolute (workers do not share the driver's
        working directory); URIs as they are."""
        return {name: _absolute(path) for name, path in inputs.items()}

    def clean(self, out: Path) -> None:
        """Remove what an interrupted run left in `out` (staging folders, temporaries), before a run starts."""
        records.remove_leftovers(out)

    def known_items(self, out: Path) -> dict[str, dict[str, str] | None]:
        """The items `out` holds or has planned, from the disk: id -> recorded inputs (None: unknown)."""
        return {}

    def settle(self, items: list[tuple[str, dict[str, str]]], known: Mapping[str, Any], out: Path
               ) -> list[tuple[str, dict[str, str]]]:
        """`items` with ids that never take another input's results in `out` (see `records.settle_items`)."""
        return items

    def item_files(self, item_id: str, inputs: Mapping[str, str]) -> list[tuple[str, bytes]]:
        """Files the driver commits with an item's outputs (e.g. the record of its inputs)."""
        return []

    def error_text(self, exc: Exception) -> str:
        """The message an item's failure is recorded with (as the in-process engine records it)."""
        return str(exc) if isinstance(exc, SamflowError) else f"{type(exc).__name__}: {exc}"

    def manifest_extra(self, report: Any) -> dict[str, Any]:
        """Job-specific fields for the top of the manifest (`report`: the run's DistributedReport)."""
        return {}


class GraphJob(Job):
    """Run a graph per item, as `samflow run` does: each item's files land in `OUT/<item>/`."""

    manifest_name = "run.json"

    def __init__(self, graph: Any, graph_source: str | None = None, cache_bytes: int | None = None) -> None:
        self.graph = graph
        self.graph_source = graph_source
        self.cache_bytes = cache_bytes
        self._scheduler: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_scheduler": None}

    def start(self) -> None:
        from samflow.engine.cache import EmbeddingCache
        from samflow.engine.scheduler import Scheduler

        # One scheduler per worker: models load once and embeddings are shared by the graph's consumers.
        self._scheduler = Scheduler(self.graph, cache=EmbeddingCache(max_bytes=self.cache_bytes))

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()

    def process(self, item_id: str, inputs: Mapping[str, str]) -> ItemOutput:
        from samflow.engine.types import Masks
        from samflow.scale.runner import save_outputs

        if self._scheduler is None:
            self.start()
        with tempfile.TemporaryDirectory(prefix="samflow-item-") as tmp:
            staging = Path(tmp) / "out"
            staging.mkdir()
            fetched = Path(tmp) / "in"
            fetched.mkdir()
            local = {name: sources.local_copy(path, fetched) for name, path in inputs.items()}
            outputs = self._scheduler.run(local, item_id=item_id, output_dir=staging)
            saved = save_outputs(outputs, staging)
            files = sorted(p for p in staging.rglob("*") if p.is_file())
            masks = sum(int(p.data.shape[0] * p.data.shape[1]) for p in outputs.values() if isinstance(p, Masks))
            return ItemOutput([(p.relative_to(staging).as_posix(), p.read_bytes()) for p in files],
                              sorted(str(p.relative_to(staging)) for p in saved), masks)

    def stats(self) -> dict[str, Any]:
        if self._scheduler is None:
            return {}
        cache = self._scheduler.cache.stats
        return {"nodes": self._scheduler.stats_dict(),
                "cache": {"hits": cache.hits, "disk_hits": cache.disk_hits, "misses": cache.misses}}

    def is_done(self, out: Path, item_id: str) -> bool:
        return (out / item_id).is_dir()

    def known_items(self, out: Path) -> dict[str, dict[str, str] | None]:
        return records.scan_items(out)

    def settle(self, items: list[tuple[str, dict[str, str]]], known: Mapping[str, Any], out: Path
               ) -> list[tuple[str, dict[str, str]]]:
        return records.settle_items(items, known, out)

    def item_files(self, item_id: str, inputs: Mapping[str, str]) -> list[tuple[str, bytes]]:
        return [(records.ITEM_RECORD, records.item_record(item_id, inputs))]  # as `samflow run` writes it

    def commit(self, out: Path, item_id: str, files: list[tuple[str, bytes]]) -> None:
        staging = records.staging_dir(out, item_id)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name, data in files:
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        os.replace(staging, out / item_id)  # the item's folder appears whole or not at all

    def manifest_extra(self, report: Any) -> dict[str, Any]:
        return {"graph": self.graph_source}


def _absolute(path: str) -> str:
    return path if sources.is_uri(path) else str(Path(path).absolute())


class AnnotateJob(Job):
    """The data engine, as `samflow annotate` runs it: per image `OUT/<stem>.json` (SA-1B), and with `preview`
    `OUT/previews/<stem>.png`, made by the command's own per-image function, so the bytes are the same. Item
    inputs: `image` (a path or URI) and `image_id` (from `OUT/image_ids.json`, assigned by the driver)."""

    manifest_name = "summary.json"

    def __init__(self, params: Mapping[str, Any], model: str | None = None, checkpoint: str | None = None,
                 device: str | None = None, preview: bool = False, cache_dir: str | None = None) -> None:
        if checkpoint is not None and not sources.is_uri(checkpoint):
            if not Path(checkpoint).is_file():  # here, not in every worker's start
                raise InputError(f"checkpoint not found: {checkpoint}")
            checkpoint = str(Path(checkpoint).absolute())
        self.params = dict(params)
        self.model, self.checkpoint, self.device = model, checkpoint, device
        self.preview = preview
        self.cache_dir = str(Path(cache_dir).absolute()) if cache_dir else None
        self._generator: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_generator": None}

    def start(self) -> None:
        from samflow.scale.annotate import build_generator

        # The in-process run's own construction (model, device, cache-backed embedder), fed the same options.
        self._generator = build_generator(self.params, self.model, self.checkpoint, self.device, self.cache_dir)

    def process(self, item_id: str, inputs: Mapping[str, str]) -> ItemOutput:
        from samflow.scale.annotate import annotate_one

        if self._generator is None:
            self.start()
        with tempfile.TemporaryDirectory(prefix="samflow-item-") as tmp:
            fetched = Path(tmp) / "in"
            staging = Path(tmp) / "out"
            fetched.mkdir()
            staging.mkdir()
            image = sources.local_copy(inputs["image"], fetched)
            masks = annotate_one(self._generator, image, int(inputs["image_id"]), staging, item_id, self.preview)
            result = staging / f"{item_id}.json"
            others = sorted(p for p in staging.rglob("*") if p.is_file() and p != result)
            # The JSON last: the driver writes in this order, and the JSON's presence marks the image done.
            files = [(p.relative_to(staging).as_posix(), p.read_bytes()) for p in [*others, result]]
        return ItemOutput(files, [name for name, _ in files], masks)

    def to_worker(self, inputs: Mapping[str, str]) -> dict[str, str]:
        return {**inputs, "image": _absolute(inputs["image"])}

    def error_text(self, exc: Exception) -> str:
        return f"{type(exc).__name__}: {exc}"  # as `samflow annotate` records failures

    def is_done(self, out: Path, item_id: str) -> bool:
        from samflow.scale.annotate import is_done

        return is_done(out, item_id)

    def clean(self, out: Path) -> None:
        from samflow.scale.annotate import PREVIEWS

        records.remove_leftovers(out, (PREVIEWS,))

    def known_items(self, out: Path) -> dict[str, dict[str, str] | None]:
        from samflow.scale.annotate import read_image_ids

        # Stems were settled when the images were planned (`ray_plan.plan_images`, as in-process).
        return {stem: None if source is None else {"image": source, "image_id": str(image_id)}
                for stem, (image_id, source) in read_image_ids(out).items()}

    def commit(self, out: Path, item_id: str, files: list[tuple[str, bytes]]) -> None:
        for name, data in files:
            write_atomic(out / name, data)

    def manifest_extra(self, report: Any) -> dict[str, Any]:
        """The fields of the in-process summary.json, so readers of either engine's summary find them."""
        from samflow.scale.annotate import summary_fields

        fields = summary_fields(report.items, report.earlier)
        fields.pop("items")
        busy = max(report.seconds - report.cluster_seconds, 1e-9)
        return {**fields, "model": self.model, "checkpoint": self.checkpoint, "params": self.params,
                "masks_per_second": round(fields["masks"] / busy, 3)}
