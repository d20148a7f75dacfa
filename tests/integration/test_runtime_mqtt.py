"""A whole in-process gateway against a real mosquitto: S147, S151, S153, S154, S157, ACC burst.

`run_gateway` runs in the test's Trio loop (the code path of `gateway run`, without signal
handlers); input arrives over real MQTT and TCP, state is read over real HTTP. The tracker-held
hook (`RunOptions.hold_events_after`) holds only the events consumer: door and ticker keep going.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
from runtime_harness import (
    POS_1,
    POS_2,
    GatewayHttp,
    SiteSpec,
    event,
    mqtt_probe,
    running_gateway,
    wait_until,
    xovis_message,
)

from gateway.app.runtime import RunOptions
from gateway.tools.mock_cloudplus import MockCloudPlus, MockOptions

if TYPE_CHECKING:
    from conftest import MosquittoServer

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-1234"


def site(tmp_path: Path, mosquitto: MosquittoServer, prefix: str, **kw: object) -> SiteSpec:
    return SiteSpec(
        tmp_path,
        mqtt_port=mosquitto.port,
        topic_prefix=prefix,
        token=TOKEN,
        **kw,  # type: ignore[arg-type]
    )


def create(tid: int, zone: int | None = None) -> bytes:
    events = [event("TRACK_CREATE", tid)]
    if zone is not None:
        events.append(event("ZONE_ENTRY", tid, zone))
    return xovis_message(*events, positions={tid: (1.0, 1.0, 1.7)})


async def component(http: GatewayHttp, name: str, key: str) -> object:
    return (await http.health())[1]["components"][name][key]


async def test_s147_full_events_channel_drops_counts_warns_once_client_stays_up(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    mqtt_topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = site(tmp_path, mosquitto, mqtt_topic_prefix, events_queue=4)
    release = trio.Event()
    options = RunOptions(hold_events_after=0, release_events=release)
    async with (
        running_gateway(spec.load(), options) as gw,
        mqtt_probe(mosquitto.host, mosquitto.port) as probe,
    ):
        await wait_until(lambda: gw.comp.ingress_stats.subscribed, "ingress subscribed")
        caplog.clear()
        for tid in range(1, 11):  # 10 messages of 1 event each
            await probe.publish(spec.xovis_topic, xovis_message(event("TRACK_CREATE", tid)))
        await wait_until(lambda: gw.comp.xovis_stats.messages == 10, "10 messages read")
        m = await gw.http.metrics()
        assert m.value("gateway_event_queue_depth") == 4
        assert m.value("gateway_event_queue_utilization_pct") == 100
        assert m.value("gateway_mqtt_events_received_total") == 10
        assert m.value("gateway_mqtt_events_dropped_total") == 6
        assert m.value("gateway_mqtt_drop_ratio") == 0.6
        assert m.value("gateway_events_total") == 0
        warns = [
            r
            for r in caplog.records
            if r.levelno == logging.WARNING and r.getMessage() == "mqtt_events_dropped"
        ]
        assert len(warns) == 1
        # the MQTT client stayed connected all along: no reconnect, still subscribed
        assert gw.comp.ingress_stats.connected
        assert m.value("gateway_mqtt_reconnects_total", client="ingress") == 0
        assert await component(gw.http, "tracker", "event_queue_depth") == 4
        release.set()
        await wait_until(lambda: gw.comp.tracker.counters.events_total == 4, "4 handled")
        assert gw.comp.tracker.gauges().live_tracks == 4
        # and the connection still delivers
        await probe.publish(spec.xovis_topic, create(11))
        await wait_until(lambda: gw.comp.tracker.counters.events_total == 5, "11th handled")


async def test_acc_burst_fills_the_channel_drops_are_counted_warning_rate_limited_ticks_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from runtime_harness import free_port

    spec = SiteSpec(tmp_path, mqtt_port=free_port(), token=TOKEN, events_queue=200)
    release = trio.Event()
    options = RunOptions(hold_events_after=0, release_events=release)
    lines = 700
    async with running_gateway(spec.load(), options) as gw:
        tracker = gw.comp.tracker
        await wait_until(lambda: tracker.gauges().last_tick_mono_ms is not None, "first tick")
        caplog.clear()
        started = trio.current_time()
        stream = await trio.open_tcp_stream("127.0.0.1", spec.acc_port)
        async with stream:
            await stream.send_all(b"".join(b"ACC r-%d\r\n" % i for i in range(lines)))
            await wait_until(
                lambda: gw.comp.acc_stats.events_received == lines, f"{lines} ACC lines read"
            )
        elapsed = trio.current_time() - started
        acc = gw.comp.acc_stats
        assert acc.events_dropped == lines - 200
        # the tracker keeps ticking while its events channel is full
        tick = tracker.gauges().last_tick_mono_ms
        await wait_until(lambda: tracker.gauges().last_tick_mono_ms != tick, "a later tick")
        status, body = await gw.http.health()
        assert status == 200
        assert body["components"]["tracker"]["state"] == "ok"
        assert body["components"]["tracker"]["event_queue_depth"] == 200
        warns = [r for r in caplog.records if r.getMessage() == "acc_event_dropped"]
        assert 1 <= len(warns) <= 1 + int(elapsed)  # ≤ 1 per second (interfaces.md §2)
        m = await gw.http.metrics()
        assert m.value("gateway_acc_events_received_total") == lines
        assert m.value("gateway_acc_events_dropped_total") == lines - 200
        assert m.value("gateway_acc_drop_ratio") == round((lines - 200) / lines, 6)
        release.set()
        await wait_until(lambda: tracker.counters.events_total == 200, "the queued 200 handled")
        assert tracker.counters.acc_events == 200


async def test_s151_ingress_crashes_twice_restarts_after_half_and_one_second_tracks_kept(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    mqtt_topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.supervisor")
    spec = site(tmp_path, mosquitto, mqtt_topic_prefix)
    crash_send, crash_recv = trio.open_memory_channel[object](2)
    options = RunOptions(crash_ingress=crash_recv)
    async with (
        running_gateway(spec.load(), options) as gw,
        mqtt_probe(mosquitto.host, mosquitto.port) as probe,
    ):
        comp = gw.comp
        await wait_until(lambda: comp.ingress_stats.subscribed, "ingress subscribed")
        await probe.publish(spec.xovis_topic, create(1, POS_1))
        await probe.publish(spec.xovis_topic, create(2, POS_2))
        await wait_until(lambda: comp.tracker.gauges().live_tracks == 2, "2 live tracks")

        def restarts() -> int:
            return comp.supervisor_stats.restarts.get("mqtt_ingress", 0)

        async def crash(n: int) -> None:
            crash_send.send_nowait(None)
            await wait_until(lambda: restarts() >= n, f"crash {n} counted")
            assert restarts() == n
            await wait_until(lambda: comp.ingress_stats.subscribed, f"re-subscribed after {n}")
            assert comp.tracker.gauges().live_tracks == 2  # the tracker's state is untouched

        await crash(1)
        await crash(2)
        m = await gw.http.metrics()
        assert m.value("gateway_task_restarts_total", task="mqtt_ingress") == 2
        assert m.value("gateway_task_restarts_total", task="journal") == 0
        await probe.publish(spec.xovis_topic, create(3))
        await wait_until(lambda: comp.tracker.gauges().live_tracks == 3, "processed after")

    crashed = [r.created for r in caplog.records if r.getMessage() == "task_crashed"]
    restarted = [r.created for r in caplog.records if r.getMessage() == "task_restarting"]
    assert len(crashed) == len(restarted) == 2
    first, second = (b - a for a, b in zip(crashed, restarted, strict=True))
    assert 0.5 <= first < 1.0  # backoff 0.5 s …
    assert 1.0 <= second < 2.0  # … then 1 s (exact schedule: tests/unit/test_supervisor.py)


async def test_s153_broker_killed_and_restarted_ingress_reconnects_and_resubscribes(
    tmp_path: Path, mosquitto: MosquittoServer, mqtt_topic_prefix: str
) -> None:
    spec = site(tmp_path, mosquitto, mqtt_topic_prefix)
    async with running_gateway(spec.load()) as gw:
        comp = gw.comp
        await wait_until(lambda: comp.ingress_stats.subscribed, "ingress subscribed")
        await wait_until(lambda: comp.egress_stats.connected, "egress connected")
        mosquitto.kill()
        await wait_until(lambda: not comp.ingress_stats.connected, "ingress sees the loss")
        status, body = await gw.http.health()
        assert status == 200  # < 30 s disconnected: degraded, not down
        assert body["components"]["mqtt_ingress"]["state"] == "degraded"
        assert body["components"]["mqtt_egress"]["state"] == "degraded"
        await trio.sleep(3.0)  # S153: the broker comes back on the same port after 3 s
        mosquitto.start()
        await wait_until(lambda: comp.ingress_stats.subscribed, "re-subscribed")
        async with mqtt_probe(mosquitto.host, mosquitto.port) as probe:
            await probe.publish(spec.xovis_topic, create(7, POS_1))
            await wait_until(lambda: comp.tracker.gauges().live_tracks == 1, "processed")
        m = await gw.http.metrics()
        assert m.value("gateway_mqtt_reconnects_total", client="ingress") >= 1
        assert m.value("gateway_mqtt_connected", client="ingress") == 1
        assert m.value("gateway_pos_occupancy", zone_id=str(POS_1)) == 1


async def test_s154_s157_health_ok_then_gate_degraded_and_idle_scrapes_identical(
    tmp_path: Path, mosquitto: MosquittoServer, mqtt_topic_prefix: str
) -> None:
    spec = site(tmp_path, mosquitto, mqtt_topic_prefix)
    async with running_gateway(spec.load()) as gw, trio.open_nursery() as nursery:
        comp = gw.comp
        mock = MockCloudPlus(MockOptions(port=spec.gate_port, heartbeat_interval_s=3600))
        mock_scope = trio.CancelScope()

        async def controller(*, task_status: trio.TaskStatus[None]) -> None:
            with mock_scope:
                async with trio.open_nursery() as inner:
                    await inner.start(mock.serve)
                    task_status.started()

        await nursery.start(controller)

        async def all_up() -> bool:
            status, body = await gw.http.health()
            ticked = body["components"]["tracker"]["last_tick_age_ms"] is not None
            return status == 200 and body["status"] == "ok" and ticked

        await wait_until(all_up, "everything up → status ok")
        _, body = await gw.http.health()
        assert {name: c["state"] for name, c in body["components"].items()} == {
            "tracker": "ok",
            "mqtt_ingress": "ok",
            "gate": "ok",
            "rs485": "disabled",
            "acc": "ok",
            "journal": "ok",
            "mqtt_egress": "ok",
            "broker": "disabled",
            "http": "ok",
        }
        assert body["components"]["mqtt_ingress"]["connected"] is True
        assert body["components"]["tracker"]["last_tick_age_ms"] <= 3000

        # S157: no traffic → counters and histogram buckets identical; scraping changes nothing
        first = (await gw.http.metrics()).cumulative()
        await trio.sleep(1.5)  # crosses a tick; no input arrives meanwhile
        for _ in range(3):
            await gw.http.metrics()
        second = (await gw.http.metrics()).cumulative()
        assert first == second
        assert len(first) > 150

        # the controller stops → 200 degraded, gate degraded
        mock_scope.cancel()
        await wait_until(lambda: not comp.gate_sender.connected, "gate link down")
        status, body = await gw.http.health()
        assert status == 200
        assert body["status"] == "degraded"
        assert body["components"]["gate"]["state"] == "degraded"
        assert body["components"]["gate"]["connected"] is False
        nursery.cancel_scope.cancel()
