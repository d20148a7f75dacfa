"""Prometheus exposition and the periodic `gateway/metrics` payload (interfaces.md §7, §9).

Metric families are built on the Trio thread from plain-int counters (a consistent snapshot, no
locks); only the text encoding runs in a worker thread. Every sample carries `site`; the
prometheus-client process/GC collectors are added without it. Nothing resets on read (D16).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest

from gateway import __version__
from gateway.core.stats import (
    BUCKETS_R,
    Histogram,
    RollingWindow,
    bucket_percentile,
    window_counts,
)
from gateway.io.gate_worker import FAILED_REASONS

if TYPE_CHECKING:
    from gateway.app.state import Components

OVERFLOW_US = 102_400  # reference: percentile in the overflow bucket is reported as this
# interfaces.md §9.2 `gateway_task_restarts_total{task}`: every supervised task, 0 until it restarts
SUPERVISED_TASKS = (
    "mqtt_ingress", "acc_listener", "rs485", "gate_link", "gate_worker", "journal", "egress",
    "http", "analysis_log", "broker",
)  # fmt: skip
# §9.1 counters whose reference name has no `_total`; prometheus-client would name their
# HELP/TYPE lines `<name>_total`, which no longer matches the sample, so the text is fixed up
UNSUFFIXED_COUNTERS = ("gateway_acc_empty_pos_count",)


class _Families:
    """Small builder: every family gets the `site` label first."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.out: list[Metric] = []

    def counter(self, name: str, doc: str, value: float) -> None:
        fam: Metric
        if name.endswith("_total"):
            fam = CounterMetricFamily(name, doc, labels=["site"])
            fam.add_metric([self.site], value)
        else:  # reference names without `_total` (e.g. gateway_acc_empty_pos_count)
            fam = Metric(name, doc, "counter")
            fam.add_sample(name, {"site": self.site}, value)
        self.out.append(fam)

    def counter_by(self, name: str, doc: str, label: str, values: Mapping[str, int]) -> None:
        fam = CounterMetricFamily(name, doc, labels=["site", label])
        for key, value in sorted(values.items()):
            fam.add_metric([self.site, str(key)], value)
        self.out.append(fam)

    def gauge(self, name: str, doc: str, value: float) -> None:
        fam = GaugeMetricFamily(name, doc, labels=["site"])
        fam.add_metric([self.site], value)
        self.out.append(fam)

    def gauge_by(self, name: str, doc: str, label: str, values: Mapping[Any, float]) -> None:
        fam = GaugeMetricFamily(name, doc, labels=["site", label])
        for key, value in sorted(values.items()):
            fam.add_metric([self.site, str(key)], value)
        self.out.append(fam)

    def histogram(self, name: str, doc: str, h: Histogram) -> None:
        fam = HistogramMetricFamily(name, doc, labels=["site"])
        cumulative = h.cumulative()
        buckets = [(str(b), cumulative[i]) for i, b in enumerate(h.bounds)]
        buckets.append(("+Inf", cumulative[-1]))
        fam.add_metric([self.site], buckets, sum_value=h.total)
        self.out.append(fam)


def _ratio(dropped: int, received: int) -> float:
    return round(dropped / received, 6) if received else 0.0


def _depth(channel: Any) -> tuple[int, int]:
    if channel is None:
        return 0, 1
    st = channel.statistics()
    cap = st.max_buffer_size
    return st.current_buffer_used, int(cap) if cap and cap != float("inf") else 1


