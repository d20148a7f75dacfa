"""Per-phase lines, targets and JSON of `gateway bench` (simulation.md §6 "Output"); pure.

One line per phase: statistics as min/median/max over repeats (a single number when they agree),
sample counts, everything that went missing, then the target and PASS/FAIL. Targets are checked
per repeat and PASS only when every repeat meets them (bench_stats.Verdict).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import attrs

from gateway.tools.bench_gate import GateRun
from gateway.tools.bench_stats import (
    NS_PER_MS,
    NS_PER_US,
    Spread,
    Summary,
    Verdict,
    bucket_quantile,
    growth_pct,
    share_at_most,
)
from gateway.tools.bench_throughput import JITTER_TARGET_US, Stream, ThroughputRun

# simulation.md §6 targets
GATE_DP50_NS: Final = 500_000  # p50 ≤ hop p50 + 0.5 ms
GATE_DP99_NS: Final = 1_500_000  # p99 ≤ hop p99 + 1.5 ms
GATE_MAX_NS: Final = 15_000_000
BURST_MAX_NS: Final = 5_000_000
THROUGHPUT_MIN_EPS: Final = 5000.0
HANDLER_P99_NS: Final = 50_000
MEMORY_MAX_BYTES: Final = 5000  # "≤ 5 KB per person", read as 5000 B (the stricter reading)
SOAK_MAX_GROWTH_PCT: Final = 1.0
SOAK_FIT_LAST_S: Final = 480.0  # slope over the last 8 min
RS485_SHARE: Final = 0.99  # p99 ≤ 2 ms ⇔ ≥ 99 % of polls within 2000 µs (a bucket edge)


@attrs.frozen
class PhaseReport:
    name: str
    n: int  # raw samples behind the line (all repeats)
    line: str
    verdicts: tuple[Verdict, ...]
    data: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)


def _ms(s: Spread) -> str:
    return s.fmt(NS_PER_MS)


def _status(verdicts: Sequence[Verdict]) -> str:
    words = [v.word for v in verdicts]
    word = "PASS" if all(v.ok for v in verdicts) else next(w for w in words if w != "PASS")
    enforced = all(v.enforced for v in verdicts)
    return word if enforced else f"{word} (not enforced: --quick)"


def _gc_text(reports: Sequence[dict[str, Any] | None]) -> str:
    found = [r for r in reports if r]
    if not found:
        return "gc(gateway) n/a"
    counts = [sum(r["count"][g] for r in found) for g in range(3)]
    worst = max(max(r["max_ns"]) for r in found)
    first = found[0]
    return (
        f"gc(gateway) thr={tuple(first['threshold'])} frozen={first['freeze_count']} "
        f"collections={counts} max pause {worst / NS_PER_MS:.2f} ms"
    )


def _bound(runs: Sequence[GateRun], q: float) -> str:
    h = "gateway_gate_recv_to_wire_us"
    return Spread.of(bucket_quantile(r.internal.get(h, []), q) / 1000 for r in runs).fmt(1, 2)


def gate_report(runs: Sequence[GateRun], enforced: bool) -> PhaseReport:
    gates = [Summary.of(r.gate_ns()) for r in runs]
    hops = [Summary.of(r.hop_ns()) for r in runs]
    dp50 = [g.p50 - h.p50 for g, h in zip(gates, hops, strict=True)]
    dp99 = [g.p99 - h.p99 for g, h in zip(gates, hops, strict=True)]
    ratio = [g.p50 / h.p50 if h.p50 else 0.0 for g, h in zip(gates, hops, strict=True)]
    missing = [r.missing_opens() + r.publish_failures() for r in runs]
    usable = [g.n > 0 and h.n > 0 for g, h in zip(gates, hops, strict=True)]
    verdicts = (
        Verdict("gate", "p50 ≤ hop p50 + 0.5 ms",
                tuple(u and d <= GATE_DP50_NS for u, d in zip(usable, dp50, strict=True)),
                enforced),
        Verdict("gate", "p99 ≤ hop p99 + 1.5 ms",
                tuple(u and d <= GATE_DP99_NS for u, d in zip(usable, dp99, strict=True)),
                enforced),
        Verdict("gate", "max ≤ 15 ms, no missing open frame",
                tuple(u and g.max <= GATE_MAX_NS and m == 0
                      for u, g, m in zip(usable, gates, missing, strict=True)),
                enforced),
    )  # fmt: skip
    n = sum(g.n for g in gates)
    per = runs[0].params if runs else None
    shape = f"{len(runs)}×{per.trials}, first {per.discard} discarded" if per else ""
    line = (
        f"gate       n={n} ({shape}) p50 {_ms(Spread.of(g.p50 for g in gates))} "
        f"p90 {_ms(Spread.of(g.p90 for g in gates))} p99 {_ms(Spread.of(g.p99 for g in gates))} "
        f"max {_ms(Spread.of(g.max for g in gates))} ms | hop n={sum(h.n for h in hops)} "
        f"p50 {_ms(Spread.of(h.p50 for h in hops))} p99 {_ms(Spread.of(h.p99 for h in hops))} "
        f"max {_ms(Spread.of(h.max for h in hops))} ms | Δp50 {_ms(Spread.of(dp50))} "
        f"Δp99 {_ms(Spread.of(dp99))} ms ratio p50 {Spread.of(ratio).fmt(1, 1)} | "
        f"missing open {sum(r.missing_opens() for r in runs)} hop "
        f"{sum(r.missing_hops() for r in runs)} late {sum(r.late_opens for r in runs)} "
        f"publish-failed {sum(r.publish_failures() for r in runs)} | gw recv→wire (histogram "
        f"bounds) p50 ≤{_bound(runs, 0.5)} p99 ≤{_bound(runs, 0.99)} ms | gw cpu "
        f"{Spread.of(r.cpu_pct for r in runs).fmt(1, 0)} % {_gc_text([r.gc for r in runs])} "
        f"| {_status(verdicts)}"
    )
    data = {
        "n": n,
        "gate": [g.as_dict() for g in gates],
        "hop": [h.as_dict() for h in hops],
        "delta_p50_ns": dp50,
        "delta_p99_ns": dp99,
        "ratio_p50": ratio,
        "repeats": [r.as_dict() for r in runs],
    }
    return PhaseReport("gate", n, line, verdicts, data)


def burst_report(runs: Sequence[GateRun], enforced: bool) -> PhaseReport:
    bursts = [Summary.of(r.burst_ns()) for r in runs]
    verdicts = (
        Verdict(
            "burst",
            "max ≤ 5 ms",
            tuple(b.n > 0 and b.max <= BURST_MAX_NS for b in bursts),
            enforced,
        ),
    )
    n = sum(b.n for b in bursts)
    per = runs[0].params if runs else None
    shape = f"{sum(len(r.bursts) for r in runs)} bursts × {per.burst_messages} msgs in " \
        f"{per.burst_window_s:g} s" if per else ""  # fmt: skip
    dropped = [r.broker_dropped for r in runs if r.broker_dropped is not None]
    line = (
        f"burst      n={n} trials overlapping ({shape}) p50 "
        f"{_ms(Spread.of(b.p50 for b in bursts))} p99 {_ms(Spread.of(b.p99 for b in bursts))} "
        f"max {_ms(Spread.of(b.max for b in bursts))} ms | broker dropped "
        f"{sum(dropped):.0f}{'' if dropped else ' (n/a)'} | {_status(verdicts)}"
    )
    data = {"n": n, "burst": [b.as_dict() for b in bursts]}
    return PhaseReport("burst", n, line, verdicts, data)


def throughput_report(runs: Sequence[ThroughputRun], stream: Stream, enforced: bool) -> PhaseReport:
    eps = [r.events_per_s for r in runs]
    verdicts = (
        Verdict("throughput", "≥ 5000 events/s",
                tuple(r.window_s > 0 and r.events_per_s >= THROUGHPUT_MIN_EPS for r in runs),
                enforced),
        Verdict("throughput", "0 drops (gateway counters, broker $SYS, events lost)",
                tuple(r.window_s > 0 and r.drops_total == 0 for r in runs), enforced),
    )  # fmt: skip
    n = sum(int(r.handled) for r in runs)
    offered = [r.offered_events / r.window_s if r.window_s else 0.0 for r in runs]
    gw_drops = [sum(r.dropped.values()) for r in runs]
    broker = [r.broker_dropped for r in runs if r.broker_dropped is not None]
    nonzero = sorted({k for r in runs for k, v in r.dropped.items() if v})
    nonzero = [f"{k}={sum(r.dropped.get(k, 0.0) for r in runs):.0f}" for k in nonzero]
    line = (
        f"throughput n={n} events ({len(runs)}×{runs[0].window_s:.0f} s; stream "
        f"{stream.events_per_frame:.2f} ev/frame, {stream.objects_per_frame:.0f} objects) "
        f"offered {Spread.of(offered).fmt(1, 0)} ev/s handled {Spread.of(eps).fmt(1, 0)} ev/s "
        f"| drops gateway {Spread.of(gw_drops).fmt(1, 0)}"
        f"{' (' + ' '.join(nonzero) + ')' if nonzero else ''} broker "
        f"{Spread.of(broker).fmt(1, 0) if broker else 'n/a'} lost "
        f"{Spread.of(r.lost for r in runs).fmt(1, 0)} skipped frames "
        f"{sum(r.skipped_frames for r in runs)} | gw cpu "
        f"{Spread.of(r.cpu_pct for r in runs).fmt(1, 0)} % max queue depth "
        f"{Spread.of(max(r.queue_depths, default=0) for r in runs).fmt(1, 0)} "
        f"(sampled every 0.5 s) {_gc_text([r.gc for r in runs])} | {_status(verdicts)}"
    ) if runs else "throughput no repeat completed"  # fmt: skip
    data = {
        "n": n,
        "events_per_frame": stream.events_per_frame,
        "objects_per_frame": stream.objects_per_frame,
        "stream_generate_s": stream.generate_s,
        "repeats": [r.as_dict() for r in runs],
    }
    return PhaseReport("throughput", n, line, verdicts, data)


def rs485_report(runs: Sequence[ThroughputRun], enforced: bool) -> PhaseReport:
    shares = [share_at_most(r.jitter_buckets, JITTER_TARGET_US) for r in runs]
    verdicts = (
        Verdict(
            "rs485",
            "jitter p99 ≤ 2 ms (≥ 99 % of polls within 2000 µs)",
            tuple(s is not None and s >= RS485_SHARE for s in shares),
            enforced,
        ),
    )
    polls = [r.jitter_buckets[-1][1] if r.jitter_buckets else 0.0 for r in runs]
    dev = [Summary.of(r.query_deviation_ns()) for r in runs]
    n = int(sum(polls))

    def bound(q: float) -> str:
        vals = [bucket_quantile(r.jitter_buckets, q) / 1000 for r in runs]
        return Spread.of(vals).fmt(1, 2)

    results: dict[str, float] = {}
    for r in runs:
        for k, v in r.polls.items():
            results[k] = results.get(k, 0.0) + v
    line = (
        f"rs485      n={n} polls @ 250 ms | gateway jitter (histogram bucket bounds) p50 "
        f"≤{bound(0.5)} p99 ≤{bound(0.99)} max ≤{bound(1.0)} ms, within 2 ms "
        f"{Spread.of(100 * (s or 0.0) for s in shares).fmt(1, 1)} % | emulator inter-arrival "
        f"deviation n={sum(d.n for d in dev)} p50 {_ms(Spread.of(d.p50 for d in dev))} p99 "
        f"{_ms(Spread.of(d.p99 for d in dev))} max {_ms(Spread.of(d.max for d in dev))} ms | "
        f"results {','.join(f'{k}={v:.0f}' for k, v in sorted(results.items()))} | "
        f"{_status(verdicts)}"
    )
    data = {
        "n": n,
        "jitter_buckets": [r.jitter_buckets for r in runs],
        "share_within_2ms": shares,
        "emulator_deviation": [d.as_dict() for d in dev],
        "polls": [r.polls for r in runs],
    }
    return PhaseReport("rs485", n, line, verdicts, data)


def handler_report(result: dict[str, Any], enforced: bool) -> PhaseReport:
    """Target on the per-event time (the core's own span, µs); per call shown for context."""
    events = [Summary.of(s) for s in result["per_event_us"]]
    calls = [Summary.of(s) for s in result["per_call_ns"]]
    verdicts = (
        Verdict("handler", "per-event p99 ≤ 50 µs",
                tuple(s.n > 0 and s.p99 * NS_PER_US <= HANDLER_P99_NS for s in events), enforced),
    )  # fmt: skip
    n = sum(s.n for s in events)

    def us(values: Spread, scale: float = 1.0) -> str:
        return values.fmt(scale, 1)

    line = (
        f"handler    n={n} events+ACCs ({len(events)}×{result['events']} events, 40 customers) "
        f"per event p50 "
        f"{us(Spread.of(s.p50 for s in events))} p90 {us(Spread.of(s.p90 for s in events))} p99 "
        f"{us(Spread.of(s.p99 for s in events))} max {us(Spread.of(s.max for s in events))} µs | "
        f"per handler call (n={sum(s.n for s in calls)}: a message with all its events and "
        f"positions, an ACC, a door reading) p50 {us(Spread.of(s.p50 for s in calls), NS_PER_US)} "
        f"p99 {us(Spread.of(s.p99 for s in calls), NS_PER_US)} max "
        f"{us(Spread.of(s.max for s in calls), NS_PER_US)} µs | gc thr="
        f"{tuple(result['gc_threshold'])} | {_status(verdicts)}"
    )
    data = {
        "n": n,
        "per_event": [s.as_dict() for s in events],
        "per_call": [s.as_dict() for s in calls],
        **result,
    }
    return PhaseReport("handler", n, line, verdicts, data)


def memory_report(results: Sequence[dict[str, Any]], enforced: bool) -> PhaseReport:
    per = [r["bytes_per_person"] for r in results]
    verdicts = (
        Verdict("memory", "≤ 5 KB (5000 B) per live person",
                tuple(0 < b <= MEMORY_MAX_BYTES for b in per), enforced),
    )  # fmt: skip
    n = sum(int(r["live_persons"]) for r in results)
    first = results[0] if results else {"persons": 0, "journey_events": 0}
    line = (
        f"memory     n={n} live persons ({len(results)}×{first['persons']}, "
        f"{first['journey_events']} journey events each run) RSS Δ "
        f"{Spread.of(per).fmt(1, 0)} B/person, allocated blocks "
        f"{Spread.of(r['blocks_per_person'] for r in results).fmt(1, 1)}/person | "
        f"{_status(verdicts)}"
    )
    return PhaseReport("memory", n, line, verdicts, {"n": n, "repeats": list(results)})


def soak_report(run: GateRun, enforced: bool) -> PhaseReport:
    rss = run.rss
    end = rss[-1][0] if rss else 0.0
    fit = [(t, b) for t, b in rss if t >= end - SOAK_FIT_LAST_S]
    growth = growth_pct([t for t, _ in fit], [float(b) for _, b in fit])
    ok = len(fit) >= 3 and growth <= SOAK_MAX_GROWTH_PCT
    verdicts = (Verdict("soak", "RSS flat (≤ 1 % growth over the last 8 min)", (ok,), enforced),)
    gate = Summary.of(run.gate_ns())
    first_mb = rss[0][1] / 1e6 if rss else 0.0
    last_mb = rss[-1][1] / 1e6 if rss else 0.0
    line = (
        f"soak       n={len(rss)} RSS samples over {end:.0f} s: {first_mb:.1f} → {last_mb:.1f} MB, "
        f"fit over the last {min(end, SOAK_FIT_LAST_S):.0f} s: {growth:+.2f} % | gate n={gate.n} "
        f"p50 {gate.p50 / NS_PER_MS:.2f} p99 {gate.p99 / NS_PER_MS:.2f} max "
        f"{gate.max / NS_PER_MS:.2f} ms missing open {run.missing_opens()} | "
        f"{_gc_text([run.gc])} | {_status(verdicts)}"
    )
    data = {"n": len(rss), "growth_pct": growth, "gate": gate.as_dict(), "run": run.as_dict()}
    return PhaseReport("soak", len(rss), line, verdicts, data)
