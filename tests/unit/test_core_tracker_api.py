"""Tracker facade details the runtime relies on: gauges, counters, latency inputs, log limits."""

from __future__ import annotations

import logging

from gateway.core.effects import Log
from gateway.core.model import AccInput, EventKind, Frame, XovisBatch, XovisEvent
from tests.unit.core_harness import DWELL_1, GATE_1, POS_1, POS_3, Harness


def test_gauges_cover_every_pos_zone_and_tick_snapshot() -> None:
    h = Harness()
    assert h.tracker.last_gauges is None
    h.C(0, 100)
    h.E(0, 100, POS_1)
    g = h.tracker.gauges()
    assert g.pos_occupancy == {1001: 1, 1002: 0, 1003: 0, 1004: 0, 1005: 0}
    assert (g.live_tracks, g.authorized_tracks, g.journeys_active) == (1, 0, 1)
    assert (g.gate_state, g.door_status, g.last_tick_mono_ms) == (0, "unknown", None)
    h.at(1000)
    snap = h.tracker.last_gauges
    assert snap is not None
    assert (snap.last_tick_mono_ms, snap.occupancy_entries) == (1000, 1)


def test_events_total_counts_xovis_events_and_accs_not_positions() -> None:
    h = Harness()
    h.C(0, 100, (1, 1, 1.7))
    h.P(10, 100, (1, 2, 1.7))
    h.ACC(20, "10.0.0.1")
    h.DOOR(30, "open")
    c = h.counters
    assert c.events_total == 2
    assert c.event_rate.per_sec(30) == 0.2
    assert c.event_rate.per_sec(11_000) == 0.0
    assert c.event_latency_us.count == 2


def test_queue_wait_is_measured_from_receipt() -> None:
    h = Harness()
    h.clock.set(5)
    ev = XovisEvent(EventKind.TRACK_CREATE, 1)
    h.tracker.handle_batch(XovisBatch(recv_ns=3_000_000, topic="t", frames=(Frame(0, (ev,)),)))
    h.tracker.handle_acc(AccInput(recv_ns=4_900_000, ip="10.0.0.1"))
    hist = h.counters.event_queue_wait_us
    assert (hist.count, hist.total) == (2, 2000 + 100)


def test_tick_match_uses_the_tick_start_as_trigger() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.E(100, 100, GATE_1)  # blocked, still inside POS_1
    h.ACC(5500, "127.0.0.1")
    assert h.gate.sent == []
    h.at(7000)
    (cmd,) = h.gate.sent
    assert (cmd.track_id, cmd.src, cmd.trigger_recv_ns) == (100, "acc", 7000 * 1_000_000)
    assert h.counters.acc_late == 1
    assert h.counters.acc_buffer_matched == 1


def test_dropped_command_warning_is_rate_limited() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, DWELL_1)
    h.X(7000, 100, DWELL_1)
    h.gate.full = True
    for t in (7100, 7200, 7300):
        h.E(t, 100, GATE_1)
        h.X(t, 100, GATE_1)
    h.E(8200, 100, GATE_1)
    warns = [e for e in h.effects if isinstance(e, Log) and e.event == "cmd_dropped"]
    assert [w.level for w in warns] == [logging.WARNING, logging.WARNING]
    assert warns[1].fields["suppressed"] == 2
    assert h.counters.gate_cmds_dropped == 4
    assert len(h.pubs("gate", state="cmd_dropped")) == 4


def test_unmatched_debug_lists_include_pool_entries() -> None:
    h = Harness()
    h.C(0, 100, (1, 1, 1.7))
    h.E(0, 100, POS_1)
    h.D(1000, 100, (1, 1, 1.7))
    h.C(1000, 200)
    h.SIM(1500, "POS_3")
    h.at(4000)
    (unmatched,) = h.pubs("acc", t="unmatched")
    assert unmatched["pos"] == "POS_3"
    assert unmatched["debug_active"] == [{"tid": 200, "zone": None, "dwell_ms": 0, "auth": False}]
    assert unmatched["debug_pending"] == [
        {"tid": 100, "last_zone": "POS_1", "dwell_ms": 0, "auth": False, "pending_ms": 3000}
    ]
    assert POS_3 not in h.core.acc.buffers
