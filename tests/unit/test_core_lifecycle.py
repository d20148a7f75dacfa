"""Scenarios S001–S024: tracker lifecycle and outcomes (scenarios.md §1)."""

from __future__ import annotations

import pytest

from tests.unit.core_harness import (
    APPROACH_1,
    DWELL_1,
    ENTRY_1,
    EXIT_1,
    EXTRA_LINE,
    GATE_1,
    POS_1,
    STORE,
    Harness,
    W,
    dts_config,
    ev_json,
    ev_types,
)


def test_s001_create_starts_a_journey() -> None:
    h = Harness()
    h.C(0, 100)
    assert list(h.core.persons) == [100]
    j = h.journey(100)
    assert h.core.journeys.get_active(100) is j
    assert j.tids == [100]
    assert ev_json(j) == [{"t": "track_create", "ts": W}]
    assert h.pubs("track") == [
        {"site": "test", "ts": W, "t": "create", "tid": 100, "auth": False, "dwell_ms": 0}
    ]


def test_s002_short_visit_is_returned_and_discarded() -> None:
    h = Harness()
    h.C(0, 100)
    h.D(500, 100)
    assert h.core.persons == {}
    j = h.journey(100)
    assert j.outcome == "returned"
    assert j.ended_at == W + 500
    assert ev_json(j) == [
        {"t": "track_create", "ts": W},
        {"t": "pending", "z": "", "ts": W + 500, "x": "auth=false,dwell=0"},
    ]
    assert len(h.core.pool) == 0
    assert h.pubs("track", t="pending", tid=100)
    h.at(10_000)
    assert [x.jid for x in h.held()] == [j.jid]
    h.at(11_000)
    assert h.held() == []
    assert h.counters.journeys_discarded == 1
    assert h.emitted() == []


def test_s003_pos_dwell_is_added_at_exit() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.X(100, 100, POS_1)
    j = h.journey(100)
    assert j.total_dwell_ms == 100
    assert ev_json(j)[1:] == [
        {"t": "zone_entry", "z": "POS_1", "ts": W},
        {"t": "zone_exit", "z": "POS_1", "ts": W + 100, "x": "dwell=100"},
    ]
    (exit_pub,) = h.pubs("zone", t="zone_exit")
    assert exit_pub == {
        "site": "test",
        "tid": 100,
        "t": "zone_exit",
        "z": "POS_1",
        "ts": W + 100,
        "auth": False,
        "dwell_ms": 100,
        "total_dwell_ms": 100,
        "event_time": 0,
    }
    assert not j.authorized
    assert not h.person(100).authorized  # type: ignore[union-attr]


def test_s004_dwell_alone_never_authorizes() -> None:
    h = Harness(dts_config(min_dwell_ms=100))
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.X(60, 100, POS_1)
    h.E(60, 100, 1002)
    h.X(120, 100, 1002)
    j = h.journey(100)
    assert j.total_dwell_ms == 120
    assert not j.authorized
    assert not h.person(100).authorized  # type: ignore[union-attr]


def test_s005_exit_line_completes_and_cleans_occupancy() -> None:
    h = Harness()
    h.C(0, 100, (0, 0, 1.7))
    h.E(0, 100, POS_1)
    h.X(20, 100, POS_1)
    h.E(20, 100, GATE_1)
    assert h.pubs("gate") == [
        {"site": "test", "ts": W + 20, "state": "blocked", "tid": 100, "src": "tracker"}
    ]
    assert h.gate.sent == []
    h.F(30, 100, EXIT_1)
    assert h.core.persons == {}
    j = h.journey(100)
    assert j.outcome == "exit"
    assert not j.exit_inferred
    assert h.counters.exits == 1
    assert h.occupancy_of(100) == {}
    n_events = len(j.events)
    h.D(40, 100, (0, 0, 1.7))
    assert h.counters.orphan_events["TRACK_DELETE"] == 1
    assert len(j.events) == n_events
    assert j.outcome == "exit"


def test_s006_backward_exit_crossing_is_not_an_exit() -> None:
    h = Harness()
    h.C(0, 100, (1, 1, 1.7))
    h.B(100, 100, EXIT_1)
    assert ev_json(h.journey(100))[-1] == {"t": "exit_cross", "ts": W + 100, "x": "dir=backward"}
    assert 100 in h.core.persons
    h.D(200, 100, (1, 1, 1.7))
    assert h.journey(100).outcome == "lost"
    assert [e.person.track_id for e in h.core.pool.entries] == [100]


def test_s007_backward_entry_crossing_beats_exit_region() -> None:
    h = Harness()
    h.C(0, 100, (2.0, 2.5, 1.7))
    h.E(0, 100, STORE)
    h.X(50, 100, STORE)
    h.B(100, 100, ENTRY_1)
    h.D(200, 100, (2.0, 2.5, 1.7))
    assert h.journey(100).outcome == "returned"
    assert len(h.core.pool) == 0


