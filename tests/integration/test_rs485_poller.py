"""RS485 poller against a real pseudo-terminal board (interfaces.md §3.4, S132–S138).

The test owns the pty master and answers queries with `encode_response`; the poller opens the
slave through a symlink, exactly as it opens `/dev/ttyAMA4` on site. When query n arrives the
board snapshots the poller's counters and the cell (poll n − 1 is counted, poll n is waiting).
"""

from __future__ import annotations

import os
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
import trio

from gateway.app.latest import LatestValue
from gateway.codecs.rs485 import CMD_QUERY, CommandParser, encode_response
from gateway.config.model import Rs485Config
from gateway.core.model import DoorReading
from gateway.io.rs485_poller import Rs485Port, Rs485Stats, open_serial_port, run_rs485_poller

pytestmark = pytest.mark.integration

WAIT_S = 5.0  # generous: only a broken poller takes this long


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# interfaces.md §3.3 examples
CLOSED = h("7F 01 01 00 00 00 00 00 05 00 00 03 00 00 0C 00 00 6A")
LEFT_OPEN = h("7F 01 01 00 01 00 00 00 05 00 00 03 00 00 0C 00 00 69")
RIGHT_OPEN = h("7F 01 01 00 02 00 00 00 05 00 00 03 00 00 0C 00 00 68")
MOVING = h("7F 01 01 00 03 00 00 00 05 00 00 03 00 00 0C 00 00 67")
FIRE = h("7F 01 01 00 04 00 00 00 05 00 00 03 00 00 0C 00 00 66")
STATUS05 = h("7F 01 01 00 05 00 00 00 05 00 00 03 00 00 0C 00 00 65")
FAULT_ALARM = h("7F 01 01 08 00 06 00 00 05 00 00 03 00 00 0C 00 00 5C")

Reply = list[tuple[float, bytes]]  # (delay before the chunk, chunk)


@attrs.frozen
class Snapshot:
    polls: dict[str, int]
    consecutive_failures: int
    bad_frames: int
    cell: tuple[DoorReading, int]


def no_probe() -> Snapshot | None:
    return None


@attrs.define(eq=False)
class PtyBoard:
    """Minimal board: answers query n with `script(n)` (1-based); silence is an empty list."""

    master: int
    script: Callable[[int], Reply]
    probe: Callable[[], Snapshot | None] = no_probe
    queries: int = 0
    snapshots: list[Snapshot | None] = attrs.field(factory=list)
    _seen: trio.Event = attrs.field(factory=trio.Event)

    async def run(self) -> None:
        parser = CommandParser()
        while True:
            await trio.lowlevel.wait_readable(self.master)
            try:
                data = os.read(self.master, 1024)
            except (BlockingIOError, OSError):  # EIO while no slave is open
                await trio.sleep(0.01)
                continue
            for cmd in parser.feed(data):
                if cmd.command != CMD_QUERY:
                    continue
                self.queries += 1
                self.snapshots.append(self.probe())
                seen, self._seen = self._seen, trio.Event()
                seen.set()
                for delay, chunk in self.script(self.queries):
                    if delay:
                        await trio.sleep(delay)
                    os.write(self.master, chunk)

    async def wait_queries(self, n: int) -> None:
        with trio.fail_after(WAIT_S):
            while self.queries < n:
                await self._seen.wait()

    def at_query(self, n: int) -> Snapshot:
        """The state when query n (1-based) arrived."""
        snap = self.snapshots[n - 1]
        assert snap is not None
        return snap


def answer(frame: bytes) -> Reply:
    return [(0.0, frame)]


@attrs.define
class Pty:
    master: int
    slave: int
    path: Path


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[Pty]:
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    link = tmp_path / "ttyRS485"
    link.symlink_to(os.ttyname(slave))
    try:
        yield Pty(master, slave, link)
    finally:
        os.close(master)
        os.close(slave)


@attrs.define(eq=False)
class Rig:
    board: PtyBoard
    cell: LatestValue[DoorReading]
    stats: Rs485Stats
    nursery: trio.Nursery

    async def wait_cell(self, version: int) -> tuple[DoorReading, int]:
        with trio.fail_after(WAIT_S):
            return await self.cell.wait_changed(version)


def config(path: Path, interval_ms: int = 100) -> Rs485Config:
    return Rs485Config(enabled=True, device=str(path), poll_interval_ms=interval_ms)


async def start(
    nursery: trio.Nursery,
    pty: Pty,
    script: Callable[[int], Reply],
    *,
    interval_ms: int = 100,
    initial: DoorReading | None = None,
    open_port: Callable[[Rs485Config], Rs485Port] = open_serial_port,
) -> Rig:
    cell = LatestValue(initial or DoorReading("unknown"))
    stats = Rs485Stats()

    def probe() -> Snapshot:
        return Snapshot(dict(stats.polls), stats.consecutive_failures, stats.bad_frames, cell.get())

    board = PtyBoard(pty.master, script, probe)
    nursery.start_soon(board.run)
    await nursery.start(
        lambda task_status: run_rs485_poller(
            config(pty.path, interval_ms), cell, stats, open_port=open_port, task_status=task_status
        )
    )
    return Rig(board, cell, stats, nursery)


