"""`WS /ws` live feed over real sockets (interfaces.md §8, S148): hello, order, drops, 1013, 1008.

A real hypercorn server runs in-process on a free port with the real app (`build_app`) and the feed
and dashboard routes put in front of its routes, a real `LiveFeedHub` and real `Components`; clients
are trio-websocket, or a raw wsproto handshake over a socket with a tiny receive buffer for a client
that never reads. `serve_feed` is also used by test_dashboard.py and test_watch_cli.py.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio_websocket
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve as hyper_serve
from runtime_harness import wait_until
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from gateway.app.actor import QueueGatePort
from gateway.app.clock import SystemClock
from gateway.app.dashboard import dashboard_routes
from gateway.app.http import HttpContext, build_app
from gateway.app.latest import LatestValue
from gateway.app.livefeed import LiveFeedHub
from gateway.app.state import Components
from gateway.app.ws import FeedCounters, FeedTiming, ws_routes
from gateway.config.model import (
    Config,
    GateConfig,
    HttpConfig,
    MqttConfig,
    MqttEgressConfig,
    QueuesConfig,
    SiteConfig,
    ZonesConfig,
)
from gateway.core.model import DoorReading
from gateway.core.tracker import Tracker
from gateway.io.gate_worker import GateJob

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
STEP_S = 15.0  # bound on every wait: generous for a loaded box, never a performance target
SITE = "ws-test"
ZONE_NAMES = {
    1001: "POS_1",
    1002: "POS_2",
    1006: "EXIT_1",
    1007: "GATE_1",
    1008: "ENTRY_1",
    1009: "APPROACH_1",
    1010: "DWELL_1",
    1011: "STORE",
}
EXPECTED_ZONES = {
    "1001": {"name": "POS_1", "role": "pos"},
    "1002": {"name": "POS_2", "role": "pos"},
    "1006": {"name": "EXIT_1", "role": "exit_line"},
    "1007": {"name": "GATE_1", "role": "gate"},
    "1008": {"name": "ENTRY_1", "role": "entry_line"},
    "1009": {"name": "APPROACH_1", "role": "approach_line"},
    "1010": {"name": "DWELL_1", "role": "dwell"},
    "1011": {"name": "STORE", "role": "store"},
}
BIG_PAYLOAD_CHARS = 16 * 1024  # 1000 of these (16 MB) outgrow loopback socket buffers (4 MB)
TINY_RCVBUF = 4096  # a never-reading client's receive window


def make_config(*, max_clients: int = 16, ws_queue: int = 256, site: str = SITE) -> Config:
    return Config(
        path="test.toml",
        site=SiteConfig(id=site),
        mqtt=MqttConfig(host=HOST),
        gate=GateConfig(mode="tcp", tcp_addr=f"{HOST}:1"),
        zones=ZonesConfig(
            pos_zones=(1001, 1002),
            gate_zone=1007,
            exit_line=1006,
            dwell_zones=(1010,),
            entry_line=1008,
            approach_line=1009,
            store_zone=1011,
            names=ZONE_NAMES,
        ),
        mqtt_egress=MqttEgressConfig(enabled=False, host=HOST, port=1),
        http=HttpConfig(max_ws_clients=max_clients),
        queues=QueuesConfig(ws_client=ws_queue),
    )


@attrs.define
class FeedServer:
    port: int
    comp: Components
    hub: LiveFeedHub
    counters: FeedCounters

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}"


@asynccontextmanager
async def serve_feed(
    config: Config | None = None, timing: FeedTiming | None = None, port: int = 0
) -> AsyncIterator[FeedServer]:
    """The real app with the feed and dashboard routes first, on `port` (0: a free one)."""
    cfg = config if config is not None else make_config()
    clock = SystemClock()
    comp = Components.create(cfg, clock)
    hub = LiveFeedHub(cfg.queues.ws_client, cfg.http.max_ws_clients, comp.livefeed_stats)
    comp.hub = hub
    comp.door = LatestValue(DoorReading("closed", 0, 0, "simulate"))
    gate_send, _gate_recv = trio.open_memory_channel[GateJob](cfg.queues.gate)
    comp.tracker = Tracker(cfg, clock, QueueGatePort(gate_send))  # health and /metrics read it
    ctx = HttpContext(config=cfg, clock=clock, comp=comp)
    counters = FeedCounters()
    hc = HyperConfig()
    hc.bind = [f"{HOST}:{port}"]
    hc.accesslog = None
    hc.graceful_timeout = 0.2
    shutdown = trio.Event()
    async with trio.open_nursery() as writers, trio.open_nursery() as nursery:
        app = build_app(ctx, writers)
        # the feed routes with this test's timing/counters go first, so they win over the defaults
        app.router.routes[0:0] = [*dashboard_routes(), *ws_routes(ctx, writers, timing, counters)]
        binds = await nursery.start(
            lambda task_status: hyper_serve(
                app,  # type: ignore[arg-type]
                hc,
                shutdown_trigger=shutdown.wait,  # type: ignore[arg-type]
                task_status=task_status,
            )
        )
        bound = int(binds[0].rsplit(":", 1)[1])
        try:
            yield FeedServer(bound, comp, hub, counters)
        finally:
            shutdown.set()
            nursery.cancel_scope.deadline = trio.current_time() + STEP_S
            writers.cancel_scope.deadline = trio.current_time() + STEP_S


async def next_message(ws: Any) -> dict[str, Any]:
    with trio.fail_after(STEP_S):
        message: dict[str, Any] = json.loads(await ws.get_message())
    return message


@asynccontextmanager
async def feed_client(
    port: int, *, rcvbuf: int | None = None, queue: int = 1
) -> AsyncIterator[Any]:
    """A trio-websocket client whose socket this helper owns and always closes (trio-websocket
    0.12 leaves the client socket open after a close the server started). `rcvbuf` shrinks the
    receive window; trio-websocket buffers `queue` messages, then stops reading the socket."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: window
    stream = trio.SocketStream(sock)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(STEP_S):
                await sock.connect((HOST, port))
                ws = await trio_websocket.wrap_client_stream(
                    nursery,
                    stream,
                    HOST,
                    "/ws",
                    message_queue_size=queue,
                    max_message_size=4 * BIG_PAYLOAD_CHARS,
                )
            yield ws
            with trio.move_on_after(1.0):
                await ws.aclose()
            nursery.cancel_scope.cancel()
    finally:
        await stream.aclose()


