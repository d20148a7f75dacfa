"""Xovis `live_data` JSON → `XovisBatch` (interfaces.md §1.2): sans-I/O, never raises.

A bad frame, event or tracked object skips only that element (D17). A typed msgspec decode is tried
first; any validation error falls back to an untyped walk that applies the same rules per element.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any, Final

import attrs
import msgspec

from gateway.config.model import GroupPolicy
from gateway.core.model import (
    Direction,
    EventKind,
    Frame,
    Position,
    TrackedObject,
    XovisBatch,
    XovisEvent,
)

GROUP_BIT: Final = 0x8000_0000  # behaviour.md §1: bit 31 marks a Xovis group aggregate (D11)
EXCERPT_BYTES: Final = 200  # interfaces.md §1.2: WARN excerpt of a malformed message
UNKNOWN_LABEL_CHARS: Final = 64  # §1.2: unknown-type label cut
UNKNOWN_LABEL_CAP: Final = 50  # §1.2: distinct labels before `other`
OTHER_LABEL: Final = "other"
DEFAULT_OBJ_TYPE: Final = "PERSON"
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1  # track ids are signed 64-bit (behaviour.md §1)
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1  # geometry ids are 32-bit, as `[zones]` int32 keys

_SIMPLE_KINDS: Final[dict[str, tuple[EventKind, Direction | None]]] = {
    "TRACK_CREATE": (EventKind.TRACK_CREATE, None),
    "TRACK_DELETE": (EventKind.TRACK_DELETE, None),
    "ZONE_ENTRY": (EventKind.ZONE_ENTRY, None),
    "ZONE_EXIT": (EventKind.ZONE_EXIT, None),
    "LINE_CROSS_FORWARD": (EventKind.LINE_CROSS, "forward"),
    "LINE_CROSS_BACKWARD": (EventKind.LINE_CROSS, "backward"),
}
_LINE_CROSS: Final = "LINE_CROSS"  # direction from attributes (D2)
_DIRECTIONS: Final[dict[str, Direction]] = {"forward": "forward", "backward": "backward"}


# -- typed fast path: the well-formed shape; anything else raises ValidationError -------------
class _Attrs(msgspec.Struct, gc=False):
    track_id: int
    geometry_id: int | None = None
    direction: Any = None  # read only for LINE_CROSS, so any type is allowed here


class _Event(msgspec.Struct, gc=False):
    type: str
    attributes: _Attrs


class _Obj(msgspec.Struct, gc=False):
    track_id: int
    type: str = DEFAULT_OBJ_TYPE
    position: tuple[float, ...] | None = None  # a 3-tuple is used as is, no copy


class _Frame(msgspec.Struct, gc=False):
    time: Any = None
    tracked_objects: list[_Obj] | None = None
    events: list[_Event] | None = None


class _LiveData(msgspec.Struct, gc=False):
    frames: list[_Frame]


class _Message(msgspec.Struct, gc=False):
    live_data: _LiveData | None = None


_TYPED: Final = msgspec.json.Decoder(_Message)
_UNTYPED: Final = msgspec.json.Decoder()


@attrs.define(slots=True)
class XovisStats:
    """Plain counters read by the metrics collector (interfaces.md §9.2)."""

    messages: int = 0
    frames: int = 0
    malformed: int = 0
    ignored: int = 0
    group_ignored: int = 0
    events_received: int = 0
    unknown_events: dict[str, int] = attrs.field(factory=dict)

    def count_unknown(self, type_name: str) -> None:
        label = type_name[:UNKNOWN_LABEL_CHARS]
        if not label.isascii():  # a lone surrogate must not reach the exposition encoder
            label = label.encode("utf-8", "replace").decode("utf-8")
        if label not in self.unknown_events and len(self.unknown_events) >= UNKNOWN_LABEL_CAP:
            label = OTHER_LABEL
        self.unknown_events[label] = self.unknown_events.get(label, 0) + 1


@attrs.frozen
class DecodeResult:
    """`batch` None = nothing to hand off; `error`/`excerpt` only for a malformed message."""

    batch: XovisBatch | None
    event_count: int = 0
    error: str | None = None
    excerpt: str | None = None


_NOTHING: Final = DecodeResult(None)

# RFC 3339 date-time; `T`/space separator and `Z` case-insensitive (RFC 3339 §5.6 NOTE)
_RFC3339: Final = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:[Zz]|([+-])(\d\d):(\d\d))\Z",
    re.ASCII,
)
_EPOCH_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS: Final = dt.timedelta(milliseconds=1)


def parse_time_ms(value: object) -> int:
    """Frame `time` → epoch ms; 0 when unknown, unparsable or negative (§1.2; never malformed)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value if 0 <= value <= _I64_MAX else 0
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and 0 <= value <= _I64_MAX else 0
    if isinstance(value, str):
        return _parse_rfc3339_ms(value)
    return 0


