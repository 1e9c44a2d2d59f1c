"""Executing a job over items on Ray: resume, stream batches through an actor pool, commit, account.

1. Items whose outputs exist are skipped (resume): they never reach the cluster.
2. The rest becomes a Ray Dataset of (item id, input paths). `map_batches` runs it through a pool of actors
   (`ActorPoolStrategy`), each holding one started job (`ray_worker.BatchWorker`): its models and its scheduler.
3. Workers send back each item's file bytes; the driver writes them atomically and records the item once. A worker
   that dies is replaced by Ray and its batch retried (a batch delivered twice counts once); an input its worker
   died on `max_crashes` times is recorded as failed instead of retried again (`ray_worker.CrashLedger`); an item
   that fails is an error record. The manifest accounts for every item of the folder (`records`), written when
   the run starts and when it ends, also when it stops early (then what was not reached is pending).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from samflow.errors import InputError
from samflow.scale import records
from samflow.scale.jobs import Job
from samflow.scale.ray_cluster import cluster
from samflow.scale.ray_options import ClusterError, RayOptions
from samflow.scale.ray_plan import Item
from samflow.scale.ray_report import DistributedReport, write_manifest

log = logging.getLogger(__name__)


def execute(job: Job, items: Sequence[Item], out: str | Path, options: RayOptions | None = None
            ) -> DistributedReport:
    """Run `job` over `items` on Ray into `out`: resume, stream, commit, account (see the module's doc).

    Item ids are settled against the folder first (`Job.settle`: an id whose outputs were made from other inputs
    is not reused), so the report's ids are those written."""
    options = options or RayOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    repeated = sorted(item_id for item_id, count in Counter(item_id for item_id, _ in items).items() if count > 1)
    if repeated:
        raise InputError(f"item ids must be unique; repeated: {', '.join(repeated[:5])}")
    job.clean(out)
    earlier = records.earlier_items(out / job.manifest_name)
    known = job.known_items(out)
    items = job.settle([(item_id, dict(inputs)) for item_id, inputs in items], known, out)
    ids = [item_id for item_id, _ in items]
    inputs_of = dict(items)
    finished: dict[str, dict[str, Any]] = {}
    todo: list[Item] = []
    for item_id, inputs in items:
        if job.is_done(out, item_id):  # resume: done items never reach the cluster
            finished[item_id] = {"id": item_id, "inputs": inputs, "status": "skipped", "reason": records.EARLIER}
        else:
            todo.append((item_id, inputs))
    report = DistributedReport()
    started = time.perf_counter()

    def unreached(item_id: str) -> dict[str, Any]:
        record = {"id": item_id, "inputs": inputs_of[item_id]}
        if job.is_done(out, item_id):  # committed just as the run was stopped
            return {**record, "status": "ok", "reason": "committed as the run stopped"}
        return {**record, "status": "pending", "reason": "the run stopped before it; rerun to finish"}

    def write() -> None:
        report.items = [finished.get(item_id) or unreached(item_id) for item_id in ids]
        report.earlier = records.carried_over(report.items, earlier, known, lambda item_id: job.is_done(out, item_id))
        write_manifest(out / job.manifest_name, job, report, options)

    write()  # every input accounted for from the start: a killed driver leaves them pending
    log.info("%d items: %d to process, %d done before", len(items), len(todo), len(items) - len(todo))
    try:
        if todo:
            with cluster(options) as cluster_seconds:
                report.cluster_seconds = cluster_seconds
                _process(job, todo, out, options, finished, report, started)
    finally:
        report.seconds = time.perf_counter() - started
        write()
    summary = report.summary()
    log.info("ray: %d ok, %d failed, %d skipped (done before) in %.1f s (cluster start %.1f s): %.2f images/s, "
             "%.1f masks/s; see %s", report.counts()["ok"], summary["failures"], report.counts()["skipped"],
             report.seconds, report.cluster_seconds, summary["images_per_s"], summary["masks_per_s"],
             out / job.manifest_name)
    return report


def _process(job: Job, todo: list[Item], out: Path, options: RayOptions, finished: dict[str, dict[str, Any]],
             report: DistributedReport, started: float) -> None:
    import ray

    from samflow.scale.ray_worker import CrashLedger, RemoteGuard, stats_add

    pending = {item_id for item_id, _ in todo}
    inputs_of = dict(todo)
    last_log = time.perf_counter()
    done = failed = 0
    # One small actor per run counts the worker deaths per input (no CPU of its own: it only keeps a dict).
    ledger = ray.remote(num_cpus=0, max_restarts=0)(CrashLedger).remote(options.max_crashes)
    try:
        # closing(): an interrupted driver stops the Ray execution too, instead of leaving it to the GC.
        with closing(_results(job, todo, options, RemoteGuard(ledger))) as results:
            for batch in results:
                if not done:
                    report.first_result_seconds = time.perf_counter() - started - report.cluster_seconds
                for row in batch.to_pylist():
                    item_id = row["id"]
                    if item_id not in pending:  # a retried batch delivered twice: the first copy counted
                        log.debug("ignoring a second result for %s", item_id)
                        continue
                    pending.discard(item_id)
                    finished[item_id] = _commit(job, out, row, inputs_of[item_id])
                    if row["stats"]:
                        stats_add(report.stats, json.loads(row["stats"]))
                    done += 1
                    failed += finished[item_id]["status"] == "failed"
                if options.progress is not False and time.perf_counter() - last_log >= options.progress_every:
                    last_log = time.perf_counter()
                    elapsed = last_log - started - report.cluster_seconds
                    log.info("%d/%d items (%d failed), %.2f images/s", done, len(todo), failed,
                             done / max(elapsed, 1e-9))
        crashes = ray.get(ledger.crashes.remote())
        if crashes:
            report.stats["worker_crashes"] = crashes
    except ray.exceptions.RayError as exc:
        raise ClusterError(f"the Ray job failed after {done} of {len(todo)} items: {_first_line(exc)}; what "
                           "finished is written, rerun the same command to process the rest") from exc
    finally:
        ray.kill(ledger)


def _results(job: Job, todo: list[Item], options: RayOptions, guard: Any) -> Iterator[Any]:
    """The dataset of results, streamed: one pyarrow table per batch as workers finish them."""
    import ray

    from samflow.scale.ray_worker import BatchWorker  # pyarrow: installed with Ray Data

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
    # Ray Data's actor pools restart dead actors and retry their tasks, without limit by default: that is the
    # retry we rely on; the guard is what bounds it for an input that kills every worker it reaches.
    remote = {"num_cpus": options.cpus_per_worker, **options.remote_args}
    if options.gpus_per_worker:
        remote["num_gpus"] = options.gpus_per_worker
    threads = max(1, int(options.cpus_per_worker))
    results = dataset.map_batches(BatchWorker, fn_constructor_args=(job, threads, guard),
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
        job.commit(out, row["id"], [*zip(row["names"], row["blobs"]), *job.item_files(row["id"], inputs)])
    except OSError as exc:  # e.g. a full disk: recorded per item, so the manifest still says what is missing
        log.error("cannot write the outputs of %s: %s", row["id"], exc)
        return {**record, "status": "failed", "error": f"cannot write outputs: {exc}"}
    return {**record, "outputs": row["outputs"], "masks": row["masks"]}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
