"""How a distributed run uses the Ray cluster (`RayOptions`), and the error when it cannot (`ClusterError`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from samflow.errors import InputError, SamflowError


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
    dead actor and retries its batch).
    max_crashes: worker deaths an input may cause (a segfault, the OOM killer) before it is recorded as failed
    ("worker crashed N times on this input") instead of being retried again; the rest of the run goes on.
    progress: Ray's progress output and samflow's progress lines (None: Ray's default).
    init_args: extra `ray.init` arguments when this run starts or joins the cluster (e.g. num_cpus,
    object_store_memory). remote_args: extra actor options (runtime_env, resources, accelerator_type, ...).
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    batch_size: int = 8
    max_crashes: int = 2
    progress: bool | None = None
    progress_every: float = 10.0
    init_args: dict[str, Any] = field(default_factory=dict)
    remote_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise InputError(f"workers must be at least 1, got {self.workers}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.max_crashes < 1:
            raise InputError(f"max_crashes must be at least 1, got {self.max_crashes}")
        if self.gpus_per_worker < 0 or self.cpus_per_worker < 0:
            raise InputError("gpus_per_worker and cpus_per_worker must not be negative")
