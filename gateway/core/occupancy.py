"""POS / DWELL occupancy: per (zone id, track id) dwell sessions with an exit grace (§6).

Keyed by zone **id** (differs from reference: keyed by name). Entries are removed on completion,
non-lost deletes, pool expiry, duplicate creates and by the tick's prune (D6).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs


@attrs.define(slots=True)
class OccEntry:
    present: bool
    entry_time: int
    exit_time: int | None = None
    accumulated_ms: int = 0


@attrs.define(slots=True)
class Occupancy:
    """Dwell bookkeeping; `grace_ms` = `[pos_tracking].exit_grace_ms` (5000, inclusive)."""

    grace_ms: int
    _zones: dict[int, dict[int, OccEntry]] = attrs.field(factory=dict)
    _last_exit: dict[int, int] = attrs.field(factory=dict)

    def entry(self, zone: int, track: int) -> OccEntry | None:
        return self._zones.get(zone, {}).get(track)

    def record_entry(self, zone: int, track: int, now: int) -> None:
        """§6 record_entry: new session, no-op when present, re-open within the grace."""
        per_zone = self._zones.setdefault(zone, {})
        e = per_zone.get(track)
        if e is None:
            per_zone[track] = OccEntry(present=True, entry_time=now)
        elif e.present:
            return
        elif e.exit_time is not None and now - e.exit_time <= self.grace_ms:
            e.present, e.entry_time, e.exit_time = True, now, None
        else:
            per_zone[track] = OccEntry(present=True, entry_time=now)

    def record_exit(self, zone: int, track: int, now: int) -> tuple[int, int] | None:
        """§6 record_exit: close the open session; returns (session ms, zone accumulated ms)."""
        e = self._zones.get(zone, {}).get(track)
        if e is None or not e.present:
            return None
        session = now - e.entry_time
        e.accumulated_ms += session
        e.present, e.exit_time = False, now
        self._last_exit[zone] = now
        return session, e.accumulated_ms

    def candidates(self, zone: int, now: int) -> list[tuple[int, int]]:
        """§6: present tracks by dwell desc, then recently exited (≤ grace) by dwell desc."""
        present: list[tuple[int, int]] = []
        recent: list[tuple[int, int]] = []
        for track, e in self._zones.get(zone, {}).items():
            if e.present:
                present.append((track, e.accumulated_ms + now - e.entry_time))
            elif e.exit_time is not None and now - e.exit_time <= self.grace_ms:
                recent.append((track, e.accumulated_ms))
        present.sort(key=lambda c: (-c[1], c[0]))
        recent.sort(key=lambda c: (-c[1], c[0]))
        return present + recent

    def remove_track(self, track: int) -> None:
        for per_zone in self._zones.values():
            per_zone.pop(track, None)

    def rekey(self, old: int, new: int) -> None:
        """Move every entry of `old` to `new` unchanged (stitch, D6)."""
        if old == new:
            return
        for per_zone in self._zones.values():
            e = per_zone.pop(old, None)
            if e is not None:
                per_zone[new] = e

    def present_count(self, zone: int) -> int:
        return sum(1 for e in self._zones.get(zone, {}).values() if e.present)

    def last_exit_time(self, zone: int) -> int | None:
        return self._last_exit.get(zone)

    def entry_count(self) -> int:
        return sum(len(per_zone) for per_zone in self._zones.values())

    def tracks(self) -> set[int]:
        return {t for per_zone in self._zones.values() for t in per_zone}

    def prune(self, now: int, keep_present: Callable[[int], bool]) -> None:
        """Tick step 5: drop exits older than the grace and present entries of vanished tracks."""
        for per_zone in self._zones.values():
            stale = [
                t
                for t, e in per_zone.items()
                if (e.present and not keep_present(t))
                or (not e.present and (e.exit_time is None or now - e.exit_time > self.grace_ms))
            ]
            for t in stale:
                del per_zone[t]

    def clear(self) -> None:
        self._zones.clear()