def test_s008_entry_crosser_is_emitted_returned() -> None:
    h = Harness()
    h.C(0, 100)
    h.F(100, 100, ENTRY_1)
    assert h.journey(100).crossed_entry
    h.D(200, 100)
    assert h.journey(100).outcome == "returned"
    h.at(11_000)
    (rec,) = h.emitted()
    assert rec["out"] == "returned"
    assert [e["t"] for e in rec["ev"]] == ["track_create", "entry_cross", "pending"]
    assert rec["ev"][1]["x"] == "dir=forward"
    assert h.counters.journeys_emitted["returned"] == 1


def test_s009_exit_inferred_from_position() -> None:
    h = Harness()
    h.C(0, 100, (2.0, 2.5, 1.7))
    h.E(0, 100, POS_1)
    h.X(60, 100, POS_1)
    h.D(100, 100, (2.0, 2.5, 1.7))
    j = h.journey(100)
    assert j.outcome == "exit"
    assert j.exit_inferred
    assert h.counters.journeys_position_exit == 1
    assert h.occupancy_of(100) == {}
    h.at(11_000)
    assert h.emitted()[0]["exit_inferred"] is True


def test_s010_pass_through() -> None:
    h = Harness()
    h.C(0, 100, (2.0, 2.5, 1.7))
    h.D(100, 100, (2.0, 2.5, 1.7))
    j = h.journey(100)
    assert j.outcome == "pass_through"
    assert not j.exit_inferred
    assert len(h.core.pool) == 0
    assert h.counters.journeys_pass_through == 1
    h.at(11_000)
    assert h.emitted() == []
    assert h.counters.journeys_discarded == 1


@pytest.mark.parametrize(
    ("x", "y", "outcome", "inferred"),
    [
        (2.0, 2.29, "lost", False),
        (2.0, 2.30, "lost", False),
        (2.0, 2.31, "exit", True),
        (1.49, 2.5, "lost", False),
        (1.50, 2.5, "exit", True),
        (3.00, 2.5, "exit", True),
        (3.01, 2.5, "lost", False),
        (-1.0, 2.5, "lost", False),
    ],
)
def test_s011_exit_region_boundaries(x: float, y: float, outcome: str, inferred: bool) -> None:
    h = Harness()
    h.C(0, 100, (x, y, 1.7))
    h.E(0, 100, POS_1)
    h.X(60, 100, POS_1)
    h.D(100, 100, (x, y, 1.7))
    j = h.journey(100)
    assert j.outcome == outcome
    assert j.exit_inferred is inferred


def test_s012_latest_tracked_position_decides_exit() -> None:
    h = Harness()
    h.C(0, 100, (2.0, 1.0, 1.7))
    h.E(0, 100, POS_1)
    h.X(60, 100, POS_1)
    h.P(80, 100, (2.2, 2.6, 1.7))
    h.D(100, 100)
    j = h.journey(100)
    assert j.outcome == "exit"
    assert j.exit_inferred


def test_s013_max_y_tracks_the_highest_y() -> None:
    h = Harness()
    h.C(0, 100, (2.0, 1.0, 1.7))
    person = h.person(100)
    assert person is not None
    assert person.max_y == 1.0
    h.E(0, 100, POS_1)
    h.D(100, 100, (2.0, 2.5, 1.7))
    j = h.journey(100)
    assert (j.outcome, j.exit_inferred) == ("exit", True)
    assert person.max_y == 2.5


def test_s014_no_position_ever_pools_without_position() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.X(60, 100, POS_1)
    h.D(100, 100)
    assert h.journey(100).outcome == "lost"
    (entry,) = h.core.pool.entries
    assert entry.position is None
    old_jid = h.journey(100).jid
    h.C(200, 200, (1, 1, 1.7))
    j200 = h.journey(200)
    assert j200.jid != old_jid
    assert j200.tids == [200]
    assert ev_types(j200) == ["track_create"]
    assert h.counters.stitch_matched == 0


def test_s015_gate_zone_is_deep() -> None:
    h = Harness()
    h.C(0, 100, (1, 1, 1.7))
    h.E(0, 100, GATE_1)
    assert h.pubs("gate", state="blocked")
    h.D(100, 100, (1, 1, 1.7))
    assert h.journey(100).outcome == "lost"


def test_s016_approach_crossing_is_deep() -> None:
    h = Harness()
    h.C(0, 100, (1, 1, 1.7))
    h.F(100, 100, APPROACH_1)
    assert ev_json(h.journey(100))[-1] == {
        "t": "approach_cross",
        "ts": W + 100,
        "x": "dir=forward",
    }
    h.D(200, 100, (1, 1, 1.7))
    assert h.journey(100).outcome == "lost"


