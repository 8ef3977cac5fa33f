"""Long-running service tasks that an exception restarts instead of ending the service.

A service's ``run`` is one trio nursery (STYLE: structured concurrency): an
exception that escapes any of its tasks cancels all of them and ends the
process. Whatever a peer can provoke is caught where it is read, but a task
that meets something nobody foresaw must cost that task a restart, counted in
``assay_task_errors_total{task}`` and logged with its traceback, never the
node or validator (and never a crash loop under systemd).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from protocol.net.backoff import Backoff
from protocol.net.metrics import Metrics

RESTART_BACKOFF = (0.5, 30.0)


async def keep_running(name: str, task: Callable[[], Awaitable[None]], metrics: Metrics,
                       log: logging.Logger) -> None:
    """Run ``task`` until it returns; restart it after a backoff whenever it raises."""
    backoff = Backoff(*RESTART_BACKOFF)
    while True:
        try:
            await task()
            return
        except Exception:  # counted and logged; the service goes on
            metrics.task_errors.labels(name).inc()
            wait = backoff.next()
            log.exception("task %s failed; restarting it in %.1f s", name, wait)
            await trio.sleep(wait)
