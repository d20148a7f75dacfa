"""Throughput and RS485 phases of `gateway bench` (simulation.md §6).

Load: `BenchLoad` with 20 looping tracks at 1000 frames/s, walking `walk_speedup` times faster
than real time so each frame carries ≥ 5 events. Generating a frame costs about a millisecond of
Python, so the whole stream (warm-up + measured window) is generated once before the phase and
replayed byte for byte into every repeat's fresh gateway; its cost is printed, never measured.
The gateway's own counters give the result: `gateway_events_total` delta per second, every
`*_dropped_total` delta, events offered but never counted, Mosquitto's `$SYS` drop counter,
CPU from /proc, the event-queue depth sampled from `/metrics`. The RS485 poller runs against
the pty board emulator throughout.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any, Final

import attrs
import trio

from gateway.tools.bench_gateway import POLL_INTERVAL_MS, Scrape, bucket_delta
from gateway.tools.bench_rig import Rig
from gateway.tools.traffic import BenchLoad
from gateway.tools.traffic_io import MqttPublisher, TrafficIoStats, open_mqtt_publisher
from gateway.tools.traffic_model import DemoGeometry, SensorMessage

PUBLISH_TICK_S: Final = 0.005  # frames due are published every 5 ms
MAX_BACKLOG_FRAMES: Final = 50  # further behind than this: frames are skipped (counted)
SCRAPE_EVERY_S: Final = 0.5  # event-queue depth sampling
DRAIN_WAIT_S: Final = 5.0  # after the window: until the counters stop moving
DRAIN_POLL_S: Final = 0.25
JITTER_TARGET_US: Final = 2000  # simulation.md §6 rs485 target (a bucket edge of set J)


@attrs.frozen
class ThroughputParams:
    frames_per_s: float = 1000.0
    tracks: int = 20
    walk_speedup: float = 300.0  # ≈ 5.7 events per frame with the demo geometry
    warmup_s: float = 10.0
    duration_s: float = 60.0
    seed: int = 1


@attrs.frozen
class Stream:
    """Pre-generated payloads with their event counts (warm-up frames first)."""

    topic: str
    payloads: list[bytes]
    events: list[int]
    objects_per_frame: float
    warmup_frames: int
    generate_s: float

    @property
    def events_per_frame(self) -> float:
        return sum(self.events) / max(1, len(self.events))


def generate_stream(site: DemoGeometry, params: ThroughputParams) -> Stream:
    load = BenchLoad(
        site,
        tracks=params.tracks,
        frames_per_s=params.frames_per_s,
        seed=params.seed,
        walk_speedup=params.walk_speedup,
    )
    period_ms = 1000.0 / params.frames_per_s
    warm = int(params.warmup_s * params.frames_per_s)
    total = warm + int(params.duration_s * params.frames_per_s)
    payloads: list[bytes] = []
    events: list[int] = []
    objects = 0
    wall0 = time.time_ns() // 1_000_000
    t0 = time.perf_counter()
    topic = ""
    for k in range(total):
        before = load.scene.stats.events
        now = round(k * period_ms)
        for msg in load.step(now, wall0 + now):
            if isinstance(msg, SensorMessage):  # no trial tracks here, so no ACC lines
                topic = msg.topic
                payloads.append(msg.payload)
                events.append(load.scene.stats.events - before)
        objects += sum(1 for w in load.scene.walkers.values() if w.visible)
    return Stream(topic, payloads, events, objects / max(1, total), warm, time.perf_counter() - t0)


@attrs.define
class ThroughputRun:
    """Raw results of one repeat."""

    window_s: float = 0.0
    offered_events: int = 0  # in the measured window
    offered_total: int = 0  # warm-up + window, for the lost-events check
    published_frames: int = 0
    skipped_frames: int = 0
    publish_failed: int = 0
    handled: float = 0.0  # gateway_events_total delta over the window
    handled_total: float = 0.0  # after the drain
    dropped: dict[str, float] = attrs.field(factory=dict)  # counter deltas, window + drain
    broker_dropped: float | None = None
    cpu_pct: float = 0.0
    queue_depths: list[float] = attrs.field(factory=list)
    jitter_buckets: list[tuple[float, float]] = attrs.field(factory=list)
    polls: dict[str, float] = attrs.field(factory=dict)
    query_ns: list[int] = attrs.field(factory=list)  # emulator query arrivals in the window
    gc: dict[str, Any] | None = None
    exit_code: int | None = None

    @property
    def events_per_s(self) -> float:
        return self.handled / self.window_s if self.window_s else 0.0

    @property
    def lost(self) -> int:
        return max(0, self.offered_total - int(self.handled_total))

    @property
    def drops_total(self) -> float:
        return sum(self.dropped.values()) + (self.broker_dropped or 0.0) + self.lost

    def query_deviation_ns(self) -> list[int]:
        """|inter-arrival − poll interval| of the emulator's queries (raw samples)."""
        period = POLL_INTERVAL_MS * 1_000_000
        q = self.query_ns
        return [abs(b - a - period) for a, b in itertools.pairwise(q)]

    def as_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out.update(events_per_s=self.events_per_s, lost=self.lost, drops_total=self.drops_total)
        result: dict[str, Any] = json.loads(json.dumps(out))  # tuples → lists, as in the file
        return result