def test_s017_store_and_dwell_zones_are_not_deep() -> None:
    h = Harness()
    h.C(0, 100, (1, 1, 1.7))
    h.E(0, 100, STORE)
    h.X(50, 100, STORE)
    h.E(60, 100, DWELL_1)
    h.X(70, 100, DWELL_1)
    assert not h.person(100).authorized  # type: ignore[union-attr]
    h.D(100, 100, (1, 1, 1.7))
    j = h.journey(100)
    assert j.outcome == "returned"
    assert j.total_dwell_ms == 10
    h.at(11_000)
    (rec,) = h.emitted()
    assert rec["out"] == "returned"
    assert rec["dwell"] == 10


def test_s018_other_line_is_recorded_only() -> None:
    h = Harness()
    h.C(0, 100)
    before = len(h.effects)
    h.F(10, 100, EXTRA_LINE)
    j = h.journey(100)
    assert ev_json(j)[-1] == {"t": "line_cross", "ts": W + 10, "x": "dir=forward"}
    assert len(h.effects) == before
    assert 100 in h.core.persons
    assert not j.crossed_entry
    assert j.outcome == "in_progress"


def test_s019_duplicate_create_ends_old_journey_lost() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.ACC(8000, "127.0.0.1", "R1")
    old = h.journey(100)
    assert old.authorized
    assert old.acc_matched
    effects = h.C(9000, 100)
    assert ev_json(old)[-1] == {
        "t": "pending",
        "z": "POS_1",
        "ts": W + 9000,
        "x": "auth=true,dwell=0,reason=duplicate_create",
    }
    assert old.outcome == "lost"
    assert old.ended_at == W + 9000
    assert [j.jid for j in h.held()] == [old.jid]
    assert len(h.core.pool) == 0
    tracks = h.pubs("track", effects)
    assert [(p["t"], p["tid"]) for p in tracks] == [("lost", 100), ("create", 100)]
    new = h.journey(100)
    assert new is not old
    assert new.jid != old.jid
    assert new.pid != old.pid
    assert ev_types(new) == ["track_create"]
    person = h.person(100)
    assert person is not None
    assert not person.authorized
    assert person.zones == {}
    assert h.occupancy_of(100) == {}
    assert h.counters.tracks_duplicate_create == 1
    h.at(19_000)
    (rec,) = h.emitted()
    assert rec["jid"] == old.jid
    assert rec["out"] == "lost"
    assert rec["acc"] is True
    assert h.core.journeys.get_active(100) is new


def test_s020_zone_entry_for_unknown_id_creates_implicitly() -> None:
    h = Harness()
    h.E(0, 555, POS_1)
    assert 555 in h.core.persons
    assert ev_json(h.journey(555)) == [
        {"t": "track_create", "ts": W, "x": "implicit"},
        {"t": "zone_entry", "z": "POS_1", "ts": W},
    ]
    assert [(p["t"], p["tid"]) for p in h.pubs("track")] == [("create", 555)]
    assert h.counters.tracks_implicit == 1
    entry = h.core.occupancy.entry(POS_1, 555)
    assert entry is not None
    assert entry.present


def test_s021_orphan_events_are_counted_only() -> None:
    h = Harness()
    h.X(0, 777, POS_1)
    h.F(0, 777, EXIT_1)
    h.D(0, 777)
    assert h.core.persons == {}
    assert h.core.journeys.get_any(777) is None
    assert h.effects == []
    assert h.counters.orphan_events == {"TRACK_DELETE": 1, "ZONE_EXIT": 1, "LINE_CROSS": 1}


def test_s022_has_zone_events_flag() -> None:
    h = Harness()
    h.C(0, 100)
    person = h.person(100)
    assert person is not None
    assert not person.has_zone_events
    h.E(10, 100, STORE)
    assert person.has_zone_events
    h.X(20, 100, STORE)
    assert person.has_zone_events


def test_s023_overlapping_zones_keep_gate_membership_for_late_acc() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.X(7000, 100, POS_1)
    h.E(7000, 100, STORE)
    h.E(7000, 100, GATE_1)
    assert h.pubs("gate", state="blocked", tid=100)
    h.X(7000, 100, STORE)
    person = h.person(100)
    assert person is not None
    assert list(person.zones) == [GATE_1]
    h.ACC(8000, "127.0.0.1")
    assert person.authorized
    assert [(c.track_id, c.src) for c in h.gate.sent] == [(100, "acc")]
    assert h.pubs("gate", state="cmd_enqueued", tid=100, src="acc")
    assert h.counters.acc_late == 1


def test_s024_unnamed_zones_use_zone_id_names() -> None:
    h = Harness()
    h.E(0, 100, 9999)
    assert h.counters.tracks_implicit == 1
    assert ev_json(h.journey(100))[1] == {"t": "zone_entry", "z": "ZONE_9999", "ts": W}
    h.E(10, 100, None)
    assert ev_json(h.journey(100))[2] == {"t": "zone_entry", "z": "ZONE_0", "ts": W + 10}
    assert h.pubs("zone", z="ZONE_0")
