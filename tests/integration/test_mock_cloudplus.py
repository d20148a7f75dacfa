"""The in-process mock controller over real TCP and a real pty (simulation.md §4).

Also measures decision → bytes-received latency through GateWorker + GateLink + mock over
loopback (printed, not asserted).
"""

from __future__ import annotations

import json
import os
import statistics
import tty
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from gateway.app.clock import SystemClock
from gateway.codecs import cloudplus as cp
from gateway.codecs import rs485
from gateway.config.model import GateConfig
from gateway.core.effects import Publish
from gateway.core.model import GateCmd
from gateway.io.gate_link import GateLink
from gateway.io.gate_worker import GateJob, GateStats, GateWorker
from gateway.tools.mock_cloudplus import MockCloudPlus, MockOptions

pytestmark = pytest.mark.integration

OPEN = bytes.fromhex("02 00 2C FF 01 00 00 D0 03")


@pytest.fixture
def idle_jump_clock() -> trio.testing.MockClock:
    """Virtual time that jumps only after 50 ms of real idleness, so real I/O completes."""
    return trio.testing.MockClock(autojump_threshold=0.05)


class TrioClock:
    """Mock timestamps on the trio clock, so virtual-time tests can compare them."""

    def mono_ns(self) -> int:
        return int(trio.current_time() * 1e9)

    def mono_ms(self) -> int:
        return self.mono_ns() // 1_000_000

    def wall_ms(self) -> int:
        return self.mono_ms()


@asynccontextmanager
async def running() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def read_frames(stream: trio.SocketStream, parser: cp.FrameParser, n: int) -> list[cp.Frame]:
    frames: list[cp.Frame] = []
    while len(frames) < n:
        data = await stream.receive_some(4096)
        assert data, "EOF"
        frames += parser.feed(data)
    return frames


@attrs.define
class PtyHost:
    """The gateway side of the board's serial line, opened through the symlink."""

    fd: int

    @classmethod
    def open(cls, path: Path) -> PtyHost:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        return cls(fd)

    async def query(self, machine: int = 1) -> rs485.BoardResponse:
        os.write(self.fd, rs485.encode_query(machine))
        parser = rs485.ResponseParser()
        while True:
            await trio.lowlevel.wait_readable(self.fd)
            parser.feed(os.read(self.fd, 64))
            response = parser.next_response()
            if response is not None:
                return response

    def close(self) -> None:
        os.close(self.fd)


async def test_heartbeats_first_at_once_then_every_interval_rand_increments(
    idle_jump_clock: trio.testing.MockClock,
) -> None:
    mock = MockCloudPlus(MockOptions(port=0), clock=TrioClock())
    async with running() as nursery:
        port = await nursery.start(mock.serve)
        start = trio.current_time()
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        parser = cp.FrameParser(length_endian="big")
        frames = []
        arrivals = []
        for _ in range(3):
            frames += await read_frames(stream, parser, 1)
            arrivals.append(trio.current_time() - start)
        assert arrivals == pytest.approx([0.0, 15.0, 30.0], abs=0.01)
        heartbeats = [cp.decode_heartbeat(f) for f in frames]
        assert [hb.rand if hb else None for hb in heartbeats] == [0, 1, 2]
        assert heartbeats[0] == cp.Heartbeat(
            rand=0, door_state=0, relay=0, version=0, oem=1, serial=b"SIMDEV"
        )
        assert len(frames[0].data) == 50
        await stream.aclose()


async def test_frames_checked_logged_and_not_acked() -> None:
    lines: list[str] = []
    mock = MockCloudPlus(MockOptions(port=0, silent=True), out=lines.append)
    async with running() as nursery:
        port = await nursery.start(mock.serve)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        bad = OPEN[:-2] + b"\x00\x03"
        await stream.send_all(bad + OPEN)
        await mock.wait_frames(1)
        assert mock.bad_frames == 1
        assert [r.frame.raw for r in mock.received_frames] == [OPEN]
        assert any(line.endswith("rx open 02 00 2c ff 01 00 00 d0 03") for line in lines)
        assert any(" bad_frame " in line for line in lines)
        with trio.move_on_after(0.2) as quiet:
            await stream.receive_some(100)
        assert quiet.cancelled_caught  # nothing is ever acked
        await stream.aclose()


async def test_json_output_one_record_per_frame() -> None:
    lines: list[str] = []
    mock = MockCloudPlus(MockOptions(port=0, silent=True, json=True), out=lines.append)
    async with running() as nursery:
        port = await nursery.start(mock.serve)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(OPEN)
        await mock.wait_frames(1)
        records = [json.loads(line) for line in lines]
        [frame] = [r for r in records if r["event"] == "frame"]
        assert frame["hex"] == OPEN.hex()
        assert (frame["command"], frame["name"], frame["door"]) == ("2c", "open", 1)
        assert isinstance(frame["mono_ns"], int)
        await stream.aclose()


