"""Running the service: in the foreground with uvicorn (`samflow serve`), or on a thread (tests, benchmarks)."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from typing import Any

from samflow.errors import SamflowError

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve `app` until interrupted."""
    import uvicorn

    if not is_loopback(host):
        log.warning("listening on %s: anyone who can reach this machine can use the service (it has no "
                    "authentication); the default 127.0.0.1 keeps it local", host)
    log.info("samflow service on http://%s:%d/ (API docs at /docs)", host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


class BackgroundServer:
    """`with BackgroundServer(app) as url:` serves `app` on a free loopback port from a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 30.0) -> None:
        self.app, self.host, self.port, self.start_timeout = app, host, port, start_timeout

    def __enter__(self) -> str:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.host, self.port))
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True,
                                        name="samflow-serve")
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                raise SamflowError(f"the service did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        self.url = f"http://{self.host}:{self.port}"
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
