"""Scenarios S025–S044: authorization and ACC handling (scenarios.md §2)."""

from __future__ import annotations

from gateway.core.effects import Log
from tests.unit.core_harness import (
    DWELL_1,
    GATE_1,
    POS_1,
    POS_2,
    POS_3,
    Harness,
    W,
    dts_config,
    ev_json,
    ev_types,
)


def test_s025_acc_authorizes_a_dwelling_payer_then_gate_opens() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.ACC(8100, "127.0.0.1", "R1")
    j = h.journey(100)
    assert j.acc_matched
    assert j.authorized
    assert ev_json(j)[-1] == {
        "t": "acc",
        "z": "POS_1",
        "ts": W + 8100,
        "x": "kiosk=127.0.0.1,count=1,dwell=8100",
    }
    assert h.pubs("acc") == [
        {
            "site": "test",
            "ts": W + 8100,
            "t": "matched",
            "ip": "127.0.0.1",
            "pos": "POS_1",
            "tid": 100,
            "dwell_ms": 0,
            "receipt": "R1",
            "zone_dwell_ms": 8100,
            "count": 1,
        }
    ]
    assert h.counters.acc_events == 1
    assert h.counters.acc_matched == 1
    h.X(8200, 100, POS_1)
    h.E(8200, 100, GATE_1)
    assert [(c.track_id, c.src) for c in h.gate.sent] == [(100, "tracker")]
    assert h.gate.sent[0].jid == j.jid
    assert h.pubs("gate", state="cmd_enqueued") == [
        {"site": "test", "ts": W + 8200, "state": "cmd_enqueued", "tid": 100, "src": "tracker"}
    ]
    assert h.counters.gate_commands_total == 1
    assert j.gate_cmd_at == W + 8200
    assert ev_json(j)[-1] == {"t": "gate_cmd", "ts": W + 8200, "x": "e2e_us=0"}


def test_s026_no_payment_is_blocked() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.X(8100, 100, POS_1)
    h.E(8100, 100, GATE_1)
    assert h.pubs("gate") == [
        {"site": "test", "ts": W + 8100, "state": "blocked", "tid": 100, "src": "tracker"}
    ]
    assert h.gate.sent == []
    assert h.counters.gate_commands_total == 0
    assert h.logs("gate_entry_not_authorized")


def test_s027_acc_for_empty_pos_is_buffered_then_expires() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, POS_1)
    effects = h.ACC(8100, "127.0.0.2")
    assert h.pubs("acc", effects) == []
    assert h.counters.acc_buffered == 1
    h.at(10_000)
    assert h.core.acc.buffered_count() == 1
    assert h.pubs("acc") == []
    h.at(11_000)
    assert h.pubs("acc") == [
        {
            "site": "test",
            "ts": W + 11_000,
            "t": "unmatched",
            "ip": "127.0.0.2",
            "pos": "POS_2",
            "debug_active": [{"tid": 100, "zone": "POS_1", "dwell_ms": 0, "auth": False}],
            "reason": "expired",
        }
    ]
    assert h.counters.acc_unmatched["expired"] == 1
    assert not h.person(100).authorized  # type: ignore[union-attr]
    assert not h.journey(100).authorized


def test_s028_dwell_in_different_zones_never_combines() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.X(3100, 100, POS_1)
    h.E(3100, 100, POS_2)
    h.X(8200, 100, POS_2)
    h.ACC(8200, "127.0.0.1")
    h.ACC(8200, "127.0.0.2")
    assert h.pubs("acc") == []
    assert h.counters.acc_buffered == 2
    h.at(11_000)
    unmatched = h.pubs("acc", t="unmatched")
    assert [(p["pos"], p["reason"]) for p in unmatched] == [
        ("POS_1", "expired"),
        ("POS_2", "expired"),
    ]
    assert not h.person(100).authorized  # type: ignore[union-attr]
    assert not h.journey(100).authorized


