"""RS485 poller timing on the autojump clock (interfaces.md §3.4, behaviour.md §10.4, S137).

The port is a pair of pipes (no sockets, no tty): bytes written by the board task are visible at
once, so with `autojump_clock` every deadline, slot and backoff is exact virtual time.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator

import attrs
import pytest
import trio
import trio.testing

from gateway.app.latest import LatestValue
from gateway.codecs.rs485 import CMD_QUERY, CommandParser, encode_response
from gateway.config.model import Rs485Config
from gateway.core.model import DoorReading
from gateway.io.rs485_poller import (
    Rs485Port,
    Rs485Stats,
    reopen_delay_s,
    response_window_s,
    run_rs485_poller,
)

CLOSED = encode_response(status=0x00)
OPEN = encode_response(status=0x01)


@attrs.define(eq=False)
class Pipes:
    host_rx: int
    board_tx: int
    board_rx: int
    host_tx: int


@pytest.fixture
def pipes() -> Iterator[Pipes]:
    host_rx, board_tx = os.pipe()
    board_rx, host_tx = os.pipe()
    for fd in (host_rx, board_rx):
        os.set_blocking(fd, False)
    try:
        yield Pipes(host_rx, board_tx, board_rx, host_tx)
    finally:
        for fd in (host_rx, board_tx, board_rx, host_tx):
            os.close(fd)


@attrs.define(eq=False)
class PipePort:
    """Host side of the pipes; `good_reads` successful reads, then EIO (None = never)."""

    pipes: Pipes
    good_reads: int | None = None
    failed_at: float | None = None

    def fileno(self) -> int:
        return self.pipes.host_rx

    def read(self, size: int) -> bytes:
        if self.good_reads is not None:
            if self.good_reads == 0:
                self.failed_at = trio.current_time()
                raise OSError(errno.EIO, "Input/output error")
            self.good_reads -= 1
        try:
            return os.read(self.pipes.host_rx, size)
        except BlockingIOError:
            return b""

    def write(self, data: bytes) -> int:
        return os.write(self.pipes.host_tx, data)

    def close(self) -> None:
        pass  # the fixture owns the fds


@attrs.define(eq=False)
class Board:
    """Answers query n (1-based) with `script(n)`: a list of (delay, bytes); records times."""

    pipes: Pipes
    script: Callable[[int], list[tuple[float, bytes]]]
    clock: trio.testing.MockClock
    stall: dict[int, float] = attrs.field(factory=dict)  # query n → clock jump before replying
    times: list[float] = attrs.field(factory=list)

    async def run(self) -> None:
        parser = CommandParser()
        while True:
            await trio.lowlevel.wait_readable(self.pipes.board_rx)
            for cmd in parser.feed(os.read(self.pipes.board_rx, 1024)):
                assert cmd.command == CMD_QUERY
                self.times.append(trio.current_time())
                n = len(self.times)
                if n in self.stall:
                    self.clock.jump(self.stall[n])
                for delay, chunk in self.script(n):
                    if delay:
                        await trio.sleep(delay)
                    os.write(self.pipes.board_tx, chunk)


def cfg(interval_ms: int = 250) -> Rs485Config:
    return Rs485Config(enabled=True, device="/dev/pipe", poll_interval_ms=interval_ms)


async def run_for(
    seconds: float,
    config: Rs485Config,
    cell: LatestValue[DoorReading],
    stats: Rs485Stats,
    open_port: Callable[[Rs485Config], Rs485Port],
    *extra: Callable[[], object],
) -> float:
    """Run the poller (and extra tasks) for `seconds` of virtual time; return its start time."""
    async with trio.open_nursery() as nursery:
        for task in extra:
            nursery.start_soon(task)  # type: ignore[arg-type]
        t0 = trio.current_time()
        await nursery.start(
            lambda task_status: run_rs485_poller(
                config, cell, stats, open_port=open_port, task_status=task_status
            )
        )
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return t0


def test_response_window_and_backoff_tables() -> None:
    assert response_window_s(250) == pytest.approx(0.225)
    assert response_window_s(1000) == 0.5
    assert response_window_s(50) == pytest.approx(0.025)
    assert [reopen_delay_s(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert reopen_delay_s(10_000) == 30


@pytest.mark.parametrize(("interval_ms", "window_s"), [(250, 0.225), (1000, 0.5)])
async def test_reply_just_inside_and_just_outside_the_window(
    autojump_clock: trio.testing.MockClock, pipes: Pipes, interval_ms: int, window_s: float
) -> None:
    delays = {1: window_s - 0.001, 2: window_s + 0.001}
    board = Board(pipes, lambda n: [(delays.get(n, 0.0), CLOSED)] if n <= 2 else [], autojump_clock)
    stats = Rs485Stats()
    cell = LatestValue(DoorReading("unknown"))
    interval = interval_ms / 1000
    t0 = await run_for(
        2.5 * interval, cfg(interval_ms), cell, stats, lambda c: PipePort(pipes), board.run
    )
    # poll 1 answered in time; poll 2's late answer waits in the buffer and is read by poll 3
    assert [round(t - t0, 6) for t in board.times] == [0, interval, 2 * interval]
    assert stats.polls["ok"] == 2
    assert stats.polls["timeout"] == 1
    assert stats.consecutive_failures == 0
    assert cell.get() == (DoorReading("closed"), 1)


async def test_overrun_skips_missed_slots_and_never_bursts(
    autojump_clock: trio.testing.MockClock, pipes: Pipes
) -> None:
    # a 300 ms stall during poll 2 (at 0.25) makes slot 2 (0.5) pass unpolled
    board = Board(pipes, lambda n: [(0.0, CLOSED)], autojump_clock, stall={2: 0.3})
    stats = Rs485Stats()
    cell = LatestValue(DoorReading("unknown"))
    t0 = await run_for(1.1, cfg(), cell, stats, lambda c: PipePort(pipes), board.run)
    assert [round(t - t0, 6) for t in board.times] == [0, 0.25, 0.75, 1.0]
    assert stats.polls["skipped"] == 1
    # the answer was written during the stall, so the late poll still reads it
    assert (stats.polls["ok"], stats.polls["timeout"]) == (4, 0)
    assert stats.consecutive_failures == 0  # a skipped slot is not a failure
    assert stats.poll_jitter_us.count == 4  # skipped slots are not polls
    assert stats.poll_jitter_us.total == 0


async def test_late_start_is_jitter_and_warns(
    autojump_clock: trio.testing.MockClock, pipes: Pipes, caplog: pytest.LogCaptureFixture
) -> None:
    board = Board(pipes, lambda n: [(0.0, CLOSED)], autojump_clock)

    async def stall_before_slot_1() -> None:
        await trio.sleep(0.24)
        autojump_clock.jump(0.07)  # the loop wakes 60 ms after slot 1 should have started

    stats = Rs485Stats()
    cell = LatestValue(DoorReading("unknown"))
    with caplog.at_level(logging.WARNING, logger="gateway.io.rs485_poller"):
        t0 = await run_for(
            0.6, cfg(), cell, stats, lambda c: PipePort(pipes), board.run, stall_before_slot_1
        )
    assert [round(t - t0, 6) for t in board.times] == [0, 0.31, 0.5]  # back on the grid
    assert stats.polls["skipped"] == 0
    assert stats.poll_jitter_us.count == 3
    assert stats.poll_jitter_us.total == pytest.approx(60_000)
    warns = [r for r in caplog.records if r.getMessage() == "rs485_poll_late"]
    assert len(warns) == 1


async def test_s137_missing_device_backoff_is_exact(autojump_clock: trio.testing.MockClock) -> None:
    attempts: list[float] = []

    def missing(config: Rs485Config) -> Rs485Port:
        attempts.append(trio.current_time())
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", config.device)

    stats = Rs485Stats()
    cell = LatestValue(DoorReading("closed", 3, 4))
    t0 = await run_for(91.9, cfg(), cell, stats, missing)
    assert [t - t0 for t in attempts] == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 61.5, 91.5]
    assert stats.reopens == 8
    assert not stats.port_open
    assert cell.get() == (DoorReading("unknown", 3, 4, "rs485"), 1)  # at start, then never again
    assert stats.polls["port_closed"] == 368  # slots 0 … 91.75 s
    assert stats.consecutive_failures == 368
    assert stats.door == "unknown"


async def test_backoff_resets_only_after_a_valid_frame(
    autojump_clock: trio.testing.MockClock, pipes: Pipes
) -> None:
    # port 1: one good read then EIO; port 2: EIO at once (no frame, backoff grows);
    # port 3: one good read then EIO (frame → backoff reset); port 4: healthy
    plan = [1, 0, 1, None]
    ports: list[PipePort] = []
    opened: list[float] = []

    def open_port(config: Rs485Config) -> Rs485Port:
        opened.append(trio.current_time())
        port = PipePort(pipes, plan[len(ports)])
        ports.append(port)
        return port

    board = Board(pipes, lambda n: [(0.0, CLOSED)], autojump_clock)
    stats = Rs485Stats()
    cell = LatestValue(DoorReading("unknown"))
    await run_for(5.0, cfg(), cell, stats, open_port, board.run)
    assert len(ports) == 4
    gaps = [opened[i + 1] - ports[i].failed_at for i in range(3)]  # type: ignore[operator]
    assert gaps == [0.5, 1.0, 0.5]
    assert stats.reopens == 3
    assert stats.polls["io_error"] == 3
    assert ports[3].failed_at is None
    assert stats.consecutive_failures == 0
    assert not stats.port_open  # closed when the poller was cancelled


async def test_simulated_value_is_overwritten_by_the_next_differing_reading(
    autojump_clock: trio.testing.MockClock, pipes: Pipes
) -> None:
    board = Board(pipes, lambda n: [(0.0, CLOSED if n < 5 else OPEN)], autojump_clock)
    cell = LatestValue(DoorReading("unknown"))
    seen: list[DoorReading] = []

    async def simulate_and_watch() -> None:
        version = 0
        reading, version = await cell.wait_changed(version)
        seen.append(reading)  # closed from the board
        cell.set(DoorReading("closed", source="simulate"))  # same triple: left alone
        await trio.sleep(0.3)
        seen.append(cell.get()[0])
        cell.set(DoorReading("moving", source="simulate"))  # differs: the next poll overwrites it
        _, version = cell.get()
        for _ in range(2):
            reading, version = await cell.wait_changed(version)
            seen.append(reading)

    await run_for(
        1.2, cfg(), cell, Rs485Stats(), lambda c: PipePort(pipes), board.run, simulate_and_watch
    )
    assert seen == [
        DoorReading("closed"),
        DoorReading("closed", source="simulate"),
        DoorReading("closed"),
        DoorReading("open"),
    ]
