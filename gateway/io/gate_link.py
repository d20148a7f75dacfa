"""CloudPlus TCP link: connect, ack heartbeats, detect a silent controller, serialise writes.

interfaces.md §4.2 and behaviour.md §12 (D12). `run()` loops forever: connect under
`connect_timeout_ms`, read and ack until the link closes (liveness, EOF, read error, write
failure), wait `reconnect_delay_ms`, connect again. `write()` is the only way bytes reach the
controller; it never waits for a reconnect.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs
import trio

from gateway.app.logs import RateLimiter, log_event
from gateway.codecs import cloudplus

if TYPE_CHECKING:
    from gateway.config.model import GateConfig
    from gateway.core.model import Clock
    from gateway.io.gate_worker import GateStats

logger = logging.getLogger(__name__)

RECEIVE_BYTES = 4096  # one read; a heartbeat is 59 bytes
CLOSE_GRACE_S = 1.0  # bound on the shielded aclose() when a connection ends

Connector = Callable[[str, int], Awaitable[trio.abc.Stream]]


class GateLinkError(Exception):
    """Root of the link's write errors."""


class GateNotConnected(GateLinkError):
    """No controller connection right now; the command is not kept for later (D12)."""


class GateWriteTimeout(GateLinkError):
    """The write did not finish within `write_timeout_ms`; the link was closed."""


class GateWriteError(GateLinkError):
    """The socket failed during the write; the link was closed."""


async def open_controller_stream(host: str, port: int) -> trio.SocketStream:
    """TCP connection with TCP_NODELAY and SO_KEEPALIVE on (interfaces.md §4.2)."""
    stream = await trio.open_tcp_stream(host, port)
    try:
        stream.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
        stream.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_KEEPALIVE, 1)
    except OSError:
        await trio.aclose_forcefully(stream)
        raise
    return stream


