"""The callable class Ray Data runs on each actor of the pool: a started Job applied to batches of items.

Input batches are pyarrow tables with columns `id` and `inputs` (JSON {input name: path}). Output batches hold one
row per item: id, status ('ok' or 'failed'), error, seconds, masks, worker, the item's files (`names`, `blobs`,
written by the driver), `outputs` (the names the manifest lists) and `stats` (increments of the worker's counters
since its previous batch, on the batch's last row). A failing item is a row, never an exception: one corrupt image
must not fail a batch, let alone the job.

This module does not import Ray, so it is tested (and usable) without it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from samflow.errors import InputError, SamflowError
from samflow.scale.jobs import Job

log = logging.getLogger(__name__)

#: Test hook, read by the driver and handed to the workers: "N:MARKER" makes the first worker that reaches its
#: N-th batch while MARKER does not exist create MARKER and exit at once, as a killed worker would.
FAULT_ENV = "SAMFLOW_TEST_KILL_WORKER"

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


class BatchWorker:
    """Holds one started job (its models, its scheduler) for the actor's life and maps batches through it."""

    def __init__(self, job: Job, fault: str | None = None, threads: int | None = None) -> None:
        if threads is not None:
            import torch

            # Explicit, not left to OMP_NUM_THREADS: CPU float sums depend on the thread count, so this is what
            # an in-process run must match to give byte-identical files.
            torch.set_num_threads(threads)
        self.job = job
        self.fault = _parse_fault(fault)
        self.batches = 0
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        started = time.perf_counter()
        job.start()
        log.info("worker %s ready in %.1f s", self.where, time.perf_counter() - started)
        self._last_stats: dict[str, Any] = {}

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.batches += 1
        self._maybe_die()
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

    def _maybe_die(self) -> None:
        if self.fault is None:
            return
        count, marker = self.fault
        if self.batches >= count and not marker.exists():
            marker.write_text(f"{self.where} died on its batch {self.batches}\n")
            log.warning("test hook %s: worker %s exits on its batch %d", FAULT_ENV, self.where, self.batches)
            os._exit(1)  # no clean-up, no exception: what a killed process looks like to Ray


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


def _parse_fault(spec: str | None) -> tuple[int, Path] | None:
    if not spec:
        return None
    count, sep, marker = spec.partition(":")
    if not sep or not count.isdigit() or not marker:
        raise InputError(f"{FAULT_ENV} must be N:MARKER_FILE, got {spec!r}")
    return int(count), Path(marker)
