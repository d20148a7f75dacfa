"""Track lifecycle: TRACK_CREATE (duplicate, stitch, re-entry) and TRACK_DELETE outcomes.

behaviour.md §4.1, §4.2, §5; pool expiry effects (§4.10 step 4) live here too because they are
the other end of a `lost` delete.
"""

from __future__ import annotations

from gateway.core import payloads
from gateway.core.journeys import Journey, JourneyEvent, Outcome
from gateway.core.model import Position
from gateway.core.persons import Person, in_exit_region
from gateway.core.state import CoreState
from gateway.core.stitcher import PoolEntry

DEEP_EVENT_TYPES = frozenset({"zone_entry", "zone_exit", "acc", "pending"})


def on_create(core: CoreState, tid: int, pos: Position | None, geometry: int | None) -> None:
    """§4.1."""
    if tid in core.persons:
        _duplicate_create(core, tid)
    zones = core.cfg.zones
    spawn_hint = core.is_pos(geometry)
    if not zones.is_store(geometry):
        expire_pool(core)
        m = core.pool.match(core.now, pos, geometry, spawn_hint)
        if m is not None:
            _stitch(core, tid, pos, m.entry, m.gap_ms, m.dist_cm)
            return
    parent = core.reentry.match(core.now, pos[2] if pos is not None else None)
    person = Person(tid)
    if pos is not None:
        person.update_position(pos)
    core.persons[tid] = person
    jid = core.new_id()
    if parent is not None:
        parent_jid, pid = parent
        j = core.journeys.start(tid, jid, pid, core.wall, parent_jid)
        j.add(JourneyEvent("track_create", core.wall, x=f"reentry_from={parent_jid}"))
        core.out.append(
            payloads.track(core.site, core.wall, "reentry", tid, False, 0, parent_jid=parent_jid)
        )
    else:
        j = core.journeys.start(tid, jid, core.new_id(), core.wall, None)
        j.add(JourneyEvent("track_create", core.wall))
        core.out.append(payloads.track(core.site, core.wall, "create", tid, False, 0))


def create_implicit(core: CoreState, tid: int, pos: Position | None) -> Person:
    """§4.3 step 1 (D9): a person + fresh journey for a zone entry of an unknown id."""
    person = Person(tid)
    if pos is not None:
        person.update_position(pos)
    core.persons[tid] = person
    j = core.journeys.start(tid, core.new_id(), core.new_id(), core.wall, None)
    j.add(JourneyEvent("track_create", core.wall, x="implicit"))
    core.out.append(payloads.track(core.site, core.wall, "create", tid, False, 0))
    core.counters.tracks_implicit += 1
    return person


def _duplicate_create(core: CoreState, tid: int) -> None:
    """§4.1 step 1 (D8): end the old journey `lost` (not pooled), then start afresh."""
    person = core.persons.pop(tid)
    j = core.journeys.get_active(tid)
    dwell = j.total_dwell_ms if j is not None else 0
    if j is not None:
        last = person.last_zone
        j.add(
            JourneyEvent(
                "pending",
                core.wall,
                core.name(last) if last is not None else "",
                f"auth={_b(person.authorized)},dwell={dwell},reason=duplicate_create",
                last,
            )
        )
        j.authorized |= person.authorized
        core.journeys.end(tid, "lost", core.wall, core.now)
    core.occupancy.remove_track(tid)
    auth = person.authorized or (j is not None and j.authorized)
    core.out.append(payloads.track(core.site, core.wall, "lost", tid, auth, dwell))
    core.counters.tracks_duplicate_create += 1


def _stitch(
    core: CoreState, tid: int, pos: Position | None, entry: PoolEntry, gap: int, dist: int
) -> None:
    """§4.1 step 4: re-key the pooled person, move occupancy, continue its journey."""
    person = entry.person
    old = person.track_id
    person.track_id = tid
    if pos is not None:
        person.update_position(pos)
    else:
        person.last_position = entry.position
    core.occupancy.rekey(old, tid)
    event = JourneyEvent("stitch", core.wall, x=f"from={old},time_ms={gap},dist_cm={dist}")
    j = core.journeys.stitch(old, tid, event)
    if j is not None:
        person.authorized |= j.authorized
    core.persons[tid] = person
    core.out.append(
        payloads.track(
            core.site,
            core.wall,
            "stitch",
            tid,
            person.authorized,
            j.total_dwell_ms if j is not None else 0,
            prev_tid=old,
            stitch_dist_cm=dist,
            stitch_time_ms=gap,
        )
    )
    c = core.counters
    c.stitch_matched += 1
    c.stitch_distance_cm.observe(dist)
    c.stitch_time_ms.observe(gap)


def on_delete(core: CoreState, tid: int, pos: Position | None) -> None:
    """§4.2."""
    person = core.persons.pop(tid, None)
    if person is None:
        core.counters.orphan_events["TRACK_DELETE"] += 1
        return
    if pos is not None:
        person.update_position(pos)
    last = person.last_zone
    last_name = core.name(last) if last is not None else ""
    j = core.journeys.get_active(tid)
    dwell = j.total_dwell_ms if j is not None else 0
    core.out.append(payloads.track(core.site, core.wall, "pending", tid, person.authorized, dwell))
    outcome: Outcome = "lost"
    if j is not None:
        j.authorized |= person.authorized
        j.add(
            JourneyEvent(
                "pending", core.wall, last_name, f"auth={_b(person.authorized)},dwell={dwell}", last
            )
        )
        outcome = _outcome(core, person, j, last)
        core.journeys.end(tid, outcome, core.wall, core.now)
    if outcome == "lost":
        core.pool.add(person, core.now, last)
    else:
        core.occupancy.remove_track(tid)


def _outcome(core: CoreState, person: Person, j: Journey, last: int | None) -> Outcome:
    """§4.2 step 6: first matching rule wins; sets `exit_inferred` and the counters."""
    zones = core.cfg.zones
    if j.has_event("exit_cross", "dir=forward") or last == zones.exit_line:
        return "exit"
    if j.has_event("entry_cross", "dir=backward"):
        return "returned"
    if in_exit_region(person, core.cfg.exit_detection):
        if person.has_zone_events:
            j.exit_inferred = True
            core.counters.journeys_position_exit += 1
            return "exit"
        core.counters.journeys_pass_through += 1
        return "pass_through"
    if not _is_deep(core, j):
        return "returned"
    return "lost"


def _is_deep(core: CoreState, j: Journey) -> bool:
    """Deep (D4, by id): POS/gate zone activity, or any approach/exit crossing."""
    gate_zone = core.cfg.zones.gate_zone
    for e in j.events:
        if e.t in ("approach_cross", "exit_cross"):
            return True
        if e.t in DEEP_EVENT_TYPES and (e.geometry == gate_zone or core.is_pos(e.geometry)):
            return True
    return False


def expire_pool(core: CoreState) -> None:
    """§8.1 / §4.10 step 4: per expired entry count, publish `lost`, drop its occupancy."""
    for entry in core.pool.expire(core.now):
        tid = entry.person.track_id
        j = core.journeys.get_any(tid)
        auth = entry.person.authorized or (j is not None and j.authorized)
        dwell = j.total_dwell_ms if j is not None else 0
        core.counters.stitch_expired += 1
        core.out.append(payloads.track(core.site, core.wall, "lost", tid, auth, dwell))
        if not core.pool.contains(tid) and tid not in core.persons:
            core.occupancy.remove_track(tid)


def _b(value: bool) -> str:
    return "true" if value else "false"
