"""Plain-int metric primitives: cumulative histograms and time-windowed percentile rings.

Hot paths call `observe` (a few integer operations); the Prometheus collector reads them at
scrape time (README concurrency rule 7). Nothing here ever resets on read (D16).
"""

from __future__ import annotations

import bisect
import math

import attrs

# interfaces.md §9 bucket sets
BUCKETS_R: tuple[int, ...] = (100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200)
BUCKETS_C: tuple[int, ...] = (10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120)
BUCKETS_F: tuple[int, ...] = (
    25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 20000, 50000, 100000,
)  # fmt: skip
BUCKETS_J: tuple[int, ...] = (100, 250, 500, 1000, 2000, 5000, 10000, 25000, 50000, 100000)


@attrs.define(slots=True)
class Histogram:
    """Cumulative histogram with fixed upper bounds (+Inf implied); `total` is the true sum."""

    bounds: tuple[int, ...]
    counts: list[int] = attrs.field(init=False)
    total: float = 0.0
    count: int = 0

    def __attrs_post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[int]:
        out, acc = [], 0
        for c in self.counts:
            acc += c
            out.append(acc)
        return out

    @property
    def avg(self) -> float:
        return self.total / self.count if self.count else 0.0


# Log buckets of ≤ 10 % width (interfaces.md §9): bound_k = ceil(1.1^k), 0..~2.5e8 µs.
_LOG_BOUNDS: tuple[int, ...] = tuple(sorted({math.ceil(1.1**k) for k in range(0, 205)}))
SLOT_MS = 10_000


@attrs.define(slots=True)
class _Slot:
    start_ms: int = -1
    counts: dict[int, int] = attrs.field(factory=dict)
    n: int = 0
    total: float = 0.0
    vmax: float = 0.0


@attrs.define(slots=True)
class RollingWindow:
    """Time-based window of `slots` × 10 s slots; percentiles as bucket upper bounds (D16)."""

    slots: int = 6
    _ring: list[_Slot] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._ring = [_Slot() for _ in range(self.slots)]

    def _slot(self, now_ms: int) -> _Slot:
        start = now_ms - now_ms % SLOT_MS
        slot = self._ring[(start // SLOT_MS) % self.slots]
        if slot.start_ms != start:
            slot.start_ms, slot.counts, slot.n, slot.total, slot.vmax = start, {}, 0, 0.0, 0.0
        return slot

    def observe(self, now_ms: int, value: float) -> None:
        slot = self._slot(now_ms)
        idx = bisect.bisect_left(_LOG_BOUNDS, value)
        slot.counts[idx] = slot.counts.get(idx, 0) + 1
        slot.n += 1
        slot.total += value
        if value > slot.vmax:
            slot.vmax = value

    def _live(self, now_ms: int) -> list[_Slot]:
        oldest = now_ms - now_ms % SLOT_MS - (self.slots - 1) * SLOT_MS
        return [s for s in self._ring if s.start_ms >= oldest and s.n]

    def count(self, now_ms: int) -> int:
        return sum(s.n for s in self._live(now_ms))

    def max(self, now_ms: int) -> float:
        return max((s.vmax for s in self._live(now_ms)), default=0.0)

    def avg(self, now_ms: int) -> float:
        live = self._live(now_ms)
        n = sum(s.n for s in live)
        return sum(s.total for s in live) / n if n else 0.0

    def percentile(self, now_ms: int, q: float) -> int:
        live = self._live(now_ms)
        merged: dict[int, int] = {}
        for s in live:
            for k, c in s.counts.items():
                merged[k] = merged.get(k, 0) + c
        n = sum(merged.values())
        if not n:
            return 0
        rank = max(1, math.ceil(q * n))
        seen = 0
        for k in sorted(merged):
            seen += merged[k]
            if seen >= rank:
                return _LOG_BOUNDS[k] if k < len(_LOG_BOUNDS) else _LOG_BOUNDS[-1]
        return _LOG_BOUNDS[-1]


def window_counts(window: RollingWindow, now_ms: int, bounds: tuple[int, ...]) -> list[int]:
    """Re-bucket a window's log buckets into `bounds` (+ overflow): each log bucket counts in
    the first bound ≥ its upper edge, so a value can land one bucket high (≤ 10 % off)."""
    counts = [0] * (len(bounds) + 1)
    for slot in window._live(now_ms):
        for k, c in slot.counts.items():
            edge = _LOG_BOUNDS[k] if k < len(_LOG_BOUNDS) else _LOG_BOUNDS[-1] + 1
            counts[bisect.bisect_left(bounds, edge)] += c
    return counts


def bucket_percentile(counts: list[int], bounds: tuple[int, ...], q: float, overflow: int) -> int:
    """Percentile as a bucket upper bound (reference style); the overflow bucket → `overflow`."""
    n = sum(counts)
    if not n:
        return 0
    rank = max(1, math.ceil(q * n))
    seen = 0
    for i, c in enumerate(counts):
        seen += c
        if seen >= rank:
            return bounds[i] if i < len(bounds) else overflow
    return overflow
