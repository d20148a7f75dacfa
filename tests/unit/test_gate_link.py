"""GateLink over in-memory streams on the autojump clock: exact liveness/reconnect/write deadlines.

The connector hands the link one end of a trio.testing stream pair per connection; the test
plays the controller on the other end. No sockets, no sleeps of wall time.
"""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from gateway.codecs import cloudplus as cp
from gateway.config.model import GateConfig
from gateway.core.clock import FakeClock
from gateway.core.effects import Publish
from gateway.core.model import GateCmd
from gateway.io.gate_link import GateLink, GateNotConnected, GateWriteError, GateWriteTimeout
from gateway.io.gate_worker import GateJob, GateStats, GateWorker

S123_ACK = bytes.fromhex("02 05 56 00 00 02 00 00 01 52 03")

CONFIG = GateConfig(
    mode="tcp",
    tcp_addr="127.0.0.1:8000",
    heartbeat_timeout_s=5,
    reconnect_delay_ms=2000,
    connect_timeout_ms=10_000,
    write_timeout_ms=5000,
)


class BrokenSend(trio.abc.Stream):
    """Controller side that accepts the connection but every send fails (e.g. RST)."""

    def __init__(self) -> None:
        self.closed = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        raise trio.BrokenResourceError("connection reset by peer")

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await self.closed.wait()
        raise trio.ClosedResourceError

    async def aclose(self) -> None:
        self.closed.set()
        await trio.lowlevel.checkpoint()


@attrs.define
class Controller:
    """Hands out connections; records when each was made (trio time)."""

    lockstep: bool = False
    fail: list[BaseException] = attrs.field(factory=list)  # errors for the next attempts
    hang: bool = False  # never complete the connect
    broken: bool = False
    peers: list[trio.abc.Stream] = attrs.field(factory=list)
    connected_at: list[float] = attrs.field(factory=list)
    attempted_at: list[float] = attrs.field(factory=list)
    new_peer: trio.Event = attrs.field(factory=trio.Event)
    new_attempt: trio.Event = attrs.field(factory=trio.Event)

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        self.attempted_at.append(trio.current_time())
        self.new_attempt.set()
        self.new_attempt = trio.Event()
        if self.hang:
            await trio.sleep_forever()
        if self.fail:
            await trio.lowlevel.checkpoint()
            raise self.fail.pop(0)
        await trio.lowlevel.checkpoint()
        if self.broken:
            ours: trio.abc.Stream = BrokenSend()
            theirs: trio.abc.Stream = ours
        elif self.lockstep:
            ours, theirs = trio.testing.lockstep_stream_pair()
        else:
            ours, theirs = trio.testing.memory_stream_pair()
        self.peers.append(theirs)
        self.connected_at.append(trio.current_time())
        self.new_peer.set()
        self.new_peer = trio.Event()
        return ours

    async def wait_peers(self, n: int) -> trio.abc.Stream:
        while len(self.peers) < n:
            await self.new_peer.wait()
        return self.peers[n - 1]

    async def wait_attempts(self, n: int) -> None:
        while len(self.attempted_at) < n:
            await self.new_attempt.wait()


