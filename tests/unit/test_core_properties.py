"""Property tests of the tracker over random input streams (hypothesis, ≥ 500 examples each).

Invariants: handlers never raise; ≤ 2 gate commands per journey; authorization is never revoked;
every journey meeting the egress filter is emitted exactly once (ticks + shutdown) and never
changes afterwards; 60 s without input after everyone left empties all expiring state.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.effects import EmitJourney
from gateway.core.journeys import Journey, journey_record
from gateway.core.model import EventKind, Frame, TrackedObject, XovisEvent
from gateway.core.persons import Person
from tests.unit.core_harness import Harness, dts_config

TIDS = st.integers(min_value=1, max_value=6) | st.sampled_from([101, 102])
POSITIONS = st.none() | st.tuples(
    st.sampled_from([0.5, 1.0, 1.05, 2.0, 2.25, 3.0, 3.1]),
    st.sampled_from([1.0, 2.0, 2.5]),
    st.sampled_from([1.6, 1.7, 1.71, 1.75, 1.8]),
)
ZONES = st.sampled_from([1001, 1002, 1007, 1010, 1011, 9999]) | st.none()
LINES = st.sampled_from([1006, 1008, 1009, 1012])
DIRS = st.sampled_from(["forward", "backward"])

EVENT = st.one_of(
    st.tuples(st.just("C"), TIDS, POSITIONS, ZONES),
    st.tuples(st.just("D"), TIDS, POSITIONS),
    st.tuples(st.just("E"), TIDS, ZONES, POSITIONS),
    st.tuples(st.just("X"), TIDS, ZONES),
    st.tuples(st.just("L"), TIDS, LINES, DIRS, POSITIONS),
)
OP = st.one_of(
    EVENT,
    EVENT,
    EVENT,
    st.tuples(st.just("P"), TIDS, POSITIONS),
    st.tuples(
        st.just("ACC"),
        st.sampled_from(["127.0.0.1", "127.0.0.2", "10.9.9.9"]),
        st.sampled_from([None, "R1", "R2"]),
    ),
    st.tuples(st.just("SIM"), st.sampled_from(["POS_1", "POS_3"])),
    st.tuples(st.just("DOOR"), st.sampled_from(["closed", "moving", "open", "unknown"])),
    st.tuples(st.just("FULL"), st.booleans()),
    st.tuples(st.just("BATCH"), st.lists(EVENT, min_size=2, max_size=4)),
)
NOISE = st.lists(st.tuples(st.integers(min_value=0, max_value=2500), OP), max_size=20)
PAYMENTS = {1001: ("127.0.0.1", "POS_1"), 1002: ("127.0.0.2", "POS_2")}


POS_CHOICES = [
    (x, y, h)
    for x in (0.5, 1.0, 1.05, 2.0, 2.25, 3.0, 3.1)
    for y in (1.0, 2.0, 2.5)
    for h in (1.6, 1.7, 1.71, 1.75, 1.8)
]


def customer(rng: random.Random, tid: int) -> list[tuple[int, tuple[Any, ...]]]:
    """A plausible customer path with random gaps and randomly skipped steps (as timed ops).

    Drawn from a hypothesis-provided `Random` (fast to generate, reproducible, shrinkable seed).
    """
    t = rng.randint(0, 20_000)
    out: list[tuple[int, tuple[Any, ...]]] = []
    pos = rng.choice(POS_CHOICES)

    def add(dt: int, op: tuple[Any, ...]) -> None:
        nonlocal t
        t += dt
        if rng.random() > 0.1:  # ~10 % of steps go missing
            out.append((t, op))

    add(0, ("C", tid, pos, None))
    if rng.random() < 0.5:
        add(rng.randint(0, 3000), ("L", tid, 1008, "forward", None))
    zone = rng.choice([1001, 1002, 1010])
    add(rng.randint(0, 2000), ("E", tid, zone, None))
    dwell = rng.randint(0, 9000)
    if zone in PAYMENTS and rng.random() < 0.6:
        ip, name = PAYMENTS[zone]
        pay_at = rng.randint(max(0, dwell - 3000), dwell + 2000)
        receipt = rng.choice([None, f"R{tid}"])
        out.append((t + pay_at, ("ACC", ip, receipt) if pay_at % 2 else ("SIM", name)))
    add(dwell, ("X", tid, zone))
    for _ in range(rng.randint(1, 3)):
        add(rng.randint(0, 3000), ("E", tid, 1007, None))
        if rng.random() < 0.5:
            door_t = t + rng.randint(0, 300)
            for dt, status in ((100, "moving"), (250, "open"), (3000, "closed")):
                door_t += dt
                out.append((door_t, ("DOOR", status)))
        add(rng.randint(0, 2000), ("X", tid, 1007))
    end = rng.choice(["exit", "region", "lost", "delete"])
    if end == "exit":
        add(rng.randint(0, 1000), ("L", tid, 1006, "forward", (2.25, 2.2, pos[2])))
    elif end == "region":
        add(rng.randint(0, 1000), ("D", tid, (2.25, 2.6, pos[2])))
    elif end == "lost":
        add(rng.randint(0, 1000), ("D", tid, (2.0, 1.5, pos[2])))
        new_pos = (2.0 + rng.choice([0.0, 0.1, 0.3, 2.0]), 1.5, pos[2] + 0.02)
        add(rng.randint(200, 9000), ("C", tid + 100, new_pos, None))
        add(rng.randint(0, 2000), ("E", tid + 100, 1007, None))
        add(rng.randint(0, 2000), ("D", tid + 100, (2.25, 2.6, pos[2])))
    else:
        add(rng.randint(0, 1000), ("D", tid, None))
    return out


@st.composite
def programs(draw: st.DrawFn) -> list[tuple[int, tuple[Any, ...]]]:
    """Several interleaved customers plus random noise, as (delta ms, op) steps in time order."""
    timed: list[tuple[int, tuple[Any, ...]]] = []
    rng = draw(st.randoms(use_true_random=False))
    for tid in range(1, draw(st.integers(0, 4)) + 1):
        timed.extend(customer(rng, tid))
    t = 0
    for dt, op in draw(NOISE):
        t += dt
        timed.append((t, op))
    timed.sort(key=lambda item: item[0])
    steps, last = [], 0
    for at, op in timed:
        steps.append((at - last, op))
        last = at
    return steps


STEPS = programs()
CONFIGS = st.builds(
    dts_config,
    min_dwell_ms=st.sampled_from([0, 50, 7000]),
    buffer_ms=st.sampled_from([0, 2000]),
    dedup_window_s=st.sampled_from([0, 10]),
    entry_line=st.sampled_from([1008, None]),
)


def _xovis(op: tuple[Any, ...]) -> XovisEvent:
    kind = op[0]
    if kind == "C":
        return XovisEvent(EventKind.TRACK_CREATE, op[1], op[3], None, op[2])
    if kind == "D":
        return XovisEvent(EventKind.TRACK_DELETE, op[1], None, None, op[2])
    if kind == "E":
        return XovisEvent(EventKind.ZONE_ENTRY, op[1], op[2], None, op[3])
    if kind == "X":
        return XovisEvent(EventKind.ZONE_EXIT, op[1], op[2], None, None)
    return XovisEvent(EventKind.LINE_CROSS, op[1], op[2], op[3], op[4])


class Run:
    """Runs a random program and records every journey and authorization it ever saw."""

    def __init__(self, config: Any) -> None:
        self.h = Harness(config)
        self.t = 0
        self.journeys: dict[str, Journey] = {}
        self.auth_persons: dict[int, Person] = {}  # by id(): objects, not track ids
        self.auth_journeys: dict[str, Journey] = {}

    def step(self, dt: int, op: tuple[Any, ...]) -> None:
        self.t += dt
        h, t = self.h, self.t
        kind = op[0]
        if kind in ("C", "D", "E", "X", "L"):
            ev = _xovis(op)
            objs = (TrackedObject(ev.track_id, "PERSON", ev.position),) if ev.position else ()
            h.batch(t, (Frame(0, (ev,), objs),))
        elif kind == "BATCH":
            frames = tuple(Frame(0, (_xovis(e),), ()) for e in op[1])
            h.batch(t, frames)
        elif kind == "P":
            h.batch(t, (Frame(0, (), (TrackedObject(op[1], "PERSON", op[2]),)),))
        elif kind == "ACC":
            h.ACC(t, op[1], op[2])
        elif kind == "SIM":
            h.SIM(t, op[1])
        elif kind == "DOOR":
            h.DOOR(t, op[1])
        elif kind == "FULL":
            h.gate.full = op[1]
        self.observe()

    def observe(self) -> None:
        core = self.h.core
        for j in core.journeys.active.values():
            self.journeys.setdefault(j.jid, j)
        for held in core.journeys.held.values():
            self.journeys.setdefault(held.journey.jid, held.journey)
        assert all(p.authorized for p in self.auth_persons.values()), "person auth revoked"
        assert all(j.authorized for j in self.auth_journeys.values()), "journey auth revoked"
        for p in core.persons.values():
            if p.authorized:
                self.auth_persons[id(p)] = p
        for j in self.journeys.values():
            if j.authorized:
                self.auth_journeys[j.jid] = j

    def leave_everyone(self) -> None:
        """Delete every live track (the store empties), then tick for 61 s."""
        self.t += 1
        for tid in list(self.h.core.persons):
            self.h.D(self.t, tid)
        self.observe()
        self.h.at(self.t + 61_000)
        self.observe()


@settings(max_examples=500, deadline=None)
@given(CONFIGS, STEPS)
def test_random_streams_never_raise_and_keep_gate_and_auth_invariants(
    config: Any, steps: list[tuple[int, tuple[Any, ...]]]
) -> None:
    run = Run(config)
    for dt, op in steps:
        run.step(dt, op)
    run.h.shutdown(run.t + 1)
    per_jid: dict[str | None, int] = {}
    for cmd in run.h.gate.sent:
        per_jid[cmd.jid] = per_jid.get(cmd.jid, 0) + 1
    assert all(n <= 2 for n in per_jid.values()), per_jid
    for j in run.journeys.values():
        assert sum(e.t == "gate_cmd" for e in j.events) <= 2
        assert j.gate_open_count <= 2
    assert run.h.counters.gate_commands_total == len(run.h.gate.sent)
    assert all(j.authorized for j in run.auth_journeys.values())


@settings(max_examples=500, deadline=None)
@given(CONFIGS, STEPS, st.booleans())
def test_every_eligible_journey_is_emitted_exactly_once(
    config: Any, steps: list[tuple[int, tuple[Any, ...]]], with_ticks: bool
) -> None:
    run = Run(config)
    for dt, op in steps:
        run.step(dt, op)
    if with_ticks:
        run.h.at(run.t + 15_000)
    run.h.shutdown(run.h.clock.now_ms + 1)
    emits = [e for e in run.h.effects if isinstance(e, EmitJourney)]
    jids = [e.record["jid"] for e in emits]
    assert len(jids) == len(set(jids)), "a journey was emitted twice"
    eligible = {jid for jid, j in run.journeys.items() if j.egress_eligible}
    assert set(jids) == eligible
    for e in emits:
        j = run.journeys[e.record["jid"]]
        assert journey_record(j) == e.record, "journey mutated after emission"
        assert e.outcome == e.record["out"]
    c = run.h.counters
    assert sum(c.journeys_emitted.values()) == len(emits)
    assert sum(c.journeys_emitted.values()) + c.journeys_discarded == len(run.journeys)


@settings(max_examples=500, deadline=None)
@given(CONFIGS, STEPS)
def test_quiet_minute_after_everyone_left_empties_all_state(
    config: Any, steps: list[tuple[int, tuple[Any, ...]]]
) -> None:
    run = Run(config)
    for dt, op in steps:
        run.step(dt, op)
    run.leave_everyone()
    core = run.h.core
    assert core.persons == {}
    assert len(core.pool) == 0
    assert core.occupancy.entry_count() == 0
    assert len(core.reentry) == 0
    assert core.door.pending == []
    assert core.acc.buffered_count() == 0
    assert core.acc.dedup == {}
    assert core.journeys.active == {}
    assert core.journeys.held == {}
    g = run.h.tracker.gauges()
    assert (g.live_tracks, g.stitch_pending, g.occupancy_entries, g.journeys_held) == (0, 0, 0, 0)
