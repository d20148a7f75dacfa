"""Scenarios S063–S085: stitcher (component and tracker) and re-entry detector."""

from __future__ import annotations

import pytest

from gateway.core.model import Position
from gateway.core.persons import Person
from gateway.core.reentry import ReentryDetector
from gateway.core.stitcher import StitchMatch, StitchPool
from tests.unit.core_harness import (
    EXIT_1,
    GATE_1,
    POS_1,
    POS_2,
    STORE,
    Harness,
    W,
    dts_config,
    ev_json,
)

POS_IDS = frozenset({1001, 1002, 1003, 1004, 1005})


def _pool(position: Position | None, last_zone: int | None, deleted_at: int = 0) -> StitchPool:
    pool = StitchPool(is_pos=lambda z: z in POS_IDS)
    person = Person(100, last_position=position)
    pool.add(person, deleted_at, last_zone)
    return pool


def _try(
    pool: StitchPool,
    new: Position | None,
    *,
    now: int = 100,
    zone: int | None = None,
    hint: bool = False,
) -> StitchMatch | None:
    pool.expire(now)
    return pool.match(now, new, zone, hint)


def test_s063_match_in_pos_zone() -> None:
    m = _try(_pool((1.0, 1.0, 1.70), POS_1), (1.5, 1.0, 1.72))
    assert m is not None
    assert (m.dist_cm, m.gap_ms, m.entry.person.track_id) == (50, 100, 100)


def test_s064_too_far_no_match() -> None:
    pool = _pool((1, 1, 1.7), None)
    assert _try(pool, (4, 1, 1.7)) is None
    assert len(pool) == 1


def test_s065_height_tolerance() -> None:
    assert _try(_pool((1, 1, 1.70), None), (1, 1, 1.90)) is None
    assert _try(_pool((1, 1, 1.70), POS_1), (1, 1, 1.90)) is None


def test_s066_positions_are_required() -> None:
    pool = _pool((1, 1, 1.7), None)
    assert _try(pool, None) is None
    pool2 = _pool(None, None)
    assert _try(pool2, (1, 1, 1.7)) is None
    assert len(pool2) == 1


def test_s067_nearest_candidate_wins() -> None:
    pool = StitchPool(is_pos=lambda z: z in POS_IDS)
    pool.add(Person(1, last_position=(1.0, 1, 1.7)), 0, None)
    pool.add(Person(2, last_position=(1.2, 1, 1.7)), 0, None)
    m = _try(pool, (1.3, 1, 1.7))
    assert m is not None
    assert (m.entry.person.track_id, m.dist_cm) == (2, 10)
    assert [e.person.track_id for e in pool.entries] == [1]


def test_s068_spawn_hint_in_pos_uses_pos_height_tolerance() -> None:
    m = _try(_pool((1, 1, 1.70), POS_1), (1, 1, 1.82), zone=POS_1, hint=True)
    assert m is not None
    assert _try(_pool((1, 1, 1.70), POS_1), (1, 1, 1.88), zone=POS_1, hint=True) is None


def test_s069_spawn_hint_same_zone_distance_190() -> None:
    assert _try(_pool((1, 1, 1.7), POS_1), (2.85, 1, 1.7), zone=POS_1, hint=True) is not None
    assert _try(_pool((1, 1, 1.7), POS_1), (2.95, 1, 1.7), zone=POS_1, hint=True) is None
    assert _try(_pool((1, 1, 1.7), POS_1), (2.85, 1, 1.7), zone=POS_2, hint=True) is None


def test_s070_same_zone_without_hint_allows_300cm() -> None:
    m = _try(_pool((1, 1, 1.7), POS_1), (3.5, 1, 1.7), zone=POS_1, hint=False)
    assert m is not None
    assert m.dist_cm == 250


@pytest.mark.parametrize(
    ("last_zone", "now", "new", "zone", "ok"),
    [
        (None, 4500, (1.0, 1.0, 1.70), None, True),
        (None, 4501, (1.0, 1.0, 1.70), None, False),
        (POS_1, 8000, (1.0, 1.0, 1.70), None, True),
        (POS_1, 8001, (1.0, 1.0, 1.70), None, False),
        (None, 100, (2.8, 1.0, 1.70), None, True),
        (None, 100, (2.81, 1.0, 1.70), None, False),
        (None, 100, (1.0, 1.0, 1.80), None, True),
        (None, 100, (1.0, 1.0, 1.801), None, False),
        (POS_1, 100, (4.0, 1.0, 1.70), POS_1, True),
        (POS_1, 100, (4.01, 1.0, 1.70), POS_1, False),
    ],
)
def test_s071_boundaries(
    last_zone: int | None, now: int, new: Position, zone: int | None, ok: bool
) -> None:
    pool = _pool((1.0, 1.0, 1.70), last_zone)
    assert (_try(pool, new, now=now, zone=zone) is not None) is ok


