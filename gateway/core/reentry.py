"""Re-entry detector: link a new track to someone who left through the exit ≤ 30 s ago (§9).

Matching is by head height only (as reference): |Δh| ≤ 0.10 m inclusive, smallest wins.
"""

from __future__ import annotations

import attrs

from gateway.core.geometry import within_cm

REENTRY_WINDOW_MS = 30_000  # behaviour.md §9
REENTRY_HEIGHT_CM = 10.0
REENTRY_RETENTION_MS = 60_000


@attrs.frozen
class ExitRecord:
    jid: str
    pid: str
    height_m: float
    exited_at: int


@attrs.define(slots=True)
class ReentryDetector:
    records: list[ExitRecord] = attrs.field(factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def record(self, jid: str, pid: str, height_m: float | None, now: int) -> None:
        """Exit-line forward completion; no height → nothing recorded."""
        if height_m is None:
            return
        self.records.append(ExitRecord(jid, pid, height_m, now))

    def prune(self, now: int) -> None:
        """Drop records older than 60 000 ms (tick step 6 and before every match)."""
        if any(now - r.exited_at > REENTRY_RETENTION_MS for r in self.records):
            self.records = [r for r in self.records if now - r.exited_at <= REENTRY_RETENTION_MS]

    def match(self, now: int, height_m: float | None) -> tuple[str, str] | None:
        """Returns (parent jid, parent pid) and removes the record; ties → earliest record."""
        self.prune(now)
        if height_m is None:
            return None
        best: tuple[float, int] | None = None
        for i, r in enumerate(self.records):
            if now - r.exited_at > REENTRY_WINDOW_MS:
                continue
            dh = abs(height_m - r.height_m) * 100.0
            if not within_cm(dh, REENTRY_HEIGHT_CM):
                continue
            if best is None or (dh, i) < best:
                best = (dh, i)
        if best is None:
            return None
        rec = self.records.pop(best[1])
        return rec.jid, rec.pid

    def clear(self) -> None:
        self.records.clear()
