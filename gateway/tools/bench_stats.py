"""Statistics of `gateway bench` (simulation.md §6 "honest-measurement rules"); pure.

Percentiles come from raw samples only (nearest rank, never from histogram buckets), every
summary carries its sample count, and a statistic over repeats is shown as min/median/max.
A target PASSes only when every repeat meets it: one bad repeat is never averaged away.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import attrs

NS_PER_MS: Final = 1_000_000
NS_PER_US: Final = 1_000


def percentile(ordered: Sequence[int], q: float) -> int:
    """Nearest rank (the ⌈q·n⌉-th smallest) of already sorted raw samples; 0 when empty."""
    if not ordered:
        return 0
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered) - 1e-9)))
    return ordered[rank - 1]


@attrs.frozen
class Summary:
    """Raw-sample percentiles of one repeat, in the samples' unit (ns for latencies)."""

    n: int
    p50: int
    p90: int
    p99: int
    max: int

    @classmethod
    def of(cls, samples: Sequence[int]) -> Summary:
        if not samples:
            return cls(0, 0, 0, 0, 0)
        ordered = sorted(samples)
        return cls(
            n=len(ordered),
            p50=percentile(ordered, 0.50),
            p90=percentile(ordered, 0.90),
            p99=percentile(ordered, 0.99),
            max=ordered[-1],
        )

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


@attrs.frozen
class Spread:
    """One statistic across repeats: min / median / max (simulation.md §6 `--repeats`)."""

    min: float
    median: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        vals = sorted(values)
        if not vals:
            return cls(0.0, 0.0, 0.0)
        return cls(vals[0], float(statistics.median(vals)), vals[-1])

    def fmt(self, scale: float = 1.0, digits: int = 2) -> str:
        """`1.42/1.55/1.71` (values divided by `scale`); one number when all three agree."""
        parts = [f"{v / scale:.{digits}f}" for v in (self.min, self.median, self.max)]
        return parts[0] if len(set(parts)) == 1 else "/".join(parts)

    def as_dict(self) -> dict[str, float]:
        return attrs.asdict(self)


def spread_of(items: Sequence[object], key: Callable[[object], float]) -> Spread:
    return Spread.of(key(item) for item in items)


@attrs.frozen
class Verdict:
    """A target of the §6 table: `limit_text` as printed, `ok` per repeat (all must hold)."""

    phase: str
    limit_text: str
    per_repeat_ok: tuple[bool, ...]
    enforced: bool = True
    note: str = ""

    @property
    def ok(self) -> bool:
        """PASS needs at least one repeat and every repeat meeting the target."""
        return bool(self.per_repeat_ok) and all(self.per_repeat_ok)

    @property
    def word(self) -> str:
        if not self.per_repeat_ok:
            return "FAIL (no samples)"
        if self.ok:
            return "PASS"
        missed = sum(1 for ok in self.per_repeat_ok if not ok)
        return f"FAIL ({missed}/{len(self.per_repeat_ok)} repeats)"

    def as_dict(self) -> dict[str, object]:
        return {
            "phase": self.phase,
            "target": self.limit_text,
            "per_repeat_ok": list(self.per_repeat_ok),
            "pass": self.ok,
            "enforced": self.enforced,
            "note": self.note,
        }


def linear_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two distinct x)."""
    n = len(xs)
    if n < 2 or n != len(ys):
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def growth_pct(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Growth over the span of xs implied by the fitted slope, in % of the fitted start value."""
    if len(xs) < 2:
        return 0.0
    slope = linear_slope(xs, ys)
    span = xs[-1] - xs[0]
    start = sum(ys) / len(ys) - slope * (sum(xs) / len(xs) - xs[0])
    return 100.0 * slope * span / start if start else 0.0


def bucket_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """Upper bound of the bucket holding quantile q of a cumulative (le, count) list.

    Only for counters the gateway exposes as Prometheus histograms; printed as a bound (`≤`),
    never as a measured percentile. `inf` when the quantile lies in the overflow bucket.
    """
    if not buckets or buckets[-1][1] <= 0:
        return 0.0
    need = q * buckets[-1][1]
    for le, count in buckets:
        if count >= need:
            return le
    return float("inf")


def share_at_most(buckets: Sequence[tuple[float, float]], bound: float) -> float | None:
    """Exact share of observations ≤ `bound` when `bound` is a bucket edge, else None."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    for le, count in buckets:
        if le == bound:
            return count / total
    return None
