"""Journeys, their events, the journey manager and the journal record (behaviour.md §3.2, §11).

Ended journeys are held 10 s (the stitch window) keyed by jid with a newest-wins index by track id
(§11.3), then emitted if they crossed the entry line or had meaningful activity (§11.2).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

EGRESS_HOLD_MS = 10_000  # behaviour.md §11.2

Outcome = Literal["in_progress", "exit", "returned", "lost", "pass_through"]
OUTCOMES: tuple[Outcome, ...] = ("in_progress", "exit", "returned", "lost", "pass_through")


@attrs.frozen
class JourneyEvent:
    """`{t, z?, ts, x?}`; `geometry` is kept for role tests by id and never serialized (§3.3)."""

    t: str
    ts: int
    z: str | None = None
    x: str | None = None
    geometry: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": self.t}
        if self.z is not None:
            out["z"] = self.z
        out["ts"] = self.ts
        if self.x is not None:
            out["x"] = self.x
        return out


@attrs.define(slots=True, eq=False)
class Journey:
    jid: str
    pid: str
    started_at: int
    tids: list[int]
    parent: str | None = None
    outcome: Outcome = "in_progress"
    authorized: bool = False
    total_dwell_ms: int = 0
    acc_matched: bool = False
    gate_cmd_at: int | None = None
    gate_opened_at: int | None = None
    gate_was_open: bool = False
    gate_open_count: int = 0
    gate_zone_exited: bool = False
    ended_at: int | None = None
    crossed_entry: bool = False
    exit_inferred: bool = False
    events: list[JourneyEvent] = attrs.field(factory=list)

    def add(self, event: JourneyEvent) -> None:
        self.events.append(event)

    @property
    def meaningful(self) -> bool:
        """§3.2: dwell > 0, an ACC matched, or a gate command was enqueued."""
        return self.total_dwell_ms > 0 or self.acc_matched or self.gate_cmd_at is not None

    @property
    def egress_eligible(self) -> bool:
        """§11.2 egress filter."""
        return self.crossed_entry or self.meaningful

    def has_event(self, t: str, x: str | None = None) -> bool:
        return any(e.t == t and (x is None or e.x == x) for e in self.events)


def journey_record(j: Journey) -> dict[str, Any]:
    """The journal object (interfaces.md §5) in the documented key order, without `site`."""
    rec: dict[str, Any] = {
        "jid": j.jid,
        "pid": j.pid,
        "tids": list(j.tids),
        "parent": j.parent,
        "out": j.outcome,
        "auth": j.authorized,
        "dwell": j.total_dwell_ms,
        "acc": j.acc_matched,
    }
    # acc_group / acc_group_tids: only for group size > 1, never filled (as reference)
    if j.gate_cmd_at is not None:
        rec["gate_cmd"] = j.gate_cmd_at
    if j.gate_opened_at is not None:
        rec["gate_open"] = j.gate_opened_at
    rec["gate_was_open"] = j.gate_was_open
    if j.exit_inferred:
        rec["exit_inferred"] = True
    rec["t0"] = j.started_at
    if j.ended_at is not None:
        rec["t1"] = j.ended_at
    rec["ev"] = [e.to_json() for e in j.events]
    return rec


@attrs.define(slots=True)
class _Held:
    journey: Journey
    eligible_at: int


@attrs.define(slots=True)
class JourneyManager:
    """Active journeys by track id; held journeys by jid with a track-id index (§3.4, §11)."""

    active: dict[int, Journey] = attrs.field(factory=dict)
    held: dict[str, _Held] = attrs.field(factory=dict)
    _held_by_tid: dict[int, list[str]] = attrs.field(factory=dict)

    def start(self, tid: int, jid: str, pid: str, wall: int, parent: str | None) -> Journey:
        j = Journey(jid=jid, pid=pid, started_at=wall, tids=[tid], parent=parent)
        self.active[tid] = j
        return j

    def get_active(self, tid: int) -> Journey | None:
        return self.active.get(tid)

    def get_any(self, tid: int) -> Journey | None:
        """§11.1: the active journey, else the newest held journey indexed under `tid`."""
        j = self.active.get(tid)
        if j is not None:
            return j
        jids = self._held_by_tid.get(tid)
        return self.held[jids[-1]].journey if jids else None

    def by_jid(self, jid: str) -> Journey | None:
        """Active or held journey with this jid (door correlation, §10.2)."""
        h = self.held.get(jid)
        if h is not None:
            return h.journey
        for j in self.active.values():
            if j.jid == jid:
                return j
        return None

    def end(self, tid: int, outcome: Outcome, wall: int, now: int) -> Journey | None:
        """§11.2 End (active only): outcome, `t1`, held until `now + 10 000`."""
        j = self.active.pop(tid, None)
        if j is None:
            return None
        j.outcome = outcome
        j.ended_at = wall
        self._hold(j, now + EGRESS_HOLD_MS)
        return j

    def _hold(self, j: Journey, eligible_at: int) -> None:
        self.held[j.jid] = _Held(j, eligible_at)
        self._held_by_tid.setdefault(j.tids[-1], []).append(j.jid)

    def _unhold(self, jid: str) -> Journey:
        h = self.held.pop(jid)
        tid = h.journey.tids[-1]
        jids = self._held_by_tid.get(tid)
        if jids is not None:
            jids.remove(jid)
            if not jids:
                del self._held_by_tid[tid]
        return h.journey

    def stitch(self, old: int, new: int, event: JourneyEvent) -> Journey | None:
        """§11.4: continue O's newest held (else active) journey under `new`, in progress."""
        jids = self._held_by_tid.get(old)
        if jids:
            j = self._unhold(jids[-1])
        else:
            found = self.active.pop(old, None)
            if found is None:
                return None
            j = found
        j.add(event)
        j.tids.append(new)
        j.outcome = "in_progress"
        j.ended_at = None
        self.active[new] = j
        return j

    def due(self, now: int) -> list[Journey]:
        """Tick step 9: remove and return held journeys with `now ≥ eligible_at` by (t1, jid)."""
        ready = [h.journey for h in self.held.values() if now >= h.eligible_at]
        for j in ready:
            self._unhold(j.jid)
        ready.sort(key=lambda j: (j.ended_at or 0, j.jid))
        return ready

    def release_all(self, wall: int) -> list[Journey]:
        """Shutdown (§11.5): every active and held journey, emptied, in (t1, jid) order.

        Active journeys keep `in_progress` and get `t1 = wall`; the caller added `shutdown` events.
        """
        out = [h.journey for h in self.held.values()]
        for j in self.active.values():
            j.ended_at = wall
            out.append(j)
        self.active.clear()
        self.held.clear()
        self._held_by_tid.clear()
        out.sort(key=lambda j: (j.ended_at or 0, j.jid))
        return out