async def read_exactly(stream: trio.abc.Stream, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = await stream.receive_some(n - len(buf))
        assert chunk, "EOF"
        buf += chunk
    return buf


def make_link(
    controller: Controller, config: GateConfig = CONFIG
) -> tuple[GateLink, GateStats, FakeClock]:
    stats = GateStats()
    clock = FakeClock(now_ms=1000)
    return GateLink(config, stats, clock, connect=controller.connect), stats, clock


def s123_heartbeat(length_endian: cp.LengthEndian = "big", data_len: int = 50) -> bytes:
    return cp.encode_heartbeat(rand=5, data_len=data_len, length_endian=length_endian)


async def test_s126_silent_controller_closed_after_liveness_then_reconnect(
    autojump_clock: trio.abc.Clock,
) -> None:
    ctl = Controller()
    link, stats, _ = make_link(ctl)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        peer = await ctl.wait_peers(1)
        assert link.connected
        assert stats.link_connected == 1
        t_connect = ctl.connected_at[0]
        assert await peer.receive_some() == b""  # the link closed it
        assert trio.current_time() - t_connect == pytest.approx(5.0)
        assert not link.connected
        assert stats.link_connected == 0
        assert "no byte received" in link.detail
        await ctl.wait_peers(2)
        assert ctl.connected_at[1] - ctl.connected_at[0] == pytest.approx(7.0)
        assert stats.connects == {"ok": 2, "failed": 0}
        assert stats.link_connected == 1
        nursery.cancel_scope.cancel()


async def test_liveness_counts_from_the_last_byte(autojump_clock: trio.abc.Clock) -> None:
    ctl = Controller()
    link, stats, _ = make_link(ctl)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        peer = await ctl.wait_peers(1)
        for _ in range(5):  # a garbage byte every 4 s keeps the link alive
            await trio.sleep(4)
            await peer.send_all(b"\xff")
        t_last = trio.current_time()
        assert link.connected
        assert await peer.receive_some() == b""
        assert trio.current_time() - t_last == pytest.approx(5.0)
        assert stats.connects["ok"] == 1
        nursery.cancel_scope.cancel()


async def test_s123_heartbeat_acked_with_exact_bytes(autojump_clock: trio.abc.Clock) -> None:
    ctl = Controller()
    link, stats, clock = make_link(ctl)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        peer = await ctl.wait_peers(1)
        clock.set(1234)
        await peer.send_all(s123_heartbeat())
        assert await read_exactly(peer, len(S123_ACK)) == S123_ACK
        assert stats.heartbeats == 1
        assert stats.heartbeat_acks == 1
        assert link.last_rx_mono_ns == 1234 * 1_000_000
        nursery.cancel_scope.cancel()


async def test_s124_short_and_little_endian_heartbeats_not_acked_link_stays_up(
    autojump_clock: trio.abc.Clock,
) -> None:
    ctl = Controller()
    link, stats, _ = make_link(ctl)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        peer = await ctl.wait_peers(1)
        for _ in range(3):  # bytes every 3 s, never a valid ack-able heartbeat
            await peer.send_all(s123_heartbeat(data_len=49))
            await trio.sleep(3)
            await peer.send_all(s123_heartbeat(length_endian="little"))
            await trio.sleep(1)
        assert link.connected
        assert stats.connects["ok"] == 1
        assert stats.heartbeats == 0
        assert stats.heartbeat_acks == 0
        # nothing was written back: the next bytes the controller reads are the S123 ack
        await peer.send_all(s123_heartbeat())
        assert await read_exactly(peer, len(S123_ACK)) == S123_ACK
        nursery.cancel_scope.cancel()


async def test_s125_chunks_garbage_and_bad_frames_counted_link_up(
    autojump_clock: trio.abc.Clock,
) -> None:
    ctl = Controller()
    link, stats, _ = make_link(ctl)
    hb = s123_heartbeat()
    bad_checksum = hb[:-2] + bytes((hb[-2] ^ 1, 3))
    bad_etx = hb[:-1] + b"\x00"
    huge = bytes.fromhex("02 00 56 00 00 FF FF")
    stream = b"\xff\xff" + hb + bad_checksum + huge + bad_etx + hb
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        peer = await ctl.wait_peers(1)
        for a, b in ((0, 7), (7, 37), (37, 61), (61, len(stream))):
            await peer.send_all(stream[a:b])
            await trio.testing.wait_all_tasks_blocked()
        assert await read_exactly(peer, 2 * len(S123_ACK)) == S123_ACK * 2
        assert stats.rx_bad_frames == 2
        assert stats.heartbeats == 2
        assert link.connected
        nursery.cancel_scope.cancel()


async def test_eof_closes_and_reconnects_after_delay(autojump_clock: trio.abc.Clock) -> None:
    ctl = Controller()
    link, stats, _ = make_link(ctl)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        peer = await ctl.wait_peers(1)
        await trio.sleep(1)
        t_close = trio.current_time()
        await peer.aclose()
        await ctl.wait_peers(2)
        assert ctl.connected_at[1] - t_close == pytest.approx(2.0)
        assert stats.connects["ok"] == 2
        nursery.cancel_scope.cancel()


async def test_connect_failure_counted_retried_after_delay(autojump_clock: trio.abc.Clock) -> None:
    ctl = Controller(fail=[ConnectionRefusedError(111, "Connection refused")])
    link, stats, _ = make_link(ctl)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(link.run)
        await ctl.wait_peers(1)
        assert trio.current_time() - start == pytest.approx(2.0)
        assert stats.connects == {"ok": 1, "failed": 1}
        nursery.cancel_scope.cancel()
    ctl2 = Controller(fail=[ConnectionRefusedError(111, "Connection refused")])
    link2, _, _ = make_link(ctl2)
    async with trio.open_nursery() as nursery:
        await nursery.start(link2.run)
        await trio.testing.wait_all_tasks_blocked()
        assert link2.detail == "Connection refused"
        assert not link2.connected
        nursery.cancel_scope.cancel()


async def test_connect_timeout_bounds_a_hanging_connect(autojump_clock: trio.abc.Clock) -> None:
    ctl = Controller(hang=True)
    link, stats, _ = make_link(ctl)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        await ctl.wait_attempts(2)
        # attempt 1 gives up after 10 s, attempt 2 starts 2 s later
        assert ctl.attempted_at[1] - ctl.attempted_at[0] == pytest.approx(12.0)
        assert stats.connects == {"ok": 0, "failed": 1}
        assert link.detail == "connect timeout"
        nursery.cancel_scope.cancel()


async def test_write_when_down_raises_not_connected_at_once(mock_clock: trio.abc.Clock) -> None:
    link, _, _ = make_link(Controller())
    start = trio.current_time()
    with pytest.raises(GateNotConnected):
        await link.write(cp.encode_open())
    assert trio.current_time() == start


async def test_write_timeout_closes_and_reconnects(autojump_clock: trio.abc.Clock) -> None:
    ctl = Controller(lockstep=True)  # send_all blocks until the controller reads: it never does
    link, _, _ = make_link(ctl, attrs.evolve(CONFIG, heartbeat_timeout_s=45))
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        await ctl.wait_peers(1)
        start = trio.current_time()
        with pytest.raises(GateWriteTimeout):
            await link.write(cp.encode_open())
        assert trio.current_time() - start == pytest.approx(5.0)
        assert not link.connected
        assert link.detail == "write timeout"
        await ctl.wait_peers(2)
        assert trio.current_time() - start == pytest.approx(7.0)
        nursery.cancel_scope.cancel()


async def test_queue_depth_counts_writers_waiting_for_the_lock(
    autojump_clock: trio.abc.Clock,
) -> None:
    ctl = Controller(lockstep=True)
    link, stats, _ = make_link(ctl)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        peer = await ctl.wait_peers(1)
        nursery.start_soon(link.write, cp.encode_open(1))
        await trio.testing.wait_all_tasks_blocked()  # writer 1 holds the lock, blocked in send
        nursery.start_soon(link.write, cp.encode_open(2))
        await trio.testing.wait_all_tasks_blocked()
        assert stats.cloudplus_queue_depth == 1
        # one writer at a time: the frames arrive whole and in order
        assert await read_exactly(peer, 18) == cp.encode_open(1) + cp.encode_open(2)
        await trio.testing.wait_all_tasks_blocked()
        assert stats.cloudplus_queue_depth == 0
        nursery.cancel_scope.cancel()


async def test_s129_write_error_is_cmd_failed_and_link_reconnects(
    autojump_clock: trio.abc.Clock,
) -> None:
    ctl = Controller(broken=True)
    link, stats, clock = make_link(ctl)
    published: list[Publish] = []
    worker = GateWorker(CONFIG, "netto", clock, link, published.append, stats)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        await ctl.wait_peers(1)
        with pytest.raises(GateWriteError):
            await link.write(b"x")
        await ctl.wait_peers(2)
        now = clock.mono_ns()
        cmd = GateCmd(track_id=7, src="tracker", trigger_recv_ns=now, enqueued_ns=now)
        outcome = await worker.handle(GateJob(cmd))
        assert outcome.reason == "write_error"
        assert [p.payload["state"] for p in published] == ["cmd_failed"]
        assert published[0].payload["reason"] == "write_error"
        assert stats.cmds_failed == {"write_error": 1}
        await ctl.wait_peers(3)
        assert stats.connects["ok"] == 3
        nursery.cancel_scope.cancel()


async def test_wait_connected_and_disconnected(autojump_clock: trio.abc.Clock) -> None:
    ctl = Controller()
    link, _, clock = make_link(ctl)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        await link.wait_connected()
        assert link.since_wall_ms == clock.wall_ms()
        await link.wait_disconnected()
        assert trio.current_time() == pytest.approx(ctl.connected_at[0] + 5.0)
        nursery.cancel_scope.cancel()
