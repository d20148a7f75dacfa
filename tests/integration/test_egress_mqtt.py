"""MQTT egress with a real mosquitto: journeys survive a broker outage, QoS 0 drops are counted."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import trio

from gateway.config.model import (
    Config,
    GateConfig,
    MqttConfig,
    MqttEgressConfig,
    SiteConfig,
    ZonesConfig,
)
from gateway.core.effects import Publish
from gateway.io.egress import EgressStats, offer, run_egress
from gateway.io.mqtt_shim import Message, MqttClient

if TYPE_CHECKING:
    from conftest import MosquittoServer

pytestmark = pytest.mark.integration

STEP_S = 10.0  # bound on each wait; a reconnect after an outage can take a few seconds


def egress_config(server: MosquittoServer, prefix: str, interval_s: int = 3600) -> Config:
    return Config(
        path="test.toml",
        site=SiteConfig("s1"),
        mqtt=MqttConfig(host=server.host, port=server.port),
        gate=GateConfig(mode="tcp", tcp_addr="127.0.0.1:8000"),
        zones=ZonesConfig(pos_zones=(1001,), gate_zone=1000, exit_line=1006),
        mqtt_egress=MqttEgressConfig(
            enabled=True,
            host=server.host,
            port=server.port,
            journeys_topic=f"{prefix}/journeys",
            events_topic=f"{prefix}/events",
            metrics_topic=f"{prefix}/metrics",
            gate_topic=f"{prefix}/gate",
            tracks_topic=f"{prefix}/tracks",
            acc_topic=f"{prefix}/acc",
            positions_topic=f"{prefix}/positions",
            metrics_publish_interval_secs=interval_s,
        ),
    )


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll: the stats are plain counters (README rule 7), there is no event to wait on."""
    with trio.fail_after(STEP_S):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert predicate(), what


async def collect(client: MqttClient, n: int) -> list[Message]:
    got: list[Message] = []
    with trio.fail_after(STEP_S):
        async for msg in client.messages:
            got.append(msg)
            if len(got) == n:
                break
    return got


async def test_journeys_offered_while_broker_down_are_all_published_after_restart(
    mosquitto: MosquittoServer, mqtt_topic_prefix: str
) -> None:
    config = egress_config(mosquitto, mqtt_topic_prefix)
    stats = EgressStats()
    send, recv = trio.open_memory_channel[Publish](1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_egress(
                config, recv, stats, livefeed=None, metrics_payload=None, task_status=task_status
            )
        )
        await wait_until(lambda: stats.connected, "egress connects")
        await trio.to_thread.run_sync(mosquitto.kill)
        await wait_until(lambda: not stats.connected, "egress notices the outage")

        for i in range(50):
            assert offer(send, Publish("journey", {"site": "s1", "jid": f"j{i}"}), stats)
        for i in range(10):
            assert offer(send, Publish("zone", {"site": "s1", "tid": i}), stats)
        await wait_until(lambda: stats.backlog == 50, "journeys wait in the backlog")
        assert stats.dropped["disconnected"] == 10

        # restart right after a refused attempt: the next one is ≥ 2 s away, so the
        # subscriber below is in place before the egress re-sends
        await wait_until(lambda: stats.reconnects >= 1, "egress retries")
        await trio.sleep(0.3)
        await trio.to_thread.run_sync(mosquitto.start)
        async with MqttClient(mosquitto.host, mosquitto.port, client_id="egress-sub") as sub:
            await sub.subscribe(f"{mqtt_topic_prefix}/#", qos=1)
            got = await collect(sub, 50)
            await wait_until(lambda: stats.backlog == 0, "backlog empties on PUBACKs")
            assert stats.connected
            offer(send, Publish("zone", {"site": "s1", "tid": 99}), stats)
            (live,) = await collect(sub, 1)
        send.close()
    jids = [json.loads(m.payload)["jid"] for m in got]
    assert jids == [f"j{i}" for i in range(50)]  # all, in order, none lost
    assert {m.topic for m in got} == {f"{mqtt_topic_prefix}/journeys"}
    assert live.topic == f"{mqtt_topic_prefix}/events"
    assert json.loads(live.payload) == {"site": "s1", "tid": 99}
    assert stats.published == 51
    assert stats.reconnects >= 1
    assert stats.dropped["backlog_full"] == 0


async def test_metrics_published_on_topic_and_live_feed(
    mosquitto: MosquittoServer, mqtt_topic_prefix: str
) -> None:
    config = egress_config(mosquitto, mqtt_topic_prefix, interval_s=1)
    stats = EgressStats()
    feed: list[tuple[str, bytes]] = []
    send, recv = trio.open_memory_channel[Publish](10)

    def metrics() -> dict[str, Any]:
        return {"site": "s1", "events_total": 3}

    async with MqttClient(mosquitto.host, mosquitto.port, client_id="metrics-sub") as sub:
        await sub.subscribe(f"{mqtt_topic_prefix}/metrics")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: run_egress(
                    config,
                    recv,
                    stats,
                    livefeed=lambda k, d: feed.append((k, d)),
                    metrics_payload=metrics,
                )
            )
            await wait_until(lambda: stats.connected, "egress connects")
            (msg,) = await collect(sub, 1)
            send.close()
    assert json.loads(msg.payload) == {"site": "s1", "events_total": 3}
    assert ("metrics", msg.payload) in feed


async def test_shutdown_drains_backlog_then_returns(
    mosquitto: MosquittoServer, mqtt_topic_prefix: str
) -> None:
    config = egress_config(mosquitto, mqtt_topic_prefix)
    stats = EgressStats()
    send, recv = trio.open_memory_channel[Publish](1000)
    async with MqttClient(mosquitto.host, mosquitto.port, client_id="drain-sub") as sub:
        await sub.subscribe(f"{mqtt_topic_prefix}/journeys", qos=1)
        for i in range(200):
            offer(send, Publish("journey", {"site": "s1", "jid": f"d{i}"}), stats)
        send.close()
        with trio.fail_after(STEP_S):
            await run_egress(config, recv, stats, livefeed=None, metrics_payload=None)
        assert stats.backlog == 0
        got = await collect(sub, 200)
    assert [json.loads(m.payload)["jid"] for m in got] == [f"d{i}" for i in range(200)]
