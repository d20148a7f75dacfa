"""Door correlator and open-duration tracking (behaviour.md §10.2, §10.3).

A transition **into** `open` is matched to the newest gate command ≤ 10 s old; commands are kept
20 s. Long (≥ 30 s) and very long (≥ 60 s) open periods are counted once each.
"""

from __future__ import annotations

import attrs

from gateway.core.model import DoorStatus

CORRELATION_WINDOW_MS = 10_000  # behaviour.md §10.2
COMMAND_RETENTION_MS = 20_000
LONG_OPEN_MS = 30_000  # behaviour.md §10.3
VERY_LONG_OPEN_MS = 60_000

GATE_STATE_VALUE: dict[str, int] = {"closed": 0, "unknown": 0, "moving": 1, "open": 2}


@attrs.frozen
class PendingCommand:
    track_id: int
    jid: str | None
    sent_at: int
    door_was_open: bool


@attrs.frozen
class Correlation:
    command: PendingCommand
    age_ms: int


@attrs.define(slots=True)
class DoorCorrelator:
    last_status: DoorStatus = "unknown"
    pending: list[PendingCommand] = attrs.field(factory=list)
    flow_track: int | None = None
    open_since: int | None = None
    long_counted: bool = False
    very_long_counted: bool = False

    def record_command(self, track_id: int, jid: str | None, now: int) -> None:
        self.pending.append(PendingCommand(track_id, jid, now, self.last_status == "open"))

    def feed_track(self) -> int | None:
        """`tid` of a door-state publish: the flow track, else the newest pending command's."""
        if self.flow_track is not None:
            return self.flow_track
        return self.pending[-1].track_id if self.pending else None

    def prune(self, now: int) -> None:
        if any(now - c.sent_at > COMMAND_RETENTION_MS for c in self.pending):
            self.pending = [c for c in self.pending if now - c.sent_at <= COMMAND_RETENTION_MS]

    def on_status(self, status: DoorStatus, now: int) -> Correlation | None:
        """§10.2: returns the command correlated by a transition into `open`, if any."""
        previous = self.last_status
        self.last_status = status
        self.prune(now)
        if status == "closed":
            self.flow_track = None
        if status != "open" or previous == "open":
            return None
        for i in range(len(self.pending) - 1, -1, -1):
            age = now - self.pending[i].sent_at
            if age <= CORRELATION_WINDOW_MS:
                cmd = self.pending.pop(i)
                self.flow_track = cmd.track_id
                return Correlation(cmd, age)
        return None

    def update_open(self, status: DoorStatus, previous: DoorStatus, now: int) -> tuple[bool, bool]:
        """§10.3 on a status change; returns (count long, count very long) when an open ends."""
        result = (False, False)
        if previous == "open" and status != "open":
            result = self._check_open(now)
            self.open_since = None
        elif status == "open" and previous != "open":
            self.open_since = now
            self.long_counted = self.very_long_counted = False
        return result

    def _check_open(self, now: int) -> tuple[bool, bool]:
        if self.open_since is None:
            return False, False
        period = now - self.open_since
        long_ = period >= LONG_OPEN_MS and not self.long_counted
        very = period >= VERY_LONG_OPEN_MS and not self.very_long_counted
        self.long_counted |= long_
        self.very_long_counted |= very
        return long_, very

    def tick_open(self, now: int) -> tuple[bool, bool]:
        """Tick step 8: count a long / very long open at most once per period."""
        return self._check_open(now)

    def open_duration_s(self, now: int) -> float:
        return (now - self.open_since) / 1000.0 if self.open_since is not None else 0.0

    def clear_commands(self) -> None:
        self.pending.clear()
