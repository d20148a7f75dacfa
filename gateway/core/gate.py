"""Gate decisions and issuing an open through the gate port (behaviour.md §4.3, §4.8, §4.9).

At most two opens per journey, the second only after leaving the gate zone; the count lives on the
journey and counts only commands actually enqueued (D7).
"""

from __future__ import annotations

import logging

from gateway.core import payloads
from gateway.core.journeys import Journey
from gateway.core.model import GateCmd, GateSource
from gateway.core.state import CoreState

MAX_OPENS_PER_JOURNEY = 2  # behaviour.md §14


def can_open(journey: Journey | None) -> bool:
    """§4.3: first open, or the second chance after leaving the gate zone (0/false if none)."""
    if journey is None:
        return True
    count, exited = journey.gate_open_count, journey.gate_zone_exited
    return count == 0 or (count == 1 and exited)


def issue_open(core: CoreState, tid: int, src: GateSource, trigger_recv_ns: int) -> bool:
    """§4.9: build the command, `try_send` it; returns True when it was enqueued."""
    any_j = core.journeys.get_any(tid)
    enqueued_ns = core.clock.mono_ns()
    cmd = GateCmd(tid, src, trigger_recv_ns, enqueued_ns, any_j.jid if any_j else None)
    c = core.counters
    if not core.gate.try_send(cmd):
        c.gate_cmds_dropped += 1
        core.out.append(
            payloads.gate(core.site, core.wall, "cmd_dropped", src, tid=tid, reason="queue_full")
        )
        core.log_limited(
            logging.WARNING, "cmd_dropped", "cmd_dropped", tid=tid, src=src, reason="queue_full"
        )
        return False
    e2e_us = max(0, (enqueued_ns - trigger_recv_ns) // 1000)
    c.gate_latency_us.observe(e2e_us)
    c.gate_latency_window.observe(core.now, e2e_us)
    c.gate_commands_total += 1
    if any_j is not None and any_j.gate_cmd_at is None:
        any_j.gate_cmd_at = core.wall
    core.add_event(tid, "gate_cmd", x=f"e2e_us={e2e_us}")
    active = core.journeys.get_active(tid)
    if active is not None:
        active.gate_open_count += 1
        active.gate_zone_exited = False
    core.out.append(payloads.gate(core.site, core.wall, "cmd_enqueued", src, tid=tid))
    core.door.record_command(tid, any_j.jid if any_j else None, core.now)
    return True