def build_families(comp: Components) -> list[Metric]:
    """All gateway families; call on the Trio thread."""
    now = time.monotonic_ns() // 1_000_000
    f = _Families(comp.config.site.id)
    c = comp.tracker.counters
    g = comp.tracker.gauges()
    gs, ing, xs, acc, rs = (
        comp.gate_stats,
        comp.ingress_stats,
        comp.xovis_stats,
        comp.acc_stats,
        comp.rs485_stats,
    )
    ev_depth, ev_cap = _depth(comp.events_send)
    gate_depth, gate_cap = _depth(comp.gate_send)

    def p(window: RollingWindow, q: float) -> int:
        return window.percentile(now, q)

    # --- reference metrics (§9.1) ---
    f.counter("gateway_events_total", "Items handled by the tracker", c.events_total)
    f.gauge("gateway_events_per_sec", "Event rate over the last 10 s", c.event_rate.per_sec(now))
    f.histogram("gateway_event_latency_us", "Tracker handler time per event", c.event_latency_us)
    for q, suffix in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        f.gauge(
            f"gateway_event_latency_{suffix}_us",
            f"Handler time {suffix} (60 s)",
            p(c.event_latency_window, q),
        )
    f.counter(
        "gateway_gate_commands_total",
        "Gate commands enqueued by the tracker plus manual opens accepted",
        c.gate_commands_total + comp.manual_stats.accepted,
    )
    f.histogram("gateway_gate_latency_us", "Trigger receipt to command enqueued", c.gate_latency_us)
    f.gauge(
        "gateway_gate_latency_p99_us", "Gate latency p99 (60 s)", p(c.gate_latency_window, 0.99)
    )
    f.gauge(
        "gateway_gate_latency_max_us", "Gate latency max (60 s)", c.gate_latency_window.max(now)
    )
    f.gauge("gateway_gate_state", "0 closed/unknown, 1 moving, 2 open", g.gate_state)
    f.gauge(
        "gateway_gate_open_duration_seconds",
        "Current open period",
        round(g.open_duration_s, 6),
    )
    f.counter("gateway_gate_long_opens_total", "Open periods >= 30 s", c.gate_long_opens)
    f.counter("gateway_gate_very_long_opens_total", "Open periods >= 60 s", c.gate_very_long_opens)
    f.counter("gateway_exits_total", "Exit-line forward completions", c.exits)
    f.counter(
        "gateway_journeys_position_exit_total", "Exits inferred from position",
        c.journeys_position_exit,
    )  # fmt: skip
    f.counter(
        "gateway_journeys_pass_through_total", "Pass-through outcomes", c.journeys_pass_through
    )
    f.gauge("gateway_active_tracks", "Live persons", g.live_tracks)
    f.gauge("gateway_authorized_tracks", "Authorized live persons", g.authorized_tracks)
    f.gauge_by("gateway_pos_occupancy", "Present tracks per POS zone", "zone_id", g.pos_occupancy)
    f.counter("gateway_acc_events_total", "Mapped ACCs evaluated", c.acc_events)
    f.counter("gateway_acc_matched_total", "ACCs matched", c.acc_matched)
    f.counter("gateway_acc_late_total", "ACC matches that opened the gate", c.acc_late)
    f.counter("gateway_acc_no_journey_total", "Matched track without journey", c.acc_no_journey)
    f.histogram(
        "gateway_acc_empty_pos_time_ms",
        "Time since the zone's last exit when an ACC found nobody",
        c.acc_empty_pos_time_ms,
    )
    f.gauge(
        "gateway_acc_empty_pos_time_avg_ms", "Lifetime average", round(c.acc_empty_pos_time_ms.avg)
    )
    f.gauge("gateway_acc_empty_pos_time_max_ms", "Max (60 s)", c.acc_empty_pos_window.max(now))
    f.counter("gateway_acc_empty_pos_count", "Empty-POS observations", c.acc_empty_pos_count)
    f.counter("gateway_stitch_matched_total", "Stitches", c.stitch_matched)
    f.counter("gateway_stitch_expired_total", "Stitch pool expiries", c.stitch_expired)
    f.histogram("gateway_stitch_distance_cm", "Stitch distance", c.stitch_distance_cm)
    f.gauge("gateway_stitch_distance_avg_cm", "Lifetime average", round(c.stitch_distance_cm.avg))
    f.histogram("gateway_stitch_time_ms", "Stitch gap", c.stitch_time_ms)
    f.gauge("gateway_stitch_time_avg_ms", "Lifetime average", round(c.stitch_time_ms.avg))
    f.counter("gateway_mqtt_events_received_total", "Ingress events accepted", xs.events_received)
    f.counter(
        "gateway_mqtt_events_dropped_total", "Ingress events dropped (channel full)",
        ing.events_dropped,
    )  # fmt: skip
    f.gauge(
        "gateway_mqtt_drop_ratio",
        "dropped / received",
        _ratio(ing.events_dropped, xs.events_received),
    )
    f.counter("gateway_acc_events_received_total", "ACC lines accepted", acc.events_received)
    f.counter("gateway_acc_events_dropped_total", "ACCs dropped (channel full)", acc.events_dropped)
    f.gauge(
        "gateway_acc_drop_ratio",
        "dropped / received",
        _ratio(acc.events_dropped, acc.events_received),
    )
    gate_dropped = c.gate_cmds_dropped + gs.cmds_dropped + comp.manual_stats.dropped
    f.counter(
        "gateway_gate_cmds_dropped_total",
        "Open commands that never reached the controller",
        gate_dropped,
    )
    rstats = comp.actor.stats if comp.actor is not None else None
    j_recv = rstats.journey_egress_received if rstats else 0
    j_drop = (rstats.journey_egress_dropped if rstats else 0) + comp.journal_stats.dropped
    f.counter("gateway_journey_egress_received_total", "Journeys sent to the journal", j_recv)
    f.counter("gateway_journey_egress_dropped_total", "Journeys dropped before the journal", j_drop)
    f.gauge("gateway_egress_drop_ratio", "dropped / received", _ratio(j_drop, j_recv))
    f.histogram("gateway_gate_queue_delay_us", "Enqueue to worker pickup", gs.queue_delay_us)
    f.gauge("gateway_gate_queue_delay_p99_us", "p99 (60 s)", p(gs.queue_delay_window, 0.99))
    f.gauge("gateway_gate_queue_delay_max_us", "max (60 s)", gs.queue_delay_window.max(now))
    f.gauge("gateway_event_queue_depth", "Events channel depth", ev_depth)
    f.gauge("gateway_gate_queue_depth", "Gate channel depth", gate_depth)
    f.gauge(
        "gateway_cloudplus_queue_depth",
        "Writes waiting for the link lock",
        gs.cloudplus_queue_depth,
    )
    f.gauge("gateway_event_queue_utilization_pct", "Events channel use", ev_depth * 100 // ev_cap)
    f.gauge("gateway_gate_queue_utilization_pct", "Gate channel use", gate_depth * 100 // gate_cap)
    f.histogram(
        "gateway_gate_send_latency_us", "Socket write / HTTP round trip", gs.send_latency_us
    )
    f.gauge("gateway_gate_send_latency_p99_us", "p99 (60 s)", p(gs.send_latency_window, 0.99))
    f.histogram("gateway_gate_enqueue_to_send_us", "Enqueue to write done", gs.enqueue_to_send_us)
    f.gauge("gateway_gate_enqueue_to_send_p99_us", "p99 (60 s)", p(gs.enqueue_to_send_window, 0.99))

    # --- new metrics (§9.2) ---
    f.histogram(
        "gateway_gate_recv_to_wire_us",
        "Trigger bytes read to open frame written",
        gs.recv_to_wire_us,
    )
    f.gauge("gateway_gate_recv_to_wire_p99_us", "p99 (60 s)", p(gs.recv_to_wire_window, 0.99))
    f.gauge("gateway_gate_recv_to_wire_max_us", "max (60 s)", gs.recv_to_wire_window.max(now))
    f.histogram("gateway_event_queue_wait_us", "Receipt to handler start", c.event_queue_wait_us)
    f.counter("gateway_gate_cmds_stale_total", "Dropped as stale", gs.cmds_stale)
    f.counter_by(
        "gateway_gate_cmds_failed_total", "Failed gate commands", "reason",
        {**dict.fromkeys(FAILED_REASONS, 0), **gs.cmds_failed},
    )  # fmt: skip
    f.gauge("gateway_gate_link_connected", "1 when the CloudPlus link is up", gs.link_connected)
    f.counter_by("gateway_gate_connects_total", "Connect attempts", "result", gs.connects)
    f.counter("gateway_gate_heartbeats_total", "Heartbeats received", gs.heartbeats)
    f.counter("gateway_gate_heartbeat_acks_total", "Heartbeat acks sent", gs.heartbeat_acks)
    f.counter(
        "gateway_gate_rx_bad_frames_total", "Bad frames from the controller", gs.rx_bad_frames
    )
    door = comp.door_reading() if comp.door is not None else None
    f.gauge("gateway_door_fault_code", "Last board fault byte", door.fault if door else rs.fault)
    f.gauge("gateway_door_alarm_code", "Last board alarm byte", door.alarm if door else rs.alarm)
    f.histogram("gateway_rs485_poll_jitter_us", "Poll start deviation", rs.poll_jitter_us)
    f.counter_by("gateway_rs485_polls_total", "RS485 polls by result", "result", rs.polls)
    f.gauge(
        "gateway_rs485_consecutive_failures", "Consecutive failed polls", rs.consecutive_failures
    )
    f.counter("gateway_rs485_reopens_total", "Port reopen attempts", rs.reopens)
    f.counter("gateway_xovis_messages_total", "Xovis messages", xs.messages)
    f.counter("gateway_xovis_frames_total", "Xovis frames", xs.frames)
    f.counter("gateway_xovis_malformed_total", "Skipped malformed elements", xs.malformed)
    f.counter_by(
        "gateway_xovis_unknown_events_total", "Unknown event types", "type", xs.unknown_events
    )
    f.counter("gateway_xovis_ignored_total", "JSON without live_data", xs.ignored)
    f.counter("gateway_xovis_group_ignored_total", "GROUP elements dropped", xs.group_ignored)
    f.counter_by("gateway_orphan_events_total", "Events for unknown ids", "type", c.orphan_events)
    f.counter(
        "gateway_tracks_duplicate_create_total", "Duplicate creates", c.tracks_duplicate_create
    )
    f.counter("gateway_tracks_implicit_total", "Implicit creates", c.tracks_implicit)
    f.gauge("gateway_stitch_pending", "Stitch pool size", g.stitch_pending)
    f.gauge("gateway_pos_occupancy_entries", "Occupancy entries", g.occupancy_entries)
    f.gauge("gateway_journeys_active", "Active journeys", g.journeys_active)
    f.gauge("gateway_journeys_held", "Held journeys", g.journeys_held)
    f.counter_by(
        "gateway_journeys_emitted_total", "Emitted journeys", "outcome", c.journeys_emitted
    )
    f.counter(
        "gateway_journeys_discarded_total",
        "Journeys failing the egress filter",
        c.journeys_discarded,
    )
    f.counter("gateway_acc_duplicates_total", "Duplicate receipts", c.acc_duplicates)
    f.counter("gateway_acc_buffered_total", "ACCs buffered", c.acc_buffered)
    f.counter(
        "gateway_acc_buffer_matched_total", "ACCs matched from the buffer", c.acc_buffer_matched
    )
    f.counter_by("gateway_acc_unmatched_total", "Unmatched ACCs", "reason", c.acc_unmatched)
    f.gauge("gateway_acc_connections", "Open ACC connections", acc.connections)
    f.counter_by(
        "gateway_acc_connections_rejected_total", "Rejected ACC connections", "reason", acc.rejected
    )
    f.counter("gateway_acc_oversized_lines_total", "Oversized ACC lines", acc.oversized_lines)
    f.counter("gateway_acc_malformed_lines_total", "Malformed ACC lines", acc.malformed_lines)
    js = comp.journal_stats
    f.counter("gateway_journal_lines_total", "Journal lines written", js.lines)
    f.counter("gateway_journal_write_errors_total", "Journal write errors", js.write_errors)
    f.counter("gateway_journal_rotations_total", "Journal rotations", js.rotations)
    eg = comp.egress_stats
    f.gauge_by(
        "gateway_mqtt_connected", "MQTT connection state", "client",
        {"ingress": int(ing.connected), "egress": int(eg.connected)},
    )  # fmt: skip
    f.counter_by(
        "gateway_mqtt_reconnects_total", "MQTT reconnects", "client",
        {"ingress": ing.reconnects, "egress": eg.reconnects},
    )  # fmt: skip
    f.counter_by("gateway_mqtt_egress_dropped_total", "Egress drops", "reason", eg.dropped)
    f.gauge("gateway_ws_clients", "Live-feed clients", comp.livefeed_stats.clients)
    f.counter("gateway_ws_dropped_total", "Live-feed messages dropped", comp.livefeed_stats.dropped)
    analysis_dropped = ing.analysis_dropped + comp.analysis_stats.lost
    f.counter("gateway_analysis_log_dropped_total", "Analysis records dropped", analysis_dropped)
    f.counter_by(
        "gateway_task_restarts_total", "Supervised restarts", "task",
        {**dict.fromkeys(SUPERVISED_TASKS, 0), **comp.supervisor_stats.restarts},
    )  # fmt: skip
    info = GaugeMetricFamily("gateway_build_info", "Build", labels=["site", "version"])
    info.add_metric([f.site, __version__], 1)
    f.out.append(info)
    return f.out


class _Snapshot:
    """A collector that yields pre-built families (built on the Trio thread)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self._families
        for collector in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
            yield from collector.collect()


def expose(families: Iterable[Metric]) -> bytes:
    """Text exposition 0.0.4 of `families` plus the process/GC collectors (blocking: a thread)."""
    text = generate_latest(_Snapshot(families))
    for name in UNSUFFIXED_COUNTERS:
        for kind in (b"HELP", b"TYPE"):
            text = text.replace(
                b"# %s %s_total " % (kind, name.encode()), b"# %s %s " % (kind, name.encode())
            )
    return text


async def render_metrics(comp: Components) -> bytes:
    """Build the families on the Trio thread (consistent snapshot), encode in a worker thread."""
    families = build_families(comp)
    return await trio.to_thread.run_sync(expose, families)


def metrics_payload(comp: Components) -> dict[str, Any]:
    """`gateway/metrics` payload (interfaces.md §7): 60 s windows, reference bucket layout."""
    now = time.monotonic_ns() // 1_000_000
    c = comp.tracker.counters
    g = comp.tracker.gauges()
    ev_depth, ev_cap = _depth(comp.events_send)
    gate_depth, gate_cap = _depth(comp.gate_send)
    lat = window_counts(c.event_latency_window, now, BUCKETS_R)
    gate = window_counts(c.gate_latency_window, now, BUCKETS_R)
    health, _ = comp.health()
    return {
        "site": comp.config.site.id,
        "ts": time.time_ns() // 1_000_000,
        "gate_state": g.gate_state,
        "gate_id": 1,
        "events_total": c.events_total,
        "events_per_sec": c.event_rate.per_sec(now),
        "avg_latency_us": round(c.event_latency_window.avg(now)),
        "max_latency_us": round(c.event_latency_window.max(now)),
        "lat_buckets": lat,
        "lat_p50_us": bucket_percentile(lat, BUCKETS_R, 0.50, OVERFLOW_US),
        "lat_p95_us": bucket_percentile(lat, BUCKETS_R, 0.95, OVERFLOW_US),
        "lat_p99_us": bucket_percentile(lat, BUCKETS_R, 0.99, OVERFLOW_US),
        "active_tracks": g.live_tracks,
        "authorized_tracks": g.authorized_tracks,
        "gate_cmds": c.gate_commands_total + comp.manual_stats.accepted,
        "gate_lat_buckets": gate,
        "gate_lat_avg_us": round(c.gate_latency_window.avg(now)),
        "gate_lat_max_us": round(c.gate_latency_window.max(now)),
        "gate_lat_p99_us": bucket_percentile(gate, BUCKETS_R, 0.99, OVERFLOW_US),
        "event_queue_depth": ev_depth,
        "gate_queue_depth": gate_depth,
        "cloudplus_queue_depth": comp.gate_stats.cloudplus_queue_depth,
        "event_queue_utilization_pct": ev_depth * 100 // ev_cap,
        "gate_queue_utilization_pct": gate_depth * 100 // gate_cap,
        "health": health["status"],
    }
