"""The `--engine` switch shared by `samflow run` and `samflow annotate`: in-process (default) or Ray."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from samflow.errors import InputError

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
