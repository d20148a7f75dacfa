"""Scenarios S045–S050 (gate decisions) and S086–S095 (door correlation and state)."""

from __future__ import annotations

from gateway.core.effects import DoorFeed
from tests.unit.core_harness import DWELL_1, GATE_1, POS_1, Harness, W, dts_config, ev_json


def _paid_in_gate(h: Harness, tid: int, t: int) -> None:
    """With min dwell 0: a DWELL visit authorizes at once, then the gate entry issues a command."""
    h.C(t, tid)
    h.E(t, tid, DWELL_1)
    h.X(t, tid, DWELL_1)
    h.E(t, tid, GATE_1)


def _door_harness() -> Harness:
    h = Harness(dts_config(min_dwell_ms=0))
    h.DOOR(0, "closed")
    return h


def test_s045_two_opens_per_journey_second_after_leaving() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.ACC(8100, "127.0.0.1")
    assert h.person(100).authorized  # type: ignore[union-attr]
    h.E(8200, 100, GATE_1)
    assert len(h.gate.sent) == 1
    h.E(8300, 100, GATE_1)
    assert len(h.gate.sent) == 1
    h.X(8400, 100, GATE_1)
    h.E(8500, 100, GATE_1)
    assert len(h.gate.sent) == 2
    h.X(8600, 100, GATE_1)
    h.E(8700, 100, GATE_1)
    assert len(h.gate.sent) == 2
    j = h.journey(100)
    assert j.gate_cmd_at == W + 8200
    assert [e["ts"] for e in ev_json(j) if e["t"] == "gate_cmd"] == [W + 8200, W + 8500]
    assert j.gate_open_count == 2
    assert h.counters.gate_commands_total == 2


def test_s046_second_acc_inside_gate_zone_does_not_reopen() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, POS_1)
    h.ACC(7000, "127.0.0.1", "A")
    h.E(7100, 100, GATE_1)
    assert len(h.gate.sent) == 1
    h.ACC(7200, "127.0.0.1", "B")
    assert h.counters.acc_matched == 2
    assert [e["t"] for e in ev_json(h.journey(100))].count("acc") == 2
    assert len(h.gate.sent) == 1
    assert h.counters.gate_commands_total == 1
    assert h.counters.acc_late == 0


def test_s047_dropped_command_does_not_use_up_the_open() -> None:
    h = Harness()
    h.C(0, 100)
    h.E(0, 100, DWELL_1)
    h.X(7000, 100, DWELL_1)
    h.gate.full = True
    effects = h.E(7100, 100, GATE_1)
    assert h.pubs("gate", effects) == [
        {
            "site": "test",
            "ts": W + 7100,
            "state": "cmd_dropped",
            "tid": 100,
            "src": "tracker",
            "reason": "queue_full",
        }
    ]
    assert h.counters.gate_cmds_dropped == 1
    j = h.journey(100)
    assert j.gate_cmd_at is None
    assert "gate_cmd" not in [e.t for e in j.events]
    assert j.gate_open_count == 0
    assert h.counters.gate_commands_total == 0
    assert [lg.event for lg in h.logs("cmd_dropped")] == ["cmd_dropped"]
    h.gate.full = False
    h.E(7200, 100, GATE_1)
    assert [(c.track_id, c.src) for c in h.gate.sent] == [(100, "tracker")]
    assert j.gate_cmd_at == W + 7200
    assert j.gate_open_count == 1


def test_s048_unauthorized_gate_entry_is_blocked() -> None:
    h = Harness()
    h.C(0, 100)
    effects = h.E(10, 100, GATE_1)
    assert h.pubs("gate", effects) == [
        {"site": "test", "ts": W + 10, "state": "blocked", "tid": 100, "src": "tracker"}
    ]
    assert h.gate.sent == []
    assert h.journey(100).gate_open_count == 0


def test_s049_late_acc_opens_for_every_payer_in_the_gate_zone() -> None:
    h = Harness(dts_config(min_dwell_ms=50))
    h.C(0, 100)
    h.C(0, 200)
    h.E(0, 100, POS_1)
    h.E(0, 200, POS_1)
    h.X(100, 100, POS_1)
    h.X(100, 200, POS_1)
    h.E(100, 100, GATE_1)
    h.E(100, 200, GATE_1)
    assert len(h.pubs("gate", state="blocked")) == 2
    h.ACC(200, "127.0.0.1")
    assert h.journey(100).acc_matched
    assert h.journey(200).acc_matched
    assert [(c.track_id, c.src) for c in h.gate.sent] == [(100, "acc"), (200, "acc")]
    assert h.counters.acc_late == 1
    assert h.counters.acc_matched == 1


def test_s050_command_records_door_already_open() -> None:
    h = Harness()
    h.DOOR(0, "open")
    h.C(0, 100)
    h.E(0, 100, DWELL_1)
    h.X(7000, 100, DWELL_1)
    h.E(7100, 100, GATE_1)
    assert len(h.gate.sent) == 1
    (cmd,) = h.core.door.pending
    assert (cmd.track_id, cmd.sent_at, cmd.door_was_open) == (100, 7100, True)
    assert cmd.jid == h.journey(100).jid


def test_s086_door_open_correlates_newest_command() -> None:
    h = _door_harness()
    _paid_in_gate(h, 100, 1000)
    effects = h.DOOR(1300, "open")
    j = h.journey(100)
    assert j.gate_opened_at == W + 1300
    assert j.gate_was_open is False
    assert ev_json(j)[-1] == {"t": "gate_open", "ts": W + 1300, "x": "delta_ms=300"}
    assert h.pubs("gate", effects) == [
        {"site": "test", "ts": W + 1300, "state": "open", "tid": 100, "src": "rs485"}
    ]
    assert h.core.door.pending == []


