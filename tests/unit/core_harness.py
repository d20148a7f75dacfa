"""Scenario harness for the core (scenarios.md "Test harness and default test site").

Fake clock from 0 with wall = W + mono; `@t` runs every due tick (1000, 2000, …) in order before
the input at t; each input's `recv_ns` is the fake clock at injection; a recording gate port that
can be set to refuse ("gate channel full").
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from gateway.config.model import (
    AccConfig,
    Config,
    GateConfig,
    MqttConfig,
    MqttEgressConfig,
    PosTrackingConfig,
    Rs485Config,
    SiteConfig,
    XovisConfig,
    ZonesConfig,
)
from gateway.core.clock import DEFAULT_WALL_BASE_MS, FakeClock
from gateway.core.effects import DoorFeed, Effect, EmitJourney, Log, Publish
from gateway.core.journeys import Journey
from gateway.core.model import (
    AccInput,
    DoorReading,
    DoorStatus,
    EventKind,
    Frame,
    GateCmd,
    Position,
    TrackedObject,
    XovisBatch,
    XovisEvent,
)
from gateway.core.persons import Person
from gateway.core.tracker import Tracker

W = DEFAULT_WALL_BASE_MS
POS_1, POS_2, POS_3, POS_4, POS_5 = 1001, 1002, 1003, 1004, 1005
EXIT_1, GATE_1, ENTRY_1, APPROACH_1, DWELL_1, STORE, EXTRA_LINE = (
    1006, 1007, 1008, 1009, 1010, 1011, 1012,
)  # fmt: skip

DTS_NAMES = {
    1001: "POS_1",
    1002: "POS_2",
    1003: "POS_3",
    1004: "POS_4",
    1005: "POS_5",
    1006: "EXIT_1",
    1007: "GATE_1",
    1008: "ENTRY_1",
    1009: "APPROACH_1",
    1010: "DWELL_1",
    1011: "STORE",
}


def dts_config(
    *,
    min_dwell_ms: int = 7000,
    exit_grace_ms: int = 5000,
    buffer_ms: int = 2000,
    dedup_window_s: int = 10,
    group_tracks: str = "ignore",
    entry_line: int | None = ENTRY_1,
) -> Config:
    """The default test site of scenarios.md with the usual overrides ("min 50", …)."""
    zones = ZonesConfig(
        pos_zones=(POS_1, POS_2, POS_3, POS_4, POS_5),
        gate_zone=GATE_1,
        exit_line=EXIT_1,
        dwell_zones=(DWELL_1,),
        entry_line=entry_line,
        approach_line=APPROACH_1,
        store_zone=STORE,
        names=DTS_NAMES,
    )
    return Config(
        path="dts.toml",
        site=SiteConfig(id="test"),
        mqtt=MqttConfig(host="127.0.0.1"),
        gate=GateConfig(
            mode="tcp", tcp_addr="127.0.0.1:8000", max_command_age_ms=2000, heartbeat_timeout_s=45
        ),
        zones=zones,
        mqtt_egress=MqttEgressConfig(enabled=True, host="127.0.0.1", port=1883),
        rs485=Rs485Config(enabled=True, device="/tmp/gateway-rs485", unknown_after_failures=8),
        pos_tracking=PosTrackingConfig(min_dwell_ms=min_dwell_ms, exit_grace_ms=exit_grace_ms),
        acc=AccConfig(
            ip_to_pos={"127.0.0.1": "POS_1", "127.0.0.2": "POS_2"},
            buffer_ms=buffer_ms,
            dedup_window_s=dedup_window_s,
        ),
        xovis=XovisConfig(group_tracks="track" if group_tracks == "track" else "ignore"),
    )


@attrs.define
class RecordingGate:
    """Fake gate port: records accepted commands; `full = True` refuses ("gate channel full")."""

    sent: list[GateCmd] = attrs.field(factory=list)
    refused: list[GateCmd] = attrs.field(factory=list)
    full: bool = False

    def try_send(self, cmd: GateCmd) -> bool:
        if self.full:
            self.refused.append(cmd)
            return False
        self.sent.append(cmd)
        return True


class Harness:
    """Drives a `Tracker` with the scenarios.md notation; keeps every effect in `effects`."""

    def __init__(self, config: Config | None = None, seed: int = 1) -> None:
        self.config = config if config is not None else dts_config()
        self.clock = FakeClock()
        self.gate = RecordingGate()
        self.tracker = Tracker(self.config, self.clock, self.gate, random.Random(seed))
        self.effects: list[Effect] = []
        self.next_tick = 1000

    # -- time --------------------------------------------------------------------------------

    def at(self, t: int) -> Harness:
        """Advance to `t`, running every tick whose deadline ≤ t first, in order."""
        assert t >= self.clock.now_ms, "time never goes backwards"
        while self.next_tick <= t:
            self.clock.set(self.next_tick)
            self.effects.extend(self.tracker.tick())
            self.next_tick += 1000
        self.clock.set(t)
        return self

    def _record(self, effects: list[Effect]) -> list[Effect]:
        self.effects.extend(effects)
        return effects

    # -- inputs ------------------------------------------------------------------------------

    def batch(self, t: int, frames: tuple[Frame, ...]) -> list[Effect]:
        self.at(t)
        batch = XovisBatch(recv_ns=self.clock.mono_ns(), topic="xovis/test", frames=frames)
        return self._record(self.tracker.handle_batch(batch))

    def event(
        self,
        t: int,
        kind: EventKind,
        tid: int,
        pos: Position | None = None,
        g: int | None = None,
        direction: Any = None,
        event_time: int = 0,
    ) -> list[Effect]:
        ev = XovisEvent(kind, tid, g, direction, pos)
        objects = (TrackedObject(tid, "PERSON", pos),) if pos is not None else ()
        return self.batch(t, (Frame(event_time, (ev,), objects),))

    def C(
        self, t: int, tid: int, pos: Position | None = None, g: int | None = None
    ) -> list[Effect]:
        return self.event(t, EventKind.TRACK_CREATE, tid, pos, g)

    def D(self, t: int, tid: int, pos: Position | None = None) -> list[Effect]:
        return self.event(t, EventKind.TRACK_DELETE, tid, pos)

    def E(self, t: int, tid: int, g: int | None, pos: Position | None = None) -> list[Effect]:
        return self.event(t, EventKind.ZONE_ENTRY, tid, pos, g)

    def X(self, t: int, tid: int, g: int | None, pos: Position | None = None) -> list[Effect]:
        return self.event(t, EventKind.ZONE_EXIT, tid, pos, g)

    def F(self, t: int, tid: int, line: int, pos: Position | None = None) -> list[Effect]:
        return self.event(t, EventKind.LINE_CROSS, tid, pos, line, "forward")

    def B(self, t: int, tid: int, line: int, pos: Position | None = None) -> list[Effect]:
        return self.event(t, EventKind.LINE_CROSS, tid, pos, line, "backward")

    def P(self, t: int, tid: int, pos: Position) -> list[Effect]:
        return self.batch(t, (Frame(0, (), (TrackedObject(tid, "PERSON", pos),)),))

    def ACC(self, t: int, ip: str, receipt: str | None = None) -> list[Effect]:
        self.at(t)
        acc = AccInput(recv_ns=self.clock.mono_ns(), ip=ip, receipt=receipt)
        return self._record(self.tracker.handle_acc(acc))

    def SIM(self, t: int, pos: str, receipt: str | None = None) -> list[Effect]:
        self.at(t)
        acc = AccInput(recv_ns=self.clock.mono_ns(), ip="simulated", receipt=receipt, pos=pos)
        return self._record(self.tracker.handle_acc(acc))

    def DOOR(
        self, t: int, status: DoorStatus, fault: int = 0, alarm: int = 0, source: str = "rs485"
    ) -> list[Effect]:
        self.at(t)
        return self._record(self.tracker.handle_door(DoorReading(status, fault, alarm, source)))

    def shutdown(self, t: int) -> list[Effect]:
        self.at(t)
        return self._record(self.tracker.shutdown())

    # -- observations --------------------------------------------------------------------------

    @property
    def core(self) -> Any:
        return self.tracker.state

    @property
    def counters(self) -> Any:
        return self.tracker.counters

    def person(self, tid: int) -> Person | None:
        p: Person | None = self.tracker.state.persons.get(tid)
        return p

    def journey(self, tid: int) -> Journey:
        """Journey(any) of `tid` (active, else newest held)."""
        j = self.tracker.state.journeys.get_any(tid)
        assert j is not None, f"no journey for {tid}"
        return j

    def held(self) -> list[Journey]:
        return [h.journey for h in self.tracker.state.journeys.held.values()]

    def pubs(
        self, kind: str, effects: list[Effect] | None = None, **match: Any
    ) -> list[dict[str, Any]]:
        src = self.effects if effects is None else effects
        return [
            dict(e.payload)
            for e in src
            if isinstance(e, Publish)
            and e.kind == kind
            and all(e.payload.get(k) == v for k, v in match.items())
        ]

    def emitted(self, effects: list[Effect] | None = None) -> list[dict[str, Any]]:
        src = self.effects if effects is None else effects
        return [dict(e.record) for e in src if isinstance(e, EmitJourney)]

    def logs(self, event: str) -> list[Log]:
        return [e for e in self.effects if isinstance(e, Log) and e.event == event]

    def door_feeds(self) -> list[DoorFeed]:
        return [e for e in self.effects if isinstance(e, DoorFeed)]

    def occupancy_of(self, tid: int) -> dict[int, Any]:
        occ = self.tracker.state.occupancy
        return {z: e for z in occ._zones if (e := occ.entry(z, tid)) is not None}


def ev_types(j: Journey) -> list[str]:
    return [e.t for e in j.events]


def ev_json(j: Journey) -> list[dict[str, Any]]:
    return [e.to_json() for e in j.events]
