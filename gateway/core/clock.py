"""A settable fake clock for tests, offline replay and benchmarks (behaviour.md §1).

Production uses `gateway.app.clock.SystemClock`; the core only sees the `Clock` protocol.
"""

from __future__ import annotations

import attrs

# scenarios.md harness: wall = W + monotonic, W = 2026-01-01T00:00:00Z
DEFAULT_WALL_BASE_MS = 1_767_225_600_000


@attrs.define(slots=True)
class FakeClock:
    now_ms: int = 0
    wall_base_ms: int = DEFAULT_WALL_BASE_MS

    def mono_ms(self) -> int:
        return self.now_ms

    def mono_ns(self) -> int:
        return self.now_ms * 1_000_000

    def wall_ms(self) -> int:
        return self.wall_base_ms + self.now_ms

    def set(self, now_ms: int) -> None:
        self.now_ms = now_ms
