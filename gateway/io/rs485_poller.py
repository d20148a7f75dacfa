"""RS485 door-board poller (interfaces.md §3.4, behaviour.md §10.4, D13).

Polls the board on a fixed schedule over a non-blocking serial fd serviced by Trio, derives the
door status and sets the door `LatestValue` only on a change. Port errors close the port and a
sibling task reopens it with backoff; failed polls turn the status `unknown` after N in a row.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from collections.abc import Callable
from typing import Any, Final, Literal, Protocol

import attrs
import serial
import trio

from gateway.app.latest import LatestValue
from gateway.app.logs import RateLimiter, log_event
from gateway.codecs.rs485 import BoardResponse, ResponseParser, encode_query
from gateway.config.model import Rs485Config
from gateway.core.model import DoorReading, DoorStatus
from gateway.core.stats import BUCKETS_J, Histogram, RollingWindow

logger = logging.getLogger(__name__)

PollResult = Literal["ok", "timeout", "bad_frame", "io_error", "port_closed", "skipped"]
POLL_RESULTS: Final[tuple[PollResult, ...]] = (
    "ok",
    "timeout",
    "bad_frame",
    "io_error",
    "port_closed",
    "skipped",
)

RESPONSE_TIMEOUT_MAX_S: Final = 0.5  # §3.4: deadline = start + min(500 ms, interval − 25 ms)
RESPONSE_MARGIN_S: Final = 0.025
REOPEN_INITIAL_S: Final = 0.5  # §3.4 "Port errors": 0.5 s, 1 s, 2 s … capped at 30 s
REOPEN_MAX_S: Final = 30.0
JITTER_WARN_US: Final = 50_000  # §3.4 "Jitter": WARN above 50 ms
READ_CHUNK_BYTES: Final = 256  # one read; frames are 18 bytes


class Rs485Port(Protocol):
    """What the poller needs of a port: a non-blocking fd; `read` returns b"" when empty."""

    def fileno(self) -> int: ...

    def read(self, size: int) -> bytes: ...

    def write(self, data: bytes) -> int: ...

    def close(self) -> None: ...


@attrs.define(eq=False)
class SerialPort:
    """pyserial opens and configures the tty; bytes move with os.read/os.write on its fd.

    pyserial's own `write` spins on EAGAIN when `write_timeout=0` and its `read` adds a select
    per call; the poller already waits with `wait_readable`/`wait_writable`.
    """

    serial: Any  # serial.Serial (untyped)

    def fileno(self) -> int:
        return int(self.serial.fileno())

    def read(self, size: int) -> bytes:
        try:
            data = os.read(self.fileno(), size)
        except BlockingIOError:
            return b""
        if not data:  # readable but empty: the device hung up (as pyserial reports it)
            raise OSError(errno.EIO, "device reports readiness to read but returned no data")
        return data

    def write(self, data: bytes) -> int:
        try:
            return os.write(self.fileno(), data)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        self.serial.close()


def open_serial_port(config: Rs485Config) -> Rs485Port:
    """8N1, no flow control, O_NONBLOCK: the open itself never waits (interfaces.md §3.1)."""
    return SerialPort(
        serial.Serial(
            port=config.device,
            baudrate=config.baud,
            bytesize=serial.EIGHTBITS,
            parity=serial.PARITY_NONE,
            stopbits=serial.STOPBITS_ONE,
            xonxoff=False,
            rtscts=False,
            dsrdtr=False,
            timeout=0,
            write_timeout=0,
        )
    )


def reopen_delay_s(attempt: int) -> float:
    """Delay before reopen attempt `attempt` (1-based) since the last failure: 0.5, 1, 2 … 30."""
    return min(REOPEN_INITIAL_S * (1 << min(attempt - 1, 16)), REOPEN_MAX_S)


def response_window_s(poll_interval_ms: int) -> float:
    return min(RESPONSE_TIMEOUT_MAX_S, poll_interval_ms / 1000 - RESPONSE_MARGIN_S)


@attrs.define
class Rs485Stats:
    """Plain counters read by the metrics collector and /health (interfaces.md §9.2)."""

    polls: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(POLL_RESULTS, 0))
    consecutive_failures: int = 0
    reopens: int = 0  # reopen attempts after a failed open or an I/O error
    fault: int = 0
    alarm: int = 0
    port_open: bool = False
    door: str = "unknown"  # the poller's view; the cell may also hold a simulated value
    bad_frames: int = 0  # checksum failures inside the parser (one per dropped false start)
    poll_jitter_us: Histogram = attrs.field(factory=lambda: Histogram(BUCKETS_J))
    poll_jitter_window: RollingWindow = attrs.field(factory=RollingWindow)


@attrs.define(eq=False)
class _Poller:
    config: Rs485Config
    cell: LatestValue[DoorReading]
    stats: Rs485Stats
    open_port: Callable[[Rs485Config], Rs485Port]
    parser: ResponseParser = attrs.field(factory=ResponseParser)
    port: Rs485Port | None = None
    reopen_attempt: int = 0  # failures since the last valid frame drive the backoff
    port_lost: trio.Event = attrs.field(factory=trio.Event)
    limiter: RateLimiter = attrs.field(factory=RateLimiter)

    # ---- port management -------------------------------------------------------------------

    def try_open(self) -> bool:
        try:
            self.port = self.open_port(self.config)
        except OSError as exc:  # serial.SerialException is an OSError; ENOENT, EACCES …
            self.limiter.log(
                logger,
                logging.WARNING,
                "rs485_open",
                "rs485_open_failed",
                device=self.config.device,
                error=str(exc),
            )
            return False
        self.stats.port_open = True
        log_event(logger, logging.INFO, "rs485_port_opened", device=self.config.device)
        return True

    def close_port(self) -> None:
        port, self.port = self.port, None
        if port is None:
            return
        self.stats.port_open = False
        self.parser.clear()
        trio.lowlevel.notify_closing(port.fileno())
        try:
            port.close()
        except OSError as exc:
            log_event(logger, logging.DEBUG, "rs485_close_failed", error=str(exc))
        lost, self.port_lost = self.port_lost, trio.Event()
        lost.set()

    async def run_reopener(self) -> None:
        """Reopen after 0.5, 1, 2 … 30 s while the port is closed; the backoff resets on a frame."""
        while True:
            if self.port is not None:
                await self.port_lost.wait()
                continue
            self.reopen_attempt += 1
            await trio.sleep(reopen_delay_s(self.reopen_attempt))
            self.stats.reopens += 1
            self.try_open()

    # ---- polling -----------------------------------------------------------------------------

    async def run_polls(self) -> None:
        """Poll k starts at t0 + k × interval; overruns skip slots, never burst (§3.4)."""
        interval = self.config.poll_interval_ms / 1000
        t0 = trio.current_time()
        k = 0
        while True:
            scheduled = t0 + k * interval
            await trio.sleep_until(scheduled)
            start = trio.current_time()
            self._record_jitter(start, start - scheduled)
            result = await self.poll_once(start + response_window_s(self.config.poll_interval_ms))
            self.stats.polls[result] += 1
            if result != "ok":
                self._on_failure()
            # the next slot is the first one that has not started yet (a slot starting exactly
            # now is still on time)
            elapsed_slots = math.ceil((trio.current_time() - t0) / interval)
            next_k = max(k + 1, elapsed_slots)
            self.stats.polls["skipped"] += next_k - (k + 1)
            k = next_k

    def _record_jitter(self, now: float, late_s: float) -> None:
        jitter_us = abs(late_s) * 1e6
        self.stats.poll_jitter_us.observe(jitter_us)
        self.stats.poll_jitter_window.observe(int(now * 1000), jitter_us)
        if jitter_us > JITTER_WARN_US:
            self.limiter.log(
                logger, logging.WARNING, "rs485_jitter", "rs485_poll_late", jitter_us=int(jitter_us)
            )

    async def poll_once(self, deadline: float) -> PollResult:
        """Write the query, read into the persistent parser until a frame or `deadline`."""
        port = self.port
        if port is None:
            return "port_closed"
        bad_before = self.parser.bad_frames
        frame: BoardResponse | None = None
        try:
            with trio.move_on_at(deadline):
                await self._write_all(port, encode_query(self.config.machine))
                while frame is None:
                    await trio.lowlevel.wait_readable(port.fileno())
                    data = port.read(READ_CHUNK_BYTES)
                    if data:
                        self.parser.feed(data)
                        frame = self._newest_frame()
        except OSError as exc:  # serial.SerialException included: EIO, hang-up, device gone
            self.stats.bad_frames = self.parser.bad_frames
            self.limiter.log(
                logger,
                logging.WARNING,
                "rs485_io",
                "rs485_io_error",
                device=self.config.device,
                error=str(exc),
            )
            self.close_port()
            return "io_error"
        self.stats.bad_frames = self.parser.bad_frames
        if frame is None:
            return "bad_frame" if self.parser.bad_frames > bad_before else "timeout"
        self._on_frame(frame)
        return "ok"

    async def _write_all(self, port: Rs485Port, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = port.write(bytes(view))
            view = view[written:]
            if view:
                await trio.lowlevel.wait_writable(port.fileno())
            else:
                await trio.lowlevel.checkpoint()

    def _newest_frame(self) -> BoardResponse | None:
        # Every complete frame already here is older than the last one; keep the newest.
        newest = None
        while (frame := self.parser.next_response()) is not None:
            newest = frame
        return newest

    # ---- door state --------------------------------------------------------------------------

    def _publish(self, status: DoorStatus, fault: int, alarm: int) -> None:
        # Compare with the cell, not our last reading: POST /door/simulate may have set it, and
        # the next differing board reading overwrites a simulated value (behaviour.md §10.4).
        current, _ = self.cell.get()
        if (current.status, current.fault, current.alarm) != (status, fault, alarm):
            self.cell.set(DoorReading(status, fault, alarm, "rs485"))

    def _on_frame(self, frame: BoardResponse) -> None:
        self.stats.consecutive_failures = 0
        self.reopen_attempt = 0
        status = frame.door_status
        self.stats.door, self.stats.fault, self.stats.alarm = status, frame.fault, frame.alarm
        self._publish(status, frame.fault, frame.alarm)

    def _on_failure(self) -> None:
        self.stats.consecutive_failures += 1
        if self.stats.consecutive_failures == self.config.unknown_after_failures:
            self.become_unknown()

    def become_unknown(self) -> None:
        """Status `unknown`, set once; the cell's fault/alarm are kept (behaviour.md §10.4)."""
        self.stats.door = "unknown"
        current, _ = self.cell.get()
        self._publish("unknown", current.fault, current.alarm)


async def run_rs485_poller(
    config: Rs485Config,
    cell: LatestValue[DoorReading],
    stats: Rs485Stats,
    *,
    open_port: Callable[[Rs485Config], Rs485Port] = open_serial_port,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Poll forever; `started()` after the first open attempt (a missing device is not fatal)."""
    poller = _Poller(config, cell, stats, open_port)
    try:
        async with trio.open_nursery() as nursery:
            if not poller.try_open():
                poller.become_unknown()  # missing device at start: unknown, keep retrying
            nursery.start_soon(poller.run_reopener)
            task_status.started()
            await poller.run_polls()
    finally:
        poller.close_port()  # synchronous: nothing to shield
