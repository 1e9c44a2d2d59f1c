"""Joining (or starting) the Ray cluster for the length of a distributed run."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from samflow.scale.ray_options import ClusterError, RayOptions

log = logging.getLogger(__name__)

# Ray reads this when it is imported: "0" makes a cluster started here use loopback addresses only (a local
# cluster needs no port open to the network).
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def cluster(options: RayOptions) -> Iterator[float]:
    """Join (or start) the cluster for the run; yields the seconds that took. A cluster this process had
    already joined is left as it was; one joined here is left at the end."""
    if options.address is None:
        os.environ.setdefault(_LOOPBACK_ENV, "0")
    try:
        import ray
        import ray.data  # noqa: F401  (fails here, not later, when only ray core is installed)
    except ImportError as exc:
        raise ClusterError("the Ray engine needs Ray Data: pip install 'samflow[ray]'") from exc
    if ray.is_initialized():
        yield 0.0
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, **options.init_args}
    if options.address is not None:
        kwargs["address"] = options.address
    started = time.perf_counter()
    handler = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ClusterError(f"cannot start or join the Ray cluster ({options.address or 'local'}): {exc}") from exc
    finally:
        # ray.init installs its own SIGTERM handler (sys.exit) in the driver; a caller's (the commands': stop
        # cleanly, write the manifest, say so) is put back.
        if callable(handler):
            signal.signal(signal.SIGTERM, handler)
    seconds = time.perf_counter() - started
    log.info("ray cluster %s ready in %.1f s: %s", options.address or "(local)", seconds,
             ", ".join(f"{k} {v:g}" for k, v in sorted(ray.cluster_resources().items()) if k in ("CPU", "GPU")))
    try:
        yield seconds
    finally:
        ray.shutdown()
