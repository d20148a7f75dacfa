"""Geometry and track mechanics of the synthetic store (simulation.md §2); pure, caller's time.

`DemoGeometry` places the demo site's zones and lines (ids from the site config). `Scene` moves
walkers along straight legs, derives Xovis events from that geometry and encodes one Xovis message
per frame (interfaces.md §1.2). Customer behaviour lives in `gateway.tools.traffic`.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import deque
from collections.abc import Iterable
from typing import Final, Literal

import attrs
import msgspec

from gateway.codecs.xovis import GROUP_BIT
from gateway.config.model import AccConfig, ZonesConfig

Point = tuple[float, float]
Direction = Literal["forward", "backward"]
EventDoc = dict[str, object]

# -- simulation.md §2 geometry table (metres; y grows towards the exit) ------------------------
SPAWN: Final[Point] = (5.5, -6.0)
GATE_CENTRE: Final[Point] = (2.25, 1.55)
EXIT_POINT: Final[Point] = (2.25, 3.0)
STORE_RECT: Final = (0.0, 6.0, -5.5, 1.0)  # x0, x1, y0, y1
POS_HALF_M: Final = (0.4, 0.5)  # POS zones are 0.8 × 1.0 m
POS_CENTRE_Y: Final = -1.5
POS_FIRST_X, POS_PITCH_X = 0.6, 1.1  # centre x = 0.6 + 1.1·(k−1)
MAX_POS: Final = 5  # the table places five POS zones; further configured ones are not drawn
DWELL_RECT: Final = (5.0, 6.0, -1.0, 0.0)
GATE_RECT: Final = (1.5, 3.0, 1.0, 2.1)
ENTRY_SEGMENT: Final[tuple[Point, Point]] = ((4.5, -5.5), (6.0, -5.5))
APPROACH_SEGMENT: Final[tuple[Point, Point]] = ((1.5, 0.5), (3.0, 0.5))
EXIT_SEGMENT: Final[tuple[Point, Point]] = ((1.5, 2.1), (3.0, 2.1))
FORWARD: Final[Point] = (0.0, 1.0)  # every line's forward direction is +y (§2)
STORE_NAME: Final = "STORE"  # behaviour.md §1 compatibility name rule

# Xovis event type names (interfaces.md §1.2)
TRACK_CREATE: Final = "TRACK_CREATE"
TRACK_DELETE: Final = "TRACK_DELETE"
ZONE_ENTRY: Final = "ZONE_ENTRY"
ZONE_EXIT: Final = "ZONE_EXIT"
LINE_CROSS: Final = "LINE_CROSS"
LINE_CROSS_TYPED: Final[dict[Direction, str]] = {
    "forward": "LINE_CROSS_FORWARD",
    "backward": "LINE_CROSS_BACKWARD",
}
PERSON: Final = "PERSON"
GROUP: Final = "GROUP"
END: Final = "end"  # leg tag: the walker's track is deleted when this leg completes
_T_DIGITS: Final = 9  # segment parameters equal to 1e-9 are one instant (exit, line, entry order)
_ENCODER: Final = msgspec.json.Encoder()
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@attrs.frozen
class SensorMessage:
    """One Xovis MQTT message (possibly truncated on purpose, §2 noise)."""

    topic: str
    payload: bytes


@attrs.frozen
class AccLine:
    """One ACC terminal line, to be sent over TCP from `source_ip` (interfaces.md §2)."""

    source_ip: str
    line: bytes


Output = SensorMessage | AccLine


@attrs.frozen
class Rect:
    """A Xovis zone: axis-aligned rectangle, boundary inclusive."""

    geometry_id: int
    x0: float
    x1: float
    y0: float
    y1: float

    @property
    def centre(self) -> Point:
        return ((self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2)

    def contains(self, p: Point) -> bool:
        return self.x0 <= p[0] <= self.x1 and self.y0 <= p[1] <= self.y1

    def clip(self, a: Point, b: Point) -> tuple[float, float] | None:
        """Parameter interval [t_in, t_out] ⊂ [0, 1] of segment a→b inside (Liang–Barsky)."""
        t_in, t_out = 0.0, 1.0
        dx, dy = b[0] - a[0], b[1] - a[1]
        for p, q in (
            (-dx, a[0] - self.x0),
            (dx, self.x1 - a[0]),
            (-dy, a[1] - self.y0),
            (dy, self.y1 - a[1]),
        ):
            if p == 0:
                if q < 0:
                    return None
                continue
            r = q / p
            if p < 0:
                t_in = max(t_in, r)
            else:
                t_out = min(t_out, r)
            if t_in > t_out:
                return None
        return t_in, t_out


@attrs.frozen
class Line:
    """A Xovis line: segment a–b; crossing towards `forward` is a forward crossing."""

    geometry_id: int
    a: Point
    b: Point
    forward: Point = FORWARD

    def side(self, p: Point) -> float:
        return (p[0] - self.a[0]) * self.forward[0] + (p[1] - self.a[1]) * self.forward[1]

    def crossing(self, p0: Point, p1: Point) -> tuple[float, Direction] | None:
        """(segment parameter, direction) when p0→p1 crosses; landing on the line counts once."""
        s0, s1 = self.side(p0), self.side(p1)
        direction: Direction
        if s0 < 0 <= s1:
            direction = "forward"
        elif s1 < 0 <= s0:
            direction = "backward"
        else:
            return None
        t = s0 / (s0 - s1)
        x = p0[0] + t * (p1[0] - p0[0])
        y = p0[1] + t * (p1[1] - p0[1])
        ux, uy = self.b[0] - self.a[0], self.b[1] - self.a[1]
        u = ((x - self.a[0]) * ux + (y - self.a[1]) * uy) / (ux * ux + uy * uy)
        return (t, direction) if 0.0 <= u <= 1.0 else None


def _rect(gid: int, r: tuple[float, float, float, float]) -> Rect:
    return Rect(gid, r[0], r[1], r[2], r[3])


def pos_centre(k: int) -> Point:
    """Centre of the k-th POS zone (k from 1), simulation.md §2."""
    return (round(POS_FIRST_X + POS_PITCH_X * (k - 1), 6), POS_CENTRE_Y)


@attrs.frozen
class DemoGeometry:
    """The §2 layout with the site's zone ids; roles the site lacks are simply absent."""

    gate: Rect
    exit_line: Line
    pos: tuple[Rect, ...]
    pos_ips: dict[int, str]  # POS zone id → terminal IP ([acc.ip_to_pos] inverted, first wins)
    dwell: Rect | None = None
    store: Rect | None = None
    entry_line: Line | None = None
    approach_line: Line | None = None

    @property
    def zones(self) -> tuple[Rect, ...]:
        """Every zone, in the order same-instant entries are reported (store first)."""
        found = (self.store, *self.pos, self.dwell, self.gate)
        return tuple(z for z in found if z is not None)

    @property
    def lines(self) -> tuple[Line, ...]:
        found = (self.entry_line, self.approach_line, self.exit_line)
        return tuple(x for x in found if x is not None)

    def paying_pos(self) -> tuple[Rect, ...]:
        """POS zones with a mapped terminal, where payers go."""
        return tuple(z for z in self.pos if z.geometry_id in self.pos_ips)

    @classmethod
    def from_config(cls, zones: ZonesConfig, acc: AccConfig) -> DemoGeometry:
        store_id: int | None = zones.store_zone
        if store_id is None:
            store_id = next((g for g, n in zones.names.items() if n == STORE_NAME), None)
        pos: list[Rect] = []
        for k, gid in enumerate(zones.pos_zones[:MAX_POS], start=1):
            cx, cy = pos_centre(k)
            hx, hy = POS_HALF_M
            pos.append(Rect(gid, cx - hx, cx + hx, cy - hy, cy + hy))
        placed = {z.geometry_id for z in pos}
        ips: dict[int, str] = {}
        for ip, name in acc.ip_to_pos.items():
            zid = zones.zone_id_by_name(name)
            if zid is not None and zid in placed and zid not in ips:
                ips[zid] = ip

        def line(gid: int | None, seg: tuple[Point, Point]) -> Line | None:
            return None if gid is None else Line(gid, seg[0], seg[1])

        return cls(
            gate=_rect(zones.gate_zone, GATE_RECT),
            exit_line=Line(zones.exit_line, EXIT_SEGMENT[0], EXIT_SEGMENT[1]),
            pos=tuple(pos),
            pos_ips=ips,
            dwell=_rect(zones.dwell_zones[0], DWELL_RECT) if zones.dwell_zones else None,
            store=None if store_id is None else _rect(store_id, STORE_RECT),
            entry_line=line(zones.entry_line, ENTRY_SEGMENT),
            approach_line=line(zones.approach_line, APPROACH_SEGMENT),
        )