def _parse_rfc3339_ms(text: str) -> int:
    m = _RFC3339.match(text)
    if m is None:
        return 0
    try:  # C fast path (≈ 0.5 µs); lowercase t/z and leap seconds take the arithmetic below
        millis = (dt.datetime.fromisoformat(text) - _EPOCH) // _ONE_MS
    except ValueError:
        return _rfc3339_fields_ms(m)
    return millis if millis >= 0 else 0


def _rfc3339_fields_ms(m: re.Match[str]) -> int:
    year, month, day, hour, minute, second, frac, sign, off_h, off_m = m.groups()
    hh, mm, ss = int(hour), int(minute), int(second)
    if hh > 23 or mm > 59 or ss > 60:  # 60 = leap second, counted into the next second
        return 0
    try:
        days = dt.date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return 0
    seconds = days * 86_400 + hh * 3600 + mm * 60 + ss
    if sign is not None:
        oh, om = int(off_h), int(off_m)
        if oh > 23 or om > 59:
            return 0
        offset = oh * 3600 + om * 60
        seconds -= offset if sign == "+" else -offset
    millis = seconds * 1000 + (int((frac + "00")[:3]) if frac else 0)
    return millis if millis >= 0 else 0  # pre-1970 is "unknown" like a negative integer


def _loads_strict(payload: bytes) -> Any:
    """stdlib fallback for numbers msgspec refuses (1e999): yields ±inf, still rejects NaN."""

    def _reject(name: str) -> Any:
        raise ValueError(f"invalid JSON constant {name}")

    return json.loads(payload, parse_constant=_reject)


