"""MQTT ingress against a real mosquitto: S112, S147, S153 and a 5,000-message burst.

The `_Handler` tests at the end need no broker; they sit here because they pin the same path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import paho.mqtt.client as paho
import pytest
import trio
from paho.mqtt.enums import CallbackAPIVersion

from gateway.codecs.xovis import XovisDecoder, XovisStats
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
from gateway.io.analysis_log import AnalysisRecord
from gateway.io.egress import EgressStats
from gateway.io.mqtt_ingress import IngressStats, _Handler, run_mqtt_ingress
from gateway.io.mqtt_shim import Message, MqttClient
from gateway.io.position_stream import PositionStreamer

if TYPE_CHECKING:
    from conftest import MosquittoServer

pytestmark = pytest.mark.integration

STEP_S = 15.0  # bound on each wait (S153's backoff alone can take 7 s); not a performance target


def ingress_config(server: MosquittoServer, prefix: str) -> Config:
    return Config(
        path="test.toml",
        site=SiteConfig("s1"),
        mqtt=MqttConfig(host=server.host, port=server.port, topic=f"{prefix}/#", client_id=prefix),
        gate=GateConfig(mode="tcp", tcp_addr="127.0.0.1:8000"),
        zones=ZonesConfig(pos_zones=(1001,), gate_zone=1000, exit_line=1006),
        mqtt_egress=MqttEgressConfig(
            enabled=False,
            host=server.host,
            port=server.port,
            events_topic=f"{prefix}/gateway/events",
            journeys_topic=f"{prefix}/gateway/journeys",
        ),
    )


def xovis(tid: int = 1, x: float = 1.0) -> bytes:
    frame = {
        "time": "2026-01-05T16:41:30.048+00:00",
        "tracked_objects": [{"track_id": tid, "type": "PERSON", "position": [x, 2.0, 1.7]}],
        "events": [{"type": "ZONE_ENTRY", "attributes": {"track_id": tid, "geometry_id": 1001}}],
    }
    return msgspec.json.encode({"live_data": {"frames": [frame]}})


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll: the stats are plain counters (README rule 7), there is no event to wait on."""
    with trio.fail_after(STEP_S):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert predicate(), what


class Ingress:
    """One running ingress plus its channels and counters."""

    def __init__(self, config: Config, events_capacity: int = 100, egress_capacity: int = 100):
        self.config = config
        self.stats = IngressStats()
        self.xovis = XovisStats()
        self.egress_stats = EgressStats()
        self.events_send, self.events = trio.open_memory_channel[object](events_capacity)
        self.egress_send, self.egress = trio.open_memory_channel[Publish](egress_capacity)

    async def run(self, nursery: trio.Nursery, **kwargs: Any) -> None:
        await nursery.start(
            lambda task_status: run_mqtt_ingress(
                self.config,
                self.events_send,
                self.egress_send,
                self.stats,
                self.xovis,
                None,
                self.egress_stats,
                task_status=task_status,
                **kwargs,
            )
        )
        await wait_until(lambda: self.stats.subscribed, "ingress subscribed")


async def publish(server: MosquittoServer, topic: str, payloads: list[bytes]) -> None:
    async with MqttClient(server.host, server.port, client_id=f"pub-{topic}"[:64]) as pub:
        for payload in payloads:
            await pub.publish(topic, payload, qos=0)


async def test_s112_own_egress_topic_and_no_live_data(
    mosquitto: MosquittoServer, mqtt_topic_prefix: str
) -> None:
    ing = Ingress(ingress_config(mosquitto, mqtt_topic_prefix))
    async with trio.open_nursery() as nursery:
        await ing.run(nursery)
        await publish(mosquitto, f"{mqtt_topic_prefix}/gateway/events", [xovis(5)])
        await publish(mosquitto, f"{mqtt_topic_prefix}/xovis", [b'{"site":"x","t":"zone_entry"}'])
        await publish(mosquitto, f"{mqtt_topic_prefix}/xovis", [xovis(6)])
        with trio.fail_after(STEP_S):
            batch = await ing.events.receive()
        nursery.cancel_scope.cancel()
    assert isinstance(batch, XovisBatch)
    assert batch.frames[0].events[0].track_id == 6
    assert batch.topic == f"{mqtt_topic_prefix}/xovis"
    assert ing.stats.messages_skipped_own_topic == 1
    assert ing.xovis.messages == 2  # the own-topic message was never parsed
    assert ing.xovis.ignored == 1
    assert ing.xovis.malformed == 0