@attrs.define
class Move:
    """Walk straight to `target` at the walker's speed; `tag` is reported on arrival."""

    target: Point
    tag: str = ""


@attrs.define
class Wait:
    """Stand still for `ms` of model time; `tag` is reported when the wait is over."""

    ms: float
    tag: str = ""


Leg = Move | Wait


@attrs.define(eq=False)
class Walker:
    """One tracked object (identity equality); `serial` survives track loss, `track_id` does not."""

    serial: int
    track_id: int
    pos: Point
    height: float
    speed: float  # m/s
    legs: deque[Leg]
    obj_type: str = PERSON
    zones: list[int] = attrs.field(factory=list)  # geometry ids inside, in entry order
    visible: bool = True
    lose_at_ms: float | None = None
    reappear_at_ms: float = 0.0


@attrs.frozen
class Reached:
    """A walker completed a tagged leg at `at_ms` (model time)."""

    walker: Walker
    tag: str
    at_ms: float


@attrs.frozen
class LossRecord:
    """Ground truth of one track loss (§2): old and new track id, positions and heights."""

    old_track_id: int
    new_track_id: int
    lost_at: Point
    found_at: Point
    old_height: float
    new_height: float
    gap_ms: float


@attrs.define
class SceneStats:
    """Counters of what the scene produced (the demo's end-of-run summary)."""

    messages: int = 0
    truncated: int = 0
    events: int = 0
    tracks_created: int = 0
    tracks_lost: int = 0
    missed_crossings: int = 0
    events_by_type: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen
