"""Synthetic store traffic (simulation.md §2): customers, payments and bench load; pure.

`TrafficModel` is the demo's customer mix; `BenchLoad` is the benchmark's fixed number of looping
tracks plus pre-paid trial tracks. Both are stepped by the caller with the time (`now_ms`,
`wall_ms`) and return `SensorMessage`/`AccLine` outputs; the same seed gives the same bytes.
"""

from __future__ import annotations

import enum
import heapq
import random
from collections.abc import Iterator
from typing import Final, Protocol

import attrs

from gateway.config.model import AccConfig, ZonesConfig
from gateway.tools.traffic_model import (
    END,
    EXIT_POINT,
    GATE_CENTRE,
    SPAWN,
    AccLine,
    DemoGeometry,
    Leg,
    Move,
    Output,
    Point,
    Reached,
    Rect,
    Scene,
    SceneParams,
    SensorMessage,
    Wait,
    Walker,
)

DEFAULT_TOPIC: Final = "xovis/sensor-1"  # simulation.md §2: xovis/sensor-<n>
FRAME_MS: Final = 80  # §2: one message per 80 ms frame (12.5 frames/s)
# Route points (D*): straight segments between them never clip a neighbouring POS or DWELL zone.
LANE_Y: Final = -2.4  # walkway just below the POS row (POS zones span y −2.0 … −1.0)
AISLE_Y: Final = -0.6  # walkway between the POS row and the approach line
AISLE_DX: Final = -0.3  # leave a POS up and slightly left (POS_5 + 0 would touch DWELL_1)
GAP_X: Final = 2.25  # corridor between POS_2 and POS_3, in line with the gate centre
STORE_POINTS: Final = ((0.5, 5.5), (-5.0, -2.5))  # wander area: x range, y range
BACK_POINTS: Final = ((0.5, 5.5), (-5.0, -3.0))  # where walk-backs and re-entrants head
ENTRY_X: Final = (4.8, 5.5)  # where the entry line is crossed (line spans x 4.5–6.0)
ENTRY_Y: Final = -5.1
APPROACH_X: Final = (1.8, 2.7)  # approach line crossing (line spans x 1.5–3.0)
GATE_WAIT_X: Final = (1.8, 2.7)  # non-payers wait inside the gate zone (y 1.0 … 2.1)
GATE_WAIT_Y: Final = (1.1, 1.4)
RECEIPT_BASE: Final = 4700  # receipts look like the interfaces.md §2 example `4711-0023`


class CustomerKind(enum.StrEnum):
    PAYER = "payer"
    DWELL_USER = "dwell_user"
    WALK_BACK = "walk_back"  # quick non-payer, walks back from the closed gate
    TAILGATER = "tailgater"  # quick non-payer, follows the next payer through the gate
    BROWSER = "browser"


@attrs.frozen
class TrafficParams:
    """The §2 table; shares are of all customers unless the name says otherwise."""

    frame_ms: int = FRAME_MS
    height_m: tuple[float, float] = (1.72, 0.08)  # N(mean, sd)
    height_clip_m: tuple[float, float] = (1.50, 1.95)
    speed_mps: tuple[float, float] = (0.9, 1.4)
    payer_share: float = 0.77  # §2 payers 80 %, of which DWELL users take 3 % of all (D*)
    dwell_user_share: float = 0.03
    non_payer_share: float = 0.10  # the remaining 10 % are browsers
    walk_back_share: float = 0.6  # of non-payers; the rest tailgate
    pos_dwell_ms: tuple[int, int] = (8000, 30000)
    non_payer_dwell_ms: tuple[int, int] = (2000, 6000)
    acc_before_leave_ms: tuple[int, int] = (0, 3000)  # ACC at dwell − U(0, 3) s
    acc_after_share: float = 0.2  # of payers: ACC 0–2 s after leaving the POS
    acc_after_leave_ms: tuple[int, int] = (0, 2000)
    dwell_zone_ms: int = 8000
    gate_pause_ms: tuple[int, int] = (300, 1000)  # D*: payers wait for the door at the gate
    blocked_wait_ms: tuple[int, int] = (3000, 8000)  # D*: walk-backs stand at the closed gate
    tailgate_patience_ms: int = 60_000  # D*: no payer by then → walk back instead
    tailgate_delay_ms: tuple[int, int] = (0, 1000)  # §2: ≤ 1 s behind the payer
    browse_stops: tuple[int, int] = (1, 3)
    browse_pause_ms: tuple[int, int] = (2000, 10000)
    reentry_share: float = 0.03  # of customers leaving through the exit
    reentry_delay_ms: tuple[int, int] = (5000, 25000)
    couple_share: float = 0.02  # of arrivals: a couple shadowed by one GROUP object
    couple_offset_m: float = 0.3
    scene: SceneParams = attrs.field(factory=SceneParams)


