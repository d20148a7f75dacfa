"""Synthetic store traffic (simulation.md §2): customers, payments, noise and the bench load."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest

from gateway.codecs.xovis import GROUP_BIT, XovisDecoder, XovisStats
from gateway.config.loader import load_config
from gateway.tools.traffic import (
    BenchLoad,
    CustomerKind,
    TrafficModel,
    TrafficParams,
    demo_geometry,
)
from gateway.tools.traffic_model import AccLine, DemoGeometry, SceneParams, SensorMessage

DEMO_TOML = Path(__file__).resolve().parents[1] / "data" / "demo.toml"
W0 = 1_767_225_600_000
FRAME = 80
ENTRY, EXIT, APPROACH, GATE, STORE, DWELL = 1008, 1006, 1009, 1007, 1011, 1010
POS = (1001, 1002, 1003, 1004, 1005)
IP_OF = {1000 + k: f"127.0.0.{k}" for k in range(1, 6)}
QUIET = TrafficParams(
    couple_share=0.0,
    reentry_share=0.0,
    scene=SceneParams(truncate_share=0.0, missed_crossing_share=0.0, loss_share=0.0),
)


def demo_site() -> DemoGeometry:
    cfg = load_config(DEMO_TOML)
    return demo_geometry(cfg.zones, cfg.acc)


def norm(event: dict[str, Any]) -> tuple[Any, ...]:
    """(type, track, geometry, direction) with both line-crossing spellings folded together."""
    a = event["attributes"]
    etype = event["type"]
    if etype.startswith("LINE_CROSS_"):
        return ("LINE_CROSS", a["track_id"], a["geometry_id"], etype[11:].lower())
    return (etype, a["track_id"], a.get("geometry_id"), a.get("direction"))


@attrs.define
class Recording:
    """What a model produced, indexed for assertions (times are model ms)."""

    payloads: list[bytes] = attrs.field(factory=list)
    events: list[tuple[int, tuple[Any, ...]]] = attrs.field(factory=list)
    objects: dict[int, list[tuple[int, float, float, float, str]]] = attrs.field(factory=dict)
    acc: list[tuple[int, str, bytes]] = attrs.field(factory=list)
    invalid: int = 0

    def add(self, now: int, outputs: list[SensorMessage | AccLine]) -> None:
        for out in outputs:
            if isinstance(out, AccLine):
                self.acc.append((now, out.source_ip, out.line))
                continue
            self.payloads.append(out.payload)
            try:
                frame = json.loads(out.payload)["live_data"]["frames"][0]
            except json.JSONDecodeError:
                self.invalid += 1
                continue
            self.events += [(now, norm(e)) for e in frame["events"]]
            for o in frame["tracked_objects"]:
                x, y, h = o["position"]
                self.objects.setdefault(o["track_id"], []).append((now, x, y, h, o["type"]))

    def of(self, tid: int) -> list[tuple[int, tuple[Any, ...]]]:
        return [(t, e) for t, e in self.events if e[1] == tid]

    def when(self, tid: int, etype: str, gid: int | None = None, d: str | None = None) -> int:
        for t, e in self.of(tid):
            if e[0] == etype and (gid is None or e[2] == gid) and (d is None or e[3] == d):
                return t
        raise AssertionError(f"no {etype} {gid} for {tid}")


def run(
    model: TrafficModel, until_ms: int, rec: Recording | None = None, start: int = 0
) -> Recording:
    rec = rec if rec is not None else Recording()
    for now in range(start, until_ms, FRAME):
        rec.add(now, model.step(now, W0 + now))
    return rec


def run_until_empty(model: TrafficModel, rec: Recording, start: int, limit_ms: int) -> int:
    """Step until no walker is left (after at least one step); returns the next step time."""
    now = start
    while now < start + limit_ms:
        rec.add(now, model.step(now, W0 + now))
        now += FRAME
        if not model.scene.walkers:
            return now
    raise AssertionError("walkers still in the store")


# -- determinism -------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes() -> None:
    def outputs(seed: int) -> list[Any]:
        model = TrafficModel(demo_site(), 30.0, seed)
        return [model.step(now, W0 + now) for now in range(0, 120_000, FRAME)]

    first = outputs(11)
    assert first == outputs(11)
    assert first != outputs(12)
    assert any(isinstance(o, AccLine) for out in first for o in out)


# -- one customer at a time --------------------------------------------------------------------


def test_scripted_payer_walks_the_whole_path_in_order() -> None:
    model = TrafficModel(demo_site(), 0.0, 3, params=QUIET)
    model.add_customer(CustomerKind.PAYER)
    rec = Recording()
    run_until_empty(model, rec, 0, 120_000)
    (tid,) = rec.objects
    got = [e for _, e in rec.of(tid)]
    pos = got[4][2]
    assert pos in POS
    assert got == [
        ("TRACK_CREATE", tid, None, None),
        ("LINE_CROSS", tid, ENTRY, "forward"),
        ("ZONE_ENTRY", tid, STORE, None),
        ("ZONE_ENTRY", tid, pos, None),
        ("ZONE_EXIT", tid, pos, None),
        ("LINE_CROSS", tid, APPROACH, "forward"),
        ("ZONE_EXIT", tid, STORE, None),
        ("ZONE_ENTRY", tid, GATE, None),
        ("ZONE_EXIT", tid, GATE, None),
        ("LINE_CROSS", tid, EXIT, "forward"),
        ("TRACK_DELETE", tid, None, None),
    ]
    ((t_acc, ip, line),) = rec.acc
    assert ip == IP_OF[pos]
    assert line.startswith(b"ACC ")
    assert line.endswith(b"\n")
    assert rec.when(tid, "ZONE_ENTRY", pos) < t_acc <= rec.when(tid, "ZONE_EXIT", pos) + 2100
    first, last = rec.objects[tid][0], rec.objects[tid][-1]
    assert math.dist(first[1:3], (5.5, -6.0)) < 0.1  # spawn
    assert last[2] > 2.3  # deleted beyond the exit line, in the exit region


def test_acc_timing_relative_to_the_pos_dwell() -> None:
    model = TrafficModel(demo_site(), 0.0, 5, params=QUIET)
    rec, now, rows = Recording(), 0, []
    for _ in range(60):
        model.add_customer(CustomerKind.PAYER)
        seen = len(rec.acc)
        now = run_until_empty(model, rec, now, 120_000)
        ((t_acc, ip, _),) = rec.acc[seen:]
        tid = max(rec.objects)
        pos = next(e[2] for _, e in rec.of(tid) if e[0] == "ZONE_ENTRY" and e[2] in POS)
        assert ip == IP_OF[pos]
        rows.append((rec.when(tid, "ZONE_ENTRY", pos), rec.when(tid, "ZONE_EXIT", pos), t_acc))
    for t_in, t_out, t_acc in rows:
        assert 8000 <= t_out - t_in <= 30000 + 1500  # U(8, 30) s at the POS centre
        # dwell − U(0, 3) s, or 0–2 s after leaving; ≤ 0.7 s walk + one frame from centre to edge
        assert t_out - 3000 - 800 <= t_acc <= t_out + 2000 + 80
        assert t_acc - t_in >= 5000 - 80
    after = sum(1 for _, t_out, t_acc in rows if t_acc > t_out)
    assert 2 <= after <= 20  # 20 % pay after leaving; most of them after the zone exit


def test_dwell_user_stands_8_s_in_the_dwell_zone_without_paying() -> None:
    model = TrafficModel(demo_site(), 0.0, 1, params=QUIET)
    model.add_customer(CustomerKind.DWELL_USER)
    rec = Recording()
    run_until_empty(model, rec, 0, 120_000)
    (tid,) = rec.objects
    stay = rec.when(tid, "ZONE_EXIT", DWELL) - rec.when(tid, "ZONE_ENTRY", DWELL)
    assert 8000 <= stay <= 8000 + 1500
    assert not [e for _, e in rec.of(tid) if e[2] in POS]
    assert rec.when(tid, "LINE_CROSS", EXIT, "forward") > rec.when(tid, "ZONE_ENTRY", GATE)
    assert rec.acc == []


def test_browser_never_reaches_a_pos_and_is_deleted_in_the_store() -> None:
    model = TrafficModel(demo_site(), 0.0, 2, params=QUIET)
    model.add_customer(CustomerKind.BROWSER)
    rec = Recording()
    run_until_empty(model, rec, 0, 120_000)
    (tid,) = rec.objects
    kinds = [(e[0], e[2]) for _, e in rec.of(tid)]
    assert kinds == [
        ("TRACK_CREATE", None),
        ("LINE_CROSS", ENTRY),
        ("ZONE_ENTRY", STORE),
        ("TRACK_DELETE", None),
    ]
    assert rec.acc == []


def test_walk_back_waits_at_the_closed_gate_and_returns_into_the_store() -> None:
    model = TrafficModel(demo_site(), 0.0, 4, params=QUIET)
    model.add_customer(CustomerKind.WALK_BACK)
    rec = Recording()
    run_until_empty(model, rec, 0, 120_000)
    (tid,) = rec.objects
    entered, left = rec.when(tid, "ZONE_ENTRY", GATE), rec.when(tid, "ZONE_EXIT", GATE)
    assert left - entered >= 3000  # blocked: stands U(3, 8) s in the gate zone
    assert rec.when(tid, "LINE_CROSS", APPROACH, "backward") >= left
    assert not [e for _, e in rec.of(tid) if e[2] == EXIT]
    back_in = [t for t, e in rec.of(tid) if e[0] == "ZONE_ENTRY" and e[2] == STORE][-1]
    assert back_in >= left
    assert not [t for t, e in rec.of(tid) if e[0] == "ZONE_EXIT" and t > back_in]
    assert rec.of(tid)[-1][1][0] == "TRACK_DELETE"  # deleted inside the store
    assert rec.objects[tid][-1][2] < 0.0
    assert rec.acc == []


def test_tailgater_follows_the_next_payer_through_the_gate() -> None:
    model = TrafficModel(demo_site(), 0.0, 6, params=QUIET)
    model.add_customer(CustomerKind.TAILGATER)
    rec, now = Recording(), 0
    while not any(e[0] == "ZONE_ENTRY" and e[2] == GATE for _, e in rec.events):
        rec.add(now, model.step(now, W0 + now))
        now += FRAME
    tailgater = max(rec.objects)
    model.add_customer(CustomerKind.PAYER)
    run_until_empty(model, rec, now, 180_000)
    payer = max(rec.objects)
    assert payer != tailgater
    payer_out = rec.when(payer, "ZONE_EXIT", GATE)
    tail_out = rec.when(tailgater, "ZONE_EXIT", GATE)
    assert rec.when(tailgater, "ZONE_ENTRY", GATE) < rec.when(payer, "ZONE_ENTRY", GATE)
    # leaves ≤ 1 s after the payer starts out of the gate centre, from ≤ 1 m further back
    assert payer_out - 1000 <= tail_out <= payer_out + 1000 + 1200
    assert rec.when(tailgater, "LINE_CROSS", EXIT, "forward") > rec.when(payer, "ZONE_ENTRY", GATE)
    assert len(rec.acc) == 1


def test_reentry_comes_back_through_the_exit_with_the_same_height() -> None:
    params = attrs.evolve(QUIET, reentry_share=1.0)
    model = TrafficModel(demo_site(), 0.0, 8, params=params)
    model.add_customer(CustomerKind.PAYER)
    rec = Recording()
    now = run_until_empty(model, rec, 0, 120_000)
    (first,) = rec.objects
    left = rec.when(first, "TRACK_DELETE")
    run(model, now + 30_000, rec, start=now)  # the re-entry is due within 25 s
    now += 30_000
    run_until_empty(model, rec, now, 180_000)
    second = max(rec.objects)
    assert second != first
    assert 5000 <= rec.when(second, "TRACK_CREATE") - left <= 25_000 + FRAME
    assert rec.objects[second][0][3] == rec.objects[first][0][3]  # same person, same height
    order = [rec.when(second, "LINE_CROSS", EXIT, "backward"), rec.when(second, "ZONE_ENTRY", GATE)]
    order += [rec.when(second, "LINE_CROSS", APPROACH, "backward")]
    assert order == sorted(order)
    assert rec.when(second, "LINE_CROSS", EXIT, "forward") > order[-1]  # pays and leaves again
    assert len(rec.acc) == 2
    assert model.summary()["reentries"] == 1


# -- a long demo-like run ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_run() -> tuple[TrafficModel, Recording]:
    model = TrafficModel(demo_site(), 90.0, 2026)
    return model, run(model, 8 * 60_000)


def test_mix_proportions_over_a_long_run(long_run: tuple[TrafficModel, Recording]) -> None:
    model, _ = long_run
    s = model.summary()
    n = s["customers"]
    assert 600 <= n <= 860  # Poisson, 90/min for 8 min (couples count as two)
    share = {k.value: s[f"customers_{k.value}"] / n for k in CustomerKind}
    assert share["payer"] == pytest.approx(0.77, abs=0.05)
    assert share["dwell_user"] == pytest.approx(0.03, abs=0.02)
    assert share["walk_back"] + share["tailgater"] == pytest.approx(0.10, abs=0.035)
    assert share["walk_back"] > share["tailgater"]  # 60 / 40
    assert share["browser"] == pytest.approx(0.10, abs=0.035)
    assert 5 <= s["couples"] == s["group_objects"] <= 28  # 2 % of arrivals
    assert 0.02 <= s["tracks_lost"] / s["tracks_created"] <= 0.07  # 5 % of tracks
    assert 0.005 <= s["truncated"] / s["messages"] <= 0.015  # 1 %


def test_exits_missed_crossings_and_reentries(long_run: tuple[TrafficModel, Recording]) -> None:
    model, rec = long_run
    s = model.summary()
    seen = sum(
        1 for _, e in rec.events if e[0] == "LINE_CROSS" and e[2] == EXIT and e[3] == "forward"
    )
    exits = seen + s["missed_crossings"]
    assert 0.06 <= s["missed_crossings"] / exits <= 0.14  # 10 % of exits
    assert 0.01 <= s["reentries"] / exits <= 0.06  # 3 % come back


def test_acc_lines_come_from_mapped_terminals(long_run: tuple[TrafficModel, Recording]) -> None:
    model, rec = long_run
    assert len(rec.acc) == model.summary()["acc_lines"] > 0
    assert {ip for _, ip, _ in rec.acc} == set(IP_OF.values())
    per_terminal: dict[str, list[bytes]] = {}
    for _, ip, line in rec.acc:
        per_terminal.setdefault(ip, []).append(line)
    for ip, lines in per_terminal.items():
        assert len(set(lines)) == len(lines), f"receipts repeat at {ip}"
        k = int(ip.rsplit(".", 1)[1])
        assert lines[0] == f"ACC {4700 + k}-0001\n".encode()


def test_truncated_messages_are_invalid_and_the_rest_decode(
    long_run: tuple[TrafficModel, Recording],
) -> None:
    model, rec = long_run
    assert rec.invalid == model.summary()["truncated"] > 0
    stats = XovisStats()
    decoder = XovisDecoder("track", stats)
    for payload in rec.payloads:
        decoder.decode(payload, recv_ns=0, topic="xovis/sensor-1")
    assert stats.malformed == rec.invalid  # only the truncated ones
    assert stats.unknown_events == {}


def test_group_ids_have_the_bit_and_shadow_a_couple(
    long_run: tuple[TrafficModel, Recording],
) -> None:
    _, rec = long_run
    groups = {tid: rows for tid, rows in rec.objects.items() if rows[0][4] == "GROUP"}
    assert groups
    assert all(tid & GROUP_BIT for tid in groups)
    assert all(not tid & GROUP_BIT for tid, rows in rec.objects.items() if tid not in groups)
    people_at: dict[int, list[tuple[float, float]]] = {}
    for tid, rows in rec.objects.items():
        if tid not in groups:
            for now, x, y, _, _ in rows:
                people_at.setdefault(now, []).append((x, y))
    for rows in groups.values():
        for now, x, y, _, _ in rows:
            near = [p for p in people_at[now] if math.dist(p, (x, y)) <= 0.3]
            assert len(near) >= 2  # the couple walks 0.3 m apart, the group in the middle


def test_lost_tracks_are_recreated_within_40_cm_and_3_cm(
    long_run: tuple[TrafficModel, Recording],
) -> None:
    model, rec = long_run
    losses = list(model.scene.recent_losses)
    assert len(losses) == model.summary()["tracks_lost"] >= 10
    for loss in losses:
        assert loss.new_track_id != loss.old_track_id
        old, new = rec.objects[loss.old_track_id], rec.objects.get(loss.new_track_id)
        if new is None:  # re-created in the last frames of the run
            continue
        gap = new[0][0] - old[-1][0]
        assert 200 <= gap <= 3000 + 2 * FRAME
        assert math.dist(old[-1][1:3], new[0][1:3]) <= 0.40  # reported positions, noise included
        assert abs(old[-1][3] - new[0][3]) <= 0.03 + 1e-9
        assert math.dist(loss.lost_at, loss.found_at) <= 0.25 + 1e-9


def test_poisson_arrivals_reach_the_store_through_the_entry(
    long_run: tuple[TrafficModel, Recording],
) -> None:
    _, rec = long_run
    creates = Counter(e[0] for _, e in rec.events)
    assert creates["TRACK_CREATE"] >= creates["TRACK_DELETE"]
    entries = [e for _, e in rec.events if e[0] == "LINE_CROSS" and e[2] == ENTRY]
    assert all(e[3] == "forward" for e in entries)
    assert len(entries) >= 0.9 * (creates["TRACK_CREATE"] - 60)


# -- bench load --------------------------------------------------------------------------------


def test_bench_load_keeps_its_tracks_live_and_speedup_adds_events() -> None:
    site = demo_site()
    per_frame = []
    for speedup in (1.0, 100.0):
        load = BenchLoad(site, tracks=20, frames_per_s=1000, seed=1, walk_speedup=speedup)
        counts = []
        for now in range(0, 3000):
            (msg,) = load.step(now, W0 + now)
            assert isinstance(msg, SensorMessage)
            frame = json.loads(msg.payload)["live_data"]["frames"][0]
            counts.append(len(frame["tracked_objects"]))
            visited = {e["attributes"].get("geometry_id") for e in frame["events"]}
            assert load.trial_pos.geometry_id not in visited
        assert set(counts) == {20}
        assert load.frame_period_ms == 1.0
        per_frame.append(load.scene.stats.events / 3000)
    assert per_frame[1] > 50 * per_frame[0] > 0


def test_bench_trial_message_carries_the_gate_entry_of_a_paid_track() -> None:
    load = BenchLoad(demo_site(), tracks=5, frames_per_s=50, seed=2)
    rec = Recording()
    ids = load.add_paid_tracks(3, acc_delay_ms=500)
    with pytest.raises(ValueError, match="not a paid"):
        load.gate_entry_message(ids[0], W0)
    now = 0
    while not load.is_paid(ids[0]):
        rec.add(now, load.step(now, W0 + now))
        now += 20
    assert 480 <= now <= 560
    assert [ip for _, ip, _ in rec.acc] == ["127.0.0.1"]  # one ACC pays all three
    for tid in ids:
        assert ("ZONE_ENTRY", tid, 1001, None) in [e for _, e in rec.events]
    msg = load.gate_entry_message(ids[1], W0 + now)
    frame = json.loads(msg.payload)["live_data"]["frames"][0]
    ((_, x, y, _, _),) = [(0, *o["position"], o["type"]) for o in frame["tracked_objects"]]
    assert 1.0 <= y <= 2.1
    assert 1.4 <= x <= 3.1
    events = [norm(e) for e in frame["events"]]
    assert events[-1] == ("ZONE_ENTRY", ids[1], GATE, None)
    assert ("ZONE_EXIT", ids[1], 1001, None) in events
    assert not load.is_paid(ids[1])
    with pytest.raises(ValueError, match="not a paid"):
        load.gate_entry_message(ids[1], W0)
    rec2 = Recording()
    for t in range(now, now + 4000, 20):
        rec2.add(t, load.step(t, W0 + t))
    assert rec2.when(ids[1], "LINE_CROSS", EXIT, "forward") < rec2.when(ids[1], "TRACK_DELETE")
    assert load.is_paid(ids[0])
    assert load.is_paid(ids[2])
