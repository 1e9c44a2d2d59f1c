"""What a distributed run did (`DistributedReport`), and the manifest that records it in the output folder
(`OUT/run.json` for graphs, `OUT/summary.json` for the data engine)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samflow.fileio import write_json_atomic
from samflow.scale import records
from samflow.scale.jobs import Job
from samflow.scale.ray_options import RayOptions


@dataclass
class DistributedReport:
    """What a run did: per-item records in input order (`earlier`: the folder's other items, from earlier runs,
    not among these inputs), the workers' summed counters, timings (`seconds` in all,
    `cluster_seconds` to start or join the cluster, `first_result_seconds` from then to the first item back: the
    workers' start, model loading included)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    earlier: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    cluster_seconds: float = 0.0
    first_result_seconds: float = 0.0

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [item for item in self.items if item["status"] == "failed"]

    def counts(self) -> dict[str, int]:
        """This run's items by status."""
        return records.count(self.items)

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


def write_manifest(path: Path, job: Job, report: DistributedReport, options: RayOptions) -> None:
    """The run's manifest at `path`, written atomically: the job's own fields, counts (the whole folder), summary
    (this run), the Ray options, per-node and worker counters, and the record of every item of the folder."""
    stats = dict(report.stats)
    nodes = {name: {**node, "seconds": round(node.get("seconds", 0.0), 6)}
             for name, node in stats.pop("nodes", {}).items()}
    manifest = {**job.manifest_extra(report), "engine": "ray", "seconds": round(report.seconds, 6),
                "counts": records.count(report.items + report.earlier), "summary": report.summary(),
                "ray": {"address": options.address, "workers": options.workers, "batch_size": options.batch_size,
                        "max_crashes": options.max_crashes,
                        "gpus_per_worker": options.gpus_per_worker, "cpus_per_worker": options.cpus_per_worker},
                **({"nodes": nodes} if nodes else {}), **stats, "items": report.items + report.earlier}
    write_json_atomic(path, manifest)
