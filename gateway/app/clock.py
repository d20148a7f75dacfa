"""Production clock: every monotonic timestamp in the process is `time.monotonic_ns()` (§1)."""

from __future__ import annotations

import time


class SystemClock:
    __slots__ = ()

    def mono_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def mono_ns(self) -> int:
        return time.monotonic_ns()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000
