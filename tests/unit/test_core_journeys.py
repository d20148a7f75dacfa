"""Scenarios S096–S102: journey manager, egress filter, journal record, shutdown (§8)."""

from __future__ import annotations

import json
import random
import re

from gateway.codecs.uuid7 import uuid7, uuid7_ms
from gateway.core.effects import EmitJourney, Publish
from gateway.core.journeys import OUTCOMES, Journey, JourneyEvent, JourneyManager, journey_record
from tests.unit.core_harness import ENTRY_1, EXIT_1, POS_1, Harness, W

UUID7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_s096_manager_start_end_and_stitch_active() -> None:
    m = JourneyManager()
    j = m.start(100, "jid-a", "pid-a", W, None)
    assert (j.tids, len(m.active)) == ([100], 1)
    j.add(JourneyEvent("zone_entry", W + 1, "POS_1", None, POS_1))
    assert len(j.events) == 1
    m.end(100, "lost", W + 2, 2)
    assert (len(m.active), len(m.held)) == (0, 1)

    m2 = JourneyManager()
    j2 = m2.start(100, "jid-b", "pid-b", W, None)
    j2.authorized, j2.total_dwell_ms = True, 5000
    out = m2.stitch(100, 200, JourneyEvent("stitch", W + 5, x="from=100,time_ms=5,dist_cm=1"))
    assert out is j2
    assert list(m2.active) == [200]
    assert j2.tids == [100, 200]
    assert (j2.authorized, j2.total_dwell_ms) == (True, 5000)
    assert [e.t for e in j2.events] == ["stitch"]


def _eligible_after_hold(**fields: object) -> bool:
    m = JourneyManager()
    j = m.start(1, "jid", "pid", W, None)
    for k, v in fields.items():
        setattr(j, k, v)
    m.end(1, "returned", W + 100, 100)
    assert m.due(10_099) == []
    (due,) = m.due(10_100)
    return due.egress_eligible


def test_s097_egress_filter() -> None:
    assert _eligible_after_hold() is False
    assert _eligible_after_hold(crossed_entry=True, total_dwell_ms=5000) is True
    assert _eligible_after_hold(crossed_entry=True) is True
    assert _eligible_after_hold(acc_matched=True) is True
    assert _eligible_after_hold(gate_cmd_at=W + 50) is True


def test_s098_egress_after_the_10s_hold() -> None:
    h = Harness()
    h.C(0, 100)
    h.F(0, 100, ENTRY_1)
    h.D(1500, 100)
    h.at(11_000)
    assert h.emitted() == []
    h.at(12_000)
    (rec,) = h.emitted()
    assert rec["t1"] == W + 1500
    assert h.held() == []


def test_s099_journal_record_shape() -> None:
    j = Journey(jid="01943265-f410-7a1e-8f3e-2d4b6c8a9e10", pid="p", started_at=1736012330000,
                tids=[100])  # fmt: skip
    j.authorized, j.total_dwell_ms, j.acc_matched = True, 7500, True
    j.gate_cmd_at, j.gate_opened_at = 1736012345678, 1736012345890
    j.outcome, j.ended_at = "exit", 1736012349000
    j.add(JourneyEvent("entry_cross", 1736012330100, None, "dir=forward", ENTRY_1))
    j.add(JourneyEvent("zone_entry", 1736012333000, "POS_1", None, POS_1))
    j.add(JourneyEvent("zone_exit", 1736012340500, "POS_1", "dwell=7500", POS_1))
    rec = journey_record(j)
    assert list(rec) == [
        "jid", "pid", "tids", "parent", "out", "auth", "dwell", "acc", "gate_cmd", "gate_open",
        "gate_was_open", "t0", "t1", "ev",
    ]  # fmt: skip
    assert rec["tids"] == [100]
    assert rec["out"] == "exit"
    assert rec["parent"] is None
    assert rec["gate_was_open"] is False
    assert rec["ev"][0]["t"] == "entry_cross"
    assert rec["ev"][1]["z"] == "POS_1"
    assert rec["ev"][2]["x"] == "dwell=7500"
    assert "site" not in rec
    assert "exit_inferred" not in rec
    assert json.dumps(rec, separators=(",", ":")).startswith(
        '{"jid":"01943265-f410-7a1e-8f3e-2d4b6c8a9e10","pid":"p","tids":[100],"parent":null,'
        '"out":"exit","auth":true,"dwell":7500,"acc":true,"gate_cmd":1736012345678,'
        '"gate_open":1736012345890,"gate_was_open":false,"t0":1736012330000,"t1":1736012349000,'
        '"ev":[{"t":"entry_cross","ts":1736012330100,"x":"dir=forward"},'
    )
    # the core never adds `site` nor publishes journeys itself; the shell adds `site` for MQTT
    h = Harness()
    h.C(0, 100)
    h.F(0, 100, ENTRY_1)
    h.D(10, 100)
    h.at(11_000)
    assert [e for e in h.effects if isinstance(e, Publish) and e.kind == "journey"] == []
    (emit,) = [e for e in h.effects if isinstance(e, EmitJourney)]
    assert "site" not in emit.record
    assert emit.outcome == "returned"


