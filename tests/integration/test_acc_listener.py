"""ACC listener over real TCP on 127.0.0.1 (interfaces.md §2, S116–S121)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable

import attrs
import pytest
import trio
import trio.testing

from gateway.config.model import AccConfig
from gateway.core.model import AccInput
from gateway.io.acc_listener import (
    AccStats,
    is_allowed,
    normalise_peer_ip,
    parse_allow_list,
    serve_acc,
)

pytestmark = pytest.mark.integration

WAIT_S = 5.0
MONO_NS = 123_456_789  # injected clock: every item carries it


@attrs.define(eq=False)
class Acc:
    port: int
    stats: AccStats
    send: trio.MemorySendChannel[object]
    recv: trio.MemoryReceiveChannel[object]

    async def connect(self) -> trio.SocketStream:
        with trio.fail_after(WAIT_S):
            return await trio.open_tcp_stream("127.0.0.1", self.port)

    async def items(self, n: int) -> list[AccInput]:
        out: list[AccInput] = []
        with trio.fail_after(WAIT_S):
            while len(out) < n:
                item = await self.recv.receive()
                assert isinstance(item, AccInput)
                out.append(item)
        return out

    async def wait_for(self, pred: Callable[[], bool]) -> None:
        """Wait until the listener's tasks made `pred` true (no sleeps: all tasks blocked)."""
        with trio.fail_after(WAIT_S):
            while not pred():
                await trio.testing.wait_all_tasks_blocked()
                if not pred():
                    await trio.sleep(0.005)  # kernel-side socket work, not a timing assumption


async def start(
    nursery: trio.Nursery, config: AccConfig | None = None, *, capacity: int = 100
) -> Acc:
    send, recv = trio.open_memory_channel[object](capacity)
    stats = AccStats()
    cfg = config or AccConfig(bind="127.0.0.1")
    port = await nursery.start(
        lambda task_status: serve_acc(
            cfg, send, stats, mono_ns=lambda: MONO_NS, port_override=0, task_status=task_status
        )
    )
    assert isinstance(port, int)
    assert port > 0
    assert stats.listening
    return Acc(port, stats, send, recv)


