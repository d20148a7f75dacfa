"""The handler bench's synthetic store stream is plausible, deterministic and measurable."""

from __future__ import annotations

import random
from collections import Counter

from gateway.core.clock import FakeClock
from gateway.core.effects import EmitJourney, Publish
from gateway.core.model import AccInput, DoorReading, EventKind, GateCmd, XovisBatch
from gateway.core.tracker import Tracker
from gateway.tools.handler_bench import (
    bench_config,
    measure_handler_cost,
    percentile,
    synthetic_stream,
)


class _Gate:
    def __init__(self) -> None:
        self.sent: list[GateCmd] = []

    def try_send(self, cmd: GateCmd) -> bool:
        self.sent.append(cmd)
        return True


def test_stream_is_deterministic_ordered_and_has_every_input_kind() -> None:
    a = synthetic_stream(10, 600, seed=3)
    assert a == synthetic_stream(10, 600, seed=3)
    assert [t for t, _ in a] == sorted(t for t, _ in a)
    kinds = Counter(type(item).__name__ for _, item in a)
    assert kinds["XovisBatch"] > 0
    assert kinds["AccInput"] > 0
    assert kinds["DoorReading"] > 0
    events = Counter(
        ev.kind
        for _, item in a
        if isinstance(item, XovisBatch)
        for f in item.frames
        for ev in f.events
    )
    assert sum(events.values()) >= 600
    assert set(events) == set(EventKind)
    for _, item in a:
        if isinstance(item, XovisBatch):
            assert item.frames[0].objects or item.frames[0].events


def test_stream_drives_a_plausible_store_through_the_tracker() -> None:
    clock, gate = FakeClock(), _Gate()
    tracker = Tracker(bench_config(), clock, gate, random.Random(0))
    effects = []
    next_tick = 1000
    for at, item in synthetic_stream(20, 3000, seed=5):
        while next_tick <= at:
            clock.set(next_tick)
            effects += tracker.tick()
            next_tick += 1000
        clock.set(at)
        if isinstance(item, XovisBatch):
            effects += tracker.handle_batch(item)
        elif isinstance(item, AccInput):
            effects += tracker.handle_acc(item)
        else:
            assert isinstance(item, DoorReading)
            effects += tracker.handle_door(item)
    c = tracker.counters
    assert c.acc_matched > 0
    assert c.exits > 0
    assert gate.sent
    assert c.stitch_matched > 0
    assert any(isinstance(e, EmitJourney) and e.outcome == "exit" for e in effects)
    gate_states = {
        e.payload["state"] for e in effects if isinstance(e, Publish) and e.kind == "gate"
    }
    assert {"cmd_enqueued", "open", "closed"} <= gate_states


def test_measure_returns_one_sample_per_input() -> None:
    inputs = synthetic_stream(5, 200, seed=1)
    samples = measure_handler_cost(inputs, bench_config())
    assert len(samples) == len(inputs)
    assert all(s >= 0 for s in samples)
    assert percentile([5, 1, 3, 2, 4], 0.5) == 3
    assert percentile([5, 1, 3, 2, 4], 0.99) == 5
    assert percentile([], 0.5) == 0
