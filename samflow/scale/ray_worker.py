"""The callable class Ray Data runs on each actor of the pool: a started Job applied to batches of items.

Input batches are pyarrow tables with columns `id` and `inputs` (JSON {input name: path}). Output batches hold one
row per item: id, status ('ok' or 'failed'), error, seconds, masks, worker, the item's files (`names`, `blobs`,
written by the driver), `outputs` (the names the manifest lists) and `stats` (increments of the worker's counters
since its previous batch, on the batch's last row). A failing item is a row, never an exception: one corrupt image
must not fail a batch, let alone the job.

An input that kills its worker process (a segfault, the OOM killer: no exception to catch) would be retried by
Ray Data on a fresh actor for ever. So each worker tells a `CrashLedger` (one small actor per run) when it starts
and ends an item: an item started and never ended was being processed when its worker died. Once an input has
done that `limit` times, the worker that gets it again records it as failed ("worker crashed N times on this
input") instead of running it, and the batch, and the run, go on.

This module does not import Ray (but for the ledger's client, `RemoteGuard`), so it is tested (and usable)
without it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any, Protocol

import pyarrow as pa

from samflow.errors import SamflowError
from samflow.scale.jobs import Job

log = logging.getLogger(__name__)

RESULT_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("seconds", pa.float64()),
    ("masks", pa.int64()),
    ("worker", pa.string()),
    ("names", pa.list_(pa.string())),
    ("blobs", pa.list_(pa.large_binary())),
    ("outputs", pa.list_(pa.string())),
    ("stats", pa.string()),
])


class Guard(Protocol):
    """What a worker asks before and tells after each item (`CrashLedger`, or `RemoteGuard` to one on Ray)."""

    def begin(self, item_id: str, worker: str) -> str | None:
        """None to run the item; else the error it is recorded with instead of being run."""

    def end(self, item_id: str) -> None:
        """The item is over (done or failed): its worker did not die on it."""


class CrashLedger:
    """Per input, how many times a worker process died on it: an item begun and not ended when it begins again
    was being processed when its worker died (a batch is retried only after its worker was lost). After `limit`
    such deaths the input is refused (recorded as failed) rather than retried."""

    def __init__(self, limit: int = 2) -> None:
        self.limit = limit
        self._open: dict[str, str] = {}
        self._deaths: dict[str, list[str]] = {}

    def begin(self, item_id: str, worker: str) -> str | None:
        previous = self._open.pop(item_id, None)
        if previous is not None:
            self._deaths.setdefault(item_id, []).append(previous)
        deaths = self._deaths.get(item_id, [])
        if len(deaths) >= self.limit:
            return (f"worker crashed {len(deaths)} times on this input (its process died: {', '.join(deaths)}); "
                    "left out so that the run could finish")
        self._open[item_id] = worker
        return None

    def end(self, item_id: str) -> None:
        self._open.pop(item_id, None)

    def crashes(self) -> dict[str, int]:
        """Worker deaths per input so far (those that died once and then passed included)."""
        return {item_id: len(deaths) for item_id, deaths in self._deaths.items()}


class RemoteGuard:
    """A worker's client of the run's `CrashLedger` actor; waits for each answer, so that what a worker said
    before it died has reached the ledger."""

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger

    def begin(self, item_id: str, worker: str) -> str | None:
        import ray

        return ray.get(self.ledger.begin.remote(item_id, worker))

    def end(self, item_id: str) -> None:
        import ray

        ray.get(self.ledger.end.remote(item_id))


class BatchWorker:
    """Holds one started job (its models, its scheduler) for the actor's life and maps batches through it."""

    def __init__(self, job: Job, threads: int | None = None, guard: Guard | None = None) -> None:
        if threads is not None:
            import torch

            # Explicit, not left to OMP_NUM_THREADS: CPU float sums depend on the thread count, so this is what
            # an in-process run must match to give byte-identical files.
            torch.set_num_threads(threads)
        self.job = job
        self.guard = guard
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        started = time.perf_counter()
        job.start()
        log.info("worker %s ready in %.1f s", self.where, time.perf_counter() - started)
        self._last_stats: dict[str, Any] = {}

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [self._run(item_id, json.loads(inputs))
                for item_id, inputs in zip(batch.column("id").to_pylist(), batch.column("inputs").to_pylist())]
        if rows:
            current = self.job.stats()
            rows[-1]["stats"] = json.dumps(stats_delta(current, self._last_stats))
            self._last_stats = current
        return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)

    def _run(self, item_id: str, inputs: dict[str, str]) -> dict[str, Any]:
        row: dict[str, Any] = {"id": item_id, "worker": self.where, "error": None, "masks": 0, "names": [],
                               "blobs": [], "outputs": [], "stats": None}
        refused = self.guard.begin(item_id, self.where) if self.guard is not None else None
        if refused is not None:
            log.warning("item %s: %s", item_id, refused)
            return {**row, "status": "failed", "error": refused, "seconds": 0.0}
        try:
            return self._process(item_id, inputs, row)
        finally:  # not reached when the process dies: that is what the ledger counts
            if self.guard is not None:
                self.guard.end(item_id)

    def _process(self, item_id: str, inputs: dict[str, str], row: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            result = self.job.process(item_id, inputs)
        except Exception as exc:  # a corrupt image, or a bug, on one item must not lose the batch
            # The driver reports failures; a traceback is only worth logging (here, where it is) for a bug.
            if isinstance(exc, SamflowError):
                log.debug("item %s failed: %s", item_id, exc)
            else:
                log.warning("item %s failed unexpectedly", item_id, exc_info=True)
            return {**row, "status": "failed", "error": self.job.error_text(exc),
                    "seconds": time.perf_counter() - started}
        return {**row, "status": "ok", "seconds": time.perf_counter() - started, "masks": result.masks,
                "names": [name for name, _ in result.files], "blobs": [data for _, data in result.files],
                "outputs": result.outputs}

def stats_delta(current: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """current - previous for every number in nested dicts; other values are taken from `current`."""
    out: dict[str, Any] = {}
    for key, value in current.items():
        before = previous.get(key)
        if isinstance(value, dict):
            out[key] = stats_delta(value, before if isinstance(before, dict) else {})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value - (before if isinstance(before, (int, float)) else 0)
        else:
            out[key] = value
    return out


def stats_add(total: dict[str, Any], delta: dict[str, Any]) -> None:
    """Add `delta` into `total` in place (numbers summed, other values kept)."""
    for key, value in delta.items():
        if isinstance(value, dict):
            stats_add(total.setdefault(key, {}), value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value
        else:
            total.setdefault(key, value)
