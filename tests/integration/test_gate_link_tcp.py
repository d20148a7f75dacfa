"""GateLink + GateWorker over real 127.0.0.1 TCP (S123, S124, S126, S127, S129, write timeout).

Timeouts run on a MockClock that jumps only after 50 ms of real idleness: loopback I/O always
completes long before that, so virtual deadlines stay exact while the wall time stays short.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing

from gateway.app.clock import SystemClock
from gateway.codecs import cloudplus as cp
from gateway.config.model import GateConfig
from gateway.core.effects import Publish
from gateway.core.model import GateCmd
from gateway.io.gate_link import GateLink, GateWriteTimeout, open_controller_stream
from gateway.io.gate_worker import GateJob, GateStats, GateWorker, open_manually
from gateway.tools.mock_cloudplus import MockCloudPlus, MockOptions

pytestmark = pytest.mark.integration

S123_HEARTBEAT = cp.encode_heartbeat(rand=5)
S123_ACK = bytes.fromhex("02 05 56 00 00 02 00 00 01 52 03")


@pytest.fixture
def idle_jump_clock() -> trio.testing.MockClock:
    """Virtual time that jumps only after 50 ms of real idleness, so loopback I/O completes."""
    return trio.testing.MockClock(autojump_threshold=0.05)


def gate_config(port: int, **overrides: int) -> GateConfig:
    values = {
        "heartbeat_timeout_s": 45,
        "reconnect_delay_ms": 2000,
        "connect_timeout_ms": 10_000,
        "write_timeout_ms": 5000,
    }
    values.update(overrides)
    return GateConfig(mode="tcp", tcp_addr=f"127.0.0.1:{port}", **values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@attrs.define
class RawController:
    """A scripted controller: records accept/EOF times (trio clock) of every connection."""

    rcvbuf: int | None = None  # tiny receive buffer for the "stops reading" test
    read: bool = True  # False: accept and never read
    accepted_at: list[float] = attrs.field(factory=list)
    eof_at: list[float] = attrs.field(factory=list)
    streams: list[trio.SocketStream] = attrs.field(factory=list)
    received: bytearray = attrs.field(factory=bytearray)
    changed: trio.Event = attrs.field(factory=trio.Event)
    link_connected_at_eof: list[bool] = attrs.field(factory=list)
    link: GateLink | None = None

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket()
        if self.rcvbuf is not None:  # must be set before listen() to apply to accepted sockets
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        await sock.bind(("127.0.0.1", 0))
        sock.listen()
        listener = trio.SocketListener(sock)
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, [listener])
            task_status.started(sock.getsockname()[1])

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.accepted_at.append(trio.current_time())
        self.streams.append(stream)
        self._notify()
        if not self.read:
            await trio.sleep_forever()
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                self.eof_at.append(trio.current_time())
                if self.link is not None:
                    self.link_connected_at_eof.append(self.link.connected)
                self._notify()
                return
            self.received += data
            self._notify()

    async def wait_until(self, predicate: Callable[[], object]) -> None:
        while not predicate():
            await self.changed.wait()


@asynccontextmanager
async def running() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def test_s126_silent_controller_closed_after_5_s_reconnect_2_s_later(
    idle_jump_clock: trio.testing.MockClock,
) -> None:
    ctl = RawController()
    stats = GateStats()
    async with running() as nursery:
        port = await nursery.start(ctl.serve)
        link = GateLink(gate_config(port, heartbeat_timeout_s=5), stats, SystemClock())
        ctl.link = link
        await nursery.start(link.run)
        await ctl.wait_until(lambda: len(ctl.accepted_at) >= 2)
        assert 4.5 <= ctl.eof_at[0] - ctl.accepted_at[0] <= 5.5
        assert ctl.accepted_at[1] - ctl.eof_at[0] >= 2.0
        assert ctl.link_connected_at_eof == [False]
        await link.wait_connected()
        assert stats.connects == {"ok": 2, "failed": 0}
        assert stats.link_connected == 1


async def test_s123_heartbeat_acked_over_tcp(idle_jump_clock: trio.testing.MockClock) -> None:
    ctl = RawController()
    stats = GateStats()
    async with running() as nursery:
        port = await nursery.start(ctl.serve)
        link = GateLink(gate_config(port), stats, SystemClock())
        await nursery.start(link.run)
        await ctl.wait_until(lambda: ctl.streams)
        await ctl.streams[0].send_all(S123_HEARTBEAT)
        await ctl.wait_until(lambda: len(ctl.received) >= len(S123_ACK))
        assert bytes(ctl.received) == S123_ACK
        assert (stats.heartbeats, stats.heartbeat_acks) == (1, 1)


async def test_s124_little_endian_heartbeats_never_acked_link_stays_up(
    idle_jump_clock: trio.testing.MockClock,
) -> None:
    mock = MockCloudPlus(MockOptions(port=0, length_endian="little", heartbeat_interval_s=2))
    stats = GateStats()
    async with running() as nursery:
        port = await nursery.start(mock.serve)
        link = GateLink(gate_config(port, heartbeat_timeout_s=5), stats, SystemClock())
        await nursery.start(link.run)
        await link.wait_connected()
        await trio.sleep(20)  # virtual: four liveness periods
        assert link.connected
        assert stats.connects == {"ok": 1, "failed": 0}
        assert mock.heartbeats_sent >= 10
        assert (stats.heartbeats, stats.heartbeat_acks) == (0, 0)
        assert mock.frames_total == 0


async def test_garbage_and_huge_lengths_counted_link_stays_up(
    idle_jump_clock: trio.testing.MockClock,
) -> None:
    ctl = RawController()
    stats = GateStats()
    bad_checksum = S123_HEARTBEAT[:-2] + bytes((S123_HEARTBEAT[-2] ^ 0x55, cp.ETX))
    huge = bytes.fromhex("02 01 56 00 00 FF F0")  # 65520 > 4096: resync by one byte
    async with running() as nursery:
        port = await nursery.start(ctl.serve)
        link = GateLink(gate_config(port), stats, SystemClock())
        await nursery.start(link.run)
        await ctl.wait_until(lambda: ctl.streams)
        peer = ctl.streams[0]
        await peer.send_all(b"\xff\x00garbage" + huge + bad_checksum + b"\x03\x03")
        await peer.send_all(bad_checksum + S123_HEARTBEAT)
        await ctl.wait_until(lambda: len(ctl.received) >= len(S123_ACK))
        assert bytes(ctl.received) == S123_ACK
        assert stats.rx_bad_frames == 2
        assert link.connected
        assert stats.connects["ok"] == 1


async def test_s127_controller_down_command_fails_at_once_never_sent_later() -> None:
    port = free_port()
    stats = GateStats()
    clock = SystemClock()
    published: list[Publish] = []
    config = gate_config(port, reconnect_delay_ms=100)
    link = GateLink(config, stats, clock)
    worker = GateWorker(config, "netto", clock, link, published.append, stats)
    async with running() as nursery:
        await nursery.start(link.run)
        now = clock.mono_ns()
        outcome = await worker.handle(
            GateJob(GateCmd(track_id=9, src="tracker", trigger_recv_ns=now, enqueued_ns=now))
        )
        assert (outcome.ok, outcome.reason) == (False, "not_connected")
        assert stats.cmds_failed == {"not_connected": 1}
        assert published[-1].payload["reason"] == "not_connected"
        # the controller comes back
        mock = MockCloudPlus(MockOptions(port=port))
        await nursery.start(mock.serve)
        await link.wait_connected()
        await mock.wait_frames(1)  # the ack of its first heartbeat: the link is fully up
        await trio.sleep(0.3)  # three reconnect delays: nothing else may arrive
        commands = [r.frame.command for r in mock.received_frames]
        assert cp.CMD_OPEN not in commands
        assert set(commands) == {cp.CMD_HEARTBEAT}


async def test_s129_connected_controller_cmd_sent_after_nine_bytes_written() -> None:
    clock = SystemClock()
    stats = GateStats()
    published: list[Publish] = []
    mock = MockCloudPlus(MockOptions(port=0, silent=True))
    async with running() as nursery:
        port = await nursery.start(mock.serve)
        config = gate_config(port)
        link = GateLink(config, stats, clock)
        worker = GateWorker(config, "netto", clock, link, published.append, stats)
        await nursery.start(link.run)
        await link.wait_connected()
        now = clock.mono_ns()
        cmd = GateCmd(track_id=42, src="tracker", trigger_recv_ns=now - 200_000, enqueued_ns=now)
        outcome = await worker.handle(GateJob(cmd))
        assert outcome.ok
        await mock.wait_frames(1)
        assert mock.received_frames[0].frame.raw == bytes.fromhex("02 00 2C FF 01 00 00 D0 03")
        [pub] = published
        assert pub.payload["state"] == "cmd_sent"
        assert pub.payload["recv_to_wire_us"] >= pub.payload["send_latency_us"]
        assert pub.payload["trigger"] == "tracker"
        assert stats.cmds_sent == 1


async def test_controller_stops_reading_write_timeout_then_reconnect() -> None:
    ctl = RawController(rcvbuf=1, read=False)
    stats = GateStats()
    async with running() as nursery:
        port = await nursery.start(ctl.serve)
        link = GateLink(
            gate_config(port, write_timeout_ms=200, reconnect_delay_ms=100), stats, SystemClock()
        )
        await nursery.start(link.run)
        await link.wait_connected()
        with pytest.raises(GateWriteTimeout):
            await link.write(bytes(32 * 1024 * 1024))  # far beyond both socket buffers
        assert not link.connected
        assert link.detail == "write timeout"
        await ctl.wait_until(lambda: len(ctl.accepted_at) >= 2)
        await link.wait_connected()
        assert stats.connects == {"ok": 2, "failed": 0}


async def test_s158_manual_open_not_connected_then_ok_and_open_frame_received() -> None:
    port = free_port()
    clock = SystemClock()
    stats = GateStats()
    published: list[Publish] = []
    config = gate_config(port, reconnect_delay_ms=100)
    link = GateLink(config, stats, clock)
    worker = GateWorker(config, "netto", clock, link, published.append, stats)
    send, receive = trio.open_memory_channel[GateJob](64)
    wait_s = config.write_timeout_ms / 1000 + 1.0  # interfaces.md §8 POST /gate/open
    async with running() as nursery:
        await nursery.start(link.run)
        nursery.start_soon(worker.run, receive)
        down = await open_manually(send, clock, wait_s)
        assert (down.ok, down.reason) == (False, "not_connected")
        mock = MockCloudPlus(MockOptions(port=port, silent=True))
        await nursery.start(mock.serve)
        await link.wait_connected()
        up = await open_manually(send, clock, wait_s)
        assert up.ok
        assert up.reason is None
        assert up.latency_us > 0
        await mock.wait_frames(1)
        assert [r.frame.raw for r in mock.received_frames] == [
            bytes.fromhex("02 00 2C FF 01 00 00 D0 03")
        ]
        assert all("tid" not in p.payload for p in published)
        assert [p.payload["state"] for p in published] == ["cmd_failed", "cmd_sent"]


async def test_controller_stream_has_nodelay_and_keepalive() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    stream = await open_controller_stream("127.0.0.1", port)
    try:
        assert stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert stream.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    finally:
        await stream.aclose()
        await listeners[0].aclose()