def test_s029_late_acc_opens_for_track_in_gate_zone() -> None:
    h = Harness(dts_config(min_dwell_ms=50))
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.X(100, 100, POS_1)
    h.E(4100, 100, GATE_1)
    assert h.pubs("gate", state="blocked", tid=100)
    h.ACC(4100, "127.0.0.1")
    assert [(c.track_id, c.src) for c in h.gate.sent] == [(100, "acc")]
    (matched,) = h.pubs("acc", t="matched")
    assert matched == {
        "site": "test",
        "ts": W + 4100,
        "t": "matched",
        "ip": "127.0.0.1",
        "pos": "POS_1",
        "tid": 100,
        "dwell_ms": 100,
        "gate_zone": "GATE_1",
        "gate_entry_ts": W + 4100,
        "delta_ms": 0,
        "gate_cmd_at": W + 4100,
        "zone_dwell_ms": 100,
        "count": 1,
    }
    assert h.counters.acc_late == 1


def test_s030_exit_older_than_grace_is_pruned_so_acc_buffers() -> None:
    h = Harness(dts_config(min_dwell_ms=50))
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.X(100, 100, POS_1)
    h.at(6000)
    assert h.occupancy_of(100) == {}
    h.ACC(6100, "127.0.0.1")
    assert h.counters.acc_buffered == 1
    assert h.pubs("acc") == []
    h.at(8000)
    assert h.pubs("acc") == []
    h.at(9000)
    assert [p["reason"] for p in h.pubs("acc", t="unmatched")] == ["expired"]
    assert not h.journey(100).authorized


def test_s031_group_payment_authorizes_every_qualified_track() -> None:
    h = Harness(dts_config(min_dwell_ms=50))
    h.C(0, 100)
    h.C(0, 200)
    h.E(0, 100, POS_1)
    h.E(50, 200, POS_1)
    h.ACC(150, "127.0.0.1")
    assert h.person(100).authorized  # type: ignore[union-attr]
    assert h.person(200).authorized  # type: ignore[union-attr]
    assert ev_json(h.journey(100))[-1]["x"] == "kiosk=127.0.0.1,count=2,dwell=150"
    assert ev_json(h.journey(200))[-1]["x"] == "kiosk=127.0.0.1,count=2,dwell=100"
    (matched,) = h.pubs("acc", t="matched")
    assert (matched["tid"], matched["count"], matched["zone_dwell_ms"]) == (100, 2, 150)


def test_s032_present_candidates_rank_before_recent_exits() -> None:
    h = Harness(dts_config(min_dwell_ms=50))
    h.C(0, 100)
    h.C(0, 200)
    h.E(0, 100, POS_1)
    h.E(1000, 200, POS_1)
    h.X(5000, 100, POS_1)
    assert h.core.occupancy.candidates(POS_1, 6000) == [(200, 5000), (100, 5000)]
    h.ACC(6000, "127.0.0.1")
    (matched,) = h.pubs("acc", t="matched")
    assert matched["tid"] == 200
    assert matched["count"] == 2
    assert h.journey(100).authorized
    assert h.journey(200).authorized


def test_s033_buffered_acc_matches_when_dwell_is_reached() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.ACC(5500, "127.0.0.1", "R7")
    assert h.counters.acc_buffered == 1
    h.at(6000)
    assert h.pubs("acc") == []
    h.at(7000)
    j = h.journey(100)
    assert ev_json(j)[-1] == {
        "t": "acc",
        "z": "POS_1",
        "ts": W + 7000,
        "x": "kiosk=127.0.0.1,count=1,dwell=7000,buffered_ms=1500",
    }
    (matched,) = h.pubs("acc", t="matched")
    assert matched["buffered_ms"] == 1500
    assert matched["zone_dwell_ms"] == 7000
    assert matched["receipt"] == "R7"
    assert h.counters.acc_buffer_matched == 1
    assert h.counters.acc_matched == 1
    assert h.counters.acc_events == 1
    assert h.core.acc.buffered_count() == 0