def _coord(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        out = float(value)
    except OverflowError:
        return None
    return out if math.isfinite(out) else None


def _position(value: object) -> tuple[float, ...] | None:
    """Generic-path `position`: the first three must be finite numbers, else no position.

    NaN/inf (only reachable through 1e999-style literals) make the position absent, not the object
    invalid: the object still counts as seen and keeps its id (docs: interfaces.md §1.2 "otherwise
    the object has no position").
    """
    if not isinstance(value, list) or len(value) < 3:
        return None
    x, y, h = _coord(value[0]), _coord(value[1]), _coord(value[2])
    if x is None or y is None or h is None:
        return None
    return (x, y, h)


def _is_utf8(text: str) -> bool:
    """False for lone surrogates, which only the stdlib fallback can produce (`"\\ud800"`)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _excerpt(payload: bytes) -> str:
    return payload[:EXCERPT_BYTES].decode("utf-8", "backslashreplace")


@attrs.define(slots=True)
class XovisDecoder:
    """Decode one MQTT payload per call; counters go to `stats`."""

    group_tracks: GroupPolicy
    stats: XovisStats

    def decode(self, payload: bytes, *, recv_ns: int, topic: str) -> DecodeResult:
        stats = self.stats
        stats.messages += 1
        try:
            message = _TYPED.decode(payload)
        except msgspec.ValidationError:
            return self._decode_generic(payload, recv_ns, topic)
        except msgspec.DecodeError as exc:
            return self._malformed(payload, f"not JSON: {exc}")
        except UnicodeDecodeError:
            return self._malformed(payload, "not UTF-8")
        except RecursionError:
            return self._malformed(payload, "JSON nested too deeply")
        if message.live_data is None:
            stats.ignored += 1
            return _NOTHING
        frames = [
            self._frame(f.time, f.tracked_objects, f.events) for f in message.live_data.frames
        ]
        stats.frames += len(frames)
        return self._result(frames, recv_ns, topic)

    def _malformed(self, payload: bytes, error: str) -> DecodeResult:
        self.stats.malformed += 1
        return DecodeResult(None, 0, error, _excerpt(payload))

    def _result(self, frames: list[Frame], recv_ns: int, topic: str) -> DecodeResult:
        kept = tuple(f for f in frames if f.events or f.objects)
        if not kept:
            return _NOTHING
        count = sum(len(f.events) for f in kept)
        self.stats.events_received += count
        return DecodeResult(XovisBatch(recv_ns=recv_ns, topic=topic, frames=kept), count)

    def _decode_generic(self, payload: bytes, recv_ns: int, topic: str) -> DecodeResult:
        try:
            doc = _UNTYPED.decode(payload)
        except msgspec.ValidationError:  # untyped: only "number out of range"
            try:
                doc = _loads_strict(payload)
            except (ValueError, RecursionError) as exc:
                return self._malformed(payload, f"not JSON: {exc}")
        except msgspec.DecodeError as exc:
            return self._malformed(payload, f"not JSON: {exc}")
        except UnicodeDecodeError:
            return self._malformed(payload, "not UTF-8")
        except RecursionError:
            return self._malformed(payload, "JSON nested too deeply")
        if not isinstance(doc, dict):
            return self._malformed(payload, "not a JSON object")
        live = doc.get("live_data")
        if live is None:
            self.stats.ignored += 1
            return _NOTHING
        if not isinstance(live, dict):
            return self._malformed(payload, "live_data is not an object")
        raw_frames = live.get("frames")
        if not isinstance(raw_frames, list):
            return self._malformed(payload, "live_data.frames missing or not a list")
        frames: list[Frame] = []
        for raw in raw_frames:
            if not isinstance(raw, dict):
                self.stats.malformed += 1
                continue
            self.stats.frames += 1
            objs = self._objects_generic(raw.get("tracked_objects"))
            events = self._events_generic(raw.get("events"))
            frames.append(self._frame(raw.get("time"), objs, events))
        return self._result(frames, recv_ns, topic)

    def _list_field(self, value: object) -> list[Any]:
        if value is None:  # null = absent (`[]`), as for every optional key
            return []
        if isinstance(value, list):
            return value
        self.stats.malformed += 1
        return []

    def _objects_generic(self, value: object) -> list[_Obj]:
        out: list[_Obj] = []
        for raw in self._list_field(value):
            if not isinstance(raw, dict):
                self.stats.malformed += 1
                continue
            tid = raw.get("track_id")
            obj_type = raw.get("type")
            if obj_type is None:
                obj_type = DEFAULT_OBJ_TYPE
            if (
                isinstance(tid, bool)
                or not isinstance(tid, int)
                or not isinstance(obj_type, str)
                or not _is_utf8(obj_type)
            ):
                self.stats.malformed += 1
                continue
            out.append(_Obj(tid, obj_type, _position(raw.get("position"))))
        return out

    def _events_generic(self, value: object) -> list[_Event]:
        out: list[_Event] = []
        for raw in self._list_field(value):
            if not isinstance(raw, dict):
                self.stats.malformed += 1
                continue
            etype = raw.get("type")
            if isinstance(etype, str) and etype != _LINE_CROSS and etype not in _SIMPLE_KINDS:
                self.stats.count_unknown(etype)  # unknown types are counted whatever their shape
                continue
            attributes = raw.get("attributes")
            tid = attributes.get("track_id") if isinstance(attributes, dict) else None
            geo = attributes.get("geometry_id") if isinstance(attributes, dict) else None
            if (
                not isinstance(etype, str)
                or not isinstance(attributes, dict)
                or isinstance(tid, bool)
                or not isinstance(tid, int)
                or isinstance(geo, bool)
                or not (geo is None or isinstance(geo, int))
            ):
                self.stats.malformed += 1
                continue
            out.append(_Event(etype, _Attrs(tid, geo, attributes.get("direction"))))
        return out

    def _frame(self, time: object, objs: list[_Obj] | None, events: list[_Event] | None) -> Frame:
        stats = self.stats
        ignore_groups = self.group_tracks == "ignore"
        objects: list[TrackedObject] = []
        for o in objs or ():
            tid = o.track_id
            if not _I64_MIN <= tid <= _I64_MAX:
                stats.malformed += 1
                continue
            if ignore_groups and tid & GROUP_BIT:
                stats.group_ignored += 1
                continue
            p = o.position
            if p is not None and len(p) != 3:
                p = (p[0], p[1], p[2]) if len(p) > 3 else None
            objects.append(TrackedObject(tid, o.type, p))
        if not events:
            return Frame(parse_time_ms(time), (), tuple(objects))
        first_pos: dict[int, Position] = {}
        for obj in objects:
            if obj.position is not None and obj.track_id not in first_pos:
                first_pos[obj.track_id] = obj.position
        out_events: list[XovisEvent] = []
        for e in events:
            etype = e.type
            simple = _SIMPLE_KINDS.get(etype)
            if simple is None and etype != _LINE_CROSS:
                stats.count_unknown(etype)
                continue
            a = e.attributes
            tid, geo = a.track_id, a.geometry_id
            if not _I64_MIN <= tid <= _I64_MAX or not (geo is None or _I32_MIN <= geo <= _I32_MAX):
                stats.malformed += 1
                continue
            if simple is None:
                direction = (
                    _DIRECTIONS.get(a.direction.strip().lower())
                    if isinstance(a.direction, str)
                    else None
                )
                if direction is None:
                    stats.malformed += 1
                    continue
                kind: EventKind = EventKind.LINE_CROSS
            else:
                kind, direction = simple
            if ignore_groups and tid & GROUP_BIT:
                stats.group_ignored += 1
                continue
            out_events.append(XovisEvent(kind, tid, geo, direction, first_pos.get(tid)))
        return Frame(parse_time_ms(time), tuple(out_events), tuple(objects))
