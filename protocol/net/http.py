"""HTTP for services: hypercorn's trio worker serving Starlette apps.

Hypercorn runs inside the service's own trio nursery, so the HTTP API, the
libp2p host and the job workers share one event loop and stop together.
:func:`read_json` bounds a request body before parsing it; every refusal is an
:class:`HttpError` with a status, a metric reason and a message in the OpenAI
error shape (``{"error": {"message", "type", "code"}}``). A service that is
not ready answers 503 and one that is overloaded or rate-limits the caller
429, both with ``Retry-After``; 502 is never ours to give (we are the
server, not a gateway). Every service answers ``/health``: 200 when ready,
503 with the failing checks and a ``reason`` an operator can act on.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from protocol.net.metrics import Metrics

MAX_BODY_BYTES = 1024 * 1024
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


ERROR_TYPES = {429: "rate_limit_error", 503: "server_error"}
"""OpenAI's error ``type`` for the statuses we answer; other 4xx are invalid requests."""


class HttpError(Exception):
    """A refused request: its status, a metric reason, ``param``, the field it names, and
    ``retry_after_s`` (a 429 or 503 says when to try again)."""

    def __init__(self, status: int, reason: str, message: str, param: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s

    def response(self) -> JSONResponse:
        kind = ERROR_TYPES.get(
            self.status, "invalid_request_error" if self.status < 500 else "server_error")
        headers = ({"retry-after": str(max(1, round(self.retry_after_s)))}
                   if self.retry_after_s is not None else None)
        return JSONResponse(
            {"error": {"message": self.message, "type": kind, "param": self.param,
                       "code": self.reason}},
            status_code=self.status, headers=headers,
        )


def unavailable(message: str, retry_after_s: float = 5.0) -> HttpError:
    """503: this service cannot take the request now; the message says why."""
    return HttpError(503, "unavailable", message, retry_after_s=retry_after_s)


def health_response(ready: bool, checks: dict[str, Any], retry_after_s: float = 5.0
                    ) -> JSONResponse:
    """``/health``: 200 ready, or 503 with every check and the reason it is not ready."""
    headers = None if ready else {"retry-after": str(round(retry_after_s))}
    return JSONResponse({"status": "ready" if ready else "not ready", **checks},
                        status_code=200 if ready else 503, headers=headers)


HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]


def health_app(check: HealthCheck) -> Starlette:
    """A service's ``/health`` alone (validators and the ledger have no other HTTP API)."""

    async def health(request: Request) -> Response:
        return health_response(*check())

    return Starlette(routes=[Route("/health", health)])


def api_key_matches(authorization: str | None, api_key: str) -> bool:
    """``Authorization: Bearer <api_key>``, compared in constant time."""
    expected = f"Bearer {api_key}".encode()
    return hmac.compare_digest((authorization or "").encode(), expected)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str, port: int, api_key: str, log: logging.Logger) -> None:
    """Say so at start when anyone on the network can use the API for free."""
    if not api_key and not is_loopback(host):
        log.warning(
            "the HTTP API listens on %s:%d, beyond loopback, with no API key: anyone who "
            "reaches it runs jobs paid by this node's gateway account; set ASSAY_API_KEY",
            host, port,
        )


MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects a request body may have."""


def json_depth(body: bytes | bytearray) -> int:
    """The deepest ``[``/``{`` nesting in ``body``, ignoring brackets inside strings.

    Checked before ``json.loads``: its C scanner recurses once per level, and
    with a high recursion limit (py_ecc raises it to 100,000 on import) a body
    of ``[[[[…`` overflows a worker thread's stack and kills the process.
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


async def read_json(request: Request, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The body as a JSON object, refused (413/400) before it can cost more than ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise HttpError(413, "oversized", f"request body is limited to {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise HttpError(413, "oversized", f"request body is limited to {max_bytes} bytes")
    if json_depth(body) > MAX_JSON_DEPTH:
        raise HttpError(400, "malformed", f"body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, "malformed", f"body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise HttpError(400, "malformed", "body must be a JSON object")
    return value


def metrics_app(metrics: Metrics) -> Starlette:
    async def render(request: Request) -> Response:
        return Response(metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)

    return Starlette(routes=[Route("/metrics", render)])


async def serve_http(
    app: ASGIApp,
    host: str,
    port: int,
    shutdown: trio.Event,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until ``shutdown`` is set, finishing open requests."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 30.0
    config.h2_max_concurrent_streams = 64
    await serve(app, config, shutdown_trigger=shutdown.wait, task_status=task_status)  # type: ignore[arg-type]