async def _publish(
    publisher: MqttPublisher, stream: Stream, lo: int, hi: int, rate: float, run: ThroughputRun
) -> None:
    """Frames lo..hi-1 at `rate`; due frames go out every tick, a long backlog is skipped."""
    t0 = trio.current_time()
    k = lo
    while k < hi:
        await trio.sleep(PUBLISH_TICK_S)
        due = min(hi, lo + int((trio.current_time() - t0) * rate) + 1)
        if due - k > MAX_BACKLOG_FRAMES:
            run.skipped_frames += due - k - MAX_BACKLOG_FRAMES
            k = due - MAX_BACKLOG_FRAMES
        for j in range(k, due):
            if publisher.publish(stream.topic, stream.payloads[j]):
                run.published_frames += 1
                run.offered_total += stream.events[j]
                if j >= stream.warmup_frames:
                    run.offered_events += stream.events[j]
            else:
                run.publish_failed += 1
        k = due


async def _sample_depth(rig: Rig, run: ThroughputRun) -> None:
    while True:
        await trio.sleep(SCRAPE_EVERY_S)
        scrape = await rig.gateway.scrape()
        run.queue_depths.append(scrape.value("gateway_event_queue_depth"))


def _deltas(after: Scrape, before: Scrape) -> dict[str, float]:
    a, b = after.dropped(), before.dropped()
    return {k: v - b.get(k, 0.0) for k, v in a.items()}


async def run_throughput(rig: Rig, stream: Stream, params: ThroughputParams) -> ThroughputRun:
    """One repeat on a fresh rig: warm-up frames, measured window, drain."""
    run = ThroughputRun()
    gw = rig.gateway
    rate = params.frames_per_s
    stats = TrafficIoStats()
    async with open_mqtt_publisher(
        rig.broker.host, rig.broker.port, client_id=f"bench-tp-{gw.pid}", stats=stats
    ) as publisher:
        await _publish(publisher, stream, 0, stream.warmup_frames, rate, run)
        s0 = await gw.scrape()
        cpu0, t0 = gw.cpu_s(), trio.current_time()
        dropped0 = rig.broker_dropped()
        q0 = len(rig.board.query_times_ns)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sample_depth, rig, run)
            await _publish(publisher, stream, stream.warmup_frames, len(stream.payloads), rate, run)
            nursery.cancel_scope.cancel()
        s1 = await gw.scrape()
        t1 = trio.current_time()
        run.cpu_pct = 100.0 * (gw.cpu_s() - cpu0) / max(1e-9, t1 - t0)
        run.window_s = t1 - t0
        run.handled = s1.value("gateway_events_total") - s0.value("gateway_events_total")
        times = list(rig.board.query_times_ns)
        run.query_ns = times[q0:] if q0 <= len(times) else times
        jitter = "gateway_rs485_poll_jitter_us"
        run.jitter_buckets = bucket_delta(s1.buckets(jitter), s0.buckets(jitter))
        polls0 = s0.by_label("gateway_rs485_polls_total", "result")
        polls1 = s1.by_label("gateway_rs485_polls_total", "result")
        run.polls = {k: v - polls0.get(k, 0.0) for k, v in polls1.items()}
        s2 = await _drain(rig)
        run.handled_total = s2.value("gateway_events_total")
        run.dropped = _deltas(s2, s0)
        await trio.sleep(1.2)  # one more $SYS interval
        dropped1 = rig.broker_dropped()
        if dropped0 is not None and dropped1 is not None:
            run.broker_dropped = dropped1 - dropped0
    return run


async def _drain(rig: Rig) -> Scrape:
    """Scrape until `gateway_events_total` stops moving (bounded by DRAIN_WAIT_S)."""
    last = await rig.gateway.scrape()
    with trio.move_on_after(DRAIN_WAIT_S):
        while True:
            await trio.sleep(DRAIN_POLL_S)
            now = await rig.gateway.scrape()
            if now.value("gateway_events_total") == last.value("gateway_events_total"):
                return now
            last = now
    return last
