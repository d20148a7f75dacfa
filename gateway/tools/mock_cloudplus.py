"""`gateway mock-cloudplus`: a fake CloudPlus controller with door feedback (simulation.md §4).

Speaks the device side of interfaces.md §4.1 over real TCP: heartbeats (first at once), checks
every received frame, acks nothing, and after each open frame runs the door sequence moving →
open → closed, reported through the pty board emulator and/or `POST /door/simulate`.
`MockCloudPlus` is the same thing in-process, for tests and `gateway demo`.
"""

from __future__ import annotations

import argparse
import collections
import heapq
import json
import math
import signal
import sys
from collections.abc import Callable
from functools import partial

import attrs
import httpx
import trio

from gateway.app.clock import SystemClock
from gateway.codecs import cloudplus
from gateway.core.model import Clock
from gateway.tools.board_emulator import BoardEmulator

RECEIVE_BYTES = 4096
SEND_TIMEOUT_S = 5.0  # a heartbeat that cannot be written within this closes the connection
DOOR_POST_TIMEOUT_S = 2.0  # one POST /door/simulate
DOOR_FEED_CAPACITY = 16  # door changes waiting for the HTTP feeder; more are dropped
FRAMES_KEPT = 100_000  # received_frames is a ring so a long demo does not grow without bound

Output = Callable[[str], None]


class MockBindError(OSError):
    """The listener could not bind; the message names the address and port."""


@attrs.frozen
class MockOptions:
    """Every flag of simulation.md §4 / interfaces.md §10 with its default."""

    bind: str = "127.0.0.1"
    port: int = 8000
    heartbeat_interval_s: float = 15.0
    length_endian: cloudplus.LengthEndian = "big"
    move_delay_ms: int = 100
    open_delay_ms: int = 150
    open_duration_ms: int = 3000
    rs485_pty: str | None = None
    fault: int = 0
    alarm: int = 0
    gateway_url: str | None = None
    token: str | None = None
    silent: bool = False
    drop_after_s: float | None = None
    json: bool = False


@attrs.frozen
class ReceivedFrame:
    mono_ns: int  # when the bytes carrying the frame were read
    conn: int  # connection number, from 0
    frame: cloudplus.Frame