async def read_until_eof(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(WAIT_S):
        while chunk := await stream.receive_some(4096):
            data += chunk
    return data


async def run_test(
    body: Callable[[Acc], Awaitable[None]], *, config: AccConfig | None = None, capacity: int = 100
) -> None:
    async with trio.open_nursery() as nursery:
        acc = await start(nursery, config, capacity=capacity)
        await body(acc)
        nursery.cancel_scope.cancel()


async def test_s116_two_lines_two_items_nothing_written_back() -> None:
    async def body(acc: Acc) -> None:
        stream = await acc.connect()
        await stream.send_all(b"ACC R123\r\nACC R124\n")
        items = await acc.items(2)
        assert items == [
            AccInput(recv_ns=MONO_NS, ip="127.0.0.1", receipt="R123"),
            AccInput(recv_ns=MONO_NS, ip="127.0.0.1", receipt="R124"),
        ]
        assert acc.stats.events_received == 2
        assert acc.stats.connections == 1
        await stream.send_eof()
        assert await read_until_eof(stream) == b""  # nothing is ever written back
        await acc.wait_for(lambda: acc.stats.connections == 0)
        await stream.aclose()

    await run_test(body)


async def test_s117_malformed_lines_give_no_items() -> None:
    async def body(acc: Acc) -> None:
        stream = await acc.connect()
        await stream.send_all(b"ACC \nHELLO\nacc R1\n\nACC END\n")
        (item,) = await acc.items(1)
        assert item.receipt == "END"  # everything before it produced nothing
        assert acc.stats.malformed_lines == 3
        assert acc.stats.events_received == 1
        assert acc.stats.connections == 1  # malformed lines keep the connection
        await stream.aclose()

    await run_test(body)


async def test_s118_oversized_line_closes_the_connection() -> None:
    async def body(acc: Acc) -> None:
        ok = await acc.connect()
        await ok.send_all(b"ACC " + b"x" * 252 + b"\r\n")  # 256 bytes: accepted
        (item,) = await acc.items(1)
        assert item.receipt == "x" * 252
        bad = await acc.connect()
        await bad.send_all(b"ACC " + b"y" * 253 + b"\nACC AFTER\n")  # 257 bytes
        assert await read_until_eof(bad) == b""  # closed by the gateway
        assert acc.stats.oversized_lines == 1
        assert acc.stats.events_received == 1
        await acc.wait_for(lambda: acc.stats.connections == 1)
        await ok.send_all(b"ACC STILL\n")  # the other connection is untouched
        (item,) = await acc.items(1)
        assert item.receipt == "STILL"
        await ok.aclose()
        await bad.aclose()

    await run_test(body)


async def test_oversized_line_is_closed_before_its_lf() -> None:
    async def body(acc: Acc) -> None:
        stream = await acc.connect()
        await stream.send_all(b"A" * 1000)  # no LF ever comes
        assert await read_until_eof(stream) == b""
        assert acc.stats.oversized_lines == 1
        await stream.aclose()

    await run_test(body)


async def test_bad_utf8_is_malformed_and_closes() -> None:
    async def body(acc: Acc) -> None:
        stream = await acc.connect()
        await stream.send_all(b"ACC R1\nACC \xff\nACC R2\n")
        assert await read_until_eof(stream) == b""
        assert [i.receipt for i in await acc.items(1)] == ["R1"]
        assert acc.stats.malformed_lines == 1
        assert acc.stats.events_received == 1
        await stream.aclose()

    await run_test(body)


async def test_s119_connection_cap() -> None:
    async def body(acc: Acc) -> None:
        streams = [await acc.connect() for _ in range(32)]
        await acc.wait_for(lambda: acc.stats.connections == 32)
        extra = await acc.connect()
        assert await read_until_eof(extra) == b""  # the 33rd is closed at once
        assert acc.stats.rejected == {"not_allowed": 0, "too_many": 1}
        assert acc.stats.connections == 32
        await streams[0].aclose()
        await acc.wait_for(lambda: acc.stats.connections == 31)
        again = await acc.connect()
        await again.send_all(b"ACC R33\n")
        (item,) = await acc.items(1)
        assert item.receipt == "R33"
        assert acc.stats.connections == 32
        assert acc.stats.rejected["too_many"] == 1
        for s in [*streams[1:], extra, again]:
            await s.aclose()

    await run_test(body)


async def test_s120_allow_list_rejects_at_accept() -> None:
    async def body(acc: Acc) -> None:
        stream = await acc.connect()
        await stream.send_all(b"ACC R1\n")
        assert await read_until_eof(stream) == b""
        assert acc.stats.rejected == {"not_allowed": 1, "too_many": 0}
        assert acc.stats.events_received == 0
        assert acc.stats.connections == 0
        with pytest.raises(trio.WouldBlock):
            acc.recv.receive_nowait()
        await stream.aclose()

    await run_test(body, config=AccConfig(bind="127.0.0.1", allowed_ips=("10.0.0.0/24",)))


async def test_allow_list_admits_a_matching_cidr() -> None:
    async def body(acc: Acc) -> None:
        stream = await acc.connect()
        await stream.send_all(b"ACC R1\n")
        assert [i.receipt for i in await acc.items(1)] == ["R1"]
        await stream.aclose()

    cfg = AccConfig(bind="127.0.0.1", allowed_ips=("10.0.0.0/24", "127.0.0.0/8"))
    await run_test(body, config=cfg)


async def test_s121_final_line_without_lf_at_eof() -> None:
    async def body(acc: Acc) -> None:
        stream = await acc.connect()
        await stream.send_all(b"ACC R9")
        await stream.send_eof()
        (item,) = await acc.items(1)
        assert item == AccInput(recv_ns=MONO_NS, ip="127.0.0.1", receipt="R9")
        await stream.aclose()

    await run_test(body)


async def test_s121_full_channel_drops_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    async def body(acc: Acc) -> None:
        acc.send.send_nowait("occupant")  # capacity 1, already full
        stream = await acc.connect()
        await stream.send_all(b"ACC R9")
        await stream.send_eof()
        await acc.wait_for(lambda: acc.stats.events_dropped == 1)
        assert acc.stats.events_received == 1
        assert acc.recv.receive_nowait() == "occupant"
        with pytest.raises(trio.WouldBlock):
            acc.recv.receive_nowait()
        second = await acc.connect()  # a second drop within the second: counted, not logged
        acc.send.send_nowait("occupant")
        await second.send_all(b"ACC R10\n")
        await acc.wait_for(lambda: acc.stats.events_dropped == 2)
        for s in (stream, second):
            await s.aclose()

    with caplog.at_level(logging.WARNING, logger="gateway.io.acc_listener"):
        await run_test(body, capacity=1)
    warns = [r for r in caplog.records if r.getMessage() == "acc_event_dropped"]
    assert len(warns) == 1
    assert warns[0].levelno == logging.WARNING


def keepalive_timers(local_port: int) -> list[int]:
    """`timer_active` of established sockets bound to `local_port` (2 = keepalive timer)."""
    out = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            port = int(fields[1].split(":")[1], 16)
            if port == local_port and fields[3] == "01":  # ESTABLISHED
                out.append(int(fields[5].split(":")[0], 16))
    return out


async def test_keepalive_is_set_on_accepted_sockets() -> None:
    async def body(acc: Acc) -> None:
        stream = await acc.connect()
        await stream.send_all(b"ACC R1\n")
        await acc.items(1)
        assert keepalive_timers(acc.port) == [2]  # the server side runs a keepalive timer
        assert stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        await stream.aclose()

    await run_test(body)


async def test_bind_failure_propagates() -> None:
    with trio.socket.socket() as holder:
        await holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        send, _recv = trio.open_memory_channel[object](1)
        stats = AccStats()
        with pytest.raises(OSError, match="in use"):
            await serve_acc(AccConfig(bind="127.0.0.1"), send, stats, port_override=port)
        assert not stats.listening


def test_peer_ip_normalisation_and_allow_list() -> None:
    assert normalise_peer_ip("::ffff:10.0.0.7") == "10.0.0.7"
    assert normalise_peer_ip("::1") == "::1"
    assert normalise_peer_ip("127.0.0.1") == "127.0.0.1"
    allow = parse_allow_list(["10.0.0.0/24", "192.168.1.5", "fd00::/8"])
    assert is_allowed("10.0.0.200", allow)
    assert is_allowed("192.168.1.5", allow)
    assert not is_allowed("192.168.1.6", allow)
    assert is_allowed("fd00::1", allow)
    assert not is_allowed("127.0.0.1", allow)
    assert is_allowed("anything", None)
    assert not is_allowed("not-an-ip", allow)
