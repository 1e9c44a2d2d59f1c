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

from samflow import sources

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

    def manifest_extra(self) -> dict[str, Any]:
        """Job-specific fields for the top of the manifest."""
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
        from samflow.cache import EmbeddingCache
        from samflow.scheduler import Scheduler

        # One scheduler per worker: models load once and embeddings are shared by the graph's consumers.
        self._scheduler = Scheduler(self.graph, cache=EmbeddingCache(max_bytes=self.cache_bytes))

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()

    def process(self, item_id: str, inputs: Mapping[str, str]) -> ItemOutput:
        from samflow.runner import save_outputs
        from samflow.types import Masks

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

    def commit(self, out: Path, item_id: str, files: list[tuple[str, bytes]]) -> None:
        staging = out / f".{item_id}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name, data in files:
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        os.replace(staging, out / item_id)  # the item's folder appears whole or not at all

    def manifest_extra(self) -> dict[str, Any]:
        return {"graph": self.graph_source}


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file through a hidden temporary beside it and a rename: readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