class MockCloudPlus:
    """In-process controller: `await nursery.start(mock.serve)` returns the bound port."""

    def __init__(
        self, options: MockOptions, *, clock: Clock | None = None, out: Output | None = None
    ) -> None:
        self.options = options
        self.clock: Clock = clock or SystemClock()
        self._out = out
        self.port: int | None = None
        self.received_frames: collections.deque[ReceivedFrame] = collections.deque(
            maxlen=FRAMES_KEPT
        )
        self.frames_total = 0
        self.connections = 0  # accepted so far
        self.open_connections = 0
        self.bad_frames = 0
        self.heartbeats_sent = 0
        self.door_status = "closed"
        self.door_history: list[tuple[int, str]] = []  # (mono_ns, status) per change
        self.board: BoardEmulator | None = None
        if options.rs485_pty is not None:
            self.board = BoardEmulator(
                link_path=options.rs485_pty,
                fault=options.fault,
                alarm=options.alarm,
                clock=self.clock,
            )
        self._listeners: list[trio.SocketListener] | None = None
        self._rand = 0
        self._schedule: list[tuple[float, int, str]] = []  # (trio time, seq, status) heap
        self._seq = 0
        self._door_wakeup = trio.Event()
        self._frames_changed = trio.Event()
        self._feed_send, self._feed_receive = trio.open_memory_channel[str](DOOR_FEED_CAPACITY)
        self.door_feed_dropped = 0

    async def bind(self) -> int:
        """Open the listener (before any nursery, so the CLI sees a plain MockBindError)."""
        if self._listeners is None:
            opts = self.options
            try:
                self._listeners = await trio.open_tcp_listeners(opts.port, host=opts.bind)
            except OSError as exc:
                raise MockBindError(
                    exc.errno, f"cannot bind {opts.bind}:{opts.port}: {exc.strerror or exc}"
                ) from exc
            self.port = int(self._listeners[0].socket.getsockname()[1])
        assert self.port is not None
        return self.port

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; `started(port)` once listening (and the pty exists)."""
        port = await self.bind()
        assert self._listeners is not None
        async with trio.open_nursery() as nursery:
            if self.board is not None:
                pty = await nursery.start(self.board.run)
                self._emit("pty", path=self.options.rs485_pty, slave=pty)
            if self.options.gateway_url is not None:
                nursery.start_soon(self._feed_gateway)
            nursery.start_soon(self._run_door)
            await nursery.start(trio.serve_listeners, self._handle, self._listeners)
            self._emit("listening", bind=self.options.bind, port=port)
            task_status.started(port)

    async def wait_frames(self, count: int) -> None:
        """Return once at least `count` frames have been received in total."""
        await trio.lowlevel.checkpoint()
        while self.frames_total < count:
            await self._frames_changed.wait()

    # -- connections -------------------------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = self.connections
        self.connections += 1
        self.open_connections += 1
        self._emit("connect", conn=conn)
        try:
            async with trio.open_nursery() as nursery:
                if not self.options.silent:
                    nursery.start_soon(self._heartbeats, stream, nursery.cancel_scope)
                if self.options.drop_after_s is not None:
                    nursery.cancel_scope.deadline = trio.current_time() + self.options.drop_after_s
                await self._read(stream, conn)
                nursery.cancel_scope.cancel()
        finally:
            self.open_connections -= 1
            self._emit("disconnect", conn=conn)
            await trio.aclose_forcefully(stream)

    async def _heartbeats(self, stream: trio.SocketStream, scope: trio.CancelScope) -> None:
        opts = self.options
        while True:
            frame = cloudplus.encode_heartbeat(rand=self._rand, length_endian=opts.length_endian)
            self._rand = (self._rand + 1) & 0xFF
            with trio.move_on_after(SEND_TIMEOUT_S) as send_scope:
                try:
                    await stream.send_all(frame)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    scope.cancel()
                    return
            if send_scope.cancelled_caught:
                scope.cancel()
                return
            self.heartbeats_sent += 1
            await trio.sleep(opts.heartbeat_interval_s)

    async def _read(self, stream: trio.SocketStream, conn: int) -> None:
        parser = cloudplus.FrameParser(length_endian="little")  # gateway → device (§4.1)
        while True:
            try:
                data = await stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            now_ns = self.clock.mono_ns()
            bad_before = parser.bad_frames
            for frame in parser.feed(data):
                self.received_frames.append(ReceivedFrame(now_ns, conn, frame))
                self.frames_total += 1
                self._emit_frame(now_ns, conn, frame)
                if frame.command == cloudplus.CMD_OPEN:
                    self._schedule_open()
            if parser.bad_frames != bad_before:
                self.bad_frames += parser.bad_frames - bad_before
                self._emit("bad_frame", conn=conn, total=self.bad_frames)
            self._frames_changed.set()
            self._frames_changed = trio.Event()

    # -- door sequence -----------------------------------------------------------------------

    def _schedule_open(self) -> None:
        """moving +move, open +open_delay, closed +open_duration, each from the previous step."""
        opts = self.options
        at = trio.current_time()
        for delay_ms, status in (
            (opts.move_delay_ms, "moving"),
            (opts.open_delay_ms, "open"),
            (opts.open_duration_ms, "closed"),
        ):
            at += delay_ms / 1000
            self._seq += 1
            heapq.heappush(self._schedule, (at, self._seq, status))
        self._door_wakeup.set()

    async def _run_door(self) -> None:
        while True:
            deadline = self._schedule[0][0] if self._schedule else math.inf
            with trio.move_on_at(deadline):
                await self._door_wakeup.wait()
            if self._door_wakeup.is_set():
                self._door_wakeup = trio.Event()
            now = trio.current_time()
            while self._schedule and self._schedule[0][0] <= now:
                self._set_door(heapq.heappop(self._schedule)[2])

    def _set_door(self, status: str) -> None:
        if status == self.door_status:
            return
        self.door_status = status
        self.door_history.append((self.clock.mono_ns(), status))
        self._emit("door", status=status)
        if self.board is not None:
            self.board.set_status(status)
        if self.options.gateway_url is not None:
            try:
                self._feed_send.send_nowait(status)
            except trio.WouldBlock:
                self.door_feed_dropped += 1

    async def _feed_gateway(self) -> None:
        """POST /door/simulate?status= for each door change (instead of / besides the pty)."""
        opts = self.options
        assert opts.gateway_url is not None
        url = opts.gateway_url.rstrip("/") + "/door/simulate"
        headers = {"Authorization": f"Bearer {opts.token}"} if opts.token else {}
        async with httpx.AsyncClient(timeout=DOOR_POST_TIMEOUT_S) as client:
            async for status in self._feed_receive:
                with trio.move_on_after(DOOR_POST_TIMEOUT_S) as scope:
                    try:
                        response = await client.post(
                            url, params={"status": status}, headers=headers
                        )
                    except httpx.HTTPError as exc:
                        self._emit("door_post_failed", status=status, error=str(exc))
                        continue
                    if response.status_code != 200:
                        self._emit("door_post_failed", status=status, http=response.status_code)
                if scope.cancelled_caught:
                    self._emit("door_post_failed", status=status, error="timeout")

    # -- output ------------------------------------------------------------------------------

    def _emit_frame(self, now_ns: int, conn: int, frame: cloudplus.Frame) -> None:
        if self._out is None:
            return
        name = cloudplus.COMMAND_NAMES.get(frame.command, "unknown")
        if self.options.json:
            record = {
                "mono_ns": now_ns,
                "event": "frame",
                "conn": conn,
                "command": f"{frame.command:02x}",
                "name": name,
                "door": frame.door,
                "hex": frame.raw.hex(),
            }
            self._out(json.dumps(record, separators=(",", ":")))
        else:
            self._out(f"{now_ns / 1e9:.6f} conn={conn} rx {name} {frame.raw.hex(' ')}")

    def _emit(self, event: str, **fields: object) -> None:
        if self._out is None:
            return
        now_ns = self.clock.mono_ns()
        if self.options.json:
            self._out(json.dumps({"mono_ns": now_ns, "event": event, **fields}, default=str))
        else:
            text = " ".join(f"{k}={v}" for k, v in fields.items())
            self._out(f"{now_ns / 1e9:.6f} {event} {text}".rstrip())


# -- CLI -------------------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "mock-cloudplus",
        help="fake CloudPlus gate controller with RS485 board emulator",
        description="Fake CloudPlus controller (simulation.md §4). Exit 0 on Ctrl-C, 1 if it "
        "cannot bind.",
    )
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--heartbeat-interval-s", type=float, default=15.0)
    p.add_argument("--length-endian", choices=("big", "little"), default="big")
    p.add_argument("--move-delay-ms", type=int, default=100)
    p.add_argument("--open-delay-ms", type=int, default=150)
    p.add_argument("--open-duration-ms", type=int, default=3000)
    p.add_argument("--rs485-pty", metavar="PATH", help="pty board emulator, slave symlinked here")
    p.add_argument("--fault", type=int, default=0, help="byte 3 of board responses")
    p.add_argument("--alarm", type=int, default=0, help="byte 5 of board responses")
    p.add_argument("--gateway-url", metavar="URL", help="report door states to POST /door/simulate")
    p.add_argument("--token", metavar="T", help="bearer token for --gateway-url")
    p.add_argument("--silent", action="store_true", help="send no heartbeats")
    p.add_argument("--drop-after-s", type=float, metavar="N", help="close connections after N s")
    p.add_argument("--json", action="store_true", help="one JSON record per line")
    p.set_defaults(func=run_command)


def options_from_args(args: argparse.Namespace) -> MockOptions:
    return MockOptions(
        bind=args.bind,
        port=args.port,
        heartbeat_interval_s=args.heartbeat_interval_s,
        length_endian=args.length_endian,
        move_delay_ms=args.move_delay_ms,
        open_delay_ms=args.open_delay_ms,
        open_duration_ms=args.open_duration_ms,
        rs485_pty=args.rs485_pty,
        fault=args.fault,
        alarm=args.alarm,
        gateway_url=args.gateway_url,
        token=args.token,
        silent=args.silent,
        drop_after_s=args.drop_after_s,
        json=args.json,
    )


async def _until_signal(mock: MockCloudPlus) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        await mock.bind()
        async with trio.open_nursery() as nursery:
            await nursery.start(mock.serve)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def run_command(args: argparse.Namespace) -> int:
    mock = MockCloudPlus(options_from_args(args), out=partial(print, flush=True))
    try:
        trio.run(_until_signal, mock)
    except MockBindError as exc:
        print(f"mock-cloudplus: {exc.strerror}", file=sys.stderr)
        return 1
    return 0
