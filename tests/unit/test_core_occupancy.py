"""Scenarios S051–S062: POS / DWELL occupancy (component and tracker; grace 5000, min 7000)."""

from __future__ import annotations

from gateway.core.occupancy import Occupancy
from tests.unit.core_harness import POS_1, POS_2, Harness

MIN_DWELL_MS = 7000


def _occ() -> Occupancy:
    return Occupancy(grace_ms=5000)


def test_s051_entry_then_exit() -> None:
    occ = _occ()
    occ.record_entry(POS_1, 100, 0)
    e = occ.entry(POS_1, 100)
    assert e is not None
    assert (e.present, e.accumulated_ms, e.exit_time) == (True, 0, None)
    assert occ.record_exit(POS_1, 100, 3000) == (3000, 3000)
    assert (e.present, e.exit_time) == (False, 3000)
    assert occ.last_exit_time(POS_1) == 3000


def test_s052_reentry_within_grace_reopens_later_resets() -> None:
    occ = _occ()
    occ.record_entry(POS_1, 100, 0)
    occ.record_exit(POS_1, 100, 3000)
    occ.record_entry(POS_1, 100, 7000)
    e = occ.entry(POS_1, 100)
    assert e is not None
    assert (e.present, e.accumulated_ms, e.entry_time, e.exit_time) == (True, 3000, 7000, None)

    occ2 = _occ()
    occ2.record_entry(POS_1, 100, 0)
    occ2.record_exit(POS_1, 100, 3000)
    occ2.record_entry(POS_1, 100, 9000)
    e2 = occ2.entry(POS_1, 100)
    assert e2 is not None
    assert (e2.present, e2.accumulated_ms, e2.entry_time) == (True, 0, 9000)


def test_s053_grace_boundary_is_inclusive() -> None:
    occ = _occ()
    occ.record_entry(POS_1, 100, 0)
    occ.record_exit(POS_1, 100, 3000)
    occ.record_entry(POS_1, 100, 8000)
    assert occ.entry(POS_1, 100).accumulated_ms == 3000  # type: ignore[union-attr]

    occ2 = _occ()
    occ2.record_entry(POS_1, 100, 0)
    occ2.record_exit(POS_1, 100, 3000)
    occ2.record_entry(POS_1, 100, 8001)
    assert occ2.entry(POS_1, 100).accumulated_ms == 0  # type: ignore[union-attr]


def test_s054_candidates_sorted_by_dwell() -> None:
    occ = _occ()
    occ.record_entry(POS_1, 100, 0)
    occ.record_entry(POS_1, 200, 2000)
    assert occ.candidates(POS_1, 5000) == [(100, 5000), (200, 3000)]


def test_s055_present_first_then_recent_exits_within_grace() -> None:
    occ = _occ()
    occ.record_entry(POS_1, 100, 0)
    occ.record_exit(POS_1, 100, 8000)
    occ.record_entry(POS_1, 200, 5000)
    assert occ.candidates(POS_1, 9000) == [(200, 4000), (100, 8000)]
    assert occ.candidates(POS_1, 13_000) == [(200, 8000), (100, 8000)]
    assert occ.candidates(POS_1, 13_001) == [(200, 8001)]


def test_s056_candidates_are_not_filtered_by_min_dwell() -> None:
    occ = _occ()
    occ.record_entry(POS_1, 100, 0)
    (cand,) = occ.candidates(POS_1, 6999)
    assert cand == (100, 6999)
    assert not cand[1] >= MIN_DWELL_MS
    (cand,) = occ.candidates(POS_1, 7000)
    assert cand[1] >= MIN_DWELL_MS


def test_s057_dwell_is_per_zone() -> None:
    occ = _occ()
    occ.record_entry(POS_1, 100, 0)
    occ.record_entry(POS_2, 200, 0)
    assert [t for t, _ in occ.candidates(POS_1, 100)] == [100]

    occ2 = _occ()
    occ2.record_entry(POS_1, 100, 0)
    occ2.record_entry(POS_2, 100, 5000)
    assert occ2.candidates(POS_1, 8000) == [(100, 8000)]
    assert occ2.candidates(POS_2, 8000) == [(100, 3000)]


def test_s058_repeated_visits_combine_within_grace() -> None:
    occ = _occ()
    occ.record_entry(POS_1, 100, 0)
    occ.record_exit(POS_1, 100, 3000)
    occ.record_entry(POS_1, 100, 5000)
    assert occ.record_exit(POS_1, 100, 9000) == (4000, 7000)
    assert occ.candidates(POS_1, 9000) == [(100, 7000)]
    assert occ.candidates(POS_1, 9000)[0][1] >= MIN_DWELL_MS


def test_s059_inferred_exit_removes_occupancy() -> None:
    h = Harness()
    h.C(0, 100, (2.0, 2.5, 1.7))
    h.E(0, 100, POS_1)
    h.D(500, 100, (2.0, 2.5, 1.7))
    assert (h.journey(100).outcome, h.journey(100).exit_inferred) == ("exit", True)
    assert h.occupancy_of(100) == {}
    assert h.tracker.gauges().pos_occupancy[POS_1] == 0
    h.ACC(600, "127.0.0.1")
    assert h.counters.acc_buffered == 1
    assert h.pubs("acc") == []
    h.at(3000)
    assert [p["reason"] for p in h.pubs("acc", t="unmatched")] == ["expired"]


def test_s060_lost_track_keeps_occupancy_until_pool_expiry() -> None:
    h = Harness()
    h.C(0, 100, (1, 1, 1.7))
    h.E(0, 100, POS_1)
    h.D(1000, 100, (1, 1, 1.7))
    j = h.journey(100)
    assert j.outcome == "lost"
    (entry,) = h.core.pool.entries
    assert entry.last_zone == POS_1
    assert h.tracker.gauges().pos_occupancy[POS_1] == 1
    h.ACC(7000, "127.0.0.1")
    assert (j.acc_matched, j.authorized) == (True, True)
    h.at(9000)
    assert len(h.core.pool) == 1
    h.at(10_000)
    assert len(h.core.pool) == 0
    assert h.counters.stitch_expired == 1
    assert [p["tid"] for p in h.pubs("track", t="lost")] == [100]
    assert h.occupancy_of(100) == {}
    assert h.emitted() == []
    h.at(11_000)
    (rec,) = h.emitted()
    assert (rec["out"], rec["acc"]) == ("lost", True)


def test_s061_stitch_moves_occupancy_to_the_new_track() -> None:
    h = Harness()
    h.C(0, 100, (1, 1, 1.7))
    h.E(0, 100, POS_1)
    h.D(3000, 100, (1, 1, 1.7))
    h.C(4000, 200, (1.1, 1.0, 1.72))
    (stitch,) = h.pubs("track", t="stitch")
    assert (stitch["stitch_time_ms"], stitch["stitch_dist_cm"]) == (1000, 10)
    occ = h.occupancy_of(200)
    assert list(occ) == [POS_1]
    assert (occ[POS_1].present, occ[POS_1].entry_time) == (True, 0)
    assert h.occupancy_of(100) == {}
    h.ACC(7000, "127.0.0.1")
    (matched,) = h.pubs("acc", t="matched")
    assert (matched["tid"], matched["zone_dwell_ms"]) == (200, 7000)
    assert h.person(200).authorized  # type: ignore[union-attr]


def test_s062_tick_prunes_exited_entries_after_grace() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.X(1000, 100, POS_1)
    h.at(6000)
    assert h.tracker.gauges().occupancy_entries == 1
    h.at(7000)
    assert h.tracker.gauges().occupancy_entries == 0
    assert h.occupancy_of(100) == {}