def test_s034_buffered_acc_older_than_window_expires_unmatched() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.ACC(4500, "127.0.0.1")
    h.at(6000)
    assert h.pubs("acc") == []
    h.at(7000)
    assert [(p["t"], p["reason"]) for p in h.pubs("acc")] == [("unmatched", "expired")]
    assert not h.person(100).authorized  # type: ignore[union-attr]
    assert not h.journey(100).acc_matched


def test_s035_zone_event_recheck_matches_between_ticks() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(300, 100, POS_1)
    h.ACC(5800, "127.0.0.1")
    h.at(7000)
    assert h.pubs("acc") == []
    h.C(7400, 200)
    effects = h.E(7400, 200, POS_1)
    (matched,) = h.pubs("acc", effects, t="matched")
    assert matched["tid"] == 100
    assert matched["buffered_ms"] == 1600
    assert matched["zone_dwell_ms"] == 7100
    assert ev_json(h.journey(100))[-1]["x"] == "kiosk=127.0.0.1,count=1,dwell=7100,buffered_ms=1600"
    assert not h.journey(200).authorized


def test_s036_buffered_acc_never_rematches_a_paid_journey() -> None:
    h = Harness(dts_config(min_dwell_ms=50))
    h.C(0, 100)
    h.E(0, 100, POS_2)
    h.ACC(100, "127.0.0.2")
    assert h.journey(100).acc_matched
    h.X(200, 100, POS_2)
    h.E(200, 100, POS_1)
    h.ACC(210, "127.0.0.1")
    assert h.counters.acc_buffered == 1
    h.at(2000)
    assert h.pubs("acc", t="unmatched") == []
    assert h.core.acc.buffered_count() == 1
    h.at(3000)
    assert [p["reason"] for p in h.pubs("acc", t="unmatched")] == ["expired"]
    assert ev_types(h.journey(100)).count("acc") == 1


def test_s037_receipt_dedup_per_terminal() -> None:
    h = Harness(dts_config(min_dwell_ms=50))
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.ACC(1000, "127.0.0.1", "R1")
    assert h.counters.acc_matched == 1
    n_events = len(h.journey(100).events)
    effects = h.ACC(4000, "127.0.0.1", "R1")
    assert [e for e in effects if not isinstance(e, Log)] == []
    assert [e.event for e in effects] == ["acc_duplicate"]
    assert len(h.journey(100).events) == n_events
    assert h.counters.acc_duplicates == 1
    assert h.counters.acc_events == 1
    h.ACC(4000, "127.0.0.2", "R1")
    assert h.counters.acc_buffered == 1
    assert h.counters.acc_events == 2
    h.ACC(11_000, "127.0.0.1", "R1")
    assert h.counters.acc_duplicates == 2
    assert h.counters.acc_matched == 1
    h.ACC(11_001, "127.0.0.1", "R1")
    assert h.counters.acc_matched == 2
    assert ev_types(h.journey(100)).count("acc") == 2
    h.SIM(11_002, "POS_1")
    h.SIM(11_002, "POS_1")
    assert h.counters.acc_matched == 4
    assert h.counters.acc_duplicates == 2


def test_s038_unknown_terminal_ip() -> None:
    h = Harness()
    h.ACC(0, "10.9.9.9", "R5")
    assert h.pubs("acc") == [
        {
            "site": "test",
            "ts": W,
            "t": "unmatched",
            "ip": "10.9.9.9",
            "receipt": "R5",
            "reason": "unknown_ip",
        }
    ]
    assert h.core.acc.buffered_count() == 0
    assert h.counters.acc_events == 0
    assert h.counters.acc_unmatched["unknown_ip"] == 1


