"""Egress router without a broker: journey backlog window, offer(), live feed, metrics tick."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from gateway.codecs.journey_json import encode_payload
from gateway.config.model import (
    Config,
    GateConfig,
    MqttConfig,
    MqttEgressConfig,
    SiteConfig,
    ZonesConfig,
)
from gateway.core.effects import Publish
from gateway.io.egress import (
    DRAIN_S,
    EgressStats,
    JourneyBacklog,
    JourneyEntry,
    _Router,
    offer,
    run_egress,
    topic_map,
)


def make_config(*, enabled: bool, interval_s: int = 5) -> Config:
    return Config(
        path="test.toml",
        site=SiteConfig("s1"),
        mqtt=MqttConfig(host="127.0.0.1"),
        gate=GateConfig(mode="tcp", tcp_addr="127.0.0.1:8000"),
        zones=ZonesConfig(pos_zones=(1001,), gate_zone=1000, exit_line=1006),
        mqtt_egress=MqttEgressConfig(
            enabled=enabled, host="127.0.0.1", port=1, metrics_publish_interval_secs=interval_s
        ),
    )


def entries(n: int) -> list[JourneyEntry]:
    return [JourneyEntry("gateway/journeys", b"j%d" % i) for i in range(n)]


# -- JourneyBacklog ------------------------------------------------------------------------------
def drain_sendable(backlog: JourneyBacklog) -> list[JourneyEntry]:
    out = []
    while (entry := backlog.next_to_send()) is not None:
        out.append(entry)
    return out


def test_backlog_sends_in_order_with_at_most_max_unacked() -> None:
    backlog = JourneyBacklog(capacity=100, max_unacked=20)
    items = entries(30)
    for e in items:
        assert backlog.append(e) is None
    first = drain_sendable(backlog)
    assert first == items[:20]
    assert backlog.in_flight == 20
    backlog.acked(items[0])
    backlog.acked(items[1])
    assert len(backlog) == 28
    assert drain_sendable(backlog) == items[20:22]


def test_backlog_journey_leaves_only_on_ack_and_resends_after_reconnect() -> None:
    backlog = JourneyBacklog(capacity=100, max_unacked=20)
    items = entries(5)
    for e in items:
        backlog.append(e)
    assert drain_sendable(backlog) == items
    backlog.acked(items[0])
    backlog.acked(items[1])
    backlog.reset_connection()  # connection lost before the other PUBACKs
    assert len(backlog) == 3
    assert drain_sendable(backlog) == items[2:]  # at-least-once: re-sent in order


def test_backlog_full_drops_oldest_and_keeps_window_consistent() -> None:
    backlog = JourneyBacklog(capacity=3, max_unacked=2)
    a, b, c, d = entries(4)
    for e in (a, b, c):
        backlog.append(e)
    assert drain_sendable(backlog) == [a, b]
    assert backlog.append(d) is a  # oldest (in flight) dropped
    assert backlog.next_to_send() is None  # a's PUBACK is still outstanding
    backlog.acked(a)  # late ack for the dropped one removes nothing
    assert len(backlog) == 3
    assert backlog.next_to_send() is c
    backlog.acked(b)
    backlog.acked(c)
    assert drain_sendable(backlog) == [d]
    backlog.acked(d)
    assert len(backlog) == 0
    assert backlog.in_flight == 0


# -- offer -----------------------------------------------------------------------------------
async def test_offer_counts_queue_full_and_ignores_closed_channel() -> None:
    send, recv = trio.open_memory_channel[Publish](1)
    stats = EgressStats()
    item = Publish("zone", {"site": "s1"})
    assert offer(send, item, stats)
    assert not offer(send, item, stats)
    assert stats.dropped["queue_full"] == 1
    recv.close()
    assert not offer(send, item, stats)
    assert stats.dropped["queue_full"] == 1


def test_stats_start_with_every_reason_at_zero() -> None:
    assert EgressStats().dropped == {
        "queue_full": 0,
        "disconnected": 0,
        "backlog_full": 0,
        "positions_shed": 0,
    }


def test_topic_map_covers_every_kind() -> None:
    cfg = make_config(enabled=True).mqtt_egress
    assert topic_map(cfg) == {
        "journey": "gateway/journeys",
        "zone": "gateway/events",
        "track": "gateway/tracks",
        "gate": "gateway/gate",
        "acc": "gateway/acc",
        "position": "gateway/positions",
        "metrics": "gateway/metrics",
    }


# -- router while disconnected -------------------------------------------------------------------
async def test_router_disconnected_drops_qos0_and_keeps_journeys() -> None:
    stats = EgressStats()
    feed: list[tuple[str, bytes]] = []
    router = _Router(make_config(enabled=True), stats, lambda k, d: feed.append((k, d)))
    router.route(Publish("zone", {"site": "s1", "tid": 1}))
    router.route(Publish("position", {"site": "s1", "tid": 1}))
    router.route(Publish("journey", {"site": "s1", "jid": "a"}))
    assert stats.dropped["disconnected"] == 2
    assert stats.backlog == 1
    assert len(router.backlog) == 1
    assert [k for k, _ in feed] == ["zone", "position", "journey"]  # live feed regardless


async def test_router_backlog_full_counts() -> None:
    stats = EgressStats()
    router = _Router(make_config(enabled=True), stats, None)
    router.backlog = JourneyBacklog(capacity=2)
    for i in range(5):
        router.route(Publish("journey", {"site": "s1", "jid": str(i)}))
    assert stats.dropped["backlog_full"] == 3
    assert stats.backlog == 2


# -- run_egress with MQTT egress disabled ------------------------------------------------------
async def test_disabled_egress_feeds_live_feed_once_encoded_and_returns_on_close() -> None:
    send, recv = trio.open_memory_channel[Publish](10)
    stats = EgressStats()
    feed: list[tuple[str, bytes]] = []
    payload: dict[str, Any] = {"site": "s1", "tid": 7, "t": "zone_entry", "z": "POS_1"}
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_egress(
                make_config(enabled=False),
                recv,
                stats,
                livefeed=lambda k, d: feed.append((k, d)),
                metrics_payload=None,
                task_status=task_status,
            )
        )
        send.send_nowait(Publish("zone", payload))
        send.send_nowait(Publish("journey", {"site": "s1", "jid": "x"}))
        send.close()
    assert feed == [
        ("zone", encode_payload(payload)),
        ("journey", encode_payload({"site": "s1", "jid": "x"})),
    ]
    assert stats.dropped["disconnected"] == 0  # disabled: nothing is an MQTT drop
    assert stats.published == 0


async def test_metrics_tick_goes_to_live_feed_every_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, recv = trio.open_memory_channel[Publish](10)
    feed: list[tuple[str, bytes, float]] = []
    calls = [0]

    def metrics() -> dict[str, Any]:
        calls[0] += 1
        return {"site": "s1", "n": calls[0]}

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_egress(
                make_config(enabled=False, interval_s=5),
                recv,
                EgressStats(),
                livefeed=lambda k, d: feed.append((k, d, trio.current_time())),
                metrics_payload=metrics,
            )
        )
        await trio.sleep(16)
        send.close()
    assert [(k, t) for k, _, t in feed] == [("metrics", 5.0), ("metrics", 10.0), ("metrics", 15.0)]
    assert feed[0][1] == b'{"site":"s1","n":1}'


async def test_shutdown_drain_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    """A journey that can never be acknowledged: the drain wait gives up after DRAIN_S."""
    # run_egress itself would dial out when enabled; stay socket-free by driving _Router
    router = _Router(make_config(enabled=True), EgressStats(), None)
    router.route(Publish("journey", {"site": "s1", "jid": "z"}))
    t0 = trio.current_time()
    with trio.move_on_after(DRAIN_S):
        await router.wait_backlog_empty()
    assert trio.current_time() - t0 == pytest.approx(DRAIN_S)
    assert len(router.backlog) == 1