class SceneParams:
    """Sensor-side parameters of simulation.md §2 (noise, lag, loss, missed crossings)."""

    noise_sd_m: float = 0.02  # §2: position + N(0, 0.02 m)
    noise_clip_m: float = 0.05  # D*: 2.5 σ clip keeps the "≤ 40 cm" loss promise after noise
    lag_ms: tuple[int, int] = (1200, 1800)  # §2: frame time = now − U(1.2, 1.8) s
    truncate_share: float = 0.01  # §2: 1 % truncated JSON messages
    missed_crossing_share: float = 0.10  # §2: 10 % of exits carry no EXIT_1 crossing
    typed_line_share: float = 0.5  # §2: LINE_CROSS(direction) or LINE_CROSS_FORWARD/BACKWARD
    loss_share: float = 0.05  # §2: 5 % of tracks are lost once
    loss_after_ms: tuple[int, int] = (2000, 15000)  # D*: when, after the track's creation
    loss_gap_ms: tuple[int, int] = (200, 3000)  # §2: re-created after U(0.2, 3.0) s
    loss_offset_m: float = 0.25  # true offset; + 2 clipped noises ≤ 0.40 m (§2 "≤ 40 cm")
    loss_dh_m: float = 0.03  # §2: Δh ≤ 3 cm
    loss_max_y: float = 0.9  # D*: only inside the store, never at the gate or beyond the exit


def rfc3339_ms(epoch_ms: int) -> str:
    """`2026-01-05T16:41:30.048+00:00` (the interfaces.md §1.2 example shape)."""
    t = _EPOCH + dt.timedelta(milliseconds=epoch_ms)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{epoch_ms % 1000:03d}+00:00"


