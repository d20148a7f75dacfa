"""Handler and memory phases of `gateway bench` (simulation.md §6): the core alone, no I/O.

Each runs in a fresh child process (`python -m gateway.tools.bench_core handler|memory ...`,
JSON on stdout) so that neither the bench's own heap nor its event loop disturbs it.
- handler: `synthetic_stream` (handler_bench) generated once, then per repeat a fresh `Tracker`:
  every event's handler time exactly as the core times it for `gateway_event_latency_us` (raw
  µs samples), and every handler call (a whole message, an ACC, a door reading) with
  `perf_counter_ns` (ticks unmeasured).
- memory: 10 000 live persons, each with a journey of 6 events and occupancy entries; RSS delta
  after `gc.collect()` divided by the persons (plus allocated-block counts as a cross-check).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, Final

import attrs

from gateway.config.model import Config
from gateway.core.clock import FakeClock
from gateway.core.model import (
    AccInput,
    EventKind,
    Frame,
    GateCmd,
    TrackedObject,
    XovisBatch,
    XovisEvent,
)
from gateway.core.stats import BUCKETS_R, Histogram
from gateway.core.tracker import Tracker
from gateway.tools.bench_host import proc_rss_bytes
from gateway.tools.handler_bench import TICK_MS, TimedInput, bench_config, synthetic_stream

HANDLER_TRACKS: Final = 40  # concurrent customers of the synthetic store
CHILD_TIMEOUT_S: Final = 900.0
POS_IDS: Final = (1001, 1002, 1003, 1004, 1005)  # handler_bench.bench_config zones
ENTRY_LINE, STORE_ZONE = 1008, 1011


class CorePhaseError(Exception):
    """The child process failed; the message carries its stderr."""


class _SpanClock(FakeClock):
    """Domain time from the fake clock; `mono_ns` is real time, which the core reads only to
    time its spans (per-event handler time, gate-command enqueue stamps), never for rules."""

    def mono_ns(self) -> int:
        return time.perf_counter_ns()


@attrs.define(slots=True)
class _Recorder(Histogram):
    """`gateway_event_latency_us` that also keeps every raw observation."""

    samples: list[int] = attrs.field(factory=list)

    def observe(self, value: float) -> None:
        self.samples.append(int(value))
        super().observe(value)


def measure(inputs: Sequence[TimedInput], config: Config) -> tuple[list[int], list[int]]:
    """(µs per event as the core times it for `gateway_event_latency_us`, ns per handler call).

    Ticks run unmeasured every 1000 ms of input time, as in `handler_bench`.
    """
    clock = _SpanClock()
    tracker = Tracker(config, clock, _AcceptAll(), random.Random(0))
    recorder = _Recorder(BUCKETS_R)
    tracker.state.counters.event_latency_us = recorder
    per_call: list[int] = []
    next_tick = TICK_MS
    perf = time.perf_counter_ns
    for at, item in inputs:
        while next_tick <= at:
            clock.set(next_tick)
            tracker.tick()
            next_tick += TICK_MS
        clock.set(at)
        t0 = perf()
        if isinstance(item, XovisBatch):
            tracker.handle_batch(item)
        elif isinstance(item, AccInput):
            tracker.handle_acc(item)
        else:
            tracker.handle_door(item)
        per_call.append(perf() - t0)
    return recorder.samples, per_call


def handler_phase(events: int, repeats: int, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    inputs = synthetic_stream(HANDLER_TRACKS, events, seed)
    gen_s = time.perf_counter() - t0
    n_events = sum(
        len(f.events) for _, item in inputs if isinstance(item, XovisBatch) for f in item.frames
    )
    config = bench_config(min_dwell_ms=0)  # §6 bench config
    runs = [measure(inputs, config) for _ in range(repeats)]
    return {
        "events": n_events,
        "items": len(inputs),
        "generate_s": gen_s,
        "gc_threshold": list(gc.get_threshold()),
        "per_event_us": [r[0] for r in runs],
        "per_call_ns": [r[1] for r in runs],
    }


class _AcceptAll:
    def try_send(self, cmd: GateCmd) -> bool:
        return True


def _person(tid: int, k: int, now_ms: int) -> XovisBatch:
    """Create → entry line → STORE → POS → exit POS → POS again: 6 journey events, occupancy."""
    e = EventKind
    zone = POS_IDS[k]
    pos = (0.6 + 1.1 * k, -1.5, 1.7)
    events = (
        XovisEvent(e.TRACK_CREATE, tid, None, None, (5.5, -6.0, 1.7)),
        XovisEvent(e.LINE_CROSS, tid, ENTRY_LINE, "forward", (5.5, -5.4, 1.7)),
        XovisEvent(e.ZONE_ENTRY, tid, STORE_ZONE, None, (5.4, -5.0, 1.7)),
        XovisEvent(e.ZONE_ENTRY, tid, zone, None, pos),
        XovisEvent(e.ZONE_EXIT, tid, zone, None, pos),
        XovisEvent(e.ZONE_ENTRY, tid, zone, None, pos),
    )
    frame = Frame(1_767_225_600_000 + now_ms, events, (TrackedObject(tid, "PERSON", pos),))
    return XovisBatch(now_ms * 1_000_000, "xovis/bench", (frame,))


def memory_phase(persons: int, seed: int) -> dict[str, Any]:
    clock = FakeClock()
    tracker = Tracker(bench_config(min_dwell_ms=0), clock, _AcceptAll(), random.Random(seed))
    batches = [_person(tid, tid % len(POS_IDS), tid) for tid in range(1, persons + 1)]
    gc.collect()
    rss0, blocks0 = proc_rss_bytes_self(), sys.getallocatedblocks()
    for tid, batch in enumerate(batches, start=1):
        clock.set(tid)
        tracker.handle_batch(batch)
    del batches
    gc.collect()
    rss1, blocks1 = proc_rss_bytes_self(), sys.getallocatedblocks()
    state = tracker.state
    journey_events = sum(len(j.events) for j in state.journeys.active.values())
    return {
        "persons": persons,
        "live_persons": len(state.persons),
        "journey_events": journey_events,
        "rss_before": rss0,
        "rss_after": rss1,
        "bytes_per_person": (rss1 - rss0) / persons,
        "blocks_per_person": (blocks1 - blocks0) / persons,
    }


def proc_rss_bytes_self() -> int:
    return proc_rss_bytes(os.getpid())


def run_child(args: Sequence[str]) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; its JSON result (raises CorePhaseError)."""
    cmd = [sys.executable, "-m", "gateway.tools.bench_core", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise CorePhaseError(f"{' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_core")
    parser.add_argument("phase", choices=("handler", "memory"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--persons", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.phase == "handler":
        result = handler_phase(args.events, args.repeats, args.seed)
    else:
        result = memory_phase(args.persons, args.seed)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
