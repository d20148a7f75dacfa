"""In-process handler benchmark: a synthetic store stream through the core, no I/O.

`synthetic_stream` builds a plausible store (simulation.md §2 geometry: creates, entry crossings,
POS dwell, ACCs, approach/gate/exit crossings, deletes, track loss, 12.5 fps position frames) as
timed core inputs; `measure_handler_cost` runs them through a `Tracker` on a fake clock and times
each handler call with `time.perf_counter_ns` (simulation.md §6 "handler" phase).
"""

from __future__ import annotations

import argparse
import bisect
import random
import time
from collections.abc import Sequence

import attrs

from gateway.config.model import (
    AccConfig,
    Config,
    GateConfig,
    MqttConfig,
    MqttEgressConfig,
    PosTrackingConfig,
    SiteConfig,
    ZonesConfig,
)
from gateway.core.clock import FakeClock
from gateway.core.model import (
    AccInput,
    Direction,
    DoorReading,
    DoorStatus,
    EventKind,
    Frame,
    GateCmd,
    TrackedObject,
    XovisBatch,
    XovisEvent,
)
from gateway.core.tracker import Tracker

FRAME_MS = 80  # simulation.md §2: one message per 80 ms frame
TICK_MS = 1000  # behaviour.md §4.10
POS_IDS = (1001, 1002, 1003, 1004, 1005)
EXIT_LINE, GATE_ZONE, ENTRY_LINE, APPROACH_LINE, DWELL_ZONE, STORE_ZONE = (
    1006, 1007, 1008, 1009, 1010, 1011,
)  # fmt: skip
PAYER_SHARE = 0.8  # simulation.md §2
BROWSER_SHARE = 0.1
LOSS_SHARE = 0.05

CoreInput = XovisBatch | AccInput | DoorReading
TimedInput = tuple[int, CoreInput]  # (monotonic ms at which it is handled, item)
Point = tuple[float, float]
_Ev = tuple[EventKind, int | None, Direction | None]


def bench_config(min_dwell_ms: int = 7000) -> Config:
    """The demo site's zones (interfaces.md §11.4) with ACC terminals 127.0.0.1–5 → POS_1–5."""
    names = {z: f"POS_{i + 1}" for i, z in enumerate(POS_IDS)}
    names |= {1006: "EXIT_1", 1007: "GATE_1", 1008: "ENTRY_1", 1009: "APPROACH_1"}
    names |= {1010: "DWELL_1", 1011: "STORE"}
    return Config(
        path="<bench>",
        site=SiteConfig(id="bench"),
        mqtt=MqttConfig(host="127.0.0.1"),
        gate=GateConfig(mode="tcp", tcp_addr="127.0.0.1:8000"),
        zones=ZonesConfig(
            pos_zones=POS_IDS,
            gate_zone=GATE_ZONE,
            exit_line=EXIT_LINE,
            dwell_zones=(DWELL_ZONE,),
            entry_line=ENTRY_LINE,
            approach_line=APPROACH_LINE,
            store_zone=STORE_ZONE,
            names=names,
        ),
        mqtt_egress=MqttEgressConfig(enabled=False, host="127.0.0.1", port=1883),
        pos_tracking=PosTrackingConfig(min_dwell_ms=min_dwell_ms),
        acc=AccConfig(ip_to_pos={f"127.0.0.{i + 1}": f"POS_{i + 1}" for i in range(5)}),
    )


