"""Supervision: restart wrapper for I/O tasks (README concurrency rule 5).

Each I/O task runs in `supervise`, which logs a crash, counts `gateway_task_restarts_total{task}`
and restarts the task after 0.5 s, 1 s, 2 s … ≤ 30 s; the backoff resets after 60 s of healthy
running. The tracker is never supervised: its crash is fatal (the runtime flushes and exits 1).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from gateway.app.logs import log_event

log = logging.getLogger("gateway.supervisor")

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
HEALTHY_RESET_S = 60.0


@attrs.define(slots=True)
class SupervisorStats:
    restarts: dict[str, int] = attrs.field(factory=dict)


TaskFn = Callable[..., Awaitable[Any]]


async def supervise(
    name: str,
    fn: TaskFn,
    *args: Any,
    stats: SupervisorStats,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `fn(*args, task_status=...)`, restarting it with backoff whenever it crashes.

    The first `started()` of the wrapped task is forwarded to our caller, so
    `await nursery.start(supervise, ...)` returns once the task is ready (e.g. has bound its
    port). A crash before the first `started()` releases the caller with `None`. A task that
    returns normally is not restarted.
    """
    backoff = FIRST_BACKOFF_S
    reported = False
    while True:
        began = trio.current_time()
        try:
            async with trio.open_nursery() as inner:
                value = await inner.start(fn, *args)
                if not reported:
                    reported = True
                    task_status.started(value)
            return
        except Exception as exc:  # supervision boundary: any crash of an I/O task restarts it
            if not reported:
                reported = True
                task_status.started(None)
            if trio.current_time() - began >= HEALTHY_RESET_S:
                backoff = FIRST_BACKOFF_S
            stats.restarts[name] = stats.restarts.get(name, 0) + 1
            log.error(
                "task_crashed",
                exc_info=exc,
                extra={"fields": {"task": name, "restart_in_s": backoff}},
            )
        await trio.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF_S)
        log_event(log, logging.INFO, "task_restarting", task=name)


async def run_started(
    fn: Callable[[], Awaitable[Any]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Adapter for tasks that have no readiness point: report started at once, then run."""
    task_status.started()
    await fn()