def test_s072_tracker_stitch_keeps_authorization() -> None:
    h = Harness(dts_config(min_dwell_ms=50))
    h.C(0, 100, (1, 1, 1.7))
    h.E(0, 100, POS_1)
    h.ACC(100, "127.0.0.1")
    assert h.person(100).authorized  # type: ignore[union-attr]
    h.D(200, 100, (1, 1, 1.7))
    assert h.journey(100).outcome == "lost"
    effects = h.C(300, 200, (1.05, 1.0, 1.71))
    assert list(h.core.persons) == [200]
    assert h.person(200).authorized  # type: ignore[union-attr]
    assert h.pubs("track", effects) == [
        {
            "site": "test",
            "ts": W + 300,
            "t": "stitch",
            "tid": 200,
            "prev_tid": 100,
            "auth": True,
            "dwell_ms": 0,
            "stitch_dist_cm": 5,
            "stitch_time_ms": 100,
        }
    ]
    j = h.journey(200)
    assert ev_json(j)[-1] == {
        "t": "stitch",
        "ts": W + 300,
        "x": "from=100,time_ms=100,dist_cm=5",
    }
    assert j.tids == [100, 200]
    assert h.counters.stitch_matched == 1
    assert h.counters.stitch_distance_cm.count == 1
    assert h.counters.stitch_time_ms.total == 100


def test_s073_expired_pool_entry_at_create() -> None:
    h = Harness(dts_config(min_dwell_ms=50))
    h.C(0, 100, (1, 1, 1.7))
    h.E(0, 100, POS_1)
    h.ACC(100, "127.0.0.1")
    h.D(200, 100, (1, 1, 1.7))
    h.at(8000)
    assert len(h.core.pool) == 1  # age 7800 at tick 8000
    # the create's lazy expiry removes the entry (age 8100 > 8000) before matching
    effects = h.C(8300, 200, (1.05, 1.0, 1.71))
    assert h.counters.stitch_expired == 1
    tracks = h.pubs("track", effects)
    assert [(p["t"], p["tid"]) for p in tracks] == [("lost", 100), ("create", 200)]
    assert h.journey(200).tids == [200]
    assert not h.person(200).authorized  # type: ignore[union-attr]
    assert h.counters.stitch_matched == 0


def test_s074_store_zone_create_never_stitches() -> None:
    h = Harness()
    h.C(0, 100, (1, 1, 1.7))
    h.E(0, 100, POS_1)
    h.D(50, 100, (1, 1, 1.7))
    h.C(100, 200, (1, 1, 1.7), g=STORE)
    assert h.journey(200).tids == [200]
    assert [e["t"] for e in ev_json(h.journey(200))] == ["track_create"]
    assert len(h.core.pool) == 1


def test_s075_returned_tracks_are_not_pooled() -> None:
    h = Harness()
    h.C(0, 100, (1, 1, 1.7))
    h.D(100, 100, (1, 1, 1.7))
    assert h.journey(100).outcome == "returned"
    assert len(h.core.pool) == 0
    h.C(200, 200, (1.05, 1, 1.71))
    assert h.journey(200).tids == [200]
    assert h.counters.stitch_matched == 0


def test_s076_pool_uses_latest_tracked_position() -> None:
    h = Harness()
    h.C(0, 100, (1, 1, 1.7))
    h.E(0, 100, POS_1)
    h.P(500, 100, (3, 1, 1.7))
    h.D(600, 100)
    assert h.journey(100).outcome == "lost"
    assert h.core.pool.entries[0].position == (3, 1, 1.7)
    h.C(700, 200, (3.1, 1.0, 1.7))
    (stitch,) = h.pubs("track", t="stitch")
    assert stitch["stitch_dist_cm"] == 10
    assert h.journey(200).tids == [100, 200]


def test_s077_completed_tracks_link_by_reentry_not_stitch() -> None:
    h = Harness()
    h.C(0, 100, (2.25, 2.0, 1.7))
    h.F(100, 100, EXIT_1)
    j100 = h.journey(100)
    assert j100.outcome == "exit"
    h.C(200, 200, (2.25, 2.0, 1.7))
    j200 = h.journey(200)
    assert j200 is not j100
    assert j200.tids == [200]
    assert j200.parent == j100.jid
    assert j200.pid == j100.pid
    assert h.counters.stitch_matched == 0


