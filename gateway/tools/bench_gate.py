"""Gate, burst and soak phases of `gateway bench` (simulation.md §6).

Load: `BenchLoad` at 50 frames/s with 40 looping tracks through the real traffic sender (paho,
TCP_NODELAY), plus pre-paid trial tracks standing in the trial POS. Per trial one paid track's
gate ZONE_ENTRY is published; the **gate latency** is that publish call → the open frame read by
the mock controller, the **raw hop** the same publish → the raw subscriber's receipt. A trial
waits for its open frame (≤ `trial_timeout_s`) before the next one, so frames are never
attributed to the wrong trial; trials are `trial_gap_s` apart otherwise. Bursts (500 messages in
1 s, pre-generated during warm-up) run while trials continue.
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Callable
from typing import Any, Final

import attrs
import trio

from gateway.tools.bench_gateway import bucket_delta
from gateway.tools.bench_rig import Rig
from gateway.tools.traffic import BenchLoad
from gateway.tools.traffic_io import MqttPublisher, TrafficIoStats, run_traffic

TRIAL_BATCH: Final = 10  # trial tracks paid by one ACC (min_dwell_ms = 0: one ACC pays all)
ACC_DELAY_MS: Final = 300  # ACC after the batch appears in the trial POS
PAID_SETTLE_S: Final = 0.5  # after the ACC line was sent, before a track of it is used
BURST_TICK_S: Final = 0.01  # a burst is published in slices every 10 ms
# the gateway's own view of the gate path (Prometheus histograms, bucket resolution only)
INTERNAL_HISTOGRAMS: Final = (
    "gateway_gate_recv_to_wire_us",  # MQTT bytes read → open frame written
    "gateway_event_queue_wait_us",  # item receipt → tracker handler start
    "gateway_gate_latency_us",  # trigger receipt → command enqueued
    "gateway_gate_queue_delay_us",  # enqueued → gate worker pickup
)


@attrs.frozen
class GateParams:
    frames_per_s: float = 50.0
    tracks: int = 40
    warmup_s: float = 10.0
    discard: int = 50  # first trials of each repeat, never reported (§6 warm-up)
    trials: int = 500
    trial_gap_s: float = 0.1
    trial_timeout_s: float = 1.0
    bursts: int = 0  # bursts spread over the measured trials
    burst_messages: int = 500
    burst_window_s: float = 1.0
    soak_s: float | None = None  # soak: trials until this much time has passed, RSS sampling
    rss_every_s: float = 10.0
    seed: int = 1


@attrs.define
class Trial:
    index: int
    track_id: int
    publish_ns: int
    warmup: bool
    open_ns: int | None = None
    hop_ns: int | None = None
    published: bool = True

    def end_ns(self, timeout_ns: int) -> int:
        return self.open_ns if self.open_ns is not None else self.publish_ns + timeout_ns


@attrs.define
class GateRun:
    """Raw results of one repeat (everything goes to `--json`)."""

    params: GateParams
    trials: list[Trial] = attrs.field(factory=list)
    bursts: list[tuple[int, int]] = attrs.field(factory=list)  # (first, last publish ns)
    late_opens: int = 0  # open frames that arrived when no trial was waiting
    io: TrafficIoStats = attrs.field(factory=TrafficIoStats)
    cpu_pct: float = 0.0
    rss: list[tuple[float, int]] = attrs.field(factory=list)  # (s since start, bytes)
    broker_dropped: float | None = None
    gc: dict[str, Any] | None = None
    exit_code: int | None = None
    internal: dict[str, list[tuple[float, float]]] = attrs.field(factory=dict)

    def measured(self) -> list[Trial]:
        return [t for t in self.trials if not t.warmup]

    def gate_ns(self) -> list[int]:
        return [t.open_ns - t.publish_ns for t in self.measured() if t.open_ns is not None]

    def hop_ns(self) -> list[int]:
        return [t.hop_ns - t.publish_ns for t in self.measured() if t.hop_ns is not None]

    def burst_ns(self) -> list[int]:
        timeout_ns = int(self.params.trial_timeout_s * 1e9)
        out = []
        for t in self.measured():
            end = t.end_ns(timeout_ns)
            if any(t.publish_ns <= b1 and end >= b0 for b0, b1 in self.bursts):
                out.append(end - t.publish_ns)  # a missing open counts as the timeout
        return out

    def missing_opens(self) -> int:
        return sum(1 for t in self.measured() if t.open_ns is None)

    def missing_hops(self) -> int:
        return sum(1 for t in self.measured() if t.hop_ns is None)

    def publish_failures(self) -> int:
        return sum(1 for t in self.measured() if not t.published)

    def as_dict(self) -> dict[str, Any]:
        return {
            "trials": [attrs.asdict(t) for t in self.trials],
            "bursts": self.bursts,
            "late_opens": self.late_opens,
            "load": attrs.asdict(self.io),
            "gateway_cpu_pct": self.cpu_pct,
            "gateway_rss": self.rss,
            "broker_dropped": self.broker_dropped,
            "gateway_gc": self.gc,
            "gateway_exit_code": self.exit_code,
            "gateway_histograms": self.internal,
        }


class _TrialPool:
    """Paid trial tracks in order; a track is ready `PAID_SETTLE_S` after its ACC was sent."""

    def __init__(self, load: BenchLoad) -> None:
        self._load = load
        self._pending: collections.deque[int] = collections.deque()
        self._paid_at: dict[int, float] = {}

    def refill(self) -> None:
        while len(self._pending) < 2 * TRIAL_BATCH:
            self._pending.extend(self._load.add_paid_tracks(TRIAL_BATCH, acc_delay_ms=ACC_DELAY_MS))

    async def take(self) -> int:
        self.refill()
        tid = self._pending[0]
        while True:
            now = trio.current_time()
            for t in self._pending:
                if self._load.is_paid(t):
                    self._paid_at.setdefault(t, now)
            paid = self._paid_at.get(tid)
            if paid is not None and now - paid >= PAID_SETTLE_S:
                break
            await trio.sleep(0.02)
        self._pending.popleft()
        del self._paid_at[tid]
        return tid


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def _run_trials(
    rig: Rig,
    load: BenchLoad,
    pool: _TrialPool,
    publisher: MqttPublisher,
    run: GateRun,
    keep_going: Callable[[int], bool],
) -> None:
    p = run.params
    sub = rig.subscriber
    assert sub is not None  # the gate rig subscribes to the load topic
    next_at = trio.current_time()
    i = 0
    while keep_going(i):
        tid = await pool.take()
        next_at = max(next_at, trio.current_time())
        await trio.sleep_until(next_at)
        run.late_opens += len(rig.take_opens())
        msg = load.gate_entry_message(tid, _wall_ms())
        sub.expect(msg.payload, i)
        t0 = time.monotonic_ns()
        ok = publisher.publish(msg.topic, msg.payload)
        trial = Trial(i, tid, t0, warmup=i < p.discard, published=ok)
        run.trials.append(trial)
        if ok:
            with trio.move_on_after(p.trial_timeout_s):
                trial.open_ns = await rig.wait_open()
        next_at += p.trial_gap_s
        i += 1
    await trio.sleep(p.trial_timeout_s)  # last raw-hop receipts
    for trial in run.trials:
        trial.hop_ns = sub.seen_ns.get(trial.index)


def _burst_payloads(load: BenchLoad, n: int) -> list[bytes]:
    """Position-only frames of the live walkers (a sensor backlog arriving at once)."""
    walkers = [w for w in load.scene.walkers.values() if w.visible]
    return [
        load.scene.message(walkers, [], _wall_ms(), may_truncate=False).payload for _ in range(n)
    ]


async def _run_bursts(
    rig: Rig, publisher: MqttPublisher, run: GateRun, payloads: list[list[bytes]], every_s: float
) -> None:
    p = run.params
    per_tick = max(1, round(p.burst_messages * BURST_TICK_S / p.burst_window_s))
    for burst in payloads:
        await trio.sleep(every_s / 2)
        first = time.monotonic_ns()
        t0 = trio.current_time()
        for k in range(0, len(burst), per_tick):
            await trio.sleep_until(t0 + k / per_tick * BURST_TICK_S)
            for payload in burst[k : k + per_tick]:
                publisher.publish(rig.topic, payload)
        run.bursts.append((first, time.monotonic_ns()))
        await trio.sleep(every_s / 2)


async def _sample_rss(rig: Rig, run: GateRun, every_s: float) -> None:
    t0 = trio.current_time()
    while True:
        run.rss.append((trio.current_time() - t0, rig.gateway.rss_bytes()))
        await trio.sleep(every_s)


async def run_gate(rig: Rig, params: GateParams) -> GateRun:
    """One repeat on a fresh rig: warm-up load, then trials (and bursts / RSS samples)."""
    run = GateRun(params)
    load = BenchLoad(
        rig.site, tracks=params.tracks, frames_per_s=params.frames_per_s, seed=params.seed
    )
    gw = rig.gateway
    async with trio.open_nursery() as nursery:
        publisher = await nursery.start(
            functools.partial(
                run_traffic,
                load,
                mqtt_host=rig.broker.host,
                mqtt_port=rig.broker.port,
                acc_host="127.0.0.1",
                acc_port=gw.acc_port,
                duration_s=None,
                stats=run.io,
                client_id=f"bench-load-{gw.pid}",
            )
        )
        pool = _TrialPool(load)
        pool.refill()  # the first batches are paid during the warm-up
        bursts = [_burst_payloads(load, params.burst_messages) for _ in range(params.bursts)]
        await trio.sleep(params.warmup_s)
        cpu0, t0 = gw.cpu_s(), trio.current_time()
        dropped0 = rig.broker_dropped()
        s0 = await gw.scrape()
        if params.soak_s is not None:
            nursery.start_soon(_sample_rss, rig, run, params.rss_every_s)
        end = t0 + params.soak_s if params.soak_s is not None else None
        limit = params.discard + params.trials

        def keep_going(i: int) -> bool:
            return trio.current_time() < end if end is not None else i < limit

        if bursts:
            measured_s = params.trials * params.trial_gap_s
            skip_s = params.discard * params.trial_gap_s
            nursery.start_soon(_delayed, skip_s, _run_bursts, rig, publisher, run, bursts,
                               measured_s / len(bursts))  # fmt: skip
        await _run_trials(rig, load, pool, publisher, run, keep_going)
        run.cpu_pct = 100.0 * (gw.cpu_s() - cpu0) / max(1e-9, trio.current_time() - t0)
        s1 = await gw.scrape()
        run.internal = {h: bucket_delta(s1.buckets(h), s0.buckets(h)) for h in INTERNAL_HISTOGRAMS}
        dropped1 = rig.broker_dropped()
        if dropped0 is not None and dropped1 is not None:
            run.broker_dropped = dropped1 - dropped0
        nursery.cancel_scope.cancel()
    return run


async def _delayed(delay_s: float, fn: Callable[..., Any], *args: Any) -> None:
    await trio.sleep(delay_s)
    await fn(*args)
