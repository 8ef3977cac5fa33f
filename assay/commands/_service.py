"""What the long-running service commands share: settings flags, logging, signals.

Every setting of a role's config dataclass is also a flag (``--http-port``,
``--log-format``, ``--metrics/--no-metrics``), so precedence is simply
flag > ``ASSAY_*`` > file > default (:func:`protocol.config.load`). Services
run under :func:`run_until_signalled`: SIGTERM or SIGINT sets the shutdown
event the service drains on, and the command exits 0 once it has.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import time
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from protocol.config import ConfigError, load

SECRET_FLAGS = frozenset({"api_key"})
"""Settings too secret for a flag (it would show in ``ps``): file or environment only."""


def add_settings_flags(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    parser.add_argument("--config", type=Path, default=None, help="TOML config file")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in SECRET_FLAGS:
            continue
        flag = "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            parser.add_argument(flag, dest=f.name, default=None,
                                action=argparse.BooleanOptionalAction)
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar="VALUE",
                                help=f"(default {f.default!r})" if f.default is not
                                dataclasses.MISSING else None)


def settings(args: argparse.Namespace, cls: type[Any]) -> Any:
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)}
    try:
        return load(cls, args.config, overrides)
    except ConfigError as exc:
        from assay.arguments import CommandError

        raise CommandError(str(exc)) from exc


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: str) -> None:
    if log_format not in ("text", "json"):
        from assay.arguments import CommandError

        raise CommandError(f"log format must be text or json, got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("libp2p", "multiaddr", "hypercorn", "async_service"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def run_until_signalled(service: Callable[[trio.Event], Awaitable[None]]) -> int:
    """Run ``service(shutdown)``; SIGTERM/SIGINT set ``shutdown``; exit 0 after it returns."""

    async def main() -> None:
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

                async def watch() -> None:
                    async for _ in signals:
                        shutdown.set()
                        return

                nursery.start_soon(watch)
                await service(shutdown)
                nursery.cancel_scope.cancel()

    trio.run(main)
    return 0
