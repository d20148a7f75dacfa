"""Input items of the core (behaviour.md §2) and the gate command it hands to the gate port.

These are produced by the shell (MQTT ingress via the Xovis codec, the ACC listener, the door
consumer, HTTP simulate routes) and consumed by `Tracker` handlers.
"""

from __future__ import annotations

import enum
from typing import Literal, Protocol

import attrs
import msgspec

Position = tuple[float, float, float]  # [x, y, h] in metres (behaviour.md §1)


class EventKind(enum.Enum):
    TRACK_CREATE = "TRACK_CREATE"
    TRACK_DELETE = "TRACK_DELETE"
    ZONE_ENTRY = "ZONE_ENTRY"
    ZONE_EXIT = "ZONE_EXIT"
    LINE_CROSS = "LINE_CROSS"  # direction carried separately (D2)


Direction = Literal["forward", "backward"]


# The per-frame types below are msgspec Structs, not attrs classes: the decoder builds one per
# tracked object (40 per frame at 50 frames/s), and a Struct costs 0.12 µs to build against
# 0.93 µs for a frozen attrs class (measured here; docs/performance.md). gc=False: they hold
# only ints, strings, floats and tuples of those, so they can never be part of a cycle.


class XovisEvent(msgspec.Struct, frozen=True, gc=False):
    """One sensor event; `position` = first tracked object of its frame with this id."""

    kind: EventKind
    track_id: int
    geometry_id: int | None = None
    direction: Direction | None = None  # only for LINE_CROSS
    position: Position | None = None


class TrackedObject(msgspec.Struct, frozen=True, gc=False):
    track_id: int
    obj_type: str = "PERSON"
    position: Position | None = None


class Frame(msgspec.Struct, frozen=True, gc=False):
    event_time_ms: int  # Xovis frame time, epoch ms, 0 if unknown
    events: tuple[XovisEvent, ...] = ()
    objects: tuple[TrackedObject, ...] = ()


class XovisBatch(msgspec.Struct, frozen=True, gc=False):
    """One MQTT message worth of frames; all its events share `recv_ns`."""

    recv_ns: int
    topic: str
    frames: tuple[Frame, ...]


@attrs.frozen
class AccInput:
    """A payment: a terminal line (`ip` = peer) or simulated (`ip` = "simulated", `pos` set)."""

    recv_ns: int
    ip: str
    receipt: str | None = None
    pos: str | None = None  # zone name, only when simulated


DoorStatus = Literal["closed", "moving", "open", "unknown"]
DOOR_STATUSES: tuple[DoorStatus, ...] = ("moving", "open", "closed", "unknown")


@attrs.frozen
class DoorReading:
    status: DoorStatus
    fault: int = 0
    alarm: int = 0
    source: str = "rs485"  # rs485 | simulate


GateSource = Literal["tracker", "acc", "http"]


@attrs.frozen
class GateCmd:
    """An open command on its way to the gate worker (behaviour.md §4.9, §12)."""

    track_id: int  # 0 = manual open
    src: GateSource
    trigger_recv_ns: int
    enqueued_ns: int
    jid: str | None = None


class GatePort(Protocol):
    """The one synchronous call-out of the core: non-blocking enqueue (D7)."""

    def try_send(self, cmd: GateCmd) -> bool: ...


class Clock(Protocol):
    """Injected clock (behaviour.md §1): monotonic ms/ns and wall epoch ms."""

    def mono_ms(self) -> int: ...

    def mono_ns(self) -> int: ...

    def wall_ms(self) -> int: ...
