"""Ordered shutdown (D15) of `gateway run` with a real mosquitto: S149, S150, second signal, S152.

S149/S150 and the second-signal test run the real process and send real signals; the journal is
read from disk after the exit (each flush is write + flush + fsync, see test_journal.py).
The S152 journal check runs in-process so a moved clock can make a held journey due at once and
a spy can see the fsync.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import trio
from runtime_harness import (
    POS_1,
    POS_2,
    STORE,
    GatewayProcess,
    SiteSpec,
    SteppedClock,
    event,
    free_port,
    gateway_process,
    mqtt_probe,
    read_journal,
    running_gateway,
    wait_subscribed,
    wait_until,
    xovis_message,
)

from gateway.app.runtime import RunOptions
from gateway.core.model import AccInput
from gateway.io import journal as journal_module
from gateway.tools.mock_cloudplus import MockCloudPlus, MockOptions

if TYPE_CHECKING:
    from conftest import MosquittoServer

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-1234"
S149_EXIT_S = 2.0  # scenarios.md S149: exit code 0 within 2 s
S150_EXIT_S = 5.5  # scenarios.md S150: egress broker unreachable → exit 0 within 5.5 s
POS = (1.0, 1.0, 1.7)  # inside the store, far from the exit region


def enter(tid: int, zone: int, *, create: bool = False) -> bytes:
    events = [event("TRACK_CREATE", tid)] if create else []
    events.append(event("ZONE_ENTRY", tid, zone))
    return xovis_message(*events, positions={tid: POS})


def leave(tid: int, zone: int, *, delete: bool = False) -> bytes:
    events = [event("ZONE_EXIT", tid, zone)]
    if delete:
        events.append(event("TRACK_DELETE", tid))
    return xovis_message(*events, positions={tid: POS})


async def events_total(gw: GatewayProcess) -> float:
    return (await gw.http.metrics()).value("gateway_events_total")


async def wait_events(gw: GatewayProcess, n: int) -> None:
    async def done() -> bool:
        return await events_total(gw) == n

    await wait_until(done, f"gateway_events_total == {n}")


def kinds(journey: dict[str, Any]) -> list[str]:
    return [e["t"] for e in journey["ev"]]


async def test_s149_sigterm_handles_queued_events_finalizes_journeys_exit_0_within_2_s(
    tmp_path: Path, mosquitto: MosquittoServer, mqtt_topic_prefix: str
) -> None:
    spec = SiteSpec(tmp_path, mqtt_port=mosquitto.port, topic_prefix=mqtt_topic_prefix)
    journeys_topic = spec.egress_topic("journeys")
    topic = spec.xovis_topic
    async with (
        trio.open_nursery() as nursery,
        mqtt_probe(mosquitto.host, mosquitto.port, journeys_topic) as probe,
    ):
        mock = MockCloudPlus(MockOptions(port=spec.gate_port, heartbeat_interval_s=3600))
        await nursery.start(mock.serve)
        # the tracker is held after 4 items (messages): the last 3 stay queued until SIGTERM
        async with gateway_process(spec, hooks=["tracker_hold_after=4"]) as gw:
            await wait_subscribed(gw.http, probe, topic)
            await probe.publish(topic, enter(1, POS_1, create=True))
            await wait_events(gw, 2)
            entered = trio.current_time()
            await probe.publish(topic, enter(2, POS_2, create=True))
            await wait_events(gw, 4)
            await trio.sleep(0.2)
            await probe.publish(topic, leave(2, POS_2, delete=True))  # → a held journey
            await wait_events(gw, 6)
            await trio.sleep_until(entered + 5.0)
            await probe.publish(topic, leave(1, POS_1))  # active journey, dwell 5000
            await wait_events(gw, 7)
            for message in (enter(1, STORE), leave(1, STORE), enter(1, STORE)):
                await probe.publish(topic, message)

            async def queued() -> bool:
                return (await gw.http.metrics()).value("gateway_event_queue_depth") == 3

            await wait_until(queued, "3 events queued behind the held tracker")
            m = await gw.http.metrics()
            assert m.value("gateway_journeys_active") == 1
            assert m.value("gateway_journeys_held") == 1
            assert m.value("gateway_gate_link_connected") == 1
            gw.signal(signal.SIGTERM)
            code, took = await gw.wait_exit()
        assert code == 0, gw.log_text()
        print(f"S149 SIGTERM → exit: {took:.3f} s")
        assert took < S149_EXIT_S, took
        await wait_until(lambda: len(probe.on(journeys_topic)) == 2, "2 journeys on MQTT")
        nursery.cancel_scope.cancel()

    assert gw.records("shutdown_drained")[0]["events"] == 3
    held, active = read_journal(spec.journal_path)  # emitted in (t1, jid) order
    assert active["tids"] == [1]
    assert active["out"] == "in_progress"
    assert 5000 <= active["dwell"] < 6000
    assert kinds(active) == [
        "track_create",
        "zone_entry",
        "zone_exit",
        "zone_entry",  # the 3 queued events, handled by the shutdown drain
        "zone_exit",
        "zone_entry",
        "shutdown",
    ]
    assert [e.get("z") for e in active["ev"][3:6]] == ["STORE"] * 3
    assert active["t1"] >= active["ev"][-1]["ts"]
    assert held["tids"] == [2]
    assert held["out"] == "lost"
    assert held["dwell"] > 0
    assert kinds(held)[-1] == "pending"
    assert "site" not in held
    published = [msgspec.json.decode(p) for p in probe.on(journeys_topic)]
    assert sorted(p["jid"] for p in published) == sorted([held["jid"], active["jid"]])
    for payload in published:
        assert next(iter(payload)) == "site"
        assert payload["site"] == "rt"


async def test_s150_s154_egress_broker_unreachable_exit_0_within_5_5_s_503_meanwhile(
    tmp_path: Path, mosquitto: MosquittoServer, mqtt_topic_prefix: str
) -> None:
    spec = SiteSpec(
        tmp_path,
        mqtt_port=mosquitto.port,
        egress_port=free_port(),  # nobody listens: journeys stay in the egress backlog
        topic_prefix=mqtt_topic_prefix,
        token=TOKEN,
    )
    async with (
        mqtt_probe(mosquitto.host, mosquitto.port) as probe,
        gateway_process(spec) as gw,
    ):
        await wait_subscribed(gw.http, probe, spec.xovis_topic)
        await probe.publish(spec.xovis_topic, enter(3, POS_1, create=True))
        await wait_events(gw, 2)
        await probe.publish(spec.xovis_topic, leave(3, POS_1, delete=True))
        await wait_events(gw, 4)
        gw.signal(signal.SIGTERM)
        # S154: during the shutdown /health is 503 `down`, POST routes 503 `shutting_down`
        await wait_until(lambda: bool(gw.records("shutdown_journal_flushed")), "journal flushed")
        status, body = await gw.http.health()
        assert status == 503
        assert body["status"] == "down"
        assert body["shutting_down"] is True
        r = await gw.http.post("/door/simulate", status="open")
        assert r.status_code == 503
        assert r.json() == {"ok": False, "error": "shutting_down"}
        code, took = await gw.wait_exit()
    assert code == 0, gw.log_text()
    print(f"S150 SIGTERM → exit: {took:.3f} s")
    assert took < S150_EXIT_S, took
    [journey] = read_journal(spec.journal_path)
    assert journey["tids"] == [3]
    assert journey["out"] == "lost"
    assert gw.records("shutdown_journal_flushed")[0]["lines"] == 1
    [incomplete] = gw.records("shutdown_egress_drain_incomplete")
    assert incomplete["backlog"] == 1


async def test_second_signal_skips_the_egress_drain_journal_kept_exit_1(
    tmp_path: Path, mosquitto: MosquittoServer, mqtt_topic_prefix: str
) -> None:
    spec = SiteSpec(
        tmp_path,
        mqtt_port=mosquitto.port,
        egress_port=free_port(),
        topic_prefix=mqtt_topic_prefix,
    )
    async with (
        mqtt_probe(mosquitto.host, mosquitto.port) as probe,
        gateway_process(spec) as gw,
    ):
        await wait_subscribed(gw.http, probe, spec.xovis_topic)
        await probe.publish(spec.xovis_topic, enter(4, POS_1, create=True))
        await wait_events(gw, 2)
        await probe.publish(spec.xovis_topic, leave(4, POS_1, delete=True))
        await wait_events(gw, 4)
        gw.signal(signal.SIGTERM)
        await wait_until(lambda: bool(gw.records("shutdown_journal_flushed")), "journal flushed")
        gw.signal(signal.SIGINT)  # interfaces.md §10: second signal → skip the drain, exit 1
        code, took = await gw.wait_exit()
    assert code == 1, gw.log_text()
    assert took < S149_EXIT_S, took  # the 5 s egress drain was skipped
    assert len(gw.records("shutdown_second_signal")) == 1
    [done] = gw.records("shutdown_complete")
    assert done["exit_code"] == 1
    assert [j["tids"] for j in read_journal(spec.journal_path)] == [[4]]


async def test_s152_tracker_crash_flushes_and_fsyncs_the_pending_journal_batch_exit_1(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    mqtt_topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fsynced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        fsynced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(journal_module.os, "fsync", spy)

    def crash_on_boom(item: object) -> None:
        if isinstance(item, AccInput) and item.receipt == "BOOM":
            raise RuntimeError("test hook: tracker crash")

    clock = SteppedClock()
    spec = SiteSpec(tmp_path, mqtt_port=mosquitto.port, topic_prefix=mqtt_topic_prefix, token=TOKEN)
    options = RunOptions(clock=clock, before_item=crash_on_boom)
    async with (
        running_gateway(spec.load(), options) as gw,
        mqtt_probe(mosquitto.host, mosquitto.port) as probe,
    ):
        comp = gw.comp
        await wait_until(lambda: comp.ingress_stats.subscribed, "ingress subscribed")
        await probe.publish(spec.xovis_topic, enter(5, POS_1, create=True))
        await wait_until(lambda: comp.tracker.counters.events_total == 2, "entered")
        clock.advance_ms(3000)
        await probe.publish(spec.xovis_topic, leave(5, POS_1, delete=True))
        await wait_until(lambda: comp.tracker.counters.events_total == 4, "left, held")
        clock.advance_ms(10_000)  # the stitch window has passed: emitted at the next tick
        await wait_until(lambda: comp.actor.stats.journey_egress_received == 1, "emitted")
        assert comp.journal_stats.lines == 0  # pending in the writer's 1 s batch
        assert fsynced == []
        r = await gw.http.post("/acc/simulate", receipt="BOOM")
        assert r.status_code == 200
        code = await gw.wait_exit()
    assert code == 1
    assert comp.fatal
    assert fsynced  # the final flush fsynced
    [journey] = read_journal(spec.journal_path)
    assert journey["tids"] == [5]
    assert journey["dwell"] >= 3000
    assert comp.journal_stats.lines == 1
