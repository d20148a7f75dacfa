"""LatestValue cell (concurrency rule 3, S095): writers never wait; readers see the latest."""

from __future__ import annotations

import threading

import trio
import trio.testing

from gateway.app.latest import LatestValue
from gateway.core.model import DoorReading


async def test_s095_two_sets_before_the_consumer_runs_wake_it_once() -> None:
    cell = LatestValue(DoorReading("closed"))
    _, v0 = cell.get()
    wakeups: list[tuple[DoorReading, int]] = []

    async def consumer() -> None:
        version = v0
        while True:
            value, version = await cell.wait_changed(version)
            wakeups.append((value, version))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        cell.set(DoorReading("moving"))
        cell.set(DoorReading("open"))
        await trio.testing.wait_all_tasks_blocked()
        assert wakeups == [(DoorReading("open"), v0 + 2)]
        nursery.cancel_scope.cancel()


async def test_wait_changed_returns_at_once_when_the_version_moved() -> None:
    cell = LatestValue(0)
    cell.set(1)
    cell.set(2)
    with trio.testing.assert_checkpoints():
        assert await cell.wait_changed(0) == (2, 2)


async def test_waiter_is_woken_by_one_set() -> None:
    cell = LatestValue("a")
    got: list[tuple[str, int]] = []

    async def waiter() -> None:
        got.append(await cell.wait_changed(cell.version))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        cell.set("b")
    assert got == [("b", 1), ("b", 1)]


def test_set_never_blocks_without_readers_or_a_running_loop() -> None:
    cell = LatestValue(0)
    for i in range(10_000):
        cell.set(i)
    assert cell.get() == (9999, 10_000)


async def test_unscheduled_reader_never_blocks_a_writer() -> None:
    cell = LatestValue(0)
    reader_version = cell.version  # a reader that read once and never came back
    for i in range(1, 101):
        cell.set(i)  # sync: no checkpoint, nothing to wait for
    assert await cell.wait_changed(reader_version) == (100, 100)


async def test_set_from_a_worker_thread() -> None:
    cell = LatestValue(DoorReading("unknown"))
    seen_thread: list[bool] = []

    def in_thread() -> None:
        seen_thread.append(threading.current_thread() is not threading.main_thread())
        cell.set_from_thread(DoorReading("open", source="simulate"))

    async with trio.open_nursery() as nursery:

        async def reader() -> None:
            value, version = await cell.wait_changed(0)
            assert (value.status, version) == ("open", 1)

        nursery.start_soon(reader)
        await trio.to_thread.run_sync(in_thread)
    assert seen_thread == [True]
    assert cell.get() == (DoorReading("open", source="simulate"), 1)


async def test_set_from_a_foreign_thread_uses_the_captured_token() -> None:
    cell = LatestValue(0)  # built inside trio.run: the token is captured
    assert cell.trio_token is trio.lowlevel.current_trio_token()
    done = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def foreign() -> None:
        cell.set_from_thread(7)
        trio.from_thread.run_sync(done.set, trio_token=token)

    thread = threading.Thread(target=foreign)
    thread.start()
    assert await cell.wait_changed(0) == (7, 1)
    await done.wait()
    thread.join()