async def test_s132_example_frames_map_to_door_states(pty: Pty) -> None:
    frames = [CLOSED, LEFT_OPEN, RIGHT_OPEN, MOVING, FIRE, STATUS05]
    async with trio.open_nursery() as nursery:
        # each frame is served for two polls: the consumer sees every change
        rig = await start(nursery, pty, lambda n: answer(frames[min((n - 1) // 2, 5)]))
        seen: list[tuple[str, int]] = []
        version = 0
        while len(seen) < 6:
            reading, version = await rig.wait_cell(version)
            assert reading.source == "rs485"
            seen.append((reading.status, version))
        # 00 closed, 01 open, 02 closed (resting position), 03 moving, 04 open, 05 unknown
        assert seen == [
            ("closed", 1),
            ("open", 2),
            ("closed", 3),
            ("moving", 4),
            ("open", 5),
            ("unknown", 6),
        ]
        assert rig.stats.door == "unknown"
        assert rig.stats.consecutive_failures == 0  # 05 is a valid frame with an unknown status
        nursery.cancel_scope.cancel()


async def test_s094_fault_and_alarm_change_sets_the_cell_again(pty: Pty) -> None:
    async with trio.open_nursery() as nursery:
        rig = await start(nursery, pty, lambda n: answer(CLOSED if n < 3 else FAULT_ALARM))
        reading, v1 = await rig.wait_cell(0)
        assert reading == DoorReading("closed", 0, 0, "rs485")
        reading, v2 = await rig.wait_cell(v1)
        assert reading == DoorReading("closed", 8, 6, "rs485")
        assert v2 == v1 + 1
        assert (rig.stats.fault, rig.stats.alarm) == (8, 6)
        nursery.cancel_scope.cancel()


async def test_s133_bad_checksum_is_a_bad_frame_and_keeps_the_status(pty: Pty) -> None:
    bad = CLOSED[:-1] + b"\x6b"
    async with trio.open_nursery() as nursery:
        rig = await start(nursery, pty, lambda n: answer(CLOSED if n == 1 else bad))
        await rig.board.wait_queries(4)
        snap = rig.board.at_query(4)  # polls 1..3 done
        assert (snap.polls["ok"], snap.polls["bad_frame"], snap.polls["timeout"]) == (1, 2, 0)
        assert snap.bad_frames == 2
        assert snap.consecutive_failures == 2
        assert snap.cell == (DoorReading("closed"), 1)
        nursery.cancel_scope.cancel()


async def test_s134_frame_in_two_pieces_within_one_poll(pty: Pty) -> None:
    # 100 ms interval → 75 ms response window; the tail comes 30 ms after the head
    async with trio.open_nursery() as nursery:
        rig = await start(
            nursery, pty, lambda n: [(0.0, CLOSED[:16]), (0.03, CLOSED[16:])], interval_ms=100
        )
        reading, _ = await rig.wait_cell(0)
        assert reading.status == "closed"
        await rig.board.wait_queries(3)
        snap = rig.board.at_query(3)
        assert (snap.polls["ok"], snap.polls["timeout"], snap.consecutive_failures) == (2, 0, 0)
        assert snap.cell == (DoorReading("closed"), 1)
        nursery.cancel_scope.cancel()


async def test_s135_resync_after_noise_and_false_start(pty: Pty) -> None:
    replies = {1: answer(h("00 13") + CLOSED), 2: answer(b"\x7f" + LEFT_OPEN)}
    async with trio.open_nursery() as nursery:
        rig = await start(nursery, pty, lambda n: replies.get(n, answer(LEFT_OPEN)))
        reading, v = await rig.wait_cell(0)
        assert reading.status == "closed"
        reading, _ = await rig.wait_cell(v)
        assert reading.status == "open"
        await rig.board.wait_queries(3)
        snap = rig.board.at_query(3)
        assert snap.polls["ok"] == 2  # the false start cost no poll
        assert snap.polls["bad_frame"] == 0
        assert snap.bad_frames == 1
        nursery.cancel_scope.cancel()


async def test_s136_unknown_after_eight_consecutive_failures(pty: Pty) -> None:
    # query 1 answered, 2..9 silent (8 timeouts), then answered again
    async with trio.open_nursery() as nursery:
        rig = await start(nursery, pty, lambda n: answer(CLOSED) if n == 1 or n >= 10 else [])
        reading, v = await rig.wait_cell(0)
        assert reading.status == "closed"
        await rig.board.wait_queries(10)
        snap = rig.board.at_query(9)  # polls 2..8: seven timeouts
        assert (snap.polls["timeout"], snap.consecutive_failures) == (7, 7)
        assert snap.cell == (DoorReading("closed"), v)
        snap = rig.board.at_query(10)  # poll 9: the eighth timeout
        assert (snap.polls["timeout"], snap.consecutive_failures) == (8, 8)
        assert snap.cell == (DoorReading("unknown"), v + 1)
        reading, v2 = await rig.wait_cell(v + 1)
        assert reading.status == "closed"
        assert v2 == v + 2  # unknown was set once
        assert rig.stats.consecutive_failures == 0
        nursery.cancel_scope.cancel()


async def test_s137_missing_device_is_retried_with_backoff(pty: Pty, tmp_path: Path) -> None:
    target = os.readlink(pty.path)
    pty.path.unlink()
    attempts: list[float] = []
    attempted = trio.Event()

    def recording_open(cfg: Rs485Config) -> Rs485Port:
        attempts.append(trio.current_time())
        attempted.set()
        return open_serial_port(cfg)

    async with trio.open_nursery() as nursery:
        rig = await start(
            nursery,
            pty,
            lambda n: answer(CLOSED),
            initial=DoorReading("open"),
            open_port=recording_open,
        )
        assert rig.cell.get() == (DoorReading("unknown"), 1)  # missing at start → unknown
        assert not rig.stats.port_open
        with trio.fail_after(WAIT_S):
            while len(attempts) < 3:  # t0, t0 + 0.5, t0 + 1.5
                attempted = trio.Event()
                await attempted.wait()
        assert attempts[1] - attempts[0] >= 0.5
        assert attempts[2] - attempts[1] >= 1.0
        assert rig.stats.reopens == 2
        assert rig.stats.polls["port_closed"] > 0
        assert rig.stats.polls["ok"] == 0
        pty.path.symlink_to(target)  # the device appears
        reading, _ = await rig.wait_cell(1)
        assert reading.status == "closed"
        assert rig.stats.port_open
        assert len(attempts) == 4
        assert attempts[3] - attempts[2] >= 2.0
        nursery.cancel_scope.cancel()


async def test_s138_identical_frames_set_the_cell_once(pty: Pty) -> None:
    async with trio.open_nursery() as nursery:
        rig = await start(nursery, pty, lambda n: answer(CLOSED))
        await rig.board.wait_queries(11)
        snap = rig.board.at_query(11)
        assert snap.polls["ok"] == 10
        assert snap.cell == (DoorReading("closed"), 1)
        assert rig.stats.poll_jitter_us.count >= 11  # one observation per poll
        nursery.cancel_scope.cancel()


async def test_s138_leftover_bytes_are_completed_by_the_next_poll(pty: Pty) -> None:
    replies = {1: answer(CLOSED + MOVING[:5]), 2: answer(MOVING[5:])}
    async with trio.open_nursery() as nursery:
        rig = await start(nursery, pty, lambda n: replies.get(n, answer(MOVING)))
        reading, v = await rig.wait_cell(0)
        assert reading.status == "closed"
        reading, _ = await rig.wait_cell(v)
        assert reading.status == "moving"
        await rig.board.wait_queries(3)
        snap = rig.board.at_query(3)
        assert (snap.polls["ok"], snap.bad_frames, snap.consecutive_failures) == (2, 0, 0)
        nursery.cancel_scope.cancel()


async def test_io_error_closes_the_port_and_reopens(tmp_path: Path) -> None:
    first_master, first_slave = os.openpty()
    second_master, second_slave = os.openpty()
    for master, slave in ((first_master, first_slave), (second_master, second_slave)):
        tty.setraw(slave)
        os.set_blocking(master, False)
    link = tmp_path / "ttyRS485"
    link.symlink_to(os.ttyname(first_slave))
    cell = LatestValue(DoorReading("unknown"))
    stats = Rs485Stats()
    first_board = PtyBoard(first_master, lambda n: answer(CLOSED))
    second_board = PtyBoard(second_master, lambda n: answer(MOVING))
    try:
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as first_scope:
                await nursery.start(
                    lambda task_status: run_rs485_poller(
                        config(link, 50), cell, stats, task_status=task_status
                    )
                )
                nursery.start_soon(second_board.run)
                async with trio.open_nursery() as board_nursery:
                    board_nursery.start_soon(first_board.run)
                    with trio.fail_after(WAIT_S):
                        reading, version = await cell.wait_changed(0)
                    assert reading.status == "closed"
                    first_scope.cancel()
            # the board hangs up: master closed, the poller's port fails
            os.close(first_master)
            os.close(first_slave)
            first_master = first_slave = -1
            with trio.fail_after(WAIT_S):
                # io_error + 7 port_closed polls → unknown
                reading, version = await cell.wait_changed(version)
            assert reading.status == "unknown"
            assert stats.polls["io_error"] == 1
            assert stats.polls["port_closed"] == 7
            assert not stats.port_open
            link.unlink()
            link.symlink_to(os.ttyname(second_slave))  # a new cable
            with trio.fail_after(WAIT_S):
                reading, version = await cell.wait_changed(version)
            assert reading.status == "moving"
            assert stats.port_open
            assert stats.reopens >= 1
            assert stats.consecutive_failures == 0
            nursery.cancel_scope.cancel()
    finally:
        for fd in (first_master, first_slave, second_master, second_slave):
            if fd >= 0:
                os.close(fd)


def test_encode_response_is_the_board_side_helper() -> None:
    assert encode_response(status=0, left_count=5, right_count=3) == CLOSED
