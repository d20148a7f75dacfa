"""Traffic sender against a private Mosquitto and a real ACC TCP listener (simulation.md §2).

Each test starts its own broker (`listener <port> 127.0.0.1`, anonymous) and listens for ACC lines
on a free 127.0.0.1 port; the sender connects from 127.0.0.k source addresses.
"""

from __future__ import annotations

import functools
import json
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import paho.mqtt.client as mqtt
import pytest
import trio
from paho.mqtt.enums import CallbackAPIVersion

from gateway.codecs.xovis import XovisDecoder, XovisStats
from gateway.config.loader import load_config
from gateway.tools.traffic import CustomerKind, TrafficModel, demo_geometry
from gateway.tools.traffic_io import MqttPublisher, TrafficIoStats, run_traffic
from gateway.tools.traffic_model import AccLine, Output, SensorMessage

pytestmark = pytest.mark.integration

MOSQUITTO = "/usr/sbin/mosquitto"
DEMO_TOML = Path(__file__).resolve().parents[1] / "data" / "demo.toml"
WAIT_S = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def traffic_broker(tmp_path: Path) -> Iterator[int]:
    """A private mosquitto on a free port; stopped in `finally`."""
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n")
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(500):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("mosquitto exited at start")
                threading.Event().wait(0.01)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@attrs.define
class Changes:
    """Wakes a waiting test when a task or a foreign thread added data (no polling sleeps)."""

    token: trio.lowlevel.TrioToken | None = None
    event: trio.Event | None = None

    def notify(self) -> None:
        if self.event is not None:
            self.event.set()

    def notify_from_thread(self) -> None:
        if self.token is not None:
            self.token.run_sync_soon(self.notify)

    async def wait_for(self, cond: Callable[[], bool]) -> None:
        self.token = trio.lowlevel.current_trio_token()
        with trio.fail_after(WAIT_S):
            while True:
                self.event = trio.Event()
                if cond():
                    return
                await self.event.wait()


@attrs.define
class Subscriber:
    """A plain paho subscriber in its own thread; payloads land in `got`."""

    client: mqtt.Client
    changes: Changes = attrs.field(factory=Changes)
    got: list[bytes] = attrs.field(factory=list)

    def on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        self.got.append(message.payload)
        self.changes.notify_from_thread()


@pytest.fixture
def subscriber(traffic_broker: int) -> Iterator[Subscriber]:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    sub = Subscriber(client)
    subscribed = threading.Event()
    client.on_message = sub.on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", traffic_broker)
    client.subscribe("xovis/#")
    client.loop_start()
    try:
        assert subscribed.wait(WAIT_S)
        yield sub
    finally:
        client.disconnect()
        client.loop_stop()


@attrs.define
class AccListener:
    """Records (peer ip, bytes) per connection; optionally closes after the first line."""

    port: int = 0
    close_after_line: bool = False
    changes: Changes = attrs.field(factory=Changes)
    connections: list[tuple[str, bytearray]] = attrs.field(factory=list)

    async def handle(self, stream: trio.SocketStream) -> None:
        peer = stream.socket.getpeername()[0]
        data = bytearray()
        self.connections.append((peer, data))
        async with stream:
            async for chunk in stream:
                data += chunk
                self.changes.notify()
                if self.close_after_line and b"\n" in data:
                    return

    def lines(self) -> list[tuple[str, bytes]]:
        return [(ip, ln) for ip, data in self.connections for ln in bytes(data).splitlines()]


async def serve(nursery: trio.Nursery, listener: AccListener) -> None:
    serve_local = functools.partial(trio.serve_tcp, host="127.0.0.1")
    listeners = await nursery.start(serve_local, listener.handle, 0)
    listener.port = listeners[0].socket.getsockname()[1]


@attrs.define
class ScriptedSource:
    """A TrafficSource with known output: frame k carries k; ACC lines at given frames."""

    topic: str
    acc_at: dict[int, AccLine]
    calls: list[int] = attrs.field(factory=list)

    @property
    def frame_period_ms(self) -> float:
        return 80.0

    def step(self, now_ms: int, wall_ms: int) -> list[Output]:
        k = now_ms // 80
        self.calls.append(now_ms)
        out: list[Output] = [SensorMessage(self.topic, json.dumps({"k": k}).encode())]
        if k in self.acc_at:
            out.append(self.acc_at[k])
        return out


