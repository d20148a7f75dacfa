"""ZONE_ENTRY, ZONE_EXIT, line crossings and tracked-object positions (behaviour.md §4.3–§4.6)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from gateway.core import payloads
from gateway.core.gate import can_open, issue_open
from gateway.core.journeys import JourneyEvent
from gateway.core.model import Direction, Position, TrackedObject
from gateway.core.payments import recheck_buffer
from gateway.core.state import CoreState
from gateway.core.tracks import create_implicit


def on_zone_entry(
    core: CoreState, tid: int, zone: int, pos: Position | None, event_time: int, recv_ns: int
) -> None:
    """§4.3."""
    person = core.persons.get(tid)
    if person is None:
        person = create_implicit(core, tid, pos)
    person.enter_zone(zone)
    person.has_zone_events = True
    any_j = core.journeys.get_any(tid)
    authorized = person.authorized or (any_j is not None and any_j.authorized)
    name = core.name(zone)
    if any_j is not None:
        any_j.add(JourneyEvent("zone_entry", core.wall, name, None, zone))
    core.out.append(
        payloads.zone(
            core.site,
            tid,
            "zone_entry",
            name,
            core.wall,
            person.authorized,
            None,
            any_j.total_dwell_ms if any_j is not None else 0,
            event_time,
        )
    )
    if core.is_pos(zone) or core.is_dwell_zone(zone):
        core.occupancy.record_entry(zone, tid, core.now)
        recheck_buffer(core, zone, recv_ns)
    elif zone == core.cfg.zones.gate_zone:
        person.last_gate_entry_wall = core.wall
        if authorized and can_open(core.journeys.get_active(tid)):
            issue_open(core, tid, "tracker", recv_ns)
        elif not authorized:
            core.out.append(payloads.gate(core.site, core.wall, "blocked", "tracker", tid=tid))
            core.log(logging.INFO, "gate_entry_not_authorized", tid=tid, zone=name)
        # authorized but both chances used: nothing (DEBUG-level only, skipped)


def on_zone_exit(core: CoreState, tid: int, zone: int, event_time: int, recv_ns: int) -> None:
    """§4.4."""
    person = core.persons.get(tid)
    if person is None:
        core.counters.orphan_events["ZONE_EXIT"] += 1
        return
    person.has_zone_events = True
    name = core.name(zone)
    session: int | None = None
    active = core.journeys.get_active(tid)
    if core.is_pos(zone) or core.is_dwell_zone(zone):
        r = core.occupancy.record_exit(zone, tid, core.now)
        if r is not None:
            session, zone_accumulated = r
            core.add_event(tid, "zone_exit", name, f"dwell={session}", zone)
            if active is not None:
                active.total_dwell_ms += session
            if core.is_dwell_zone(zone) and zone_accumulated >= core.min_dwell_ms:
                person.authorized = True
                if active is not None:
                    active.authorized = True
                core.log(
                    logging.INFO,
                    "dwell_zone_auto_authorized",
                    tid=tid,
                    zone=name,
                    dwell_ms=zone_accumulated,
                )
        recheck_buffer(core, zone, recv_ns)
    else:
        core.add_event(tid, "zone_exit", name, None, zone)
    core.out.append(
        payloads.zone(
            core.site,
            tid,
            "zone_exit",
            name,
            core.wall,
            person.authorized,
            session,
            core.journey_dwell(tid),
            event_time,
        )
    )
    if (
        zone == core.cfg.zones.gate_zone
        and active is not None
        and active.gate_open_count > 0
        and not active.gate_zone_exited
    ):
        active.gate_zone_exited = True
    person.exit_zone(zone)


def on_line_cross(core: CoreState, tid: int, line: int, direction: Direction) -> None:
    """§4.5."""
    zones = core.cfg.zones
    if line == zones.entry_line:
        t = "entry_cross"
    elif line == zones.exit_line:
        t = "exit_cross"
    elif line == zones.approach_line:
        t = "approach_cross"
    else:
        t = "line_cross"
    core.add_event(tid, t, None, f"dir={direction}", line)
    if t == "entry_cross" and direction == "forward":
        active = core.journeys.get_active(tid)
        if active is not None:
            active.crossed_entry = True
    person = core.persons.get(tid)
    if person is None:
        core.counters.orphan_events["LINE_CROSS"] += 1
        return
    if t != "exit_cross" or direction != "forward":
        return
    del core.persons[tid]
    active = core.journeys.get_active(tid)
    if active is not None:
        active.authorized |= person.authorized
        h = person.last_position[2] if person.last_position is not None else None
        core.reentry.record(active.jid, active.pid, h, core.now)
        core.log(
            logging.INFO,
            "journey_complete",
            tid=tid,
            jid=active.jid,
            auth=active.authorized,
            dwell_ms=active.total_dwell_ms,
        )
        core.journeys.end(tid, "exit", core.wall, core.now)
    core.counters.exits += 1
    core.occupancy.remove_track(tid)


def on_positions(core: CoreState, objects: Iterable[TrackedObject]) -> None:
    """§4.6: update live persons only; unknown or pooled ids never create persons."""
    get = core.persons.get
    for obj in objects:
        pos = obj.position
        if pos is None:
            continue
        person = get(obj.track_id)
        if person is not None:  # inlined Person.update_position: this is the hot path
            person.last_position = pos
            if pos[1] > person.max_y:
                person.max_y = pos[1]
