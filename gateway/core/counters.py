"""Core counters and gauges, read by the metrics exporter at scrape time (interfaces.md §9).

Plain ints, dicts, `Histogram`s and `RollingWindow`s updated on the tracker's hot path; nothing
resets on read (D16). Mapping to Prometheus names (`gateway_` prefix implied):

| CoreCounters field | metric | type |
|---|---|---|
| events_total | events_total | counter |
| event_rate.per_sec(now) | events_per_sec | gauge 2 dp |
| event_latency_us | event_latency_us | histogram R |
| event_latency_window | event_latency_p50_us / _p95_us / _p99_us (percentile) | gauge |
| event_queue_wait_us | event_queue_wait_us | histogram F |
| gate_commands_total | gate_commands_total (tracker part; + manual opens) | counter |
| gate_latency_us | gate_latency_us | histogram R |
| gate_latency_window | gate_latency_p99_us / gate_latency_max_us | gauge |
| gate_cmds_dropped | gate_cmds_dropped_total (queue_full part only) | counter |
| gate_long_opens | gate_long_opens_total | counter |
| gate_very_long_opens | gate_very_long_opens_total | counter |
| exits | exits_total | counter |
| journeys_position_exit | journeys_position_exit_total | counter |
| journeys_pass_through | journeys_pass_through_total | counter |
| acc_events | acc_events_total | counter |
| acc_matched | acc_matched_total | counter |
| acc_late | acc_late_total | counter |
| acc_no_journey | acc_no_journey_total | counter |
| acc_empty_pos_time_ms | acc_empty_pos_time_ms (+ `.avg` → _avg_ms lifetime) | histogram R |
| acc_empty_pos_window | acc_empty_pos_time_max_ms (`.max`, 60 s) | gauge |
| acc_empty_pos_count | acc_empty_pos_count | counter |
| acc_duplicates | acc_duplicates_total | counter |
| acc_buffered | acc_buffered_total | counter |
| acc_buffer_matched | acc_buffer_matched_total | counter |
| acc_unmatched[reason] | acc_unmatched_total{reason} | counter |
| stitch_matched | stitch_matched_total | counter |
| stitch_expired | stitch_expired_total | counter |
| stitch_distance_cm | stitch_distance_cm (+ `.avg` → stitch_distance_avg_cm) | histogram C |
| stitch_time_ms | stitch_time_ms (+ `.avg` → stitch_time_avg_ms) | histogram R |
| tracks_duplicate_create | tracks_duplicate_create_total | counter |
| tracks_implicit | tracks_implicit_total | counter |
| orphan_events[type] | orphan_events_total{type} | counter |
| journeys_emitted[outcome] | journeys_emitted_total{outcome} | counter |
| journeys_discarded | journeys_discarded_total | counter |

| CoreGauges field | metric |
|---|---|
| live_tracks | active_tracks |
| authorized_tracks | authorized_tracks |
| stitch_pending | stitch_pending |
| occupancy_entries | pos_occupancy_entries |
| journeys_active / _held | journeys_active / journeys_held |
| pos_occupancy[zone_id] | pos_occupancy{zone_id} |
| gate_state | gate_state (0 closed/unknown, 1 moving, 2 open) |
| open_duration_s | gate_open_duration_seconds (6 dp) |
| door_status | – (health `rs485.door`) |
| last_tick_mono_ms | – (health `tracker.last_tick_age_ms`) |
"""

from __future__ import annotations

import attrs

from gateway.core.stats import BUCKETS_C, BUCKETS_F, BUCKETS_R, Histogram, RollingWindow

EVENT_RATE_WINDOW_S = 10  # interfaces.md §9: events_per_sec over the last 10 s

ORPHAN_TYPES = ("TRACK_DELETE", "ZONE_EXIT", "LINE_CROSS")
UNMATCHED_REASONS = ("unknown_ip", "no_candidate", "expired", "buffer_full", "shutdown")


@attrs.define(slots=True)
class EventRate:
    """Events per whole second in a ring; `per_sec` = last 10 complete-or-current seconds / 10."""

    _seconds: list[int] = attrs.field(factory=lambda: [-1] * (EVENT_RATE_WINDOW_S + 1))
    _counts: list[int] = attrs.field(factory=lambda: [0] * (EVENT_RATE_WINDOW_S + 1))

    def add(self, now_ms: int, n: int = 1) -> None:
        sec = now_ms // 1000
        i = sec % len(self._seconds)
        if self._seconds[i] != sec:
            self._seconds[i], self._counts[i] = sec, 0
        self._counts[i] += n

    def per_sec(self, now_ms: int) -> float:
        sec = now_ms // 1000
        total = sum(
            c
            for s, c in zip(self._seconds, self._counts, strict=True)
            if sec - EVENT_RATE_WINDOW_S < s <= sec
        )
        return round(total / EVENT_RATE_WINDOW_S, 2)


def _labels(keys: tuple[str, ...]) -> dict[str, int]:
    return dict.fromkeys(keys, 0)


@attrs.define(slots=True)
class CoreCounters:
    events_total: int = 0
    event_rate: EventRate = attrs.field(factory=EventRate)
    event_latency_us: Histogram = attrs.field(factory=lambda: Histogram(BUCKETS_R))
    event_latency_window: RollingWindow = attrs.field(factory=RollingWindow)
    event_queue_wait_us: Histogram = attrs.field(factory=lambda: Histogram(BUCKETS_F))
    gate_commands_total: int = 0
    gate_latency_us: Histogram = attrs.field(factory=lambda: Histogram(BUCKETS_R))
    gate_latency_window: RollingWindow = attrs.field(factory=RollingWindow)
    gate_cmds_dropped: int = 0
    gate_long_opens: int = 0
    gate_very_long_opens: int = 0
    exits: int = 0
    journeys_position_exit: int = 0
    journeys_pass_through: int = 0
    acc_events: int = 0
    acc_matched: int = 0
    acc_late: int = 0
    acc_no_journey: int = 0
    acc_empty_pos_time_ms: Histogram = attrs.field(factory=lambda: Histogram(BUCKETS_R))
    acc_empty_pos_window: RollingWindow = attrs.field(factory=RollingWindow)
    acc_empty_pos_count: int = 0
    acc_duplicates: int = 0
    acc_buffered: int = 0
    acc_buffer_matched: int = 0
    acc_unmatched: dict[str, int] = attrs.field(factory=lambda: _labels(UNMATCHED_REASONS))
    stitch_matched: int = 0
    stitch_expired: int = 0
    stitch_distance_cm: Histogram = attrs.field(factory=lambda: Histogram(BUCKETS_C))
    stitch_time_ms: Histogram = attrs.field(factory=lambda: Histogram(BUCKETS_R))
    tracks_duplicate_create: int = 0
    tracks_implicit: int = 0
    orphan_events: dict[str, int] = attrs.field(factory=lambda: _labels(ORPHAN_TYPES))
    journeys_emitted: dict[str, int] = attrs.field(
        factory=lambda: _labels(("in_progress", "exit", "returned", "lost", "pass_through"))
    )
    journeys_discarded: int = 0


@attrs.frozen
class CoreGauges:
    """Snapshot of the core's state gauges (computed on the tracker's thread)."""

    live_tracks: int
    authorized_tracks: int
    stitch_pending: int
    occupancy_entries: int
    journeys_active: int
    journeys_held: int
    pos_occupancy: dict[int, int]
    gate_state: int
    door_status: str
    door_fault: int
    door_alarm: int
    open_duration_s: float
    last_tick_mono_ms: int | None
    acc_buffered_now: int = 0
    reentry_records: int = 0
    door_pending_commands: int = 0
