"""`/metrics` text against interfaces.md §9 name by name, S157, and the `gateway/metrics` payload.

The expected names, types, labels and bucket sets below are copied from the spec tables (§9.1,
§9.2, §7); the exposition is generated exactly as the HTTP route does (families built on the
caller's thread, `expose` for the text), from a Components with a real core tracker.
"""

from __future__ import annotations

import re

import pytest

from gateway.app.metrics import build_families, expose, metrics_payload
from gateway.app.state import Components
from gateway.config.model import (
    Config,
    GateConfig,
    MqttConfig,
    MqttEgressConfig,
    SiteConfig,
    ZonesConfig,
)
from gateway.core.clock import FakeClock
from gateway.core.model import AccInput, GateCmd
from gateway.core.tracker import Tracker

SITE = "netto"
R = ("100", "200", "400", "800", "1600", "3200", "6400", "12800", "25600", "51200", "+Inf")
C = ("10", "20", "40", "80", "160", "320", "640", "1280", "2560", "5120", "+Inf")
F = ("25", "50", "100", "200", "300", "500", "750", "1000", "1500", "2000", "3000", "5000",
     "10000", "20000", "50000", "100000", "+Inf")  # fmt: skip
J = ("100", "250", "500", "1000", "2000", "5000", "10000", "25000", "50000", "100000", "+Inf")