@attrs.define
class _Track:
    """One Xovis track: waypoints (ms, point) and events (ms, event) in time order."""

    tid: int
    height: float
    points: list[tuple[int, Point]] = attrs.field(factory=list)
    events: list[tuple[int, _Ev]] = attrs.field(factory=list)

    @property
    def start(self) -> int:
        return self.points[0][0]

    @property
    def end(self) -> int:
        return self.points[-1][0]

    def walk(self, dur: int, to: Point, *events: _Ev) -> int:
        at = self.points[-1][0] + dur
        self.points.append((at, to))
        self.events.extend((at, e) for e in events)
        return at

    def position(self, now: int) -> tuple[float, float, float]:
        times = [t for t, _ in self.points]
        i = bisect.bisect_right(times, now)
        if i == 0:
            x, y = self.points[0][1]
        elif i >= len(self.points):
            x, y = self.points[-1][1]
        else:
            (t0, (x0, y0)), (t1, (x1, y1)) = self.points[i - 1], self.points[i]
            f = (now - t0) / max(1, t1 - t0)
            x, y = x0 + (x1 - x0) * f, y0 + (y1 - y0) * f
        return (round(x, 3), round(y, 3), self.height)


@attrs.define
class _Plan:
    tracks: list[_Track]
    accs: list[tuple[int, str]]
    doors: list[tuple[int, DoorStatus]]


def _customer(rng: random.Random, tid: int, start: int) -> _Plan:
    """Entry → store → POS (80 % pay) → approach → gate → exit; 10 % browse; 5 % track loss."""
    k = rng.randrange(len(POS_IDS))
    pos_zone, pos_xy = POS_IDS[k], (0.6 + 1.1 * k, -1.5)
    tr = _Track(tid, round(rng.uniform(1.55, 1.9), 3), [(start, (5.5, -6.0))])
    plan = _Plan([tr], [], [])
    tr.events.append((start, (EventKind.TRACK_CREATE, None, None)))
    tr.walk(700, (5.5, -5.4), (EventKind.LINE_CROSS, ENTRY_LINE, "forward"))
    tr.walk(600, (5.4, -5.0), (EventKind.ZONE_ENTRY, STORE_ZONE, None))
    kind = rng.random()
    if kind < BROWSER_SHARE:
        tr.walk(rng.randint(3000, 9000), (4.0, -3.0))
        at = tr.walk(2000, (5.0, -4.5), (EventKind.ZONE_EXIT, STORE_ZONE, None))
        tr.events.append((at + 100, (EventKind.TRACK_DELETE, None, None)))
        tr.points.append((at + 100, (5.0, -4.5)))
        return plan
    tr.walk(rng.randint(2000, 5000), pos_xy, (EventKind.ZONE_ENTRY, pos_zone, None))
    dwell = rng.randint(8000, 14_000)
    at = tr.walk(dwell, (pos_xy[0] + 0.05, pos_xy[1]), (EventKind.ZONE_EXIT, pos_zone, None))
    if kind < BROWSER_SHARE + PAYER_SHARE:
        plan.accs.append((at - rng.randint(0, 3000), f"127.0.0.{k + 1}"))
    tr.walk(2500, (2.25, 0.5), (EventKind.LINE_CROSS, APPROACH_LINE, "forward"))
    gate_at = tr.walk(
        1000,
        (2.25, 1.55),
        (EventKind.ZONE_EXIT, STORE_ZONE, None),
        (EventKind.ZONE_ENTRY, GATE_ZONE, None),
    )
    if kind < BROWSER_SHARE + PAYER_SHARE:
        plan.doors += [(gate_at + 100, "moving"), (gate_at + 350, "open")]
        plan.doors.append((gate_at + 3350, "closed"))
    if rng.random() < LOSS_SHARE:  # lost in the gate zone, re-acquired ≤ 20 cm away
        lost_at = tr.walk(300, (2.3, 1.6), (EventKind.TRACK_DELETE, None, None))
        tr = _Track(tid + 1_000_000, tr.height + 0.01, [(lost_at + rng.randint(200, 2000),
                    (2.4, 1.7))])  # fmt: skip
        tr.events.append((tr.start, (EventKind.TRACK_CREATE, None, None)))
        plan.tracks.append(tr)
    tr.walk(800, (2.25, 2.2), (EventKind.ZONE_EXIT, GATE_ZONE, None),
            (EventKind.LINE_CROSS, EXIT_LINE, "forward"))  # fmt: skip
    at = tr.walk(800, (2.25, 3.0))
    tr.events.append((at, (EventKind.TRACK_DELETE, None, None)))
    return plan


