"""ACC state: receipt de-duplication and the per-POS buffer of early payments (§7, D10).

Matching itself touches persons and journeys and lives in `payments.py`.
"""

from __future__ import annotations

from collections import deque

import attrs

BUFFER_CAP_PER_ZONE = 16  # behaviour.md §7.1 step 5


@attrs.frozen
class BufferedAcc:
    ip: str
    receipt: str | None
    arrived_at: int
    recv_ns: int
    simulated: bool


@attrs.define(slots=True)
class AccState:
    """`dedup_window_ms` 0 = off; `buffer_ms` 0 = no buffering (reference behaviour)."""

    dedup_window_ms: int
    buffer_ms: int
    dedup: dict[tuple[str, str], int] = attrs.field(factory=dict)
    buffers: dict[int, deque[BufferedAcc]] = attrs.field(factory=dict)

    def is_duplicate(self, ip: str, receipt: str | None, now: int) -> bool:
        """§7.1 step 1; a non-duplicate (re)starts the receipt's window."""
        if receipt is None or self.dedup_window_ms <= 0:
            return False
        key = (ip, receipt)
        first = self.dedup.get(key)
        if first is not None and now - first <= self.dedup_window_ms:
            return True
        self.dedup[key] = now
        return False

    def forget_receipts(self, now: int) -> None:
        """Tick step 3."""
        old = [k for k, seen in self.dedup.items() if now - seen > self.dedup_window_ms]
        for k in old:
            del self.dedup[k]

    def push(self, zone: int, acc: BufferedAcc) -> BufferedAcc | None:
        """Append to the zone's FIFO; returns the evicted oldest ACC when it already held 16."""
        buf = self.buffers.setdefault(zone, deque())
        evicted = buf.popleft() if len(buf) >= BUFFER_CAP_PER_ZONE else None
        buf.append(acc)
        return evicted

    def expired(self, now: int) -> list[tuple[int, BufferedAcc]]:
        """Tick step 2: remove and return ACCs with `now − arrived_at > buffer_ms`."""
        out: list[tuple[int, BufferedAcc]] = []
        for zone, buf in self.buffers.items():
            keep: deque[BufferedAcc] = deque()
            for acc in buf:
                if now - acc.arrived_at > self.buffer_ms:
                    out.append((zone, acc))
                else:
                    keep.append(acc)
            self.buffers[zone] = keep
        self._drop_empty()
        return out

    def zones_with_buffered(self) -> list[int]:
        return [z for z, buf in self.buffers.items() if buf]

    def drain(self) -> list[tuple[int, BufferedAcc]]:
        """Shutdown: every buffered ACC, oldest first per zone."""
        out = [(z, acc) for z, buf in self.buffers.items() for acc in buf]
        self.buffers.clear()
        return out

    def buffered_count(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    def remove(self, zone: int, acc: BufferedAcc) -> None:
        buf = self.buffers.get(zone)
        if buf is not None:
            buf.remove(acc)
            if not buf:
                del self.buffers[zone]

    def _drop_empty(self) -> None:
        for z in [z for z, b in self.buffers.items() if not b]:
            del self.buffers[z]

    def clear(self) -> None:
        self.buffers.clear()
        self.dedup.clear()
