"""Measure publish → XovisBatch in a Trio task through the real ingress (prints, asserts no loss).

The publisher is a separate process (paho, TCP_NODELAY) so it does not share our GIL; both sides
stamp `time.monotonic_ns()` (CLOCK_MONOTONIC is system-wide). No latency threshold is asserted:
numbers depend on the machine's load (measured-mqtt-floor.md); `gateway bench` owns targets.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

import pytest
import trio

from gateway.codecs.xovis import XovisStats
from gateway.config.model import (
    Config,
    GateConfig,
    MqttConfig,
    MqttEgressConfig,
    SiteConfig,
    ZonesConfig,
)
from gateway.core.effects import Publish
from gateway.core.model import XovisBatch
from gateway.io.egress import EgressStats
from gateway.io.mqtt_ingress import IngressStats, run_mqtt_ingress

if TYPE_CHECKING:
    from conftest import MosquittoServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PUBLISHER = r"""
import json, socket, sys, time
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
host, port, topic = sys.argv[1], int(sys.argv[2]), sys.argv[3]
n, rate = int(sys.argv[4]), float(sys.argv[5])
def frame(seq):  # Xovis-shaped: 20 tracked objects, one event carrying the sequence number
    objs = [{"track_id": seq if i == 0 else 100000 + i, "type": "PERSON",
             "position": [1.0 + i * 0.01, 2.0, 1.7]} for i in range(20)]
    ev = {"type": "ZONE_ENTRY", "attributes": {"track_id": seq, "geometry_id": 1001}}
    return json.dumps({"live_data": {"frames": [{"time": "2026-01-05T16:41:30.048+00:00",
                       "tracked_objects": objs, "events": [ev]}]}}).encode()
payloads = [frame(i + 1) for i in range(n)]
c = paho.Client(CallbackAPIVersion.VERSION2, client_id="latency-pub-%d" % time.time_ns())
c.on_socket_open = lambda cl, ud, s: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
c.max_queued_messages_set(0)
c.connect(host, port)
c.loop_start()
time.sleep(0.2)
sent = []
t0 = time.monotonic()
for i, p in enumerate(payloads):
    target = t0 + i / rate
    while time.monotonic() < target:
        time.sleep(max(0.0, target - time.monotonic() - 0.0005))
    sent.append(time.monotonic_ns())
    c.publish(topic, p, qos=0)
time.sleep(0.3)
c.disconnect()
c.loop_stop()
print(json.dumps({"sent": sent, "size": len(payloads[0])}))
"""


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@pytest.mark.parametrize(("count", "rate"), [(1000, 1000.0), (300, 100.0)])
async def test_publish_to_tracker_latency(
    mosquitto: MosquittoServer, mqtt_topic_prefix: str, count: int, rate: float
) -> None:
    topic = f"{mqtt_topic_prefix}/xovis"
    config = Config(
        path="t.toml",
        site=SiteConfig("s1"),
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port, topic=topic),
        gate=GateConfig(mode="tcp", tcp_addr="127.0.0.1:8000"),
        zones=ZonesConfig(pos_zones=(1001,), gate_zone=1000, exit_line=1006),
        mqtt_egress=MqttEgressConfig(enabled=False, host=mosquitto.host, port=mosquitto.port),
    )
    stats = IngressStats()
    events_send, events = trio.open_memory_channel[object](1000)
    egress_send, egress = trio.open_memory_channel[Publish](1000)
    received: dict[int, int] = {}

    def record(item: object) -> None:
        assert isinstance(item, XovisBatch)
        received[item.frames[0].events[0].track_id] = time.monotonic_ns()

    async def tracker() -> None:  # drains like the tracker actor: receive, then receive_nowait
        async for item in events:
            record(item)
            while True:
                try:
                    record(events.receive_nowait())
                except trio.WouldBlock:
                    break

    async def egress_sink() -> None:
        async for _ in egress:
            pass

    async with trio.open_nursery() as nursery:
        await nursery.start(
            run_mqtt_ingress, config, events_send, egress_send, stats, XovisStats(), None,
            EgressStats(),
        )  # fmt: skip
        nursery.start_soon(tracker)
        nursery.start_soon(egress_sink)
        with trio.fail_after(10):
            while not stats.subscribed:  # noqa: ASYNC110 - plain counters, no event
                await trio.sleep(0.01)
        args = [mosquitto.host, str(mosquitto.port), topic, str(count), str(rate)]
        with trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, "-c", PUBLISHER, *args], capture_stdout=True
            )
            while len(received) < count:  # noqa: ASYNC110
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    result = json.loads(done.stdout)
    lat_us = [(received[i + 1] - t) / 1000 for i, t in enumerate(result["sent"])]
    print(
        f"\n{count} msgs @ {rate:.0f}/s ({result['size']} B): publish→tracker "
        f"p50={_pct(lat_us, 50):.0f}µs p90={_pct(lat_us, 90):.0f}µs "
        f"p99={_pct(lat_us, 99):.0f}µs max={max(lat_us):.0f}µs"
    )
    assert stats.events_dropped == 0
    assert stats.reconnects == 0
