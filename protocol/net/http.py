"""HTTP for services: hypercorn's trio worker serving Starlette apps.

Hypercorn runs inside the service's own trio nursery, so the HTTP API, the
libp2p host and the job workers share one event loop and stop together.
:func:`read_json` bounds a request body before parsing it; every refusal is an
:class:`HttpError` with a status, a metric reason and a message in the OpenAI
error shape (``{"error": {"message", "type", "code"}}``).
"""

from __future__ import annotations

import json
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


class HttpError(Exception):
    """A refused request: its status, a metric reason, and ``param``, the field it names."""

    def __init__(self, status: int, reason: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.param = param

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return JSONResponse(
            {"error": {"message": self.message, "type": kind, "param": self.param,
                       "code": self.reason}},
            status_code=self.status,
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