def _describe(exc: BaseException) -> str:
    """Short reason for /health: the root OS error text (e.g. "Connection refused")."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__
    return str(exc) or type(exc).__name__


@attrs.define(eq=False)
class GateLink:
    """CloudPlus link; `connected`, `since_wall_ms`, `last_rx_mono_ns`, `detail` feed /health."""

    _config: GateConfig
    _stats: GateStats
    _clock: Clock
    _connect: Connector = open_controller_stream
    connected: bool = attrs.field(init=False, default=False)
    since_wall_ms: int | None = attrs.field(init=False, default=None)
    last_rx_mono_ns: int | None = attrs.field(init=False, default=None)
    detail: str = attrs.field(init=False, default="not connected yet")
    _stream: trio.abc.Stream | None = attrs.field(init=False, default=None)
    _conn_scope: trio.CancelScope | None = attrs.field(init=False, default=None)
    _close_reason: str = attrs.field(init=False, default="")
    _lock: trio.Lock = attrs.field(init=False, factory=trio.Lock)
    _changed: trio.Event = attrs.field(init=False, factory=trio.Event)
    _warn: RateLimiter = attrs.field(init=False, factory=RateLimiter)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, reconnect — forever. Reports started before the first attempt."""
        host, port = self._config.tcp_host_port
        delay_s = self._config.reconnect_delay_ms / 1000
        self.since_wall_ms = self._clock.wall_ms()
        task_status.started()
        while True:
            stream = await self._open(host, port)
            if stream is not None:
                await self._serve(stream)
            await trio.sleep(delay_s)

    async def write(self, data: bytes) -> None:
        """Write `data` under `write_timeout_ms`, one writer at a time.

        Raises GateNotConnected, GateWriteTimeout or GateWriteError; after the last two the
        link has been closed and will reconnect.
        """
        if self._stream is None:
            raise GateNotConnected(self.detail)
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            self._stats.cloudplus_queue_depth += 1
            try:
                await self._lock.acquire()
            finally:
                self._stats.cloudplus_queue_depth -= 1
        try:
            stream = self._stream
            if stream is None:
                raise GateNotConnected(self.detail)
            try:
                with trio.fail_after(self._config.write_timeout_ms / 1000):
                    await stream.send_all(data)
            except trio.TooSlowError:
                self._drop(stream, "write timeout")
                raise GateWriteTimeout(f"write of {len(data)} bytes timed out") from None
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                reason = f"write error: {_describe(exc)}"
                self._drop(stream, reason)
                raise GateWriteError(reason) from exc
        finally:
            self._lock.release()

    async def wait_connected(self) -> None:
        """Return once the link is up (at once if it already is)."""
        await self._wait_state(True)

    async def wait_disconnected(self) -> None:
        """Return once the link is down (at once if it already is)."""
        await self._wait_state(False)

    async def _wait_state(self, connected: bool) -> None:
        await trio.lowlevel.checkpoint()
        while self.connected is not connected:
            await self._changed.wait()

    def _set_state(self, connected: bool, detail: str) -> None:
        self.connected = connected
        self._stats.link_connected = int(connected)
        self.since_wall_ms = self._clock.wall_ms()
        self.detail = detail
        self._changed.set()
        self._changed = trio.Event()

    async def _open(self, host: str, port: int) -> trio.abc.Stream | None:
        with trio.move_on_after(self._config.connect_timeout_ms / 1000):
            try:
                stream = await self._connect(host, port)
            except OSError as exc:
                self._connect_failed(host, port, _describe(exc))
                return None
            self._stats.connects["ok"] = self._stats.connects.get("ok", 0) + 1
            return stream
        self._connect_failed(host, port, "connect timeout")
        return None

    def _connect_failed(self, host: str, port: int, detail: str) -> None:
        self._stats.connects["failed"] = self._stats.connects.get("failed", 0) + 1
        self.detail = detail
        self._warn.log(
            logger, logging.WARNING, "connect", "gate_connect_failed", addr=f"{host}:{port}",
            detail=detail,
        )  # fmt: skip

    def _drop(self, stream: trio.abc.Stream, reason: str) -> None:
        """Close the current connection from any task (write failure): mark down, end serve."""
        if self._stream is not stream:
            return
        self._stream = None
        self._close_reason = reason
        self._set_state(False, reason)
        if self._conn_scope is not None:
            self._conn_scope.cancel()

    async def _serve(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._close_reason = ""
        self.last_rx_mono_ns = None
        self._set_state(True, "")
        log_event(logger, logging.INFO, "gate_link_up", addr=self._config.tcp_addr)
        reason = "cancelled"
        try:
            with trio.CancelScope() as scope:
                self._conn_scope = scope
                reason = await self._read_loop(stream)
            if scope.cancelled_caught:
                reason = self._close_reason or "closed"
        finally:
            self._conn_scope = None
            if self._stream is stream:
                self._stream = None
                self._set_state(False, reason)
            log_event(logger, logging.INFO, "gate_link_down", reason=reason)
            with trio.move_on_after(CLOSE_GRACE_S) as cleanup:
                cleanup.shield = True
                await stream.aclose()

    async def _read_loop(self, stream: trio.abc.Stream) -> str:
        """Read until the connection must close; returns the reason."""
        parser = cloudplus.FrameParser(length_endian="big")  # device → gateway (§4.1)
        liveness_s = self._config.heartbeat_timeout_s
        while True:
            data: bytes | bytearray | None = None
            with trio.move_on_after(liveness_s):
                try:
                    data = await stream.receive_some(RECEIVE_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    return f"read error: {_describe(exc)}"
            if data is None:
                return f"no byte received for {liveness_s} s"
            if not data:
                return "eof"
            self.last_rx_mono_ns = self._clock.mono_ns()
            bad_before = parser.bad_frames
            frames = parser.feed(bytes(data))
            if parser.bad_frames != bad_before:
                self._stats.rx_bad_frames += parser.bad_frames - bad_before
                self._warn.log(
                    logger, logging.WARNING, "bad_frame", "gate_rx_bad_frame",
                    total=self._stats.rx_bad_frames,
                )  # fmt: skip
            for frame in frames:
                if not await self._on_frame(frame):
                    return self._close_reason or "ack write failed"

    async def _on_frame(self, frame: cloudplus.Frame) -> bool:
        """Handle one device frame; False when the link closed while answering it."""
        if frame.command == cloudplus.CMD_HEARTBEAT:
            hb = cloudplus.decode_heartbeat(frame)
            if hb is None:  # < 50 data bytes: ignored without ack [ref]
                log_event(logger, logging.DEBUG, "gate_short_heartbeat", length=len(frame.data))
                return True
            self._stats.heartbeats += 1
            try:
                await self.write(cloudplus.build_heartbeat_ack(hb))
            except GateLinkError:
                return False
            self._stats.heartbeat_acks += 1
        elif frame.command == cloudplus.CMD_CARD_REQUEST:
            log_event(
                logger, logging.INFO, "gate_card_request", door=frame.door,
                address=frame.address, data=frame.data.hex(),
            )  # fmt: skip
        else:
            log_event(logger, logging.DEBUG, "gate_frame", command=f"{frame.command:02x}")
        return True
