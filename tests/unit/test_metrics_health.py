"""`GET /health` rules (interfaces.md §8, S154) on a hand-set Components, no sockets.

Ages are made by moving the recorded instants into the past (the health code reads the process
clock), so "30 s disconnected" takes no time. Boundaries are probed with a 100 ms margin.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import pytest

from gateway.app.health import build_health
from gateway.app.latest import LatestValue
from gateway.app.state import Components
from gateway.config.model import (
    Config,
    GateConfig,
    MqttConfig,
    MqttEgressConfig,
    Rs485Config,
    SiteConfig,
    ZonesConfig,
)
from gateway.core.clock import FakeClock
from gateway.core.model import DoorReading, GateCmd
from gateway.core.tracker import Tracker
from gateway.io.gate_link import GateLink

S = 1_000_000_000


class Port:
    def try_send(self, cmd: GateCmd) -> bool:
        return True


def now_ns() -> int:
    return time.monotonic_ns()


def healthy(**overrides: Any) -> Components:
    """Everything up: ingress/egress connected, gate linked, ACC listening, ticked just now."""
    config = Config(
        path="t.toml",
        site=SiteConfig("netto"),
        mqtt=MqttConfig(host="127.0.0.1"),
        gate=GateConfig(mode="tcp", tcp_addr="127.0.0.1:8000"),
        zones=ZonesConfig(pos_zones=(1001,), gate_zone=1000, exit_line=1006),
        mqtt_egress=MqttEgressConfig(enabled=True, host="127.0.0.1", port=1883),
    )
    config = attrs.evolve(config, **overrides)
    clock = FakeClock(now_ms=now_ns() // 1_000_000)
    comp = Components.create(config, clock)
    comp.tracker = Tracker(config, clock, Port())
    comp.tracker.tick()
    comp.door = LatestValue(DoorReading("closed"))
    comp.ingress_stats.connected = True
    comp.egress_stats.connected = True
    comp.acc_stats.listening = True
    if isinstance(comp.gate_sender, GateLink):
        comp.gate_sender.connected = True
    return comp


def states(comp: Components) -> tuple[int, str, dict[str, str]]:
    body, status = build_health(comp)
    return status, body["status"], {k: v["state"] for k, v in body["components"].items()}


def tick_at(comp: Components, age_ms: int) -> None:
    clock = comp.clock
    assert isinstance(clock, FakeClock)
    clock.set(now_ns() // 1_000_000 - age_ms)
    comp.tracker.tick()


def test_everything_up_is_200_ok_with_the_spec_shape() -> None:
    body, status = build_health(healthy())
    assert status == 200
    assert body["status"] == "ok"
    assert list(body) == [
        "status", "site", "version", "ts", "uptime_s", "shutting_down", "components",
    ]  # fmt: skip
    assert list(body["components"]) == [
        "tracker", "mqtt_ingress", "gate", "rs485", "acc", "journal", "mqtt_egress", "broker",
        "http",
    ]  # fmt: skip
    c = body["components"]
    assert c["tracker"].keys() == {"state", "last_tick_age_ms", "live_tracks", "event_queue_depth"}
    assert c["mqtt_ingress"].keys() == {
        "state", "connected", "since", "last_message_age_ms", "reconnects",
    }  # fmt: skip
    assert c["gate"].keys() == {"state", "mode", "connected", "since", "last_rx_age_ms", "detail"}
    assert c["journal"].keys() == {"state", "path", "last_flush_age_ms", "write_errors"}
    assert c["mqtt_egress"].keys() == {"state", "connected", "backlog"}
    assert c["http"] == {"state": "ok", "ws_clients": 0}
    assert c["rs485"]["state"] == "disabled"
    assert c["broker"] == {"state": "disabled"}


def test_tracker_down_when_its_last_tick_is_older_than_3000_ms() -> None:
    comp = healthy()
    tick_at(comp, 2900)
    assert states(comp)[:2] == (200, "ok")
    tick_at(comp, 3100)
    status, overall, parts = states(comp)
    assert (status, overall, parts["tracker"]) == (503, "down", "down")


def test_tracker_before_the_first_tick_counts_from_start() -> None:
    comp = healthy()
    comp.tracker = Tracker(comp.config, FakeClock(), Port())  # never ticked
    comp.started_mono_ns = now_ns() - 2 * S
    body, status = build_health(comp)
    assert (status, body["components"]["tracker"]["state"]) == (200, "ok")
    assert body["components"]["tracker"]["last_tick_age_ms"] is None
    comp.started_mono_ns = now_ns() - 4 * S
    assert states(comp)[2]["tracker"] == "down"


def test_fatal_tracker_is_down() -> None:
    comp = healthy()
    comp.fatal = True
    assert states(comp)[:2] == (503, "down")


@pytest.mark.parametrize(
    ("started_s_ago", "since_s_ago", "expected"),
    [
        (29.9, None, "degraded"),  # never connected, 29.9 s after start
        (30.1, None, "down"),  # not connected 30 s after start (S154 "broker down ≥ 30 s")
        (100.0, 29.9, "degraded"),  # lost 29.9 s ago
        (100.0, 30.1, "down"),
    ],
)
def test_mqtt_ingress_degraded_then_down_after_30_s(
    started_s_ago: float, since_s_ago: float | None, expected: str
) -> None:
    comp = healthy()
    comp.ingress_stats.connected = False
    comp.started_mono_ns = now_ns() - int(started_s_ago * S)
    if since_s_ago is not None:
        comp.ingress_stats.since_wall_ms = time.time_ns() // 1_000_000 - int(since_s_ago * 1000)
    status, overall, parts = states(comp)
    assert parts["mqtt_ingress"] == expected
    assert (status, overall) == ((503, "down") if expected == "down" else (200, "degraded"))


def test_gate_degraded_when_the_link_is_down_or_the_last_http_command_failed() -> None:
    comp = healthy()
    assert isinstance(comp.gate_sender, GateLink)
    comp.gate_sender.connected = False
    assert states(comp) == (200, "degraded", {**states(healthy())[2], "gate": "degraded"})
    http = healthy(gate=GateConfig(mode="http", http_url="http://127.0.0.1:1/open"))
    body, _ = build_health(http)
    assert body["components"]["gate"] == {
        "state": "ok", "mode": "http", "last_command_failed": False,
    }  # fmt: skip
    http.gate_stats.last_http_failed = True
    assert states(http)[2]["gate"] == "degraded"


def test_rs485_degraded_on_failures_closed_port_or_unknown_door() -> None:
    def rs485() -> Components:
        comp = healthy(rs485=Rs485Config(enabled=True, device="/dev/ttyX"))
        comp.rs485_stats.port_open = True
        return comp

    assert states(rs485())[2]["rs485"] == "ok"
    failing = rs485()
    failing.rs485_stats.consecutive_failures = 1
    closed = rs485()
    closed.rs485_stats.port_open = False
    unknown = rs485()
    unknown.door.set(DoorReading("unknown"))
    for comp in (failing, closed, unknown):
        assert states(comp)[:2] == (200, "degraded")
        assert states(comp)[2]["rs485"] == "degraded"


def test_acc_journal_egress_rules() -> None:
    comp = healthy()
    comp.acc_stats.listening = False
    assert states(comp)[2]["acc"] == "degraded"
    comp = healthy()
    comp.journal_stats.last_error_mono_ns = now_ns() - 59 * S
    assert states(comp)[2]["journal"] == "degraded"  # an error in the last 60 s
    comp.journal_stats.last_error_mono_ns = now_ns() - 61 * S
    assert states(comp)[2]["journal"] == "ok"
    comp = healthy()
    comp.egress_stats.connected = False
    assert states(comp)[:2] == (200, "degraded")
    assert states(comp)[2]["mqtt_egress"] == "degraded"
    disabled = healthy(mqtt_egress=MqttEgressConfig(enabled=False, host="127.0.0.1", port=1883))
    disabled.egress_stats.connected = False
    assert states(disabled)[:2] == (200, "ok")
    assert states(disabled)[2]["mqtt_egress"] == "disabled"


def test_shutting_down_is_503_down_whatever_the_components() -> None:
    comp = healthy()
    comp.shutting_down = True
    body, status = build_health(comp)
    assert (status, body["status"], body["shutting_down"]) == (503, "down", True)