async def raw_handshake(port: int) -> trio.SocketStream:
    """Handshake by hand over a socket with a tiny receive buffer; the caller never reads."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, TINY_RCVBUF)  # before connect: window
    stream = trio.SocketStream(sock)
    try:
        with trio.fail_after(STEP_S):
            await sock.connect((HOST, port))
            conn = WSConnection(ConnectionType.CLIENT)
            await stream.send_all(conn.send(Request(host=f"{HOST}:{port}", target="/ws")))
            accepted = False
            while not accepted:
                conn.receive_data(await stream.receive_some(1024))
                accepted = any(isinstance(ev, AcceptConnection) for ev in conn.events())
    except BaseException:
        await stream.aclose()
        raise
    return stream


@asynccontextmanager
async def raw_never_reading(port: int) -> AsyncIterator[trio.SocketStream]:
    stream = await raw_handshake(port)
    try:
        yield stream
    finally:
        await stream.aclose()


def big_payload(i: int) -> bytes:
    # hex noise, so no compression could shrink it below the socket buffers
    return json.dumps({"i": i, "pad": os.urandom(BIG_PAYLOAD_CHARS // 2).hex()}).encode()


# ---- hello and order ----------------------------------------------------------------------------


async def test_hello_carries_version_site_zones_door_and_health() -> None:
    async with (
        serve_feed() as server,
        feed_client(server.port) as ws,
    ):
        hello = await next_message(ws)
    assert hello["kind"] == "hello"
    assert isinstance(hello["ts"], int)
    assert hello["ts"] > 1_700_000_000_000  # epoch ms
    data = hello["data"]
    assert data["version"] == "1.0.0"
    assert data["site"] == SITE
    assert data["zones"] == EXPECTED_ZONES
    assert data["door"] == {"status": "closed", "fault": 0, "alarm": 0, "source": "simulate"}
    assert data["health"]["site"] == SITE
    assert data["health"]["status"] in ("ok", "degraded", "down")
    assert set(data["health"]["components"]) >= {"tracker", "mqtt_ingress", "gate", "http"}


async def test_hub_messages_arrive_in_publish_order_after_hello() -> None:
    kinds = ("journey", "zone", "track", "gate", "acc", "metrics", "position", "door")
    async with (
        serve_feed() as server,
        feed_client(server.port, queue=0) as ws,
    ):
        assert (await next_message(ws))["kind"] == "hello"
        assert server.hub.stats.clients == 1
        for i in range(200):
            server.hub.publish(kinds[i % len(kinds)], b'{"n":%d}' % i)
        got = [await next_message(ws) for _ in range(200)]
    assert [m["kind"] for m in got] == [kinds[i % len(kinds)] for i in range(200)]
    assert [m["data"] for m in got] == [{"n": i} for i in range(200)]
    assert all(isinstance(m["ts"], int) for m in got)
    assert server.hub.stats.dropped == 0


async def test_health_and_heartbeat_arrive_on_their_timers() -> None:
    timing = FeedTiming(health_interval_s=0.05, heartbeat_interval_s=0.12)
    async with (
        serve_feed(timing=timing) as server,
        feed_client(server.port) as ws,
    ):
        assert (await next_message(ws))["kind"] == "hello"
        seen: dict[str, list[dict[str, Any]]] = {"health": [], "heartbeat": []}
        while len(seen["heartbeat"]) < 2 or len(seen["health"]) < 3:
            message = await next_message(ws)
            seen[message["kind"]].append(message["data"])
    assert all(beat == {} for beat in seen["heartbeat"])
    health = seen["health"][0]
    assert health["site"] == SITE
    assert health["components"]["http"] == {"state": "ok", "ws_clients": 1}


async def test_client_leaving_frees_its_hub_slot() -> None:
    async with serve_feed() as server:
        async with feed_client(server.port) as ws:
            await next_message(ws)
            assert server.hub.stats.clients == 1
        await wait_until(lambda: server.hub.stats.clients == 0, "slot released")
        server.hub.publish("zone", b"{}")  # nobody subscribed: nothing to drop
        assert server.hub.stats.dropped == 0


# ---- S148: a slow client never delays the others ------------------------------------------------


async def test_s148_client_a_never_reads_client_b_gets_all_1000_in_order() -> None:
    received: list[dict[str, Any]] = []
    async with (
        serve_feed() as server,
        raw_never_reading(server.port),
        feed_client(server.port, queue=0) as fast,
    ):
        assert (await next_message(fast))["kind"] == "hello"
        await wait_until(lambda: server.hub.stats.clients == 2, "A and B subscribed")
        progress = trio.Event()

        async def read_b() -> None:
            nonlocal progress
            while len(received) < 1000:
                received.append(json.loads(await fast.get_message()))
                progress.set()
                progress = trio.Event()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_b)
            for batch in range(0, 1000, 25):
                for i in range(batch, batch + 25):
                    server.hub.publish("zone", big_payload(i))  # sync: it cannot wait for A
                with trio.fail_after(STEP_S):
                    while len(received) < batch + 25:  # B keeps up; A is never awaited
                        await progress.wait()
        dropped = server.hub.stats.dropped
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            metrics = (await http.get("/metrics")).text
    assert [m["data"]["i"] for m in received] == list(range(1000))
    assert all(m["kind"] == "zone" for m in received)
    # A's socket absorbs at most ~4 MB (4 MB send buffer, 4 KiB window), its queue 256 more
    assert dropped > 0
    assert dropped == server.comp.livefeed_stats.dropped  # all of them A's: B got every one
    assert f'gateway_ws_dropped_total{{site="{SITE}"}} {dropped}' in metrics
    print(f"\nS148: client A dropped {dropped} of 1000 messages of 16 KiB; B got all 1000")


# ---- limits: 1013, dropped, 1008 ----------------------------------------------------------------


async def test_17th_client_is_closed_1013_and_a_freed_slot_is_reusable() -> None:
    async with serve_feed(make_config(max_clients=16)) as server, AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(feed_client(server.port)) for _ in range(16)]
        for ws in clients:
            assert (await next_message(ws))["kind"] == "hello"
        assert server.hub.stats.clients == 16
        async with feed_client(server.port) as extra:
            with trio.fail_after(STEP_S), pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await extra.get_message()
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1013
        assert server.counters.refused == 1
        await clients[0].aclose()
        await wait_until(lambda: server.hub.stats.clients == 15, "slot released")
        again = await stack.enter_async_context(feed_client(server.port))
        assert (await next_message(again))["kind"] == "hello"


async def test_dropped_message_once_an_overflowed_queue_has_room() -> None:
    async with (
        serve_feed(make_config(ws_queue=4)) as server,
        feed_client(server.port, queue=0) as ws,
    ):
        assert (await next_message(ws))["kind"] == "hello"
        for i in range(20):  # no checkpoint in between: the queue of 4 overflows
            server.hub.publish("track", b'{"n":%d}' % i)
        hub_dropped = server.hub.stats.dropped
        got: list[dict[str, Any]] = []
        while sum(1 for m in got if m["kind"] == "track") < 20 - hub_dropped:
            got.append(await next_message(ws))
        server.hub.publish("track", b'{"n":99}')  # room again, nothing pending: no new notice
        got.append(await next_message(ws))
    feed = [m["data"]["n"] for m in got if m["kind"] == "track"]
    notices = [m for m in got if m["kind"] == "dropped"]
    assert hub_dropped > 0
    assert feed == [*range(20 - hub_dropped), 99]  # the first ones, in order, then the new one
    assert [n["data"] for n in notices] == [{"count": hub_dropped}]
    assert got[0]["kind"] == "track"  # the notice needs room, so it follows a dequeue
    assert got[-1]["data"] == {"n": 99}


async def publish_until_released(server: FeedServer) -> int:
    """Feed big messages until the watchdog drops the (only) client; returns how many."""
    sent = 0
    with trio.fail_after(STEP_S):
        while server.hub.stats.clients == 1:
            server.hub.publish("position", big_payload(sent))
            sent += 1
            await trio.sleep(0.001)  # let the server's writer push until its socket is full
    return sent


async def test_send_blocked_past_the_limit_frees_the_slot_and_a_dead_peer_is_cut() -> None:
    timing = FeedTiming(send_block_close_s=0.3, close_timeout_s=0.2)
    async with serve_feed(timing=timing) as server, AsyncExitStack() as stack:
        stream = await stack.enter_async_context(raw_never_reading(server.port))
        await wait_until(lambda: server.hub.stats.clients == 1, "client subscribed")
        sent = await publish_until_released(server)
        assert server.counters.closed_slow == 1
        server.hub.publish("position", b"{}")  # nobody left to offer it to
        # the peer never reads, so no close frame can reach it: the server drops the connection
        with trio.fail_after(STEP_S):
            await stream.send_all(b"")
            received = 0
            while True:
                try:
                    chunk = await stream.receive_some(1 << 16)
                except trio.BrokenResourceError:  # reset while unread data was in flight
                    break
                if not chunk:
                    break
                received += len(chunk)
        assert 0 < received < sent * BIG_PAYLOAD_CHARS


async def test_send_blocked_past_the_limit_then_the_reader_resumes_gets_close_1008() -> None:
    timing = FeedTiming(send_block_close_s=0.3, close_timeout_s=STEP_S)
    async with (
        serve_feed(timing=timing) as server,
        feed_client(server.port, rcvbuf=TINY_RCVBUF) as ws,
    ):
        assert (await next_message(ws))["kind"] == "hello"
        sent = await publish_until_released(server)
        assert server.counters.closed_slow == 1
        # resume reading while the server still waits to write its close frame
        kinds: list[str] = []
        with trio.fail_after(STEP_S), pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await read_all(ws, kinds)
    assert closed.value.reason is not None
    assert closed.value.reason.code == 1008
    assert 0 < len(kinds) < sent
    assert set(kinds) == {"position"}


async def read_all(ws: Any, kinds: list[str]) -> None:
    while True:
        kinds.append(json.loads(await ws.get_message())["kind"])


async def test_server_stops_while_a_client_is_stuck_in_a_blocked_send() -> None:
    # hypercorn shields socket writes: only closing the socket frees a writer blocked on a peer
    # that does not read, and hypercorn does that only once the handler itself has returned
    streams: list[trio.SocketStream] = []
    rescued: list[bool] = []

    async def rescue() -> None:
        """Turn a hang into a failure: closing the peer (RST) frees any blocked send."""
        await trio.sleep(STEP_S)
        rescued.append(True)
        for stream in streams:
            await stream.aclose()

    try:
        async with trio.open_nursery() as guard:
            guard.start_soon(rescue)
            async with serve_feed() as server:
                streams.append(await raw_handshake(server.port))
                await wait_until(lambda: server.hub.stats.clients == 1, "client subscribed")
                sent = 0
                with trio.fail_after(STEP_S):
                    while server.hub.stats.dropped == 0:  # queue full: the writer is blocked
                        server.hub.publish("position", big_payload(sent))
                        sent += 1
                        await trio.sleep(0.001)
                assert server.hub.stats.clients == 1  # within the 5 s limit: still subscribed
            guard.cancel_scope.cancel()
        assert rescued == []  # the server stopped with the client connected and unread
        assert server.hub.stats.clients == 0
    finally:
        for stream in streams:
            await stream.aclose()
