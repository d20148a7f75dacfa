"""ACC arrival, matching, buffer re-checks and unmatched reports (behaviour.md §7, D10).

A payment authorizes every qualified track of its POS (per-zone dwell ≥ `min_dwell_ms`, present
or left ≤ grace ago), immediately or within `[acc].buffer_ms` after arrival.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.core import payloads
from gateway.core.acc import BufferedAcc
from gateway.core.gate import can_open, issue_open
from gateway.core.journeys import JourneyEvent
from gateway.core.model import AccInput
from gateway.core.state import CoreState

DEBUG_LIST_CAP = 50  # behaviour.md §14: debug lists of `unmatched` payloads
SIMULATED_IP = "simulated"


def on_acc(core: CoreState, acc: AccInput) -> None:
    """§7.1."""
    c = core.counters
    if core.acc.is_duplicate(acc.ip, acc.receipt, core.now):
        c.acc_duplicates += 1
        core.log_limited(
            logging.INFO, "acc_duplicate", "acc_duplicate", ip=acc.ip, receipt=acc.receipt
        )
        return
    simulated = acc.pos is not None
    pos_name = acc.pos if simulated else core.cfg.acc.ip_to_pos.get(acc.ip)
    zone = core.zone_by_name.get(pos_name) if pos_name is not None else None
    if zone is None:
        _unmatched(core, acc.ip, None, acc.receipt, "unknown_ip")
        return
    c.acc_events += 1
    occ = core.occupancy
    last_exit = occ.last_exit_time(zone)
    if last_exit is not None and occ.present_count(zone) == 0:
        empty_ms = core.now - last_exit
        c.acc_empty_pos_time_ms.observe(empty_ms)
        c.acc_empty_pos_window.observe(core.now, empty_ms)
        c.acc_empty_pos_count += 1
    qualified = [q for q in occ.candidates(zone, core.now) if q[1] >= core.min_dwell_ms]
    if qualified:
        _match(core, zone, acc.ip, acc.receipt, simulated, qualified, acc.recv_ns, None)
    elif core.acc.buffer_ms > 0:
        item = BufferedAcc(acc.ip, acc.receipt, core.now, acc.recv_ns, simulated)
        evicted = core.acc.push(zone, item)
        if evicted is not None:
            _unmatched(core, evicted.ip, zone, evicted.receipt, "buffer_full")
        c.acc_buffered += 1
    else:
        _unmatched(core, acc.ip, zone, acc.receipt, "no_candidate")


def recheck_buffer(core: CoreState, zone: int, trigger_recv_ns: int) -> None:
    """§7.3: match buffered ACCs of `zone` (oldest first) to new payers within their window."""
    buf = core.acc.buffers.get(zone)
    if not buf:
        return
    for item in list(buf):
        if core.now - item.arrived_at > core.acc.buffer_ms:
            continue  # expires at the tick
        qualified = []
        for tid, dwell in core.occupancy.candidates(zone, core.now):
            if dwell < core.min_dwell_ms:
                continue
            j = core.journeys.get_any(tid)
            if j is None or not j.acc_matched:
                qualified.append((tid, dwell))
        if qualified:
            core.acc.remove(zone, item)
            buffered_ms = core.now - item.arrived_at
            _match(
                core,
                zone,
                item.ip,
                item.receipt,
                item.simulated,
                qualified,
                trigger_recv_ns,
                buffered_ms,
            )


def recheck_all(core: CoreState, trigger_recv_ns: int) -> None:
    """Tick step 1."""
    for zone in core.acc.zones_with_buffered():
        recheck_buffer(core, zone, trigger_recv_ns)


def expire_buffered(core: CoreState) -> None:
    """Tick step 2: `unmatched` (`expired`) for ACCs older than `buffer_ms`."""
    for zone, item in core.acc.expired(core.now):
        _unmatched(core, item.ip, zone, item.receipt, "expired")


def release_buffered(core: CoreState) -> None:
    """Shutdown step 1: every buffered ACC → `unmatched` (`shutdown`)."""
    for zone, item in core.acc.drain():
        _unmatched(core, item.ip, zone, item.receipt, "shutdown")


def _match(
    core: CoreState,
    zone: int,
    ip: str,
    receipt: str | None,
    simulated: bool,
    qualified: list[tuple[int, int]],
    trigger_recv_ns: int,
    buffered_ms: int | None,
) -> None:
    """§7.2: authorize every qualified track; late-ACC opens; one `matched` for the primary."""
    c = core.counters
    name = core.name(zone)
    count = len(qualified)
    gate_zone = core.cfg.zones.gate_zone
    late_for_primary = False
    late_any = False
    for i, (tid, dwell) in enumerate(qualified):
        j = core.journeys.get_any(tid)
        if j is not None:
            j.acc_matched = True
            j.authorized = True
            head = "simulated" if simulated else f"kiosk={ip}"
            x = f"{head},count={count},dwell={dwell}"
            if buffered_ms is not None:
                x += f",buffered_ms={buffered_ms}"
            j.add(JourneyEvent("acc", core.wall, name, x, zone))
        else:
            c.acc_no_journey += 1
            core.out.append(
                payloads.acc(
                    core.site, core.wall, "matched_no_journey", ip, name, tid=tid, receipt=receipt
                )
            )
        person = core.persons.get(tid)
        if person is None:
            continue
        person.authorized = True
        core.log(logging.INFO, "acc_authorized", tid=tid, pos=name, ip=ip, dwell_ms=dwell)
        late = gate_zone in person.zones and can_open(core.journeys.get_active(tid))
        if late and issue_open(core, tid, "acc", trigger_recv_ns):
            late_any = True
            late_for_primary |= i == 0
    c.acc_matched += 1
    if buffered_ms is not None:
        c.acc_buffer_matched += 1
    if late_any:
        c.acc_late += 1
    primary, zone_dwell = qualified[0]
    fields: dict[str, Any] = {
        "tid": primary,
        "dwell_ms": core.journey_dwell(primary),
        "receipt": receipt,
        "zone_dwell_ms": zone_dwell,
        "count": count,
        "buffered_ms": buffered_ms,
    }
    person = core.persons.get(primary)
    pj = core.journeys.get_any(primary)
    if late_for_primary and person is not None and person.last_gate_entry_wall is not None:
        fields["gate_zone"] = core.name(gate_zone)
        fields["gate_entry_ts"] = person.last_gate_entry_wall
        fields["delta_ms"] = core.wall - person.last_gate_entry_wall
        fields["gate_cmd_at"] = pj.gate_cmd_at if pj is not None else None
    core.out.append(payloads.acc(core.site, core.wall, "matched", ip, name, **fields))


def _unmatched(
    core: CoreState, ip: str, zone: int | None, receipt: str | None, reason: str
) -> None:
    """§7.4: `unmatched` with debug lists; counted per reason; INFO `acc_unmatched`."""
    core.counters.acc_unmatched[reason] = core.counters.acc_unmatched.get(reason, 0) + 1
    pos = core.name(zone) if zone is not None else None
    core.out.append(
        payloads.acc(
            core.site,
            core.wall,
            "unmatched",
            ip,
            pos,
            debug_active=_debug_active(core),
            debug_pending=_debug_pending(core),
            receipt=receipt,
            reason=reason,
        )
    )
    core.log(logging.INFO, "acc_unmatched", ip=ip, pos=pos, reason=reason, receipt=receipt)


def _debug_active(core: CoreState) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for tid, person in core.persons.items():
        if len(out) >= DEBUG_LIST_CAP:
            break
        last = person.last_zone
        out.append(
            {
                "tid": tid,
                "zone": core.name(last) if last is not None else None,
                "dwell_ms": core.journey_dwell(tid),
                "auth": person.authorized,
            }
        )
    return out


def _debug_pending(core: CoreState) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for entry in core.pool.entries[:DEBUG_LIST_CAP]:
        tid = entry.person.track_id
        j = core.journeys.get_any(tid)
        out.append(
            {
                "tid": tid,
                "last_zone": core.name(entry.last_zone) if entry.last_zone is not None else None,
                "dwell_ms": j.total_dwell_ms if j is not None else 0,
                "auth": entry.person.authorized or (j is not None and j.authorized),
                "pending_ms": core.now - entry.deleted_at,
            }
        )
    return out