def test_s039_acc_for_pooled_track_carries_over_a_stitch() -> None:
    h = Harness(dts_config(min_dwell_ms=50))
    h.C(0, 100, (1, 1, 1.7))
    h.E(0, 100, POS_1)
    h.X(80, 100, POS_1)
    h.D(80, 100, (1, 1, 1.7))
    j = h.journey(100)
    assert j.outcome == "lost"
    (entry,) = h.core.pool.entries
    assert entry.last_zone is None
    h.ACC(100, "127.0.0.1")
    assert j.acc_matched
    assert j.authorized
    assert ev_types(j)[-1] == "acc"
    h.C(200, 200, (1.05, 1.0, 1.71))
    (stitch,) = h.pubs("track", t="stitch")
    assert (stitch["stitch_time_ms"], stitch["stitch_dist_cm"]) == (120, 5)
    assert h.person(200).authorized  # type: ignore[union-attr]
    h.E(300, 200, GATE_1)
    assert [(c.track_id, c.src) for c in h.gate.sent] == [(200, "tracker")]
    assert h.journey(200) is j
    assert j.tids == [100, 200]
    assert j.gate_cmd_at == W + 300
    assert j.outcome == "in_progress"


def test_s040_dwell_zone_authorizes_by_its_own_dwell() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, DWELL_1)
    h.X(7000, 100, DWELL_1)
    j = h.journey(100)
    assert ev_json(j)[-1] == {"t": "zone_exit", "z": "DWELL_1", "ts": W + 7000, "x": "dwell=7000"}
    assert h.person(100).authorized  # type: ignore[union-attr]
    assert j.authorized
    assert h.gate.sent == []
    assert h.logs("dwell_zone_auto_authorized")
    h.E(7100, 100, GATE_1)
    assert [(c.track_id, c.src) for c in h.gate.sent] == [(100, "tracker")]

    h2 = Harness()
    h2.C(0, 200)
    h2.E(0, 200, POS_1)
    h2.X(6000, 200, POS_1)
    h2.E(6000, 200, DWELL_1)
    h2.X(7000, 200, DWELL_1)
    j2 = h2.journey(200)
    assert j2.total_dwell_ms == 7000
    assert not j2.authorized
    assert not h2.person(200).authorized  # type: ignore[union-attr]
    assert h2.logs("dwell_zone_auto_authorized") == []


def test_s041_simulated_acc() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.SIM(8000, "POS_1")
    (matched,) = h.pubs("acc", t="matched")
    assert (matched["ip"], matched["pos"], matched["tid"]) == ("simulated", "POS_1", 100)
    assert "receipt" not in matched
    assert ev_json(h.journey(100))[-1]["x"] == "simulated,count=1,dwell=8000"


def test_s042_buffer_holds_at_most_16_per_zone() -> None:
    h = Harness()
    for _ in range(17):
        h.SIM(0, "POS_3")
    unmatched = h.pubs("acc", t="unmatched")
    assert [(p["pos"], p["reason"]) for p in unmatched] == [("POS_3", "buffer_full")]
    assert len(h.core.acc.buffers[POS_3]) == 16
    h.at(2000)
    assert len(h.pubs("acc", t="unmatched")) == 1
    h.at(3000)
    reasons = [p["reason"] for p in h.pubs("acc", t="unmatched")]
    assert reasons == ["buffer_full"] + ["expired"] * 16
    assert h.counters.acc_unmatched["expired"] == 16
    assert h.counters.acc_unmatched["buffer_full"] == 1


def test_s043_no_buffer_means_immediate_no_candidate() -> None:
    h = Harness(dts_config(buffer_ms=0))
    h.C(0, 100)
    h.E(0, 100, POS_1)
    effects = h.ACC(1000, "127.0.0.1")
    (unmatched,) = h.pubs("acc", effects)
    assert unmatched["t"] == "unmatched"
    assert unmatched["pos"] == "POS_1"
    assert unmatched["reason"] == "no_candidate"
    assert unmatched["debug_active"] == [
        {"tid": 100, "zone": "POS_1", "dwell_ms": 0, "auth": False}
    ]
    assert h.counters.acc_unmatched["no_candidate"] == 1
    assert h.counters.acc_buffered == 0


def test_s044_empty_pos_time_is_recorded() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.X(2000, 100, POS_1)
    h.ACC(6000, "127.0.0.1")
    hist = h.counters.acc_empty_pos_time_ms
    assert (hist.count, hist.total) == (1, 4000)
    assert h.counters.acc_empty_pos_count == 1
    assert h.counters.acc_empty_pos_window.max(6000) == 4000
    assert POS_2 not in h.core.acc.buffers
