"""Journal writer with real files (interfaces.md §5): batching, rotation, errors, final flush."""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from gateway.codecs.journey_json import decode_journey
from gateway.config.model import EgressConfig, RotateKind
from gateway.io.journal import JournalStats, run_journal

DAY1 = dt.datetime(2026, 1, 5, 10, 45, 0, tzinfo=dt.UTC)
DAY2 = dt.datetime(2026, 1, 6, 0, 0, 1, tzinfo=dt.UTC)


class FakeUtc:
    """Settable UTC source; records the trio time of each call = the start of each flush."""

    def __init__(self, value: dt.datetime = DAY1) -> None:
        self.value = value
        self.calls: list[float] = []

    def __call__(self) -> dt.datetime:
        self.calls.append(trio.current_time())
        return self.value


def rec(i: int, **extra: Any) -> dict[str, Any]:
    return {"jid": f"j{i:04d}", "tids": [i], "out": "exit", **extra}


def jids(path: Path) -> list[str]:
    return [decode_journey(line)["jid"] for line in path.read_bytes().splitlines()]


async def settle(pred: Callable[[], bool]) -> None:
    """Wait for the worker thread's real I/O without letting the autojump clock advance.

    Spinning on checkpoints keeps the run loop busy, so virtual time stands still while the thread
    runs; tests move time only with explicit `trio.sleep` calls and can assert exact flush times.
    """
    give_up = time.monotonic() + 10.0
    while not pred():
        assert time.monotonic() < give_up, "journal did not settle"
        await trio.lowlevel.checkpoint()


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@asynccontextmanager
async def journal(
    path: Path,
    stats: JournalStats,
    rotate: RotateKind = "none",
    rotate_mb: int = 0,
    now: Callable[[], dt.datetime] | None = None,
) -> AsyncIterator[trio.MemorySendChannel[Mapping[str, Any]]]:
    send, recv = trio.open_memory_channel[Mapping[str, Any]](2000)
    cfg = EgressConfig(str(path), rotate, rotate_mb)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(run_journal, cfg, recv, stats, now=now or FakeUtc()))
        async with send:
            yield send


