"""The tracker facade: one synchronous handler per input item, returning effects (README rule 1).

Owns all domain state (`CoreState`) and dispatches to the handler modules; reads the injected
clock once per handled item (behaviour.md §1) and records per-event latency metrics.
"""

from __future__ import annotations

import logging
import random

from gateway.config.model import Config
from gateway.core import payloads
from gateway.core.counters import CoreCounters, CoreGauges
from gateway.core.door import GATE_STATE_VALUE
from gateway.core.effects import DoorFeed, Effect, EmitJourney
from gateway.core.journeys import Journey, JourneyEvent, journey_record
from gateway.core.model import (
    AccInput,
    Clock,
    DoorReading,
    EventKind,
    Frame,
    GatePort,
    XovisBatch,
    XovisEvent,
)
from gateway.core.payments import expire_buffered, on_acc, recheck_all, release_buffered
from gateway.core.state import CoreState
from gateway.core.tracks import expire_pool, on_create, on_delete
from gateway.core.zone_events import on_line_cross, on_positions, on_zone_entry, on_zone_exit


class Tracker:
    """Public API used by the tracker actor (gateway.app.actor)."""

    def __init__(
        self, config: Config, clock: Clock, gate: GatePort, rng: random.Random | None = None
    ) -> None:
        self._core = CoreState(config, clock, gate, rng if rng is not None else random.Random())
        self._clock = clock
        self._shut_down = False
        self._last_gauges: CoreGauges | None = None

    @property
    def counters(self) -> CoreCounters:
        return self._core.counters

    @property
    def state(self) -> CoreState:
        """Domain state, for tests, replay and the handler bench (read-only by convention)."""
        return self._core

    # -- inputs ------------------------------------------------------------------------------

    def handle_batch(self, batch: XovisBatch) -> list[Effect]:
        """Frames in order; per frame its events (each one handled item), then its objects (§2)."""
        core = self._core
        start_ns = self._clock.mono_ns()
        wait_us = (start_ns - batch.recv_ns) // 1000
        core.counters.event_queue_wait_us.observe(max(0, wait_us))
        for frame in batch.frames:
            for ev in frame.events:
                self._handle_event(ev, frame, batch.recv_ns)
            if frame.objects:
                on_positions(core, frame.objects)
        return core.take_effects()

    def _handle_event(self, ev: XovisEvent, frame: Frame, recv_ns: int) -> None:
        core = self._core
        t0 = self._clock.mono_ns()
        core.begin()
        tid, kind, pos = ev.track_id, ev.kind, ev.position
        geometry = ev.geometry_id if ev.geometry_id is not None else 0
        if kind is EventKind.TRACK_CREATE:
            on_create(core, tid, pos, ev.geometry_id)
        elif kind is EventKind.TRACK_DELETE:
            on_delete(core, tid, pos)
        else:
            # a zone/line event's position is first applied to a live person (§2, D*)
            if pos is not None:
                person = core.persons.get(tid)
                if person is not None:
                    person.update_position(pos)
            if kind is EventKind.ZONE_ENTRY:
                on_zone_entry(core, tid, geometry, pos, frame.event_time_ms, recv_ns)
            elif kind is EventKind.ZONE_EXIT:
                on_zone_exit(core, tid, geometry, frame.event_time_ms, recv_ns)
            elif kind is EventKind.LINE_CROSS and ev.direction is not None:
                on_line_cross(core, tid, geometry, ev.direction)
        self._count_item(t0)

    def _count_item(self, t0_ns: int) -> None:
        c = self._core.counters
        now = self._core.now
        c.events_total += 1
        c.event_rate.add(now)
        latency_us = max(0, (self._clock.mono_ns() - t0_ns) // 1000)
        c.event_latency_us.observe(latency_us)
        c.event_latency_window.observe(now, latency_us)

    def handle_acc(self, acc: AccInput) -> list[Effect]:
        """§7: one ACC line or simulated payment."""
        core = self._core
        t0 = self._clock.mono_ns()
        core.counters.event_queue_wait_us.observe(max(0, (t0 - acc.recv_ns) // 1000))
        core.begin()
        on_acc(core, acc)
        self._count_item(t0)
        return core.take_effects()

    def handle_door(self, reading: DoorReading) -> list[Effect]:
        """§10.1: door readings (only the latest value of the cell reaches the tracker)."""
        core = self._core
        core.begin()
        core.door_fault, core.door_alarm = reading.fault, reading.alarm
        door = core.door
        feed = DoorFeed(reading.status, reading.fault, reading.alarm, reading.source)
        previous = door.last_status
        if reading.status == previous:
            core.out.append(feed)
            return core.take_effects()
        tid = door.feed_track()
        core.out.append(payloads.gate(core.site, core.wall, reading.status, "rs485", tid=tid))
        core.out.append(feed)
        core.log(
            logging.INFO,
            "door_state_change",
            status=reading.status,
            previous=previous,
            source=reading.source,
            fault=reading.fault,
            alarm=reading.alarm,
        )
        corr = door.on_status(reading.status, core.now)
        if corr is not None and corr.command.jid is not None:
            j = core.journeys.by_jid(corr.command.jid)
            if j is not None:
                j.gate_opened_at = core.wall
                j.gate_was_open = corr.command.door_was_open
                j.add(JourneyEvent("gate_open", core.wall, x=f"delta_ms={corr.age_ms}"))
        long_, very = door.update_open(reading.status, previous, core.now)
        self._count_opens(long_, very)
        return core.take_effects()

    def _count_opens(self, long_: bool, very: bool) -> None:
        c = self._core.counters
        c.gate_long_opens += long_
        c.gate_very_long_opens += very

    def tick(self) -> list[Effect]:
        """§4.10, steps 1–10 with one `now`."""
        core = self._core
        core.begin()
        tick_ns = self._clock.mono_ns()
        recheck_all(core, tick_ns)
        expire_buffered(core)
        core.acc.forget_receipts(core.now)
        expire_pool(core)
        core.occupancy.prune(core.now, lambda t: t in core.persons or core.pool.contains(t))
        core.reentry.prune(core.now)
        core.door.prune(core.now)
        self._count_opens(*core.door.tick_open(core.now))
        self._egress(core.journeys.due(core.now))
        core.last_tick_mono_ms = core.now
        self._last_gauges = self.gauges()
        return core.take_effects()

    def _egress(self, journeys: list[Journey]) -> None:
        """§11.2 egress filter: emit entry-crossers and meaningful journeys, discard the rest."""
        c = self._core.counters
        out = self._core.out
        for j in journeys:
            if j.egress_eligible:
                c.journeys_emitted[j.outcome] = c.journeys_emitted.get(j.outcome, 0) + 1
                out.append(EmitJourney(journey_record(j), j.outcome))
            else:
                c.journeys_discarded += 1

    def shutdown(self) -> list[Effect]:
        """§11.5 (D15): flush buffered ACCs, finalize live journeys, release everything held."""
        core = self._core
        if self._shut_down:
            return []
        self._shut_down = True
        core.begin()
        release_buffered(core)
        for tid, person in core.persons.items():
            j = core.journeys.get_active(tid)
            if j is not None:
                j.authorized |= person.authorized
                j.add(JourneyEvent("shutdown", core.wall))
        self._egress(core.journeys.release_all(core.wall))
        core.persons.clear()
        core.pool.clear()
        core.occupancy.clear()
        core.acc.clear()
        core.reentry.clear()
        core.door.clear_commands()
        return core.take_effects()

    # -- gauges ------------------------------------------------------------------------------

    def gauges(self) -> CoreGauges:
        """Fresh gauge values; call on the tracker's thread (`last_gauges` is the tick snapshot)."""
        core = self._core
        now = self._clock.mono_ms()
        door = core.door
        return CoreGauges(
            live_tracks=len(core.persons),
            authorized_tracks=sum(1 for p in core.persons.values() if p.authorized),
            stitch_pending=len(core.pool),
            occupancy_entries=core.occupancy.entry_count(),
            journeys_active=len(core.journeys.active),
            journeys_held=len(core.journeys.held),
            pos_occupancy={z: core.occupancy.present_count(z) for z in core.cfg.zones.pos_zones},
            gate_state=GATE_STATE_VALUE.get(door.last_status, 0),
            door_status=door.last_status,
            door_fault=core.door_fault,
            door_alarm=core.door_alarm,
            open_duration_s=door.open_duration_s(now),
            last_tick_mono_ms=core.last_tick_mono_ms,
            acc_buffered_now=core.acc.buffered_count(),
            reentry_records=len(core.reentry),
            door_pending_commands=len(door.pending),
        )

    @property
    def last_gauges(self) -> CoreGauges | None:
        """The snapshot taken at the last tick (safe to read from another thread)."""
        return self._last_gauges