@attrs.define
class TrafficStats:
    """Ground-truth counters for the demo's end-of-run summary."""

    customers: dict[str, int] = attrs.field(factory=lambda: {k.value: 0 for k in CustomerKind})
    couples: int = 0
    group_objects: int = 0
    reentries: int = 0
    acc_lines: int = 0


class TrafficSource(Protocol):
    """What `run_traffic` drives: one `step` per frame period of model time."""

    @property
    def frame_period_ms(self) -> float: ...

    def step(self, now_ms: int, wall_ms: int) -> list[Output]: ...


def demo_geometry(zones: ZonesConfig, acc: AccConfig) -> DemoGeometry:
    return DemoGeometry.from_config(zones, acc)


@attrs.define
class _Customer:
    kind: CustomerKind
    height: float
    speed: float
    offsets: dict[int, float] = attrs.field(factory=dict)  # walker serial → x offset
    primary: int = 0  # the walker who pays and may come back
    reentry: bool = False
    dwell_ms: float = 0.0  # planned stand at the POS
    pos_id: int | None = None  # the POS visited (payers and quick non-payers)
    pay_after_zone: int | None = None  # POS whose ACC follows the payer's leaving (20 %)


@attrs.define
class _Payments:
    """ACC lines due at given times; receipts are numbered per terminal in sending order."""

    site: DemoGeometry
    due: list[tuple[float, int, int]] = attrs.field(factory=list)  # heap: at, seq, zone id
    counters: dict[str, int] = attrs.field(factory=dict)
    seq: int = 0

    def schedule(self, at_ms: float, zone_id: int) -> int | None:
        """Queue an ACC of zone's terminal; returns its sequence number (None: no terminal)."""
        if zone_id not in self.site.pos_ips:
            return None
        self.seq += 1
        heapq.heappush(self.due, (at_ms, self.seq, zone_id))
        return self.seq

    def pop_due(self, now_ms: float) -> Iterator[tuple[int, AccLine]]:
        while self.due and self.due[0][0] <= now_ms:
            _, seq, zone_id = heapq.heappop(self.due)
            ip = self.site.pos_ips[zone_id]
            n = self.counters.get(ip, 0) + 1
            self.counters[ip] = n
            terminal = RECEIPT_BASE + 1 + list(self.site.pos_ips).index(zone_id)
            yield seq, AccLine(ip, f"ACC {terminal}-{n % 10000:04d}\n".encode())


def _shift(legs: list[Leg], dx: float) -> list[Leg]:
    """Copies of `legs` moved by dx along x (couples and their GROUP object)."""
    out: list[Leg] = []
    for leg in legs:
        if isinstance(leg, Move):
            out.append(Move((leg.target[0] + dx, leg.target[1]), leg.tag))
        else:
            out.append(Wait(leg.ms, leg.tag))
    return out


