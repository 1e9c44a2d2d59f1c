"""Who may call the service: a pure ASGI guard in front of everything, answering before any body byte is read.

1. **Trusted hosts** (DNS rebinding): the Host header must be a loopback name (`localhost`, `*.localhost`), an IP
   literal, the address the service binds, or one of `allowed_hosts` (`--allowed-host`, `*.example.com` patterns,
   `*` for any); else 400 `bad_host`. A page of `attacker.example` whose name was re-pointed at 127.0.0.1 sends
   `Host: attacker.example` and is refused.
2. **CORS, same-origin by default**: a request with an Origin other than the service's own (or one of
   `cors_origins`, `--cors-origin`) is refused with 403 `origin_not_allowed`, so a page elsewhere cannot even send
   a "simple" request (a `text/plain` upload) that the service would decode. Listed origins get CORS headers and
   preflight answers; credentials (the cookie) are never allowed cross-origin.
3. **Content types**: an upload is `image/*`, `application/octet-stream` or `multipart/form-data` (or none, for
   plain HTTP clients); other POSTs are `application/json`; else 415 `unsupported_media_type`.
4. **Access token** (optional; required when the service binds a non-loopback address): `Authorization: Bearer
   TOKEN`, `X-Samflow-Token: TOKEN`, or the `samflow_token` cookie, which a browser gets by opening any page once
   with `?token=TOKEN` (HttpOnly, SameSite=Strict; the address is then redirected without it); else 401
   `unauthorized`.

Every answer that passes carries `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and cross-origin
isolation: `Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy: require-corp` (the app's
page, the docs, and onnxruntime-web's worker script, which a page with COEP may only start when it has COEP too)
and `Cross-Origin-Resource-Policy: same-origin` (no page elsewhere may embed the service's images, embeddings or
files with `<img>`/`<script>`; origins listed with --cors-origin read through CORS, which this does not limit).
So the app's page is `crossOriginIsolated`: it has SharedArrayBuffer, which onnxruntime-web needs to decode with
several threads. The service's own pages load nothing from elsewhere, so COEP blocks nothing they use.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from samflow.serve.errors import error_body
from samflow.serve.settings import ServiceSettings

Scope = dict[str, Any]
TOKEN_COOKIE = "samflow_token"
TOKEN_HEADER = b"x-samflow-token"
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")
UPLOAD_TYPES = ("image/", "application/octet-stream", "multipart/form-data")
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# On every answer that passes the guard (see the module docstring).
RESPONSE_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"cross-origin-embedder-policy", b"require-corp"),
                    (b"cross-origin-resource-policy", b"same-origin")]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> tuple[str, int | None]:
    """('example.com', 8000) from 'example.com:8000'; IPv6 literals in brackets; the name lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name, rest = value[1:end], value[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = value.partition(":")
    return name.rstrip("."), int(port) if port.isdigit() else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class RequestGuard:
    """Host check, origin check, content types and the access token, in that order (see the module docstring)."""

    def __init__(self, app: Any, settings: ServiceSettings, upload_path: str) -> None:
        self.app = app
        self.settings = settings
        self.upload_path = upload_path
        self.any_host = "*" in settings.allowed_hosts
        self.hosts = {h.lower().rstrip(".") for h in settings.allowed_hosts if not h.startswith("*")}
        self.host_suffixes = tuple(h.lower()[1:] for h in settings.allowed_hosts if h.startswith("*."))
        bound = settings.host.strip("[]").lower()
        if bound not in WILDCARD_ADDRESSES:
            self.hosts.add(bound)
        self.any_origin = "*" in settings.cors_origins
        self.origins = {_origin_key(o) for o in settings.cors_origins if o != "*"}
        self.token = settings.token.encode() if settings.token else None

    # ------------------------------------------------------------------------------------------- checks

    def host_allowed(self, name: str) -> bool:
        return (self.any_host or name == "localhost" or name.endswith(".localhost") or _is_ip(name)
                or name in self.hosts or (bool(self.host_suffixes) and name.endswith(self.host_suffixes)))

    def token_ok(self, headers: dict[bytes, bytes]) -> bool:
        assert self.token is not None
        given = [headers.get(TOKEN_HEADER, b"")]
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            given.append(auth[7:].strip())
        cookie = headers.get(b"cookie")
        if cookie:
            try:
                morsel = SimpleCookie(cookie.decode("latin-1")).get(TOKEN_COOKIE)
            except Exception:
                morsel = None
            if morsel is not None:
                given.append(morsel.value.encode("latin-1", "replace"))
        return any(value and hmac.compare_digest(value, self.token) for value in given)

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] == "websocket":  # the service has none: refuse rather than guard
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(name.lower(), value)
        host_header = headers.get(b"host", b"").decode("latin-1")
        name, port = split_host(host_header)
        if not name or not self.host_allowed(name):
            extra = "" if name else " (the request has no Host header)"
            await _answer(send, 400, "bad_host", f"this service does not answer to the host {host_header!r}{extra}; "
                                                 "the operator can allow it with --allowed-host")
            return

        origin = headers.get(b"origin")
        cross_origin = None
        if origin is not None:
            key = _origin_key(origin.decode("latin-1"))
            same = key is not None and key[1:] == (name, port or DEFAULT_PORTS.get(scope.get("scheme", "http")))
            if not same:
                if not (self.any_origin or key in self.origins):
                    await _answer(send, 403, "origin_not_allowed",
                                  f"requests from {origin.decode('latin-1')!r} are not allowed: this service answers "
                                  "its own pages only (the operator can allow an origin with --cors-origin)")
                    return
                cross_origin = origin
        method = scope.get("method", "GET")
        if cross_origin is not None and method == "OPTIONS" and b"access-control-request-method" in headers:
            await _preflight(send, cross_origin)
            return

        if self.token is not None and not self.token_ok(headers):
            if method == "GET" and await self._token_from_query(scope, send):
                return
            await _answer(send, 401, "unauthorized",
                          "this service needs its access token: send 'Authorization: Bearer TOKEN' (or "
                          "X-Samflow-Token), or open the page once as /?token=TOKEN",
                          [(b"www-authenticate", b'Bearer realm="samflow"')])
            return

        if method in ("POST", "PUT", "PATCH"):
            refusal = self._content_type_refusal(scope["path"], headers.get(b"content-type"))
            if refusal:
                await _answer(send, 415, "unsupported_media_type", refusal)
                return

        async def guarded_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                extra = list(RESPONSE_HEADERS)
                if cross_origin is not None:
                    extra += [(b"access-control-allow-origin", cross_origin), (b"vary", b"Origin")]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, guarded_send)

    def _content_type_refusal(self, path: str, value: bytes | None) -> str | None:
        kind = (value or b"").split(b";")[0].strip().lower().decode("latin-1")
        if path == self.upload_path:
            if not kind or kind.startswith(UPLOAD_TYPES):
                return None
            return (f"an upload is the image file with Content-Type image/* or application/octet-stream (or a "
                    f"multipart/form-data 'file' field), not {kind}")
        if kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json")):
            return None
        return f"this endpoint takes JSON: Content-Type application/json, not {kind or 'none'}"

    async def _token_from_query(self, scope: Scope, send: Callable) -> bool:
        """`GET /path?token=TOKEN`: set the cookie and redirect to the address without the token."""
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [value for key, value in query if key == "token"]
        if not given or not hmac.compare_digest(given[0].encode("latin-1", "replace"), self.token or b""):
            return False
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        location = scope.get("root_path", "") + scope["path"] + (f"?{rest}" if rest else "")
        cookie = f"{TOKEN_COOKIE}={given[0]}; HttpOnly; SameSite=Strict; Path=/"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode("latin-1")),
                                (b"content-length", b"0"), (b"referrer-policy", b"no-referrer")]})
        await send({"type": "http.response.body", "body": b""})
        return True


def _origin_key(origin: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an Origin, the default port filled in; None for 'null' or junk."""
    parts = urlsplit(origin.strip().lower())
    if not parts.scheme or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return parts.scheme, parts.hostname.rstrip("."), port or DEFAULT_PORTS.get(parts.scheme)


async def _answer(send: Callable, status: int, code: str, message: str,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def _preflight(send: Callable, origin: bytes) -> None:
    await send({"type": "http.response.start", "status": 204,
                "headers": [(b"access-control-allow-origin", origin), (b"vary", b"Origin"),
                            (b"access-control-allow-methods", b"GET, POST"),
                            (b"access-control-allow-headers", b"content-type, authorization, x-samflow-token"),
                            (b"access-control-max-age", b"600"), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
