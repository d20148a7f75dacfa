"""The core's state and the per-item handling context shared by the handler modules.

`Tracker` owns one `CoreState`. Each handled item calls `begin()` (reads `now`/`wall` once,
behaviour.md §1) and the handlers append effects to `out`.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from gateway.codecs.uuid7 import uuid7
from gateway.config.model import Config
from gateway.core.acc import AccState
from gateway.core.counters import CoreCounters
from gateway.core.door import DoorCorrelator
from gateway.core.effects import Effect, Log
from gateway.core.journeys import Journey, JourneyEvent, JourneyManager
from gateway.core.model import Clock, GatePort
from gateway.core.occupancy import Occupancy
from gateway.core.persons import Person
from gateway.core.reentry import ReentryDetector
from gateway.core.stitcher import StitchPool

LOG_RATE_INTERVAL_MS = 1000  # repeated warnings ≤ 1/s per key (interfaces.md §12)


@attrs.define(slots=True)
class RateGate:
    """At most one record per key per second of the injected clock; counts the suppressed ones."""

    _last: dict[str, int] = attrs.field(factory=dict)
    _suppressed: dict[str, int] = attrs.field(factory=dict)

    def allow(self, key: str, now: int) -> int | None:
        last = self._last.get(key)
        if last is not None and now - last < LOG_RATE_INTERVAL_MS:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)


def _make_pool(pos_ids: frozenset[int]) -> StitchPool:
    return StitchPool(is_pos=lambda z: z is not None and z in pos_ids)


@attrs.define(slots=True, eq=False)
class CoreState:
    cfg: Config
    clock: Clock
    gate: GatePort
    rng: random.Random
    site: str = attrs.field(init=False)
    pos_ids: frozenset[int] = attrs.field(init=False)
    dwell_ids: frozenset[int] = attrs.field(init=False)
    min_dwell_ms: int = attrs.field(init=False)
    zone_by_name: dict[str, int] = attrs.field(init=False)  # POS/DWELL names → ids (§7.1)
    persons: dict[int, Person] = attrs.field(factory=dict)
    journeys: JourneyManager = attrs.field(factory=JourneyManager)
    occupancy: Occupancy = attrs.field(init=False)
    pool: StitchPool = attrs.field(init=False)
    reentry: ReentryDetector = attrs.field(factory=ReentryDetector)
    door: DoorCorrelator = attrs.field(factory=DoorCorrelator)
    acc: AccState = attrs.field(init=False)
    counters: CoreCounters = attrs.field(factory=CoreCounters)
    limiter: RateGate = attrs.field(factory=RateGate)
    door_fault: int = 0
    door_alarm: int = 0
    last_tick_mono_ms: int | None = None
    now: int = 0
    wall: int = 0
    out: list[Effect] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        z = self.cfg.zones
        self.site = self.cfg.site.id
        self.pos_ids = frozenset(z.pos_zones)
        self.dwell_ids = frozenset(z.dwell_zones)
        self.min_dwell_ms = self.cfg.pos_tracking.min_dwell_ms
        self.zone_by_name = {}
        for zid in (*z.pos_zones, *z.dwell_zones):
            self.zone_by_name.setdefault(z.name(zid), zid)  # first wins, as zone_id_by_name
        self.occupancy = Occupancy(grace_ms=self.cfg.pos_tracking.exit_grace_ms)
        self.pool = _make_pool(self.pos_ids)
        self.acc = AccState(
            dedup_window_ms=self.cfg.acc.dedup_window_s * 1000, buffer_ms=self.cfg.acc.buffer_ms
        )

    # -- per-item context -------------------------------------------------------------------

    def begin(self) -> None:
        """Read `now` and `wall` once for the item being handled (behaviour.md §1)."""
        self.now = self.clock.mono_ms()
        self.wall = self.clock.wall_ms()

    def take_effects(self) -> list[Effect]:
        out, self.out = self.out, []
        return out

    def log(self, level: int, event: str, **fields: Any) -> None:
        self.out.append(Log(level, event, fields))

    def log_limited(self, level: int, key: str, event: str, **fields: Any) -> None:
        suppressed = self.limiter.allow(key, self.now)
        if suppressed is None:
            return
        if suppressed:
            fields["suppressed"] = suppressed
        self.out.append(Log(level, event, fields))

    def new_id(self) -> str:
        return uuid7(self.wall, self.rng)

    # -- zones --------------------------------------------------------------------------------

    def name(self, geometry: int) -> str:
        return self.cfg.zones.name(geometry)

    def is_pos(self, geometry: int | None) -> bool:
        return geometry is not None and geometry in self.pos_ids

    def is_dwell_zone(self, geometry: int | None) -> bool:
        return geometry is not None and geometry in self.dwell_ids

    # -- journeys -----------------------------------------------------------------------------

    def add_event(
        self,
        tid: int,
        t: str,
        z: str | None = None,
        x: str | None = None,
        geometry: int | None = None,
    ) -> Journey | None:
        """Add a journey event to journey(any) of `tid`; dropped when there is none (§11.1)."""
        j = self.journeys.get_any(tid)
        if j is not None:
            j.add(JourneyEvent(t, self.wall, z, x, geometry))
        return j

    def journey_dwell(self, tid: int) -> int:
        j = self.journeys.get_any(tid)
        return j.total_dwell_ms if j is not None else 0