async def test_ten_pending_journeys_are_one_immediate_flush(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "journeys.jsonl"
    stats = JournalStats()
    clock = FakeUtc()
    t0 = trio.current_time()
    async with journal(path, stats, now=clock) as send:
        for i in range(10):
            await send.send(rec(i))
        await settle(lambda: stats.flushes == 1)
        assert clock.calls == [t0]  # flushed at once, not after 1 s
        assert stats.lines == 10
        assert stats.pending == 0
        assert stats.last_flush_mono_ns is not None
    assert jids(path) == [f"j{i:04d}" for i in range(10)]
    assert path.read_bytes().endswith(b"}\n")
    assert stats.path == str(path)


async def test_single_journey_is_flushed_1000_ms_after_it_arrived(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "journeys.jsonl"
    stats = JournalStats()
    clock = FakeUtc()
    async with journal(path, stats, now=clock) as send:
        t0 = trio.current_time()
        await send.send(rec(1))
        await trio.sleep(0.99)
        assert stats.lines == 0
        assert stats.pending == 1
        assert not path.exists()
        await trio.sleep(0.01)
        await settle(lambda: stats.lines == 1)
        assert clock.calls == [pytest.approx(t0 + 1.0)]
        assert jids(path) == ["j0001"]


async def test_10_pending_flush_at_once_and_a_queued_burst_is_one_write(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "journeys.jsonl"
    stats = JournalStats()
    clock = FakeUtc()
    t0 = trio.current_time()
    async with journal(path, stats, now=clock) as send:
        for i in range(10):  # 10 pending trigger a flush at once
            send.send_nowait(rec(i))
        await settle(lambda: stats.lines == 10)
        for i in range(10, 25):  # a queued burst is taken whole: one write + fsync
            send.send_nowait(rec(i))
        await settle(lambda: stats.lines == 25)
        assert stats.flushes == 2
        assert clock.calls == [t0, t0]
    assert jids(path) == [f"j{i:04d}" for i in range(25)]


async def test_a_few_lines_wait_for_the_one_second_flush(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "journeys.jsonl"
    stats = JournalStats()
    clock = FakeUtc()
    t0 = trio.current_time()
    async with journal(path, stats, now=clock) as send:
        for i in range(5):
            send.send_nowait(rec(i))
        await trio.sleep(0.9)
        assert stats.lines == 0
        await trio.sleep(0.2)  # past the 1 s deadline; the flush thread then runs
        await settle(lambda: stats.lines == 5)
        assert clock.calls == [t0 + 1.0]
    assert jids(path) == [f"j{i:04d}" for i in range(5)]


async def test_parent_dirs_created_and_existing_file_appended(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "a" / "b" / "journeys.jsonl"
    stats = JournalStats()
    async with journal(path, stats) as send:
        await send.send(rec(1))
    async with journal(path, stats) as send:
        await send.send(rec(2))
    assert jids(path) == ["j0001", "j0002"]
    assert stats.lines == 2


async def test_final_flush_on_close_without_waiting(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "journeys.jsonl"
    stats = JournalStats()
    clock = FakeUtc()
    t0 = trio.current_time()
    async with journal(path, stats, now=clock) as send:
        for i in range(3):
            await send.send(rec(i))
        await trio.testing.wait_all_tasks_blocked()
    assert clock.calls == [t0]  # the close flushed, no 1 s wait
    assert stats.flushes == 1
    assert jids(path) == ["j0000", "j0001", "j0002"]


async def test_cancelled_writer_still_flushes_pending_journeys(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "journeys.jsonl"
    stats = JournalStats()
    send, recv = trio.open_memory_channel[Mapping[str, Any]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(run_journal, EgressConfig(str(path)), recv, stats))
        await send.send(rec(1))
        await send.send(rec(2))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert jids(path) == ["j0001", "j0002"]


async def test_daily_rotation_renames_with_the_data_date_and_clash_suffix(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "journeys.jsonl"
    (tmp_path / "journeys-20260105.jsonl").write_bytes(b"old\n")
    (tmp_path / "journeys-20260105-1.jsonl").write_bytes(b"older\n")
    stats = JournalStats()
    clock = FakeUtc(DAY1)
    async with journal(path, stats, "daily", now=clock) as send:
        await send.send(rec(1))
        await trio.sleep(1.0)
        await settle(lambda: stats.lines == 1)
        clock.value = DAY1 + dt.timedelta(hours=13)  # still 2026-01-05 UTC
        await send.send(rec(2))
        await trio.sleep(1.0)
        await settle(lambda: stats.lines == 2)
        assert stats.rotations == 0
        clock.value = DAY2
        await send.send(rec(3))
        await trio.sleep(1.0)
        await settle(lambda: stats.lines == 3)
    assert stats.rotations == 1
    assert jids(tmp_path / "journeys-20260105-2.jsonl") == ["j0001", "j0002"]
    assert jids(path) == ["j0003"]
    assert (tmp_path / "journeys-20260105.jsonl").read_bytes() == b"old\n"


async def test_daily_rotation_of_a_file_left_from_an_earlier_day(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "journeys.jsonl"
    path.write_bytes(b'{"jid":"old"}\n')
    day0 = dt.datetime(2026, 1, 4, 12, 0, tzinfo=dt.UTC).timestamp()
    os.utime(path, (day0, day0))
    stats = JournalStats()
    async with journal(path, stats, "daily", now=FakeUtc(DAY1)) as send:
        await send.send(rec(1))
    assert jids(tmp_path / "journeys-20260104.jsonl") == ["old"]
    assert jids(path) == ["j0001"]
    assert stats.rotations == 1


async def test_no_rotation_by_default(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "journeys.jsonl"
    stats = JournalStats()
    clock = FakeUtc(DAY1)
    async with journal(path, stats, now=clock) as send:
        await send.send(rec(1))
        await trio.sleep(1.0)
        await settle(lambda: stats.lines == 1)
        clock.value = DAY2
        await send.send(rec(2))
    assert jids(path) == ["j0001", "j0002"]
    assert names(tmp_path) == ["journeys.jsonl"]


async def test_size_rotation_after_the_flush_that_reaches_the_limit(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "journal"  # no suffix
    (tmp_path / "journal-20260105-104500").write_bytes(b"clash\n")
    stats = JournalStats()
    big = "x" * 600_000
    async with journal(path, stats, "size", 1, now=FakeUtc(DAY1)) as send:
        await send.send(rec(1, pad=big))
        await trio.sleep(1.0)
        await settle(lambda: stats.lines == 1)
        assert stats.rotations == 0
        await send.send(rec(2, pad=big))
        await trio.sleep(1.0)
        await settle(lambda: stats.lines == 2)
        assert stats.rotations == 1
        assert not path.exists()
        await send.send(rec(3))
    assert jids(tmp_path / "journal-20260105-104500-1") == ["j0001", "j0002"]
    assert jids(path) == ["j0003"]


async def test_write_error_is_counted_kept_and_retried(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journeys.jsonl"
    path.mkdir()  # a directory where the file should be
    stats = JournalStats()
    clock = FakeUtc()
    async with journal(path, stats, now=clock) as send:
        await send.send(rec(1))
        await trio.sleep(1.0)
        await settle(lambda: stats.write_errors == 1)
        assert stats.pending == 1
        assert stats.lines == 0
        assert stats.last_error_mono_ns is not None
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert [r.getMessage() for r in errors] == ["journal_write_failed"]
        path.rmdir()
        await send.send(rec(2))
        await trio.sleep(1.0)
        await settle(lambda: stats.lines == 2)
        first, retry = clock.calls
        assert retry - first == pytest.approx(1.0)  # the failed batch is retried 1 s later
    assert jids(path) == ["j0001", "j0002"]
    assert stats.write_errors == 1
    assert stats.dropped == 0


async def test_at_most_1000_journeys_kept_while_failing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "journeys.jsonl"
    path.mkdir()
    stats = JournalStats()
    async with journal(path, stats) as send:
        for i in range(10):
            await send.send(rec(i))
        await settle(lambda: stats.write_errors == 1)
        for i in range(10, 1005):
            await send.send(rec(i))
        await trio.testing.wait_all_tasks_blocked()
        assert stats.pending == 1000
        assert stats.dropped == 5
        path.rmdir()
    written = jids(path)
    assert len(written) == 1000
    assert written[0] == "j0005"
    assert written[-1] == "j1004"


async def test_unencodable_record_is_dropped_not_fatal(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "journeys.jsonl"
    stats = JournalStats()
    async with journal(path, stats) as send:
        await send.send(rec(1))
        await send.send(rec(2, bad=object()))
        await send.send(rec(3))
    assert jids(path) == ["j0001", "j0003"]
    assert stats.dropped == 1


async def test_close_with_a_persistent_error_counts_the_lost_journeys(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "journeys.jsonl"
    path.mkdir()
    stats = JournalStats()
    async with journal(path, stats) as send:
        await send.send(rec(1))
        await send.send(rec(2))
    assert stats.dropped == 2
    assert stats.pending == 0
    assert stats.write_errors >= 1
