"""The `--engine` switch shared by `samflow run` and `samflow annotate`: in-process (default) or Ray; and how
both stop when told to (Ctrl-C, SIGTERM)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from samflow.errors import InputError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from samflow.scale.distributed import RayOptions

ENGINES = ("local", "ray")


def add_engine_arguments(parser: argparse.ArgumentParser, *, workers: bool = True) -> None:
    """--engine, --address, --gpus-per-worker, --batch-size, and --workers unless the command has its own."""
    group = parser.add_argument_group("scaling out (--engine ray; needs pip install 'samflow[ray]')")
    group.add_argument("--engine", choices=ENGINES, default="local",
                       help="local: this process (default); ray: a Ray Data actor pool")
    group.add_argument("--address", metavar="ADDR",
                       help="Ray cluster to join: auto (the one this machine belongs to) or ray://HOST:10001 "
                            "(needs ray[client]); default: start a local cluster")
    if workers:
        group.add_argument("--workers", type=int, metavar="N",
                           help="Ray workers (actors), each with its own models (default: as many as the "
                                "cluster's resources allow)")
    group.add_argument("--gpus-per-worker", type=float, metavar="G",
                       help="GPUs per Ray worker; fractions share a GPU (default 0)")
    group.add_argument("--batch-size", type=int, metavar="B",
                       help="images per Ray batch, also what is retried when a worker dies (default 8)")


def ray_options(args: argparse.Namespace, **extra: Any) -> RayOptions:
    """The RayOptions the parsed arguments ask for (imported here: the local engine never loads samflow's Ray
    modules)."""
    from samflow.scale.distributed import RayOptions

    if args.engine != "ray":
        raise InputError("ray_options is only for --engine ray")
    progress = False if getattr(args, "no_progress", False) else None
    return RayOptions(address=args.address, workers=args.workers, gpus_per_worker=args.gpus_per_worker or 0.0,
                      batch_size=args.batch_size or 8, progress=progress, **extra)


def check_local(args: argparse.Namespace, *, ray_workers: bool = False) -> None:
    """Refuse Ray-only options with the local engine rather than ignore them (`ray_workers`: the command's
    --workers is the Ray one)."""
    if args.engine == "local":
        flags = [("--address", args.address), ("--gpus-per-worker", args.gpus_per_worker),
                 ("--batch-size", args.batch_size)]
        if ray_workers:
            flags.append(("--workers", args.workers))
        given = [flag for flag, value in flags if value is not None]
        if given:
            raise InputError(f"{', '.join(given)}: only with --engine ray")


def annotate_on_ray(args: argparse.Namespace, amg_names: list[str]) -> int:
    """`samflow annotate ... --engine ray`: the same files and summary fields, computed by a Ray actor pool."""
    import logging

    from samflow.scale import distributed
    from samflow.scale.jobs import AnnotateJob

    params = {name: getattr(args, name) for name in amg_names}
    job = AnnotateJob(params, model=args.model, checkpoint=args.checkpoint, device=args.device,
                      preview=args.preview, cache_dir=args.cache)
    report = distributed.execute(job, distributed.plan_images(args.images, args.out), args.out, ray_options(args))
    for item in report.failed:
        logging.getLogger("samflow.commands.annotate").error("failed: %s: %s", item["inputs"]["image"],
                                                             item["error"])
    return 1 if report.failed else 0


class Stop:
    """Which signal stopped a run (SIGINT when none was caught: Ctrl-C raises KeyboardInterrupt by itself)."""

    def __init__(self) -> None:
        self.signal = signal.SIGINT

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum)
        # Once: a second SIGTERM ends the process at once, as SIGKILL would (the next run repairs the folder).
        signal.signal(signum, signal.SIG_DFL)
        log.warning("%s: stopping after writing the manifest (send it again to end at once)", self.signal.name)
        raise KeyboardInterrupt

    def exit_status(self, manifest: Path) -> int:
        """Say what the stopped run left, and return 128 + the signal (130 for Ctrl-C, 143 for SIGTERM)."""
        log.error("stopped by %s: what finished is kept, and %s lists the rest as pending; rerun the same "
                  "command to finish", self.signal.name, manifest)
        return 128 + int(self.signal)


@contextmanager
def stop_cleanly() -> Iterator[Stop]:
    """For the block, SIGTERM stops the run as Ctrl-C does (a KeyboardInterrupt in the main thread), so the
    engines remove the item in progress's staging and write their final manifest (the items not reached
    pending) on the way out; a second SIGTERM ends the process at once. Catch KeyboardInterrupt inside the block
    and return `stop.exit_status(...)`."""
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, stop.handle)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)