def test_s087_command_while_open_then_reopen() -> None:
    h = Harness(dts_config(min_dwell_ms=0))
    h.DOOR(0, "open")
    _paid_in_gate(h, 100, 1000)
    assert h.core.door.pending[0].door_was_open
    h.DOOR(1100, "moving")
    h.DOOR(1400, "open")
    j = h.journey(100)
    assert ev_json(j)[-1] == {"t": "gate_open", "ts": W + 1400, "x": "delta_ms=400"}
    assert j.gate_was_open is True
    assert j.gate_opened_at == W + 1400


def test_s088_only_transitions_into_open_correlate() -> None:
    h = _door_harness()
    h.DOOR(100, "open")
    assert h.core.door.flow_track is None
    h.DOOR(150, "closed")
    _paid_in_gate(h, 100, 200)
    h.DOOR(300, "closed")  # no change: no transition
    assert len(h.core.door.pending) == 1
    h.DOOR(350, "moving")
    h.DOOR(380, "closed")
    assert len(h.core.door.pending) == 1
    assert "gate_open" not in [e.t for e in h.journey(100).events]
    h.DOOR(400, "open")
    assert [e.t for e in h.journey(100).events].count("gate_open") == 1
    _paid_in_gate(h, 200, 450)
    effects = h.DOOR(500, "open")
    assert h.pubs("gate", effects) == []
    assert effects == [DoorFeed("open", 0, 0, "rs485")]
    assert "gate_open" not in [e.t for e in h.journey(200).events]
    assert [c.track_id for c in h.core.door.pending] == [200]


def test_s089_commands_older_than_20s_are_purged() -> None:
    h = _door_harness()
    _paid_in_gate(h, 100, 0)
    h.DOOR(20_500, "open")
    assert "gate_open" not in [e.t for e in h.journey(100).events]
    assert h.core.door.pending == []
    assert h.journey(100).gate_opened_at is None


def test_s090_newest_command_first_older_stays_pending() -> None:
    h = _door_harness()
    _paid_in_gate(h, 100, 0)
    _paid_in_gate(h, 200, 100)
    h.DOOR(500, "moving")
    h.DOOR(600, "open")
    assert ev_json(h.journey(200))[-1] == {"t": "gate_open", "ts": W + 600, "x": "delta_ms=500"}
    assert [c.track_id for c in h.core.door.pending] == [100]
    h.DOOR(700, "moving")
    h.DOOR(900, "closed")
    h.DOOR(2000, "open")
    assert ev_json(h.journey(100))[-1] == {
        "t": "gate_open",
        "ts": W + 2000,
        "x": "delta_ms=2000",
    }
    assert h.core.door.pending == []


def test_s091_correlation_window_is_inclusive_10s() -> None:
    h = _door_harness()
    _paid_in_gate(h, 100, 0)
    h.DOOR(10_000, "open")
    assert ev_json(h.journey(100))[-1]["x"] == "delta_ms=10000"

    h2 = _door_harness()
    _paid_in_gate(h2, 100, 0)
    h2.DOOR(10_001, "open")
    assert "gate_open" not in [e.t for e in h2.journey(100).events]
    assert len(h2.core.door.pending) == 1


def test_s092_door_state_publish_track_id() -> None:
    h = _door_harness()
    _paid_in_gate(h, 100, 0)

    def published_tid(t: int, status: str) -> int | None:
        (pub,) = h.pubs("gate", h.DOOR(t, status))  # type: ignore[arg-type]
        assert (pub["state"], pub["src"]) == (status, "rs485")
        tid: int | None = pub.get("tid")
        return tid

    assert published_tid(100, "moving") == 100
    assert published_tid(300, "open") == 100
    assert h.core.door.flow_track == 100
    assert published_tid(3300, "moving") == 100
    assert published_tid(3500, "closed") == 100
    assert h.core.door.flow_track is None
    assert published_tid(5000, "moving") is None


def test_s093_open_duration_and_long_opens() -> None:
    h = Harness()
    h.DOOR(0, "open")
    assert h.tracker.gauges().open_duration_s == 0.0
    assert h.tracker.gauges().gate_state == 2
    h.at(29_000)
    assert h.counters.gate_long_opens == 0
    h.at(30_000)
    assert h.counters.gate_long_opens == 1
    h.at(31_000)
    assert h.tracker.gauges().open_duration_s == 31.0
    h.at(59_000)
    assert h.counters.gate_very_long_opens == 0
    h.at(60_000)
    assert h.counters.gate_very_long_opens == 1
    h.DOOR(62_000, "closed")
    g = h.tracker.gauges()
    assert g.open_duration_s == 0.0
    assert g.gate_state == 0
    assert (h.counters.gate_long_opens, h.counters.gate_very_long_opens) == (1, 1)


def test_s094_fault_alarm_change_only_feeds_the_door_message() -> None:
    h = Harness()
    h.DOOR(0, "closed")
    effects = h.DOOR(250, "closed", fault=8, alarm=6)
    assert effects == [DoorFeed("closed", 8, 6, "rs485")]
    assert h.pubs("gate", effects) == []
    g = h.tracker.gauges()
    assert (g.door_fault, g.door_alarm, g.door_status) == (8, 6, "closed")


def test_s095_coalesced_readings_still_correlate() -> None:
    h = _door_harness()
    _paid_in_gate(h, 100, 100)
    # the cell coalesced moving → open: the tracker only sees closed → open
    effects = h.DOOR(300, "open")
    assert [p["state"] for p in h.pubs("gate", effects)] == ["open"]
    assert ev_json(h.journey(100))[-1] == {"t": "gate_open", "ts": W + 300, "x": "delta_ms=200"}
    assert h.tracker.gauges().gate_state == 2