class TrafficModel:
    """The demo customers of simulation.md §2, with Poisson arrivals at `rate_per_min`."""

    def __init__(
        self,
        site: DemoGeometry,
        rate_per_min: float,
        seed: int,
        *,
        params: TrafficParams | None = None,
        topic: str = DEFAULT_TOPIC,
    ) -> None:
        if not site.pos:
            raise ValueError("the site has no POS zone ([zones].pos_zones)")
        self.site = site
        self.rate_per_min = rate_per_min
        self.params = params if params is not None else TrafficParams()
        self.rng = random.Random(seed)
        self.scene = Scene(site, self.rng, self.params.scene, topic)
        self.stats = TrafficStats()
        self._payments = _Payments(site)
        self._owners: dict[int, _Customer] = {}  # walker serial → customer
        self._tailgaters: list[Walker] = []  # holding at the closed gate
        self._reentries: list[tuple[float, int, _Customer]] = []  # heap: due, seq, customer
        self._queued: list[CustomerKind] = []
        self._pos_load = {z.geometry_id: 0 for z in site.pos}  # customers heading to / at a POS
        self._next_arrival_ms: float | None = None

    @property
    def frame_period_ms(self) -> float:
        return float(self.params.frame_ms)

    def add_customer(self, kind: CustomerKind) -> None:
        """Queue one single customer of `kind`; it appears at the next step (scripted runs)."""
        self._queued.append(kind)

    def step(self, now_ms: int, wall_ms: int) -> list[Output]:
        """Advance to `now_ms` (called every frame period); returns the frame and due ACC lines."""
        for r in self.scene.advance(now_ms):
            self._on_reached(r)
        self._arrivals(now_ms)
        out: list[Output] = [self.scene.frame(wall_ms)]
        for _, line in self._payments.pop_due(now_ms):
            self.stats.acc_lines += 1
            out.append(line)
        return out

    def summary(self) -> dict[str, int]:
        """Flat counters: customers by kind, couples, re-entries, tracks, ACC lines, messages."""
        s, sc = self.stats, self.scene.stats
        out = {f"customers_{k}": v for k, v in s.customers.items()}
        out["customers"] = sum(s.customers.values())
        out.update(
            couples=s.couples,
            group_objects=s.group_objects,
            reentries=s.reentries,
            acc_lines=s.acc_lines,
            tracks_created=sc.tracks_created,
            tracks_lost=sc.tracks_lost,
            missed_crossings=sc.missed_crossings,
            messages=sc.messages,
            truncated=sc.truncated,
            events=sc.events,
        )
        return out

    # -- arrivals --------------------------------------------------------------------------

    def _arrivals(self, now_ms: float) -> None:
        rate = self.rate_per_min / 60_000.0  # may be changed between steps; 0 stops arrivals
        if rate <= 0:
            self._next_arrival_ms = None
        elif self._next_arrival_ms is None:
            self._next_arrival_ms = now_ms + self.rng.expovariate(rate)
        while self._next_arrival_ms is not None and self._next_arrival_ms <= now_ms:
            couple = self.rng.random() < self.params.couple_share
            self._arrive(self._draw_kind(), couple=couple)
            self._next_arrival_ms += self.rng.expovariate(rate)
        for kind in self._queued:
            self._arrive(kind, couple=False)
        self._queued.clear()
        while self._reentries and self._reentries[0][0] <= now_ms:
            _, _, customer = heapq.heappop(self._reentries)
            self._reenter(customer)

    def _draw_kind(self) -> CustomerKind:
        p = self.params
        u = self.rng.random()
        if u < p.payer_share:
            kind = CustomerKind.PAYER
        elif u < p.payer_share + p.dwell_user_share:
            kind = CustomerKind.DWELL_USER
        elif u < p.payer_share + p.dwell_user_share + p.non_payer_share:
            walk_back = self.rng.random() < p.walk_back_share
            kind = CustomerKind.WALK_BACK if walk_back else CustomerKind.TAILGATER
        else:
            kind = CustomerKind.BROWSER
        if kind is CustomerKind.DWELL_USER and self.site.dwell is None:
            kind = CustomerKind.PAYER
        return kind

    def _person(self) -> tuple[float, float]:
        p = self.params
        lo, hi = p.height_clip_m
        height = min(hi, max(lo, self.rng.gauss(*p.height_m)))
        return height, self.rng.uniform(*p.speed_mps)

    def _arrive(self, kind: CustomerKind, *, couple: bool) -> None:
        height, speed = self._person()
        customer = _Customer(kind, height, speed)
        legs = self._plan(customer)
        a = self.scene.spawn(SPAWN, height, speed, legs, may_lose=not couple)
        customer.primary = a.serial
        customer.offsets[a.serial] = 0.0
        self._owners[a.serial] = customer
        self.stats.customers[kind.value] += 1
        if not couple:
            return
        dx = self.params.couple_offset_m
        h2, _ = self._person()
        for offset, h, group in ((dx, h2, False), (dx / 2, (height + h2) / 2, True)):
            start = (SPAWN[0] + offset, SPAWN[1])
            w = self.scene.spawn(start, h, speed, _shift(legs, offset), group=group, may_lose=False)
            customer.offsets[w.serial] = offset
            self._owners[w.serial] = customer
        self.stats.customers[kind.value] += 1
        self.stats.couples += 1
        self.stats.group_objects += 1

    def _reenter(self, customer: _Customer) -> None:
        back = [Move(GATE_CENTRE), Move((GAP_X, 0.2)), Move((GAP_X, BACK_POINTS[1][1]))]
        again = _Customer(CustomerKind.PAYER, customer.height, customer.speed, reentry=True)
        legs = back + self._pay_legs(again)
        w = self.scene.spawn(EXIT_POINT, customer.height, customer.speed, legs)
        again.primary = w.serial
        again.offsets[w.serial] = 0.0
        self._owners[w.serial] = again
        self.stats.reentries += 1

    # -- paths (simulation.md §2: spawn → ENTRY → wander → POS → APPROACH → GATE → EXIT) -----

    def _point(self, area: tuple[tuple[float, float], tuple[float, float]]) -> Point:
        return (self.rng.uniform(*area[0]), self.rng.uniform(*area[1]))

    def _to_store(self) -> list[Leg]:
        entry = (self.rng.uniform(*ENTRY_X), ENTRY_Y)
        return [Move(entry), Move(self._point(STORE_POINTS))]

    def _to_gate(self) -> list[Leg]:
        return [Move((self.rng.uniform(*APPROACH_X), 0.5)), Move(GATE_CENTRE)]

    def _through_gate(self) -> list[Leg]:
        pause = self.rng.uniform(*self.params.gate_pause_ms)
        return [Wait(pause, "gate_pass"), Move(EXIT_POINT, END)]

    def _pick_pos(self, customer: _Customer, choices: tuple[Rect, ...]) -> Rect:
        """A least-busy POS (D*: customers spread over the terminals instead of stacking)."""
        least = min(self._pos_load[z.geometry_id] for z in choices)
        pos = self.rng.choice([z for z in choices if self._pos_load[z.geometry_id] == least])
        self._pos_load[pos.geometry_id] += 1
        customer.pos_id = pos.geometry_id
        return pos

    def _pay_legs(self, customer: _Customer) -> list[Leg]:
        pos = self._pick_pos(customer, self.site.paying_pos() or self.site.pos)
        customer.dwell_ms = self.rng.uniform(*self.params.pos_dwell_ms)
        cx, cy = pos.centre
        return [
            Move((cx, LANE_Y)),
            Move((cx, cy), "at_pos"),
            Wait(customer.dwell_ms, "leave_pos"),
            Move((cx + AISLE_DX, AISLE_Y)),
            *self._to_gate(),
            *self._through_gate(),
        ]

    def _walk_back(self) -> list[Leg]:
        return [
            Move((GAP_X, 0.2)),
            Move((GAP_X, BACK_POINTS[1][1])),
            Move(self._point(BACK_POINTS), END),
        ]

    def _plan(self, customer: _Customer) -> list[Leg]:
        p, rng, kind = self.params, self.rng, customer.kind
        legs = self._to_store()
        if kind is CustomerKind.PAYER:
            return legs + self._pay_legs(customer)
        if kind is CustomerKind.DWELL_USER:
            assert self.site.dwell is not None  # _draw_kind guarantees it
            cx, cy = self.site.dwell.centre
            return [
                *legs,
                Move((cx + 0.2, LANE_Y)),
                Move((cx, cy)),
                Wait(p.dwell_zone_ms),
                *self._to_gate(),
                *self._through_gate(),
            ]
        if kind is CustomerKind.BROWSER:
            for _ in range(rng.randint(*p.browse_stops) - 1):
                legs += [Wait(rng.uniform(*p.browse_pause_ms)), Move(self._point(STORE_POINTS))]
            return [*legs, Wait(rng.uniform(*p.browse_pause_ms), END)]
        pos = self._pick_pos(customer, self.site.pos)
        cx, cy = pos.centre
        wait_at = (rng.uniform(*GATE_WAIT_X), rng.uniform(*GATE_WAIT_Y))
        legs += [
            Move((cx, LANE_Y)),
            Move((cx, cy)),
            Wait(rng.uniform(*p.non_payer_dwell_ms), "leave_pos"),
            Move((cx + AISLE_DX, AISLE_Y)),
            Move((rng.uniform(*APPROACH_X), 0.5)),
            Move(wait_at, "at_gate"),
        ]
        if kind is CustomerKind.WALK_BACK:
            return [*legs, Wait(rng.uniform(*p.blocked_wait_ms)), *self._walk_back()]
        return [*legs, Wait(p.tailgate_patience_ms, "patience_over"), *self._walk_back()]

    # -- reactions -------------------------------------------------------------------------

    def _on_reached(self, r: Reached) -> None:
        w, customer = r.walker, self._owners.get(r.walker.serial)
        if customer is None:
            return
        p, rng = self.params, self.rng
        primary = w.serial == customer.primary
        if r.tag == "at_pos" and primary and customer.kind is CustomerKind.PAYER:
            pos_id = customer.pos_id
            if pos_id is None or pos_id not in self.site.pos_ips:
                return
            if rng.random() < p.acc_after_share:
                customer.pay_after_zone = pos_id
            else:
                before = rng.uniform(*p.acc_before_leave_ms)
                self._payments.schedule(r.at_ms + max(0.0, customer.dwell_ms - before), pos_id)
        elif r.tag == "leave_pos" and primary:
            if customer.pos_id is not None:
                self._pos_load[customer.pos_id] -= 1
            if customer.pay_after_zone is not None:
                after = rng.uniform(*p.acc_after_leave_ms)
                self._payments.schedule(r.at_ms + after, customer.pay_after_zone)
                customer.pay_after_zone = None
        elif r.tag == "at_gate" and customer.kind is CustomerKind.TAILGATER:
            self._tailgaters.append(w)
        elif r.tag == "patience_over" and w in self._tailgaters:
            self._tailgaters.remove(w)
        elif r.tag == "gate_pass":
            self._release_tailgaters()
        elif r.tag == END:
            self._ended(w, customer)

    def _release_tailgaters(self) -> None:
        delays: dict[int, float] = {}  # one delay per customer keeps a couple together
        for w in self._tailgaters:
            customer = self._owners[w.serial]
            if customer.primary not in delays:
                delays[customer.primary] = self.rng.uniform(*self.params.tailgate_delay_ms)
            dx = customer.offsets.get(w.serial, 0.0)
            w.legs.clear()
            w.legs.extend(
                [Wait(delays[customer.primary]), Move((EXIT_POINT[0] + dx, EXIT_POINT[1]), END)]
            )
        self._tailgaters.clear()

    def _ended(self, w: Walker, customer: _Customer) -> None:
        del self._owners[w.serial]
        if w in self._tailgaters:
            self._tailgaters.remove(w)
        exited = w.pos[1] >= EXIT_POINT[1]
        single = len(customer.offsets) == 1
        if (
            w.serial == customer.primary
            and exited
            and single
            and not customer.reentry
            and self.rng.random() < self.params.reentry_share
        ):
            due = self.scene.now_ms + self.rng.uniform(*self.params.reentry_delay_ms)
            heapq.heappush(self._reentries, (due, w.serial, customer))