async def test_frames_reach_mosquitto_and_acc_lines_come_from_127_0_0_k(
    traffic_broker: int, subscriber: Subscriber
) -> None:
    acc_at = {2: b"ACC 4702-0001\n", 4: b"ACC 4703-0001\n", 6: b"ACC 4702-0002\n"}
    ips = {2: "127.0.0.2", 4: "127.0.0.3", 6: "127.0.0.2"}
    source = ScriptedSource("xovis/sensor-1", {k: AccLine(ips[k], ln) for k, ln in acc_at.items()})
    listener = AccListener()
    async with trio.open_nursery() as nursery:
        await serve(nursery, listener)
        done = trio.Event()
        publisher: MqttPublisher = await nursery.start(
            run_traffic_until_done, source, traffic_broker, listener.port, 1.0, 4.0, done
        )
        sock = publisher._client.socket()
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        await done.wait()
        await subscriber.changes.wait_for(lambda: len(subscriber.got) >= len(source.calls))
        await listener.changes.wait_for(lambda: len(listener.lines()) == 3)
        nursery.cancel_scope.cancel()
    assert source.calls == sorted(set(source.calls))
    assert all(now % 80 == 0 for now in source.calls)
    ks = [json.loads(p)["k"] for p in subscriber.got]
    assert ks == [now // 80 for now in source.calls]  # every frame, in order
    assert len(ks) >= 20  # 1 s at 4× speed of 80 ms frames ≈ 50 frames
    by_ip: dict[str, list[bytes]] = {}
    for ip, line in listener.lines():
        by_ip.setdefault(ip, []).append(line)
    assert by_ip == {
        "127.0.0.2": [b"ACC 4702-0001", b"ACC 4702-0002"],
        "127.0.0.3": [b"ACC 4703-0001"],
    }
    assert sorted(ip for ip, _ in listener.connections) == ["127.0.0.2", "127.0.0.3"]


async def run_traffic_until_done(
    source: Any,
    mqtt_port: int,
    acc_port: int,
    duration_s: float,
    speed: float,
    done: trio.Event | None = None,
    *,
    stats: TrafficIoStats | None = None,
    task_status: trio.TaskStatus[MqttPublisher] = trio.TASK_STATUS_IGNORED,
) -> None:
    await run_traffic(
        source,
        mqtt_host="127.0.0.1",
        mqtt_port=mqtt_port,
        acc_host="127.0.0.1",
        acc_port=acc_port,
        duration_s=duration_s,
        speed=speed,
        stats=stats,
        task_status=task_status,
    )
    if done is not None:
        done.set()


async def test_acc_connection_is_reopened_after_the_listener_drops_it(traffic_broker: int) -> None:
    lines = {1: AccLine("127.0.0.4", b"ACC 1\n"), 10: AccLine("127.0.0.4", b"ACC 2\n")}
    source = ScriptedSource("xovis/sensor-1", lines)
    listener = AccListener(close_after_line=True)
    stats = TrafficIoStats()
    async with trio.open_nursery() as nursery:
        await serve(nursery, listener)
        await run_traffic_until_done(source, traffic_broker, listener.port, 1.5, 2.0, stats=stats)
        await listener.changes.wait_for(lambda: len(listener.lines()) == 2)
        nursery.cancel_scope.cancel()
    assert listener.lines() == [("127.0.0.4", b"ACC 1"), ("127.0.0.4", b"ACC 2")]
    # one line per connection; after each drop the terminal connects again from its own address
    assert [bytes(data) for _, data in listener.connections][:2] == [b"ACC 1\n", b"ACC 2\n"]
    assert {ip for ip, _ in listener.connections} == {"127.0.0.4"}
    assert stats.acc_connects >= 2
    assert stats.acc_disconnects >= 1
    assert stats.acc_sent == 2


async def test_demo_model_end_to_end_decodes_and_pays(
    traffic_broker: int, subscriber: Subscriber
) -> None:
    cfg = load_config(DEMO_TOML)
    model = TrafficModel(demo_geometry(cfg.zones, cfg.acc), 30.0, seed=4)
    for _ in range(3):
        model.add_customer(CustomerKind.PAYER)
    sent: list[Output] = []
    step = model.step

    def recording_step(now_ms: int, wall_ms: int) -> list[Output]:
        out = step(now_ms, wall_ms)
        sent.extend(out)
        return out

    model.step = recording_step  # type: ignore[method-assign]
    listener = AccListener()
    stats = TrafficIoStats()
    async with trio.open_nursery() as nursery:
        await serve(nursery, listener)
        await run_traffic_until_done(model, traffic_broker, listener.port, 2.4, 25.0, stats=stats)
        published = [o for o in sent if isinstance(o, SensorMessage)]
        accs = [o for o in sent if isinstance(o, AccLine)]
        await subscriber.changes.wait_for(lambda: len(subscriber.got) >= len(published))
        await listener.changes.wait_for(lambda: len(listener.lines()) == len(accs))
        nursery.cancel_scope.cancel()
    assert accs, "three payers pay within 60 s of model time"
    assert sorted(listener.lines()) == sorted((a.source_ip, a.line.rstrip(b"\n")) for a in accs)
    assert subscriber.got == [m.payload for m in published]
    assert stats.published == len(published)
    decoder = XovisDecoder("ignore", xs := XovisStats())
    events = sum(
        decoder.decode(p, recv_ns=0, topic="xovis/sensor-1").event_count for p in subscriber.got
    )
    assert events > 0
    assert xs.malformed == model.summary()["truncated"]


async def test_no_broker_is_an_os_error_before_started() -> None:
    source = ScriptedSource("xovis/sensor-1", {})
    with pytest.raises(ConnectionRefusedError):
        await run_traffic_until_done(source, _free_port(), _free_port(), 1.0, 1.0)
    assert source.calls == []