async def test_open_frame_runs_door_sequence_seen_through_the_pty_board(
    tmp_path: Path, idle_jump_clock: trio.testing.MockClock
) -> None:
    link_path = tmp_path / "rs485"
    mock = MockCloudPlus(
        MockOptions(port=0, silent=True, rs485_pty=str(link_path), fault=8, alarm=6),
        clock=TrioClock(),
    )
    async with running() as nursery:
        port = await nursery.start(mock.serve)
        assert link_path.is_symlink()
        host = PtyHost.open(link_path)
        try:
            first = await host.query()
            assert (first.door_status, first.fault, first.alarm) == ("closed", 8, 6)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(OPEN)
            await mock.wait_frames(1)
            t0 = trio.current_time()
            seen = []
            for at in (0.05, 0.15, 0.3, 3.0, 3.3):
                await trio.sleep_until(t0 + at)
                seen.append((await host.query()).door_status)
            assert seen == ["closed", "moving", "open", "open", "closed"]
            times = [(ns / 1e9 - t0, status) for ns, status in mock.door_history]
            assert [s for _, s in times] == ["moving", "open", "closed"]
            assert [t for t, _ in times] == pytest.approx([0.1, 0.25, 3.25], abs=0.01)
            assert mock.board is not None
            assert mock.board.left_count == 1
            # a query for another machine is not answered
            os.write(host.fd, rs485.encode_query(2))
            with trio.move_on_after(0.2) as quiet:
                await trio.lowlevel.wait_readable(host.fd)
            assert quiet.cancelled_caught
            await stream.aclose()
        finally:
            host.close()
    assert not link_path.exists()  # the symlink is removed on exit


@attrs.define
class DoorSink:
    """A stand-in gateway HTTP server recording POST /door/simulate requests."""

    lines: list[tuple[str, str]] = attrs.field(factory=list)  # (request line, authorization)
    changed: trio.Event = attrs.field(factory=trio.Event)

    async def handle(self, stream: trio.SocketStream) -> None:
        buf = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(4096)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                line, *fields = head.decode().split("\r\n")
                auth = next(
                    (f.split(":", 1)[1].strip() for f in fields if f.lower().startswith("auth")),
                    "",
                )
                self.lines.append((line, auth))
                self.changed.set()
                self.changed = trio.Event()
                body = b'{"ok":true}'
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                )


async def test_gateway_url_receives_door_states_with_bearer_token() -> None:
    sink = DoorSink()
    async with running() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, sink.handle, 0, host="127.0.0.1"))
        http_port = listeners[0].socket.getsockname()[1]
        options = MockOptions(
            port=0,
            silent=True,
            gateway_url=f"http://127.0.0.1:{http_port}/",
            token="secret-token-123",
            move_delay_ms=10,
            open_delay_ms=10,
            open_duration_ms=10,
        )
        mock = MockCloudPlus(options)
        port = await nursery.start(mock.serve)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(OPEN)
        with trio.fail_after(10):
            while len(sink.lines) < 3:
                await sink.changed.wait()
        assert sink.lines == [
            (f"POST /door/simulate?status={s} HTTP/1.1", "Bearer secret-token-123")
            for s in ("moving", "open", "closed")
        ]
        await stream.aclose()


async def test_drop_after_closes_the_gateway_link_which_reconnects(
    idle_jump_clock: trio.testing.MockClock,
) -> None:
    mock = MockCloudPlus(MockOptions(port=0, drop_after_s=3), clock=TrioClock())
    stats = GateStats()
    async with running() as nursery:
        port = await nursery.start(mock.serve)
        config = GateConfig(mode="tcp", tcp_addr=f"127.0.0.1:{port}", reconnect_delay_ms=2000)
        link = GateLink(config, stats, SystemClock())
        await nursery.start(link.run)
        await link.wait_connected()
        t0 = trio.current_time()
        await link.wait_disconnected()
        assert trio.current_time() - t0 == pytest.approx(3.0, abs=0.05)
        await link.wait_connected()
        assert trio.current_time() - t0 == pytest.approx(5.0, abs=0.05)
        assert stats.connects["ok"] == 2
        assert mock.connections == 2


async def test_bind_failure_names_the_port() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        mock = MockCloudPlus(MockOptions(port=port))
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            await mock.bind()
    finally:
        await listeners[0].aclose()


def percentile(sorted_values: list[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def test_latency_decision_to_bytes_received_over_loopback() -> None:
    """≥ 200 commands through worker + link + mock; prints p50/p99 (no threshold asserted)."""
    n = 250
    clock = SystemClock()
    stats = GateStats()
    published: list[Publish] = []
    mock = MockCloudPlus(MockOptions(port=0, silent=True))
    send, receive = trio.open_memory_channel[GateJob](64)
    decided_ns: list[int] = []
    async with running() as nursery:
        port = await nursery.start(mock.serve)
        config = GateConfig(mode="tcp", tcp_addr=f"127.0.0.1:{port}")
        link = GateLink(config, stats, clock)
        await nursery.start(link.run)
        await link.wait_connected()
        worker = GateWorker(config, "bench", clock, link, published.append, stats)
        nursery.start_soon(worker.run, receive)
        for i in range(n):
            now = clock.mono_ns()
            decided_ns.append(now)
            cmd = GateCmd(track_id=i + 1, src="tracker", trigger_recv_ns=now, enqueued_ns=now)
            send.send_nowait(GateJob(cmd))
            await trio.sleep(0.002)
        with trio.fail_after(10):
            await mock.wait_frames(n)
    frames = list(mock.received_frames)
    assert len(frames) == n
    assert all(f.frame.raw == OPEN for f in frames)
    assert [p.payload["state"] for p in published] == ["cmd_sent"] * n
    latencies_us = sorted((f.mono_ns - d) // 1000 for f, d in zip(frames, decided_ns, strict=True))
    wire_us = sorted(p.payload["recv_to_wire_us"] for p in published)
    print(
        f"\ndecision→bytes received n={n}: p50 {percentile(latencies_us, 0.5)} µs, "
        f"p99 {percentile(latencies_us, 0.99)} µs, max {latencies_us[-1]} µs; "
        f"decision→write done p50 {percentile(wire_us, 0.5)} µs, "
        f"p99 {percentile(wire_us, 0.99)} µs; mean {statistics.fmean(latencies_us):.0f} µs"
    )