async def test_s153_broker_restart_reconnects_and_resubscribes(
    mosquitto: MosquittoServer, mqtt_topic_prefix: str
) -> None:
    ing = Ingress(ingress_config(mosquitto, mqtt_topic_prefix))
    async with trio.open_nursery() as nursery:
        await ing.run(nursery)
        await trio.to_thread.run_sync(mosquitto.kill)
        await wait_until(lambda: not ing.stats.connected, "outage noticed")
        await trio.sleep(3)  # S153: restarted on the same port after 3 s
        await trio.to_thread.run_sync(mosquitto.start)
        await wait_until(lambda: ing.stats.subscribed, "re-subscribed after the new CONNACK")
        await publish(mosquitto, f"{mqtt_topic_prefix}/xovis", [xovis(7)])
        with trio.fail_after(STEP_S):
            batch = await ing.events.receive()
        nursery.cancel_scope.cancel()
    assert isinstance(batch, XovisBatch)
    assert batch.frames[0].events[0].track_id == 7
    assert ing.stats.reconnects >= 1


async def test_s147_full_events_channel_drops_counts_and_stays_connected(
    mosquitto: MosquittoServer, mqtt_topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.mqtt_ingress")
    ing = Ingress(ingress_config(mosquitto, mqtt_topic_prefix), events_capacity=4)
    async with trio.open_nursery() as nursery:
        await ing.run(nursery, keepalive_s=2)
        await publish(mosquitto, f"{mqtt_topic_prefix}/xovis", [xovis(i + 1) for i in range(10)])
        await wait_until(lambda: ing.xovis.messages == 10, "all 10 decoded")
        assert ing.events.statistics().current_buffer_used == 4
        assert ing.stats.events_dropped == 6
        warns = [r for r in caplog.records if r.getMessage() == "mqtt_events_dropped"]
        assert len(warns) == 1
        # hold > 2 × keep-alive with nobody receiving: the client must keep serving PINGs
        await trio.sleep(5)
        assert ing.stats.connected
        assert ing.stats.reconnects == 0
        before = ing.stats.last_message_mono_ns
        await publish(mosquitto, f"{mqtt_topic_prefix}/xovis", [xovis(11)])
        await wait_until(lambda: ing.stats.last_message_mono_ns != before, "still receiving")
        nursery.cancel_scope.cancel()
    assert ing.stats.events_dropped == 7
    assert "exceeded timeout" not in mosquitto.log_text()


def _blast(host: str, port: int, topic: str, payloads: list[bytes]) -> None:
    """Publish from a plain paho client in a worker thread, as fast as paho goes."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"blast-{threading.get_ident()}")
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    try:
        infos = [client.publish(topic, p, qos=0) for p in payloads]
        infos[-1].wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


async def test_burst_5000_with_slow_consumer_drops_counted_no_disconnect(
    mosquitto: MosquittoServer, mqtt_topic_prefix: str
) -> None:
    total = 5000
    ing = Ingress(ingress_config(mosquitto, mqtt_topic_prefix), events_capacity=100)
    consumed = [0]

    async def slow_tracker() -> None:
        async for _ in ing.events:
            consumed[0] += 1
            await trio.sleep(0.0005)

    def accounted() -> int:
        return consumed[0] + ing.stats.events_dropped + ing.stats.inbound_dropped

    async with trio.open_nursery() as nursery:
        await ing.run(nursery)
        nursery.start_soon(slow_tracker)
        payloads = [xovis(i + 1) for i in range(total)]
        topic = f"{mqtt_topic_prefix}/xovis"
        await trio.to_thread.run_sync(_blast, mosquitto.host, mosquitto.port, topic, payloads)
        await wait_until(lambda: ing.xovis.messages + ing.stats.inbound_dropped == total, "all in")
        await wait_until(lambda: ing.events.statistics().current_buffer_used == 0, "caught up")
        await wait_until(lambda: accounted() == total, "every message accounted for")
        assert ing.stats.events_dropped > 0
        assert ing.stats.connected
        assert ing.stats.reconnects == 0
        await publish(mosquitto, topic, [xovis(9999)])
        await wait_until(lambda: accounted() == total + 1, "the next message still arrives")
        nursery.cancel_scope.cancel()
    print(
        f"\nburst {total}: consumed={consumed[0]} events_dropped={ing.stats.events_dropped} "
        f"inbound_dropped={ing.stats.inbound_dropped}"
    )


# -- the per-message path without a broker ---------------------------------------------------
def make_handler(
    config: Config, egress_capacity: int = 10, analysis_capacity: int | None = None
) -> tuple[_Handler, Any, Any, Any]:
    events_send, events_recv = trio.open_memory_channel[object](10)
    egress_send, egress_recv = trio.open_memory_channel[Publish](egress_capacity)
    analysis_send, analysis_recv = (
        trio.open_memory_channel[AnalysisRecord](analysis_capacity)
        if analysis_capacity
        else (None, None)
    )
    handler = _Handler(
        events=events_send,
        egress=egress_send,
        stats=IngressStats(),
        decoder=XovisDecoder("ignore", XovisStats()),
        streamer=PositionStreamer("s1"),
        skip_topics=frozenset(config.mqtt_egress.topics),
        analysis=analysis_send,
        egress_stats=EgressStats(),
    )
    return handler, events_recv, egress_recv, analysis_recv


def _config() -> Config:
    return Config(
        path="t.toml",
        site=SiteConfig("s1"),
        mqtt=MqttConfig(host="127.0.0.1"),
        gate=GateConfig(mode="tcp", tcp_addr="127.0.0.1:8000"),
        zones=ZonesConfig(pos_zones=(1001,), gate_zone=1000, exit_line=1006),
        mqtt_egress=MqttEgressConfig(enabled=True, host="127.0.0.1", port=1883),
    )


async def test_handler_analysis_record_and_position_stream() -> None:
    handler, events, egress, analysis = make_handler(_config(), analysis_capacity=1)
    handler.handle(Message("xovis/a", xovis(1), 0, 1_000_000_000))
    handler.handle(Message("xovis/a", b"not json", 0, 2_000_000_000))
    record = analysis.receive_nowait()
    assert (record.topic, record.payload) == ("xovis/a", xovis(1))
    assert handler.stats.analysis_dropped == 1  # capacity 1: the second copy is dropped
    assert isinstance(events.receive_nowait(), XovisBatch)
    pos = egress.receive_nowait()
    assert pos.kind == "position"
    assert (pos.payload["tid"], pos.payload["x"], pos.payload["site"]) == (1, 1.0, "s1")
    assert handler.decoder.stats.malformed == 1


async def test_handler_sheds_positions_when_egress_half_full() -> None:
    handler, _events, egress, _ = make_handler(_config(), egress_capacity=4)
    for i in range(2):  # fill the egress channel to half
        handler.egress.send_nowait(Publish("zone", {"site": "s1", "i": i}))
    handler.handle(Message("xovis/a", xovis(1), 0, 1_000_000_000))
    assert handler.egress_stats.dropped["positions_shed"] == 1
    assert egress.statistics().current_buffer_used == 2


async def test_handler_skips_default_egress_topic() -> None:
    handler, events, _egress, _ = make_handler(_config())
    handler.handle(Message("gateway/events", xovis(1), 0, 1))
    assert handler.stats.messages_skipped_own_topic == 1
    assert handler.decoder.stats.messages == 0
    assert events.statistics().current_buffer_used == 0
