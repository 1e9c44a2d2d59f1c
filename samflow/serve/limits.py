"""Refusing request bodies over a size limit without reading them: a pure ASGI middleware.

A declared Content-Length over the limit is answered 413 before one body byte is read. A body without a length
(chunked) is counted as it arrives; the first chunk past the limit stops the read with 413, so a client sending an
endless stream is cut off after `limit` bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from samflow.serve.errors import ApiError, error_body

Scope = dict[str, Any]


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "too_large", f"request body is over this service's limit of {limit} bytes "
                                           f"({limit / 2**20:.1f} MiB)")


class BodyLimitMiddleware:
    """Limit request bodies to `limit_for(scope)` bytes."""

    def __init__(self, app: Any, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, BodyTooLarge(limit))  # the body is never read
            return
        received = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:  # normally answered by the app's handler; this catches the rest
            if started:
                raise
            await _send_413(send, exc)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Callable, exc: BodyTooLarge) -> None:
    body = json.dumps(error_body(exc.code, exc.message)).encode()
    # Connection: close, as the unread body cannot be skipped.
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