def test_s100_outcomes_and_ids() -> None:
    assert OUTCOMES == ("in_progress", "exit", "returned", "lost", "pass_through")
    h = Harness()
    h.C(0, 100, (2, 1, 1.75))
    h.C(0, 101)
    jids = {h.journey(100).jid, h.journey(101).jid, h.journey(100).pid, h.journey(101).pid}
    assert len(jids) == 4
    for value in jids:
        assert len(value) == 36
        assert UUID7_RE.match(value)
        assert uuid7_ms(value) == W
    h.F(10, 100, EXIT_1)
    h.C(20, 200, (5, 5, 1.75))
    assert (h.journey(200).parent, h.journey(200).pid) == (h.journey(100).jid, h.journey(100).pid)


def test_s100_uuid7_is_rfc9562_and_time_sortable() -> None:
    rng = random.Random(7)
    ids = [uuid7(W + i, rng) for i in range(0, 5000, 10)]
    assert all(UUID7_RE.match(i) for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert uuid7_ms(uuid7(0, rng)) == 0


def test_s101_same_tick_egress_ordered_by_end_time() -> None:
    h2 = Harness()
    h2.C(0, 2)
    h2.F(0, 2, ENTRY_1)
    h2.C(0, 1)
    h2.F(0, 1, ENTRY_1)
    h2.D(50, 1)
    h2.D(100, 2)
    h2.at(11_000)
    assert [r["tids"] for r in h2.emitted()] == [[1], [2]]
    assert [r["t1"] for r in h2.emitted()] == [W + 50, W + 100]
    # equal end times: ordered by jid
    m = JourneyManager()
    for tid, jid in ((1, "b"), (2, "a")):
        m.start(tid, jid, "p", W, None)
        m.end(tid, "lost", W + 5, 5)
    assert [j.jid for j in m.due(10_005)] == ["a", "b"]


def test_s102_shutdown_finalizes_and_releases() -> None:
    h = Harness()
    h.C(0, 100)
    h.F(0, 100, ENTRY_1)
    h.C(0, 200, (1, 1, 1.7))
    h.E(0, 200, POS_1)
    h.X(1000, 200, POS_1)
    h.D(1000, 200, (1, 1, 1.7))
    assert h.journey(200).outcome == "lost"
    h.C(2000, 300)
    h.SIM(2500, "POS_3")
    effects = h.shutdown(3000)
    (unmatched,) = h.pubs("acc", effects)
    assert (unmatched["t"], unmatched["pos"], unmatched["reason"]) == (
        "unmatched",
        "POS_3",
        "shutdown",
    )
    recs = h.emitted(effects)
    assert [(r["tids"], r["out"], r["t1"]) for r in recs] == [
        ([200], "lost", W + 1000),
        ([100], "in_progress", W + 3000),
    ]
    assert recs[1]["ev"][-1] == {"t": "shutdown", "ts": W + 3000}
    assert recs[0]["dwell"] == 1000
    assert h.counters.journeys_discarded == 1
    assert h.counters.acc_unmatched["shutdown"] == 1
    g = h.tracker.gauges()
    assert (g.live_tracks, g.stitch_pending, g.occupancy_entries) == (0, 0, 0)
    assert (g.journeys_active, g.journeys_held, g.acc_buffered_now) == (0, 0, 0)
    assert h.tracker.shutdown() == []  # once only