def synthetic_stream(tracks: int, events: int, seed: int) -> list[TimedInput]:
    """About `tracks` concurrent customers until `events` Xovis events have been generated.

    Returns `(mono_ms, item)` pairs in time order: one `XovisBatch` per 80 ms frame (that frame's
    events, then every live track's position), `AccInput`s from the mapped terminals and
    `DoorReading`s following each paid customer's gate entry.
    """
    rng = random.Random(seed)
    active: list[_Track] = []
    side: list[TimedInput] = []
    customers = 0
    n_events = 0
    frames: list[TimedInput] = []
    now = 0
    while n_events < events:
        while sum(1 for t in active if t.tid < 1_000_000) < tracks:
            customers += 1
            plan = _customer(rng, customers, now + rng.randint(0, 3000))
            active.extend(plan.tracks)
            side.extend((at, AccInput(at * 1_000_000, ip, f"R{customers}")) for at, ip in plan.accs)
            side.extend((at, DoorReading(status)) for at, status in plan.doors)
        evs: list[XovisEvent] = []
        objs: list[TrackedObject] = []
        for tr in active:
            if tr.start > now:
                continue
            pos = tr.position(now)
            while tr.events and tr.events[0][0] <= now:
                _, (kind, geometry, direction) = tr.events.pop(0)
                evs.append(XovisEvent(kind, tr.tid, geometry, direction, pos))
            if tr.events:
                objs.append(TrackedObject(tr.tid, "PERSON", pos))
        active = [tr for tr in active if tr.events]
        if evs or objs:
            frame = Frame(1_767_225_600_000 + now, tuple(evs), tuple(objs))
            frames.append((now, XovisBatch(now * 1_000_000, "xovis/bench", (frame,))))
        n_events += len(evs)
        now += FRAME_MS
    side = [item for item in side if item[0] < now]
    return sorted(frames + side, key=lambda item: item[0])


class _AcceptAll:
    """Gate port that accepts every command (the bench measures the core only)."""

    def try_send(self, cmd: GateCmd) -> bool:
        return True


def measure_handler_cost(inputs: Sequence[TimedInput], config: Config) -> list[int]:
    """ns per handled item (`perf_counter_ns` around each handler call); ticks run unmeasured."""
    clock = FakeClock()
    tracker = Tracker(config, clock, _AcceptAll(), random.Random(0))
    samples: list[int] = []
    next_tick = TICK_MS
    perf = time.perf_counter_ns
    for at, item in inputs:
        while next_tick <= at:
            clock.set(next_tick)
            tracker.tick()
            next_tick += TICK_MS
        clock.set(at)
        if isinstance(item, XovisBatch):
            t0 = perf()
            tracker.handle_batch(item)
            samples.append(perf() - t0)
        elif isinstance(item, AccInput):
            t0 = perf()
            tracker.handle_acc(item)
            samples.append(perf() - t0)
        else:
            t0 = perf()
            tracker.handle_door(item)
            samples.append(perf() - t0)
    return samples


def percentile(samples: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of raw samples (never from histogram buckets, §6)."""
    ordered = sorted(samples)
    if not ordered:
        return 0
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="core handler cost on a synthetic stream")
    parser.add_argument("--tracks", type=int, default=40)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    inputs = synthetic_stream(args.tracks, args.events, args.seed)
    samples = measure_handler_cost(inputs, bench_config())
    batches = [s for (_, item), s in zip(inputs, samples, strict=True)
               if isinstance(item, XovisBatch)]  # fmt: skip
    n_ev = sum(len(f.events) for _, i in inputs if isinstance(i, XovisBatch) for f in i.frames)
    print(
        f"handler items={len(samples)} batches={len(batches)} events={n_ev} "
        f"p50={percentile(samples, 0.5) / 1000:.1f}us p99={percentile(samples, 0.99) / 1000:.1f}us "
        f"max={max(samples) / 1000:.1f}us"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
