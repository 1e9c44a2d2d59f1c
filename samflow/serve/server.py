"""Running the service: in the foreground with uvicorn (`samflow serve`), or on a thread (tests, benchmarks)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from samflow.errors import SamflowError
from samflow.serve.security import is_loopback

log = logging.getLogger(__name__)


def run(app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve `app` until interrupted. SamflowError for a non-loopback `host` when the app has no access token."""
    import uvicorn

    _check_token(app, host)
    if not is_loopback(host):
        log.warning("listening on %s: anyone who can reach this machine and has the token can use the service; "
                    "the default 127.0.0.1 keeps it local", host)
    log.info("samflow service on http://%s:%d/ (API docs at /docs)", host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, limit_concurrency=_max_connections(app))


def _settings(app: Any) -> Any:
    return getattr(getattr(getattr(app, "state", None), "service", None), "settings", None)


def _max_connections(app: Any) -> int | None:
    return getattr(_settings(app), "max_connections", None)


def _check_token(app: Any, host: str) -> None:
    token = getattr(_settings(app), "token", None)
    if not is_loopback(host) and not token:
        raise SamflowError(f"serving on {host or 'all addresses'} (not loopback) needs an access token: pass "
                           "--token TOKEN or set SAMFLOW_TOKEN")


class BackgroundServer:
    """`with BackgroundServer(app) as url:` serves `app` on a free loopback port from a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 30.0) -> None:
        self.app, self.host, self.port, self.start_timeout = app, host, port, start_timeout

    def __enter__(self) -> str:
        import uvicorn

        _check_token(self.app, self.host)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.host, self.port))
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2,
                                limit_concurrency=_max_connections(self.app))
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