def test_s078_stitch_pulls_a_held_journey_back() -> None:
    h = Harness()
    h.C(0, 100, (1, 1, 1.7))
    h.E(0, 100, GATE_1)
    h.D(1000, 100, (1, 1, 1.7))
    j = h.journey(100)
    j.authorized, j.total_dwell_ms, j.acc_matched, j.gate_cmd_at = True, 5000, True, W + 10
    assert (j.outcome, len(h.held())) == ("lost", 1)
    h.C(1500, 200, (1, 1, 1.7))
    assert h.held() == []
    assert list(h.core.journeys.active) == [200]
    assert h.journey(200) is j
    assert (j.outcome, j.ended_at, j.tids) == ("in_progress", None, [100, 200])
    assert (j.authorized, j.total_dwell_ms, j.acc_matched, j.gate_cmd_at) == (
        True,
        5000,
        True,
        W + 10,
    )


def test_s079_record_needs_a_height() -> None:
    det = ReentryDetector()
    det.record("jid1", "pid1", 1.75, 0)
    assert len(det) == 1
    det.record("jid2", "pid2", None, 0)
    assert len(det) == 1


@pytest.mark.parametrize(
    ("height", "matched"), [(1.75, True), (1.80, True), (1.85, True), (1.90, False), (None, False)]
)
def test_s080_height_window_inclusive(height: float | None, matched: bool) -> None:
    det = ReentryDetector()
    det.record("jid1", "pid1", 1.75, 0)
    result = det.match(10_000, height)
    if matched:
        assert result == ("jid1", "pid1")
        assert len(det) == 0
    else:
        assert result is None
        assert len(det) == 1


def test_s081_closest_height_wins() -> None:
    det = ReentryDetector()
    det.record("jid1", "pid1", 1.75, 0)
    det.record("jid2", "pid2", 1.80, 0)
    assert det.match(1000, 1.79) == ("jid2", "pid2")
    assert [r.jid for r in det.records] == ["jid1"]


def test_s082_window_30s_retention_60s() -> None:
    det = ReentryDetector()
    det.record("jid1", "pid1", 1.75, 0)
    assert det.match(30_000, 1.75) == ("jid1", "pid1")
    det2 = ReentryDetector()
    det2.record("jid1", "pid1", 1.75, 0)
    assert det2.match(30_001, 1.75) is None
    det2.prune(60_000)
    assert len(det2) == 1
    det2.prune(61_000)
    assert len(det2) == 0

    h = Harness()
    h.C(0, 100, (2, 1, 1.75))
    h.F(0, 100, EXIT_1)
    h.at(60_000)
    assert len(h.core.reentry) == 1
    h.at(61_000)
    assert len(h.core.reentry) == 0


def test_s083_reentry_links_parent_and_pid() -> None:
    h = Harness()
    h.C(0, 100, (2, 1, 1.75))
    h.F(1000, 100, EXIT_1)
    parent = h.journey(100)
    effects = h.C(20_000, 200, (5, 5, 1.78))
    child = h.journey(200)
    assert (child.parent, child.pid) == (parent.jid, parent.pid)
    assert child.jid != parent.jid
    assert ev_json(child) == [
        {"t": "track_create", "ts": W + 20_000, "x": f"reentry_from={parent.jid}"}
    ]
    assert h.pubs("track", effects) == [
        {
            "site": "test",
            "ts": W + 20_000,
            "t": "reentry",
            "tid": 200,
            "auth": False,
            "dwell_ms": 0,
            "parent_jid": parent.jid,
        }
    ]


def test_s084_reentry_uses_the_latest_height() -> None:
    h = Harness()
    h.C(0, 100, (2, 1, 1.60))
    h.P(500, 100, (2, 2, 1.75))
    h.F(1000, 100, EXIT_1)
    h.C(2000, 200, (5, 5, 1.76))
    assert h.journey(200).parent == h.journey(100).jid


def test_s085_inferred_exits_are_not_recorded() -> None:
    h = Harness()
    h.C(0, 100, (2, 2.5, 1.75))
    h.E(0, 100, POS_1)
    h.X(50, 100, POS_1)
    h.D(100, 100, (2, 2.5, 1.75))
    assert (h.journey(100).outcome, h.journey(100).exit_inferred) == ("exit", True)
    assert len(h.core.reentry) == 0
    h.C(2000, 200, (5, 5, 1.75))
    assert h.journey(200).parent is None