BENCH_SCENE: Final = SceneParams(truncate_share=0.0, missed_crossing_share=0.0, loss_share=0.0)
TRIAL_JITTER_M: Final = (0.25, 0.35)  # trial tracks stand spread inside the trial POS
TRIAL_LINGER_MS: Final = 300  # after its gate entry a trial track walks out through the exit
TRIAL_GATE_DX: Final = (-0.5, 0.5)  # where in the gate zone a trial track steps in


class BenchLoad:
    """Bench traffic (simulation.md §6): `tracks` tracks walking loops plus pre-paid trial tracks.

    Loop tracks walk spawn → ENTRY → in and out of every POS except the trial POS → APPROACH →
    GATE → EXIT and are replaced by a new track, so `tracks` stay live. `walk_speedup` scales
    walking time against the caller's time (more events per frame at high rates). Trial tracks stand
    in the trial POS (the first POS with a terminal) and are paid by one ACC; the bench config has
    `min_dwell_ms = 0`, so that ACC authorizes all of them.
    """

    def __init__(
        self,
        site: DemoGeometry,
        *,
        tracks: int,
        frames_per_s: float,
        seed: int,
        walk_speedup: float = 1.0,
        params: SceneParams = BENCH_SCENE,
        topic: str = DEFAULT_TOPIC,
    ) -> None:
        paying = site.paying_pos()
        if not paying:
            raise ValueError("bench load needs a POS zone with a terminal IP ([acc.ip_to_pos])")
        self.site = site
        self.trial_pos: Rect = paying[0]
        self.walk_speedup = walk_speedup
        self._period_ms = 1000.0 / frames_per_s
        self.rng = random.Random(seed)
        self.scene = Scene(site, self.rng, params, topic)
        self.acc_lines = 0
        self._payments = _Payments(site)
        self._loopers: set[int] = set()  # walker serials
        self._trials: dict[int, Walker] = {}  # track id → standing trial walker
        self._unpaid: dict[int, list[int]] = {}  # ACC sequence number → track ids it pays for
        self._paid: set[int] = set()
        self._start_ms: float | None = None
        self._now_ms = 0.0
        loop_s = _leg_length(SPAWN, self._loop_legs()) / 1.15  # at the mean speed
        for i in range(tracks):
            self._spawn_looper(stagger_ms=1000.0 * loop_s * i / max(1, tracks))

    @property
    def frame_period_ms(self) -> float:
        return self._period_ms

    def step(self, now_ms: int, wall_ms: int) -> list[Output]:
        if self._start_ms is None:
            self._start_ms = now_ms
        self._now_ms = now_ms
        for r in self.scene.advance((now_ms - self._start_ms) * self.walk_speedup):
            if r.tag == END and r.walker.serial in self._loopers:
                self._loopers.discard(r.walker.serial)
                self._spawn_looper(stagger_ms=0.0)
        out: list[Output] = [self.scene.frame(wall_ms)]
        for seq, line in self._payments.pop_due(now_ms):
            self.acc_lines += 1
            self._paid.update(self._unpaid.pop(seq, ()))
            out.append(line)
        return out

    def add_paid_tracks(self, n: int, *, acc_delay_ms: int = 500) -> list[int]:
        """n tracks appear standing in the trial POS at the next step; one ACC from its terminal
        follows `acc_delay_ms` later (caller's time). Returns their track ids."""
        cx, cy = self.trial_pos.centre
        jx, jy = TRIAL_JITTER_M
        ids: list[int] = []
        for _ in range(n):
            at = (cx + self.rng.uniform(-jx, jx), cy + self.rng.uniform(-jy, jy))
            w = self.scene.spawn(at, self._height(), 1.2, (), may_lose=False)
            self._trials[w.track_id] = w
            ids.append(w.track_id)
        seq = self._payments.schedule(self._now_ms + acc_delay_ms, self.trial_pos.geometry_id)
        assert seq is not None  # the trial POS has a terminal by construction
        self._unpaid[seq] = ids
        return ids

    def is_paid(self, track_id: int) -> bool:
        """The ACC covering `track_id` has been returned by `step`."""
        return track_id in self._paid and track_id in self._trials

    def gate_entry_message(self, track_id: int, wall_ms: int) -> SensorMessage:
        """A message whose events bring a paid trial track into the gate zone, right now.

        The track's ZONE_EXITs and the APPROACH crossing come in the same message, before the
        gate ZONE_ENTRY. Afterwards the track walks out through the exit in the regular frames.
        """
        if not self.is_paid(track_id):
            raise ValueError(f"track {track_id} is not a paid trial track")
        w = self._trials.pop(track_id)
        self._paid.discard(track_id)
        target = (GATE_CENTRE[0] + self.rng.uniform(*TRIAL_GATE_DX), GATE_CENTRE[1])
        events = self.scene.move_now(w, target)
        w.legs.extend([Wait(TRIAL_LINGER_MS), Move(EXIT_POINT, END)])
        return self.scene.message([w], events, wall_ms, may_truncate=False)

    def _height(self) -> float:
        return min(1.95, max(1.50, self.rng.gauss(1.72, 0.08)))

    def _loop_legs(self) -> list[Leg]:
        legs: list[Leg] = [Move(((ENTRY_X[0] + ENTRY_X[1]) / 2, ENTRY_Y))]
        for z in sorted(self.site.pos, key=lambda r: -r.x0):
            if z is self.trial_pos:
                continue
            cx, cy = z.centre
            legs += [Move((cx, LANE_Y)), Move((cx, cy)), Move((cx, LANE_Y))]
        legs += [Move((GAP_X, LANE_Y)), Move(GATE_CENTRE), Move(EXIT_POINT, END)]
        return legs

    def _spawn_looper(self, *, stagger_ms: float) -> None:
        legs = self._loop_legs()
        if stagger_ms > 0:
            legs.insert(0, Wait(stagger_ms))
        speed = self.rng.uniform(0.9, 1.4)
        w = self.scene.spawn(SPAWN, self._height(), speed, legs, may_lose=False)
        self._loopers.add(w.serial)


def _leg_length(start: Point, legs: list[Leg]) -> float:
    total, at = 0.0, start
    for leg in legs:
        if isinstance(leg, Move):
            total += ((leg.target[0] - at[0]) ** 2 + (leg.target[1] - at[1]) ** 2) ** 0.5
            at = leg.target
    return total