# §9.1 reference metrics: name → type (histograms: their bucket set)
REFERENCE: dict[str, str | tuple[str, ...]] = {
    "gateway_events_total": "counter",
    "gateway_events_per_sec": "gauge",
    "gateway_event_latency_us": R,
    "gateway_event_latency_p50_us": "gauge",
    "gateway_event_latency_p95_us": "gauge",
    "gateway_event_latency_p99_us": "gauge",
    "gateway_gate_commands_total": "counter",
    "gateway_gate_latency_us": R,
    "gateway_gate_latency_p99_us": "gauge",
    "gateway_gate_latency_max_us": "gauge",
    "gateway_gate_state": "gauge",
    "gateway_gate_open_duration_seconds": "gauge",
    "gateway_gate_long_opens_total": "counter",
    "gateway_gate_very_long_opens_total": "counter",
    "gateway_exits_total": "counter",
    "gateway_journeys_position_exit_total": "counter",
    "gateway_journeys_pass_through_total": "counter",
    "gateway_active_tracks": "gauge",
    "gateway_authorized_tracks": "gauge",
    "gateway_pos_occupancy": "gauge",
    "gateway_acc_events_total": "counter",
    "gateway_acc_matched_total": "counter",
    "gateway_acc_late_total": "counter",
    "gateway_acc_no_journey_total": "counter",
    "gateway_acc_empty_pos_time_ms": R,
    "gateway_acc_empty_pos_time_avg_ms": "gauge",
    "gateway_acc_empty_pos_time_max_ms": "gauge",
    "gateway_acc_empty_pos_count": "counter",
    "gateway_stitch_matched_total": "counter",
    "gateway_stitch_expired_total": "counter",
    "gateway_stitch_distance_cm": C,
    "gateway_stitch_distance_avg_cm": "gauge",
    "gateway_stitch_time_ms": R,
    "gateway_stitch_time_avg_ms": "gauge",
    "gateway_mqtt_events_received_total": "counter",
    "gateway_mqtt_events_dropped_total": "counter",
    "gateway_mqtt_drop_ratio": "gauge",
    "gateway_acc_events_received_total": "counter",
    "gateway_acc_events_dropped_total": "counter",
    "gateway_acc_drop_ratio": "gauge",
    "gateway_gate_cmds_dropped_total": "counter",
    "gateway_journey_egress_received_total": "counter",
    "gateway_journey_egress_dropped_total": "counter",
    "gateway_egress_drop_ratio": "gauge",
    "gateway_gate_queue_delay_us": R,
    "gateway_gate_queue_delay_p99_us": "gauge",
    "gateway_gate_queue_delay_max_us": "gauge",
    "gateway_event_queue_depth": "gauge",
    "gateway_gate_queue_depth": "gauge",
    "gateway_cloudplus_queue_depth": "gauge",
    "gateway_event_queue_utilization_pct": "gauge",
    "gateway_gate_queue_utilization_pct": "gauge",
    "gateway_gate_send_latency_us": R,
    "gateway_gate_send_latency_p99_us": "gauge",
    "gateway_gate_enqueue_to_send_us": R,
    "gateway_gate_enqueue_to_send_p99_us": "gauge",
}
# §9.2 new metrics
NEW: dict[str, str | tuple[str, ...]] = {
    "gateway_gate_recv_to_wire_us": F,
    "gateway_gate_recv_to_wire_p99_us": "gauge",
    "gateway_gate_recv_to_wire_max_us": "gauge",
    "gateway_event_queue_wait_us": F,
    "gateway_gate_cmds_stale_total": "counter",
    "gateway_gate_cmds_failed_total": "counter",
    "gateway_gate_link_connected": "gauge",
    "gateway_gate_connects_total": "counter",
    "gateway_gate_heartbeats_total": "counter",
    "gateway_gate_heartbeat_acks_total": "counter",
    "gateway_gate_rx_bad_frames_total": "counter",
    "gateway_door_fault_code": "gauge",
    "gateway_door_alarm_code": "gauge",
    "gateway_rs485_poll_jitter_us": J,
    "gateway_rs485_polls_total": "counter",
    "gateway_rs485_consecutive_failures": "gauge",
    "gateway_rs485_reopens_total": "counter",
    "gateway_xovis_messages_total": "counter",
    "gateway_xovis_frames_total": "counter",
    "gateway_xovis_malformed_total": "counter",
    "gateway_xovis_unknown_events_total": "counter",
    "gateway_xovis_ignored_total": "counter",
    "gateway_xovis_group_ignored_total": "counter",
    "gateway_orphan_events_total": "counter",
    "gateway_tracks_duplicate_create_total": "counter",
    "gateway_tracks_implicit_total": "counter",
    "gateway_stitch_pending": "gauge",
    "gateway_pos_occupancy_entries": "gauge",
    "gateway_journeys_active": "gauge",
    "gateway_journeys_held": "gauge",
    "gateway_journeys_emitted_total": "counter",
    "gateway_journeys_discarded_total": "counter",
    "gateway_acc_duplicates_total": "counter",
    "gateway_acc_buffered_total": "counter",
    "gateway_acc_buffer_matched_total": "counter",
    "gateway_acc_unmatched_total": "counter",
    "gateway_acc_connections": "gauge",
    "gateway_acc_connections_rejected_total": "counter",
    "gateway_acc_oversized_lines_total": "counter",
    "gateway_acc_malformed_lines_total": "counter",
    "gateway_journal_lines_total": "counter",
    "gateway_journal_write_errors_total": "counter",
    "gateway_journal_rotations_total": "counter",
    "gateway_mqtt_connected": "gauge",
    "gateway_mqtt_reconnects_total": "counter",
    "gateway_mqtt_egress_dropped_total": "counter",
    "gateway_ws_clients": "gauge",
    "gateway_ws_dropped_total": "counter",
    "gateway_analysis_log_dropped_total": "counter",
    "gateway_task_restarts_total": "counter",
    "gateway_build_info": "gauge",
}
# label → every value the spec lists (present from the start, so rate() works from scrape one)
LABELS: dict[str, tuple[str, set[str]]] = {
    "gateway_pos_occupancy": ("zone_id", {"1001", "1002"}),
    "gateway_gate_cmds_failed_total": (
        "reason",
        {"not_connected", "write_timeout", "write_error", "http_status", "http_error"},
    ),
    "gateway_gate_connects_total": ("result", {"ok", "failed"}),
    "gateway_rs485_polls_total": (
        "result",
        {"ok", "timeout", "bad_frame", "io_error", "port_closed", "skipped"},
    ),
    "gateway_orphan_events_total": ("type", {"ZONE_EXIT", "LINE_CROSS", "TRACK_DELETE"}),
    "gateway_journeys_emitted_total": (
        "outcome",
        {"exit", "returned", "lost", "pass_through", "in_progress"},
    ),
    "gateway_acc_unmatched_total": (
        "reason",
        {"unknown_ip", "no_candidate", "expired", "buffer_full", "shutdown"},
    ),
    "gateway_acc_connections_rejected_total": ("reason", {"not_allowed", "too_many"}),
    "gateway_mqtt_connected": ("client", {"ingress", "egress"}),
    "gateway_mqtt_reconnects_total": ("client", {"ingress", "egress"}),
    "gateway_mqtt_egress_dropped_total": (
        "reason",
        {"queue_full", "disconnected", "backlog_full", "positions_shed"},
    ),
    "gateway_task_restarts_total": (
        "task",
        {
            "mqtt_ingress",
            "acc_listener",
            "rs485",
            "gate_link",
            "gate_worker",
            "journal",
            "egress",
            "http",
            "analysis_log",
            "broker",
        },
    ),
    "gateway_build_info": ("version", {"1.0.0"}),
}

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
Sample = tuple[str, frozenset[tuple[str, str]]]


def parse(text: str) -> tuple[dict[Sample, float], dict[str, str]]:
    samples: dict[Sample, float] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            m = _SAMPLE.match(line)
            assert m is not None, line
            samples[(m.group(1), frozenset(_LABEL.findall(m.group(2) or "")))] = float(m.group(3))
    return samples, types


class Port:
    def try_send(self, cmd: GateCmd) -> bool:
        return True


def components() -> Components:
    config = Config(
        path="t.toml",
        site=SiteConfig(SITE),
        mqtt=MqttConfig(host="127.0.0.1"),
        gate=GateConfig(mode="tcp", tcp_addr="127.0.0.1:8000"),
        zones=ZonesConfig(pos_zones=(1001, 1002), gate_zone=1000, exit_line=1006),
        mqtt_egress=MqttEgressConfig(enabled=True, host="127.0.0.1", port=1883),
    )
    clock = FakeClock(now_ms=1000)
    comp = Components.create(config, clock)
    comp.tracker = Tracker(config, clock, Port())
    return comp


