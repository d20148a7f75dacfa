"""Stitch pool: continue a lost track's journey on a new track close in time, place and height.

behaviour.md §8. Only tracks whose journey ended `lost` enter the pool (§4.2); entries expire at
every tick and lazily at the start of every match attempt (§8.1).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from gateway.core.geometry import height_cm, planar_cm, report_cm, within_cm
from gateway.core.model import Position
from gateway.core.persons import Person

# behaviour.md §8 constants
BASE_MAX_GAP_MS = 4500
POS_MAX_GAP_MS = 8000
SPAWN_HINT_MAX_GAP_MS = 10_000  # kept for compatibility; unreachable (POS entries expire at 8000)
BASE_MAX_DIST_CM = 180.0
SAME_ZONE_MAX_DIST_CM = 300.0
SPAWN_HINT_SAME_ZONE_MAX_DIST_CM = 190.0
BASE_HEIGHT_TOL_CM = 10.0
POS_HEIGHT_TOL_CM = 15.0


@attrs.define(slots=True, eq=False)
class PoolEntry:
    person: Person
    deleted_at: int
    position: Position | None
    last_zone: int | None


@attrs.frozen
class StitchMatch:
    entry: PoolEntry
    gap_ms: int
    dist_cm: int


@attrs.define(slots=True)
class StitchPool:
    """Pool entries in insertion order; `is_pos(zone)` tells whether a zone id is a POS zone."""

    is_pos: Callable[[int | None], bool]
    entries: list[PoolEntry] = attrs.field(factory=list)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, person: Person, now: int, last_zone: int | None) -> None:
        """Pool a `lost` person at its latest position (§4.2 step 8, D3)."""
        self.entries.append(PoolEntry(person, now, person.last_position, last_zone))

    def contains(self, track: int) -> bool:
        return any(e.person.track_id == track for e in self.entries)

    def _ttl(self, entry: PoolEntry) -> int:
        return POS_MAX_GAP_MS if self.is_pos(entry.last_zone) else BASE_MAX_GAP_MS

    def expire(self, now: int) -> list[PoolEntry]:
        """§8.1: remove and return entries older than 8000 ms (POS) / 4500 ms (else)."""
        expired = [e for e in self.entries if now - e.deleted_at > self._ttl(e)]
        if expired:
            self.entries = [e for e in self.entries if now - e.deleted_at <= self._ttl(e)]
        return expired

    def match(
        self, now: int, position: Position | None, zone: int | None, spawn_hint: bool
    ) -> StitchMatch | None:
        """§8.2: best candidate by (not same zone, distance); ties keep the earlier entry.

        Call `expire(now)` first (the caller handles expired entries' effects).
        """
        if position is None:
            return None
        best: tuple[bool, float, int] | None = None  # (not same_zone, dist, index)
        best_gap = 0
        for i, e in enumerate(self.entries):
            is_pos = self.is_pos(e.last_zone)
            same_zone = zone is not None and zone == e.last_zone
            if spawn_hint and is_pos and same_zone:
                max_gap = SPAWN_HINT_MAX_GAP_MS
            elif is_pos:
                max_gap = POS_MAX_GAP_MS
            else:
                max_gap = BASE_MAX_GAP_MS
            gap = now - e.deleted_at
            if gap > max_gap or e.position is None:
                continue
            h_tol = POS_HEIGHT_TOL_CM if is_pos else BASE_HEIGHT_TOL_CM
            if not within_cm(height_cm(position, e.position), h_tol):
                continue
            if same_zone and spawn_hint:
                d_max = SPAWN_HINT_SAME_ZONE_MAX_DIST_CM
            elif same_zone:
                d_max = SAME_ZONE_MAX_DIST_CM
            else:
                d_max = BASE_MAX_DIST_CM
            dist = planar_cm(position, e.position)
            if not within_cm(dist, d_max):
                continue
            key = (not same_zone, dist, i)
            if best is None or key < best:
                best, best_gap = key, gap
        if best is None:
            return None
        entry = self.entries.pop(best[2])
        return StitchMatch(entry, best_gap, report_cm(best[1]))

    def clear(self) -> None:
        self.entries.clear()