class Scene:
    """All walkers of one sensor; events found while moving are collected for the next frame."""

    def __init__(
        self, site: DemoGeometry, rng: random.Random, params: SceneParams, topic: str
    ) -> None:
        self.site = site
        self.rng = rng
        self.params = params
        self.topic = topic
        self.stats = SceneStats()
        self._zones = site.zones
        self._lines = site.lines
        self.walkers: dict[int, Walker] = {}  # serial → walker, creation order
        self.recent_losses: deque[LossRecord] = deque(maxlen=256)
        self._events: list[EventDoc] = []
        self._next_serial = 1
        self._next_track = 1
        self._now_ms: float | None = None
        self._lost_from: dict[int, tuple[int, Point, float, float]] = {}  # old id, pos, h, lost at

    @property
    def now_ms(self) -> float:
        return 0.0 if self._now_ms is None else self._now_ms

    # -- walkers ---------------------------------------------------------------------------

    def spawn(
        self,
        pos: Point,
        height: float,
        speed: float,
        legs: Iterable[Leg],
        *,
        group: bool = False,
        may_lose: bool = True,
    ) -> Walker:
        """Create a visible walker now: TRACK_CREATE and entries of the zones it stands in."""
        tid = self._new_track_id(group)
        w = Walker(self._next_serial, tid, pos, height, speed, deque(legs))
        self._next_serial += 1
        if group:
            w.obj_type = GROUP
        p = self.params
        if may_lose and not group and self.rng.random() < p.loss_share:
            w.lose_at_ms = self.now_ms + self.rng.uniform(*p.loss_after_ms)
        self.walkers[w.serial] = w
        self._announce(w)
        return w

    def delete(self, w: Walker) -> None:
        """End the walker; TRACK_DELETE unless its track is currently lost."""
        self.walkers.pop(w.serial, None)
        self._lost_from.pop(w.serial, None)
        if w.visible:
            self._emit(TRACK_DELETE, w.track_id)
        w.zones.clear()
        w.visible = False

    def _new_track_id(self, group: bool) -> int:
        tid = self._next_track
        self._next_track += 1
        self.stats.tracks_created += 1
        return tid | GROUP_BIT if group else tid

    def _announce(self, w: Walker) -> None:
        self._emit(TRACK_CREATE, w.track_id)
        for z in self._zones:
            if z.contains(w.pos):
                w.zones.append(z.geometry_id)
                self._emit(ZONE_ENTRY, w.track_id, z.geometry_id)

    # -- time ------------------------------------------------------------------------------

    def advance(self, now_ms: float) -> list[Reached]:
        """Move every walker to `now_ms`; returns tagged legs completed, in walker order."""
        start = now_ms if self._now_ms is None else self._now_ms
        self._now_ms = now_ms
        reached: list[Reached] = []
        for w in list(self.walkers.values()):
            self._loss(w, now_ms)
            self._walk(w, start, now_ms - start, reached)
        return reached

    def _loss(self, w: Walker, now_ms: float) -> None:
        p = self.params
        if not w.visible and now_ms >= w.reappear_at_ms:
            old_id, old_pos, old_h, lost_at = self._lost_from.pop(w.serial)
            r = self.rng.uniform(0.0, p.loss_offset_m)
            a = self.rng.uniform(0.0, 2 * math.pi)
            w.pos = (w.pos[0] + r * math.cos(a), w.pos[1] + r * math.sin(a))
            w.height += self.rng.uniform(-p.loss_dh_m, p.loss_dh_m)
            w.track_id = self._new_track_id(group=False)
            w.visible = True
            self._announce(w)
            self.recent_losses.append(
                LossRecord(old_id, w.track_id, old_pos, w.pos, old_h, w.height, now_ms - lost_at)
            )
        elif w.visible and w.lose_at_ms is not None and now_ms >= w.lose_at_ms:
            w.lose_at_ms = None
            if w.pos[1] >= p.loss_max_y:
                return
            self.stats.tracks_lost += 1
            self._emit(TRACK_DELETE, w.track_id)
            w.zones.clear()
            w.visible = False
            w.reappear_at_ms = now_ms + self.rng.uniform(*p.loss_gap_ms)
            self._lost_from[w.serial] = (w.track_id, w.pos, w.height, now_ms)

    def _walk(self, w: Walker, start: float, dt_ms: float, reached: list[Reached]) -> None:
        left = dt_ms
        while w.legs and (left > 0 or _is_instant(w.legs[0], w)):
            leg = w.legs[0]
            if isinstance(leg, Wait):
                if leg.ms > left:
                    leg.ms -= left
                    return
                left -= leg.ms
            else:
                if not w.visible:
                    return  # a lost track stands still until it is re-created (≤ 40 cm away)
                dx, dy = leg.target[0] - w.pos[0], leg.target[1] - w.pos[1]
                need = math.hypot(dx, dy) / w.speed * 1000.0
                if need > left:
                    f = left / need
                    self._step_to(w, (w.pos[0] + f * dx, w.pos[1] + f * dy))
                    return
                left -= need
                self._step_to(w, leg.target)
            w.legs.popleft()
            if leg.tag:
                reached.append(Reached(w, leg.tag, start + dt_ms - left))
            if leg.tag == END:
                self.delete(w)
                return

    def _step_to(self, w: Walker, b: Point) -> None:
        a = w.pos
        w.pos = b
        if not w.visible or a == b:
            return
        found: list[tuple[float, int, str, int, Direction | None]] = []
        ax, ay = a
        bx, by = b
        lo_x, hi_x = (ax, bx) if ax <= bx else (bx, ax)
        lo_y, hi_y = (ay, by) if ay <= by else (by, ay)
        inside = w.zones
        for z in self._zones:  # hot path: the bench steps every track up to 1000 times/s
            gid = z.geometry_id
            was = gid in inside
            now = z.x0 <= bx <= z.x1 and z.y0 <= by <= z.y1
            if was and now:
                continue
            if not was and (hi_x < z.x0 or lo_x > z.x1 or hi_y < z.y0 or lo_y > z.y1):
                continue  # the step's bounding box misses the zone
            span = z.clip(a, b)
            if was:
                found.append((span[1] if span else 0.0, 0, ZONE_EXIT, gid, None))
            elif now:
                found.append((span[0] if span else 1.0, 2, ZONE_ENTRY, gid, None))
            elif span is not None and span[0] < span[1]:  # passed through within one step
                found.append((span[0], 2, ZONE_ENTRY, gid, None))
                found.append((span[1], 0, ZONE_EXIT, gid, None))
        for line in self._lines:
            (lx, ly), (fx, fy) = line.a, line.forward
            if ((ax - lx) * fx + (ay - ly) * fy < 0) == ((bx - lx) * fx + (by - ly) * fy < 0):
                continue  # both ends on one side
            c = line.crossing(a, b)
            if c is not None:
                found.append((c[0], 1, LINE_CROSS, line.geometry_id, c[1]))
        if not found:
            return
        found.sort(key=lambda e: (round(e[0], _T_DIGITS), e[1]))
        for _, _, etype, gid, direction in found:
            if etype == ZONE_ENTRY:
                w.zones.append(gid)
                self._emit(etype, w.track_id, gid)
            elif etype == ZONE_EXIT:
                w.zones.remove(gid)
                self._emit(etype, w.track_id, gid)
            elif direction is not None:
                self._line(w, gid, direction)

    def _line(self, w: Walker, gid: int, direction: Direction) -> None:
        p = self.params
        if (
            gid == self.site.exit_line.geometry_id
            and direction == "forward"
            and self.rng.random() < p.missed_crossing_share
        ):
            self.stats.missed_crossings += 1
            return
        self._emit(LINE_CROSS, w.track_id, gid, direction)

    def move_now(self, w: Walker, target: Point) -> list[EventDoc]:
        """Put `w` at `target` at once; returns the events of that move (not queued)."""
        queued, self._events = self._events, []
        self._step_to(w, target)
        found, self._events = self._events, queued
        return found

    # -- output ----------------------------------------------------------------------------

    def _emit(
        self, etype: str, tid: int, gid: int | None = None, direction: Direction | None = None
    ) -> None:
        self._events.append(self.event_doc(etype, tid, gid, direction))

    def event_doc(
        self, etype: str, tid: int, gid: int | None = None, direction: Direction | None = None
    ) -> EventDoc:
        attributes: dict[str, object] = {"track_id": tid}
        if gid is not None:
            attributes["geometry_id"] = gid
        if direction is not None:
            if self.rng.random() < self.params.typed_line_share:
                etype = LINE_CROSS_TYPED[direction]
            else:
                attributes["direction"] = direction
        stats = self.stats
        stats.events += 1
        stats.events_by_type[etype] = stats.events_by_type.get(etype, 0) + 1
        return {"type": etype, "attributes": attributes}

    def take_events(self) -> list[EventDoc]:
        events, self._events = self._events, []
        return events

    def frame(self, wall_ms: int) -> SensorMessage:
        """One message: every visible walker plus the events found since the previous frame."""
        visible = [w for w in self.walkers.values() if w.visible]
        return self.message(visible, self.take_events(), wall_ms, may_truncate=True)

    def message(
        self, walkers: list[Walker], events: list[EventDoc], wall_ms: int, *, may_truncate: bool
    ) -> SensorMessage:
        p = self.params
        gauss, sd, clip = self.rng.gauss, p.noise_sd_m, p.noise_clip_m
        objects = []
        for w in walkers:
            nx, ny = gauss(0.0, sd), gauss(0.0, sd)
            nx = clip if nx > clip else -clip if nx < -clip else nx
            ny = clip if ny > clip else -clip if ny < -clip else ny
            x, y = w.pos
            position = [round(x + nx, 3), round(y + ny, 3), round(w.height, 3)]
            objects.append({"track_id": w.track_id, "type": w.obj_type, "position": position})
        lag = self.rng.randint(*p.lag_ms)
        doc = {
            "live_data": {
                "frames": [
                    {
                        "time": rfc3339_ms(wall_ms - lag),
                        "tracked_objects": objects,
                        "events": events,
                    }
                ]
            }
        }
        payload = _ENCODER.encode(doc)
        self.stats.messages += 1
        if may_truncate and self.rng.random() < p.truncate_share:
            payload = payload[: self.rng.randint(1, len(payload) - 1)]
            self.stats.truncated += 1
        return SensorMessage(self.topic, payload)


def _is_instant(leg: Leg, w: Walker) -> bool:
    """Zero-length legs complete even when no time is left (a Move onto the current spot)."""
    if isinstance(leg, Wait):
        return leg.ms <= 0
    return w.visible and leg.target == w.pos
