"""`supervise` on the autojump clock (README rule 5): exact restart times, reset, readiness.

Backoff 0.5 s, 1 s, 2 s … capped at 30 s, back to 0.5 s after a run that lasted ≥ 60 s; every
crash counts `gateway_task_restarts_total{task}`; a normal return or a cancel ends supervision.
"""

from __future__ import annotations

import logging
from functools import partial
from itertools import pairwise
from typing import Any

import pytest
import trio
import trio.testing

from gateway.app.supervisor import SupervisorStats, run_started, supervise


class Boom(Exception):
    pass


class Flaky:
    """A task whose n-th run (from 0) lives `lifetimes[n]` seconds, then raises (None: forever)."""

    def __init__(self, lifetimes: list[float | None], *, ready_value: object = None) -> None:
        self.lifetimes = lifetimes
        self.starts: list[float] = []
        self.ready_value = ready_value

    async def __call__(
        self, tag: str, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> None:
        assert tag == "arg"  # positional args are passed on every run
        run = len(self.starts)
        self.starts.append(trio.current_time())
        task_status.started(self.ready_value)
        life = self.lifetimes[run] if run < len(self.lifetimes) else None
        if life is None:
            await trio.sleep_forever()
        await trio.sleep(life)
        raise Boom(f"run {run}")


async def test_backoff_doubles_from_half_a_second_and_caps_at_30(
    autojump_clock: trio.testing.MockClock,
) -> None:
    task = Flaky([0.0] * 9)
    stats = SupervisorStats()
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: supervise("mqtt_ingress", task, "arg", stats=stats))
        await trio.sleep(200)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in pairwise(task.starts)]
    assert gaps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert task.starts[0] == t0
    assert stats.restarts == {"mqtt_ingress": 9}


async def test_backoff_resets_after_60_s_of_healthy_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # crash at once three times (0.5, 1, 2), then run 60 s and crash → 0.5 s again, then 1 s;
    # 59.9 s healthy is not enough: the next backoff continues at 2 s
    task = Flaky([0.0, 0.0, 0.0, 60.0, 0.0, 59.9, None])
    stats = SupervisorStats()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: supervise("acc_listener", task, "arg", stats=stats))
        await trio.sleep(300)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in pairwise(task.starts)]
    assert gaps == pytest.approx([0.5, 1.0, 2.0, 60.0 + 0.5, 1.0, 59.9 + 2.0])
    assert stats.restarts == {"acc_listener": 6}


async def test_first_started_is_forwarded_restarts_do_not_report_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    task = Flaky([1.0, None], ready_value=4242)
    stats = SupervisorStats()
    async with trio.open_nursery() as nursery:
        value = await nursery.start(partial(supervise, "http", task, "arg", stats=stats))
        assert value == 4242
        assert trio.current_time() == task.starts[0]
        await trio.sleep(10)
        assert len(task.starts) == 2  # restarted once, 0.5 s after the crash at 1.0 s
        assert task.starts[1] - task.starts[0] == 1.5
        nursery.cancel_scope.cancel()
    assert stats.restarts == {"http": 1}


async def test_crash_before_started_releases_the_caller_with_none_then_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs: list[float] = []

    async def fails_at_bind(
        *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        runs.append(trio.current_time())
        if len(runs) < 3:
            raise OSError("address in use")
        task_status.started(7)
        await trio.sleep_forever()

    stats = SupervisorStats()
    async with trio.open_nursery() as nursery:
        value = await nursery.start(partial(supervise, "broker", fails_at_bind, stats=stats))
        assert value is None  # the caller is not held up by a task that cannot start
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert [b - a for a, b in pairwise(runs)] == [0.5, 1.0]
    assert stats.restarts == {"broker": 2}


async def test_normal_return_is_not_restarted(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[float] = []

    async def finishes(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        calls.append(trio.current_time())
        task_status.started()
        await trio.sleep(3)

    stats = SupervisorStats()
    await supervise("journal", finishes, stats=stats)
    assert len(calls) == 1
    assert stats.restarts == {}


async def test_cancel_ends_supervision_and_is_not_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    task = Flaky([None])
    stats = SupervisorStats()
    with trio.move_on_after(5):
        await supervise("egress", task, "arg", stats=stats)
    assert len(task.starts) == 1
    assert stats.restarts == {}


async def test_cancel_during_the_backoff_sleep_ends_supervision(
    autojump_clock: trio.testing.MockClock,
) -> None:
    task = Flaky([0.0, 0.0, 0.0])
    stats = SupervisorStats()
    with trio.move_on_after(1.0):  # crash at 0, restart at 0.5, crash, sleeping 1 s when cancelled
        await supervise("gate_link", task, "arg", stats=stats)
    assert len(task.starts) == 2
    assert stats.restarts == {"gate_link": 2}


async def test_crash_is_logged_with_task_and_backoff(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.supervisor")
    task = Flaky([0.0, None])
    with trio.move_on_after(2):
        await supervise("rs485", task, "arg", stats=SupervisorStats())
    crashed = [r for r in caplog.records if r.getMessage() == "task_crashed"]
    assert len(crashed) == 1
    assert crashed[0].levelno == logging.ERROR
    assert crashed[0].fields == {"task": "rs485", "restart_in_s": 0.5}  # type: ignore[attr-defined]
    assert crashed[0].exc_info is not None
    restarting = [r for r in caplog.records if r.getMessage() == "task_restarting"]
    assert [r.fields for r in restarting] == [{"task": "rs485"}]  # type: ignore[attr-defined]


async def test_run_started_reports_at_once(autojump_clock: trio.testing.MockClock) -> None:
    ran = trio.Event()

    async def body() -> None:
        await trio.sleep(1)
        ran.set()

    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        await nursery.start(run_started, body)
        assert trio.current_time() == t0
    assert ran.is_set()