def scrape(comp: Components) -> tuple[dict[Sample, float], dict[str, str]]:
    return parse(expose(build_families(comp)).decode())


def of(samples: dict[Sample, float], name: str) -> list[dict[str, str]]:
    return [dict(labels) for n, labels in samples if n == name]


@pytest.mark.parametrize("name", sorted({**REFERENCE, **NEW}))
def test_every_spec_metric_is_exposed_exactly_as_named_with_site(name: str) -> None:
    comp = components()
    comp.xovis_stats.count_unknown("TRACK_SPLIT")  # an open label set: no sample until seen
    samples, types = scrape(comp)
    expected = {**REFERENCE, **NEW}[name]
    if isinstance(expected, tuple):
        assert types[name] == "histogram"
        buckets = of(samples, f"{name}_bucket")
        assert [b["le"] for b in buckets] == list(expected)
        assert all(b["site"] == SITE for b in buckets)
        for suffix in ("_sum", "_count"):
            assert [s["site"] for s in of(samples, name + suffix)] == [SITE]
        return
    assert types[name] == expected
    found = of(samples, name)
    assert found, f"no sample named {name}"
    assert all(s["site"] == SITE for s in found)
    label_names = {k for s in found for k in s} - {"site"}
    if name in LABELS:
        label, values = LABELS[name]
        assert label_names == {label}
        if name != "gateway_xovis_unknown_events_total":
            assert {s[label] for s in found} == values
    elif name == "gateway_xovis_unknown_events_total":
        assert [s["type"] for s in found] == ["TRACK_SPLIT"]
    else:
        assert label_names == set(), name


def test_no_unknown_gateway_metric_and_process_collectors_have_no_site() -> None:
    samples, types = scrape(components())
    spec_names = set(REFERENCE) | set(NEW)
    assert {n for n in types if n.startswith("gateway_")} == spec_names
    process = [labels for name, labels in samples if name.startswith(("process_", "python_"))]
    assert process
    assert all("site" not in dict(labels) for labels in process)


def test_s157_scrapes_change_nothing_and_counters_stay_identical_without_traffic() -> None:
    comp = components()
    clock = comp.clock
    assert isinstance(clock, FakeClock)
    tracker = comp.tracker
    for i in range(3):  # some history, so the counters are not all zero
        tracker.handle_acc(
            AccInput(recv_ns=clock.mono_ns(), ip="simulated", receipt=f"r{i}", pos="POS_1")
        )
    comp.gate_stats.send_latency_us.observe(150)
    comp.supervisor_stats.restarts["mqtt_ingress"] = 2

    def cumulative() -> dict[Sample, float]:
        samples, types = scrape(comp)
        out = {}
        for (name, labels), value in samples.items():
            family = next(
                (f for f in (name, name.removesuffix("_bucket"), name.removesuffix("_sum"),
                             name.removesuffix("_count")) if f in types),
                None,
            )  # fmt: skip
            if family and types[family] in ("counter", "histogram") and ("site", SITE) in labels:
                out[(name, labels)] = value
        return out

    first = cumulative()
    assert first[("gateway_events_total", frozenset({("site", SITE)}))] == 3
    clock.set(clock.now_ms + 5000)  # "5 s apart"
    tracker.tick()
    for _ in range(5):
        scrape(comp)
    assert cumulative() == first


def test_metrics_payload_fields_in_spec_order() -> None:
    comp = components()
    payload = metrics_payload(comp)
    assert list(payload) == [
        "site", "ts", "gate_state", "gate_id", "events_total", "events_per_sec",
        "avg_latency_us", "max_latency_us", "lat_buckets", "lat_p50_us", "lat_p95_us",
        "lat_p99_us", "active_tracks", "authorized_tracks", "gate_cmds", "gate_lat_buckets",
        "gate_lat_avg_us", "gate_lat_max_us", "gate_lat_p99_us", "event_queue_depth",
        "gate_queue_depth", "cloudplus_queue_depth", "event_queue_utilization_pct",
        "gate_queue_utilization_pct", "health",
    ]  # fmt: skip
    assert payload["site"] == SITE
    assert payload["gate_id"] == 1
    assert len(payload["lat_buckets"]) == 11
    assert len(payload["gate_lat_buckets"]) == 11
    assert payload["health"] in ("ok", "degraded", "down")


def test_manual_opens_count_into_gate_commands_and_drops() -> None:
    comp = components()
    comp.manual_stats.accepted = 2
    comp.manual_stats.dropped = 1
    comp.gate_stats.cmds_dropped = 3
    samples, _ = scrape(comp)
    site = frozenset({("site", SITE)})
    assert samples[("gateway_gate_commands_total", site)] == 2
    assert samples[("gateway_gate_cmds_dropped_total", site)] == 4
    assert metrics_payload(comp)["gate_cmds"] == 2
