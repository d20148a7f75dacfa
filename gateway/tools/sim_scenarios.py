"""The eight `gateway sim` scenarios (simulation.md §3, scenarios.md S159–S166) as scripts.

A script drives one customer (two track ids for the stitch) through a `Stage` — the harness of
`gateway.tools.sim` — and raises `ScenarioFailed` when the gateway does not do what the spec
says. Zone ids come from the site config (`SitePlan`), never from constants; dwell times follow
the spec and move with the site's `min_dwell_ms` / `buffer_ms` where the spec's numbers are
relative to them (8 s = min dwell + 1 s, …).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from gateway.config.model import Config
from gateway.tools.traffic_model import GATE_CENTRE, SPAWN, Point, pos_centre

if TYPE_CHECKING:
    from gateway.tools.sim import Stage

Direction = Literal["forward", "backward"]

# Where the scripted customer stands (simulation.md §2 demo geometry; the gateway only sees the
# zone events, positions matter for stitching, re-entry heights and exit inference).
ENTRY_INSIDE: Final[Point] = (5.25, -5.2)  # just past the entry line
APPROACH_BEFORE: Final[Point] = (2.25, 0.3)
APPROACH_AFTER: Final[Point] = (2.25, 0.7)
GATE_FAR_SIDE: Final[Point] = (2.25, 2.0)
# a turned-away customer ends here: > 1.8 m from SPAWN, so no new track is stitched onto it
STORE_BACK: Final[Point] = (3.0, -3.5)
FRAME_S: Final = 0.1  # simulation.md §3: steps 100 ms apart (one sensor frame each), real time
STITCH_OFFSET_M: Final = 0.20  # S165: re-created 20 cm away …
STITCH_GAP_S: Final = 0.5  # … 0.5 s later
STITCH_DH_M: Final = 0.01
NO_OPEN_WINDOW_S: Final = 3.0  # S160: "no open frame within 3 s"; also S166 after the restart
SPEC_MIN_DWELL_S: Final = 7.0  # the spec's timings assume the default min dwell
# Heights ≥ 0.11 m apart between customers who cross the exit line (they leave re-entry records,
# behaviour.md §9: ±0.10 m) and everyone else, so concurrent scenarios never link as re-entries.
HEIGHT_STITCH: Final = 1.48
HEIGHT_MULTI: Final = 1.60
HEIGHT_PLAIN: Final = 1.72  # customers who never cross the exit line
HEIGHT_ACC_BEFORE: Final = 1.84
HEIGHT_HAPPY: Final = 1.96


class SimConfigError(Exception):
    """The site config cannot be simulated (exit 2); the message says why."""


class ScenarioFailed(Exception):
    """An expectation was not met; the message is the table's detail column."""


@attrs.frozen
class SitePlan:
    """What the scripts need from the site config, resolved once."""

    pos: tuple[int, ...]  # POS_1, POS_2, …: zones mapped from ACC IPs in IP order, then the rest
    names: dict[int, str]
    acc_source_ip: dict[int, str]  # POS zone → 127.0.0.N that maps to it (ACC over TCP)
    gate: int
    exit_line: int
    entry_line: int | None
    approach_line: int | None
    store: int | None
    min_dwell_s: float
    grace_s: float
    buffer_s: float
    exit_point: Point

    @classmethod
    def from_config(cls, config: Config) -> SitePlan:
        zones = config.zones
        if config.gate.mode != "tcp":
            raise SimConfigError(
                f"[gate].mode is {config.gate.mode!r}: the sim's controller is the CloudPlus TCP "
                "mock, so only tcp mode can be simulated"
            )
        if not zones.pos_zones:
            raise SimConfigError("[zones].pos_zones is empty: no POS zone to pay at")
        ordered: list[int] = []
        source_ip: dict[int, str] = {}
        for ip in sorted(config.acc.ip_to_pos, key=_ip_key):
            zid = zones.zone_id_by_name(config.acc.ip_to_pos[ip])
            if zid is None or zid not in zones.pos_zones:
                continue  # a DWELL terminal
            if zid not in ordered:
                ordered.append(zid)
            if zid not in source_ip and _tcp_source(config, ip):
                source_ip[zid] = ip
        ordered += [z for z in zones.pos_zones if z not in ordered]
        store = zones.store_zone
        if store is None:
            store = next((g for g in sorted(zones.names) if zones.is_store(g)), None)
        ed = config.exit_detection
        exit_x = (ed.position_threshold_x_min_m + ed.position_threshold_x_max_m) / 2
        geometry = {*ordered, zones.gate_zone, zones.exit_line, zones.entry_line}
        geometry |= {zones.approach_line, store}
        names = {g: zones.name(g) for g in geometry if g is not None}
        return cls(
            pos=tuple(ordered),
            names=names,
            acc_source_ip=source_ip,
            gate=zones.gate_zone,
            exit_line=zones.exit_line,
            entry_line=zones.entry_line,
            approach_line=zones.approach_line,
            store=store,
            min_dwell_s=config.pos_tracking.min_dwell_ms / 1000,
            grace_s=config.pos_tracking.exit_grace_ms / 1000,
            buffer_s=config.acc.buffer_ms / 1000,
            exit_point=(exit_x, ed.position_threshold_y_m + 0.7),
        )

    def name(self, zone: int) -> str:
        return self.names.get(zone, f"ZONE_{zone}")

    def pos_point(self, zone: int) -> Point:
        return pos_centre(self.pos.index(zone) + 1)


def _ip_key(ip: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(ip)
    return addr.version, int(addr)


def _tcp_source(config: Config, ip: str) -> bool:
    """ACC over TCP only from 127.0.0.N, with the listener on and the allow-list letting it in."""
    addr = ipaddress.ip_address(ip)
    if not config.acc.listener_enabled or addr.version != 4 or not addr.is_loopback:
        return False
    allowed = config.acc.allowed_ips
    return allowed is None or any(
        addr in ipaddress.ip_network(net, strict=False) for net in allowed
    )


# -- script vocabulary: one sensor frame carries any number of these --------------------------


@attrs.frozen
class Create:
    tid: int
    at: Point
    height: float


@attrs.frozen
class Move:
    tid: int
    to: Point


@attrs.frozen
class Enter:
    tid: int
    zone: int


@attrs.frozen
class Leave:
    tid: int
    zone: int


@attrs.frozen
class Cross:
    tid: int
    line: int
    direction: Direction


@attrs.frozen
class Delete:
    tid: int


Action = Create | Move | Enter | Leave | Cross | Delete


# -- shared legs -------------------------------------------------------------------------------


async def walk_in(s: Stage, tid: int, height: float) -> None:
    """Created at the spawn point, through the entry line into the store (roles the site has)."""
    p = s.plan
    await s.step(Create(tid, SPAWN, height))
    if p.entry_line is not None:
        await s.step(Move(tid, ENTRY_INSIDE), Cross(tid, p.entry_line, "forward"))
    if p.store is not None:
        await s.step(Enter(tid, p.store))


async def visit_pos(s: Stage, tid: int, zone: int, dwell_s: float) -> None:
    await s.step(Move(tid, s.plan.pos_point(zone)), Enter(tid, zone))
    await s.hold(dwell_s)


async def pay(s: Stage, tid: int, zone: int) -> dict[str, Any]:
    """ACC for `zone`; the gateway must answer `matched` for this customer."""
    mark = s.mark()
    receipt = await s.send_acc(zone)
    msg = await s.expect_acc(receipt, mark)
    if msg.get("t") != "matched" or msg.get("tid") != tid:
        raise ScenarioFailed(f"ACC {receipt}: expected matched tid={tid}, got {_brief(msg)}")
    return msg


async def approach(s: Stage, tid: int) -> None:
    p = s.plan
    await s.step(Move(tid, APPROACH_BEFORE))
    if p.approach_line is not None:
        await s.step(Move(tid, APPROACH_AFTER), Cross(tid, p.approach_line, "forward"))


async def pay_and_approach(s: Stage, tid: int, zone: int, dwell_s: float, height: float) -> None:
    """A paying customer: walk in, stand `dwell_s` in `zone`, pay, leave it, walk to the gate."""
    await walk_in(s, tid, height)
    await visit_pos(s, tid, zone, dwell_s)
    await pay(s, tid, zone)
    await s.step(Leave(tid, zone))
    s.release_pos(zone, qualified=True)
    await approach(s, tid)


async def enter_gate_expect_open(s: Stage, tid: int, *, door_closed: bool = False) -> None:
    """Gate entry under the gate slot: `cmd_sent`, the open frame read by the mock, door open."""
    async with s.gate_slot(door_closed=door_closed):
        mark = s.mark()
        await s.step(Move(tid, GATE_CENTRE), Enter(tid, s.plan.gate))
        msg = await s.expect_gate(tid, mark)
        if msg.get("state") != "cmd_sent":
            raise ScenarioFailed(f"expected an open at the gate, got {_brief(msg)}")
        await s.expect_open_frame(tid)
        await s.wait_door_open(mark)


async def exit_through_line(s: Stage, tid: int) -> None:
    p = s.plan
    await s.step(Move(tid, GATE_FAR_SIDE), Leave(tid, p.gate))
    await s.step(
        Move(tid, (GATE_FAR_SIDE[0], p.exit_point[1] - 0.4)), Cross(tid, p.exit_line, "forward")
    )
    await s.step(Move(tid, p.exit_point), Delete(tid))


async def walk_back(s: Stage, tid: int) -> None:
    """Turned away at the gate: back into the store, where the track ends."""
    p = s.plan
    await s.step(Move(tid, APPROACH_AFTER), Leave(tid, p.gate))
    if p.approach_line is not None:
        await s.step(Move(tid, APPROACH_BEFORE), Cross(tid, p.approach_line, "backward"))
    await s.step(Move(tid, STORE_BACK))
    await s.step(Delete(tid))


async def expect_blocked(s: Stage, tid: int) -> int:
    mark = s.mark()
    await s.step(Move(tid, GATE_CENTRE), Enter(tid, s.plan.gate))
    msg = await s.expect_gate(tid, mark)
    if msg.get("state") != "blocked":
        raise ScenarioFailed(f"expected blocked at the gate, got {_brief(msg)}")
    return mark


def _brief(msg: dict[str, Any]) -> str:
    keys = ("t", "state", "tid", "reason", "pos", "receipt")
    return " ".join(f"{k}={msg[k]}" for k in keys if k in msg) or "nothing"


# -- the scenarios -----------------------------------------------------------------------------


async def happy_path(s: Stage) -> None:
    """S159: pay, open frame, door feedback, exit by the LINE_CROSS → journey `out exit`."""
    p, (zone,) = s.plan, s.zones
    dwell = p.min_dwell_s + 1.0
    await s.claim_pos(zone, acc_after_s=dwell, qualifies_after_s=p.min_dwell_s)
    tid = s.new_tid()
    await pay_and_approach(s, tid, zone, dwell, HEIGHT_HAPPY)
    await enter_gate_expect_open(s, tid, door_closed=True)
    await exit_through_line(s, tid)
    j = await s.expect_journey(tid)
    problems = [
        f"{key}={j.get(key)!r}"
        for key, ok in (
            ("out", j.get("out") == "exit"),
            ("exit_inferred", "exit_inferred" not in j),
            ("gate_open", isinstance(j.get("gate_open"), int)),
            ("auth", j.get("auth") is True),
            ("acc", j.get("acc") is True),
            ("tids", j.get("tids") == [tid]),
        )
        if not ok
    ]
    if problems:
        raise ScenarioFailed("journey: " + ", ".join(problems))
    s.note(f"journey out=exit, gate_open {j['gate_open'] - j['gate_cmd']} ms after gate_cmd")


async def no_payment(s: Stage) -> None:
    """S160: dwell but no ACC → `blocked`, no open frame within 3 s."""
    p, (zone,) = s.plan, s.zones
    dwell = p.min_dwell_s + 1.0
    await s.claim_pos(zone, acc_after_s=None, qualifies_after_s=p.min_dwell_s)
    tid = s.new_tid()
    await walk_in(s, tid, HEIGHT_PLAIN)
    await visit_pos(s, tid, zone, dwell)
    await s.step(Leave(tid, zone))
    s.release_pos(zone, qualified=True)
    await approach(s, tid)
    mark = await expect_blocked(s, tid)
    await s.expect_no_open(tid, mark, NO_OPEN_WINDOW_S)
    await walk_back(s, tid)
    s.note(f"blocked, no open frame within {NO_OPEN_WINDOW_S:g} s")


async def fast_exit(s: Stage) -> None:
    """S161: 2 s at the POS, ACC buffered then `unmatched` (expired) → `blocked`."""
    p, (zone,) = s.plan, s.zones
    dwell = 2.0
    await s.claim_pos(zone, acc_after_s=dwell, qualifies_after_s=None)
    tid = s.new_tid()
    await walk_in(s, tid, HEIGHT_PLAIN)
    await visit_pos(s, tid, zone, dwell)
    acc_mark = s.mark()
    receipt = await s.send_acc(zone)
    acc_at = s.now()
    await s.step(Leave(tid, zone))
    s.release_pos(zone, qualified=False, acc_until=acc_at + p.buffer_s + 1.0)
    await approach(s, tid)
    mark = await expect_blocked(s, tid)
    msg = await s.expect_acc(receipt, acc_mark)
    want = "expired" if p.buffer_s > 0 else "no_candidate"
    if msg.get("t") != "unmatched" or msg.get("reason") != want:
        raise ScenarioFailed(f"ACC {receipt}: expected unmatched reason={want}, got {_brief(msg)}")
    await s.expect_no_open(tid, mark, 0.0)
    await walk_back(s, tid)
    s.note(f"blocked, ACC unmatched ({want})")


async def gate_zone_exit(s: Stage) -> None:
    """S162: a paid customer entering the gate zone opens it; the exit line is never crossed."""
    p, (zone,) = s.plan, s.zones
    dwell = p.min_dwell_s + 1.0
    await s.claim_pos(zone, acc_after_s=dwell, qualifies_after_s=p.min_dwell_s)
    tid = s.new_tid()
    await pay_and_approach(s, tid, zone, dwell, HEIGHT_PLAIN)
    await enter_gate_expect_open(s, tid)
    await s.step(Move(tid, GATE_FAR_SIDE), Leave(tid, p.gate))  # no exit-line crossing follows
    await s.step(Move(tid, p.exit_point), Delete(tid))
    s.note("open frame without an exit-line crossing")


async def multiple_pos_zones(s: Stage) -> None:
    """S163: 3 s at POS_1, then POS_2 long enough, ACC POS_2 → open frame."""
    p, (first, second) = s.plan, s.zones
    dwell2 = p.min_dwell_s + 0.5
    short_qualifies = 3.0 if p.min_dwell_s <= 3.0 else None
    await s.claim_pos(first, acc_after_s=None, qualifies_after_s=short_qualifies)
    await s.claim_pos(second, acc_after_s=dwell2, qualifies_after_s=p.min_dwell_s)
    tid = s.new_tid()
    await walk_in(s, tid, HEIGHT_MULTI)
    await visit_pos(s, tid, first, 3.0)
    await s.step(Leave(tid, first))
    s.release_pos(first, qualified=short_qualifies is not None)
    await visit_pos(s, tid, second, dwell2)
    await pay(s, tid, second)
    await s.step(Leave(tid, second))
    s.release_pos(second, qualified=True)
    await approach(s, tid)
    await enter_gate_expect_open(s, tid)
    await exit_through_line(s, tid)
    s.note(f"paid at {p.name(second)} after {p.name(first)}")


async def acc_before_dwell(s: Stage) -> None:
    """S164: ACC at 6 s is buffered; leaving at 7.5 s (age 1.5 s) matches it → open frame."""
    p, (zone,) = s.plan, s.zones
    acc_at = max(0.1, p.min_dwell_s - p.buffer_s / 2)  # 6 s with the defaults
    leave_at = p.min_dwell_s + p.buffer_s / 4  # 7.5 s
    await s.claim_pos(zone, acc_after_s=acc_at, qualifies_after_s=p.min_dwell_s)
    tid = s.new_tid()
    await walk_in(s, tid, HEIGHT_ACC_BEFORE)
    await visit_pos(s, tid, zone, acc_at)
    mark = s.mark()
    receipt = await s.send_acc(zone)
    await s.hold(leave_at - acc_at)
    await s.step(Leave(tid, zone))
    msg = await s.expect_acc(receipt, mark)
    if msg.get("t") != "matched" or msg.get("tid") != tid or "buffered_ms" not in msg:
        raise ScenarioFailed(f"ACC {receipt}: expected a buffered match, got {_brief(msg)}")
    s.release_pos(zone, qualified=True)
    await approach(s, tid)
    await enter_gate_expect_open(s, tid)
    await exit_through_line(s, tid)
    s.note(f"ACC matched from the buffer after {msg['buffered_ms']} ms")


async def stitch(s: Stage) -> None:
    """S165: paid, lost in the POS, re-created 0.5 s later 20 cm away → opens for the new id."""
    p, (zone,) = s.plan, s.zones
    dwell = p.min_dwell_s + 1.0
    await s.claim_pos(zone, acc_after_s=dwell, qualifies_after_s=p.min_dwell_s)
    old, new = s.new_tid(), s.new_tid()
    await walk_in(s, old, HEIGHT_STITCH)
    await visit_pos(s, old, zone, dwell)
    await pay(s, old, zone)
    mark = s.mark()
    await s.step(Delete(old))  # lost inside the POS zone: no ZONE_EXIT
    await s.hold(STITCH_GAP_S - FRAME_S)  # the next step is published on the next frame
    x, y = p.pos_point(zone)
    await s.step(Create(new, (x + STITCH_OFFSET_M, y), HEIGHT_STITCH + STITCH_DH_M))
    msg = await s.expect_track(new, mark)
    if msg.get("t") != "stitch" or msg.get("prev_tid") != old:
        raise ScenarioFailed(f"expected a stitch {old}→{new}, got {_brief(msg)}")
    await s.step(Leave(new, zone))
    s.release_pos(zone, qualified=True)
    await approach(s, new)
    await enter_gate_expect_open(s, new)
    await exit_through_line(s, new)
    j = await s.expect_journey(new)
    if j.get("tids") != [old, new] or j.get("out") != "exit":
        raise ScenarioFailed(f"journey: tids={j.get('tids')} out={j.get('out')}")
    s.note(f"one journey tids={j['tids']}, stitched after {msg.get('stitch_time_ms')} ms")


async def link_down(s: Stage) -> None:
    """S166: controller stopped → `cmd_failed` not_connected; restarted → still no open frame."""
    p, (zone,) = s.plan, s.zones
    dwell = p.min_dwell_s + 1.0
    await s.claim_pos(zone, acc_after_s=dwell, qualifies_after_s=p.min_dwell_s)
    await s.wait_door_closed()  # no door sequence of an earlier open is cut short
    await s.stop_controller()
    await s.wait_link(up=False)
    tid = s.new_tid()
    await pay_and_approach(s, tid, zone, dwell, HEIGHT_PLAIN)
    mark = s.mark()
    await s.step(Move(tid, GATE_CENTRE), Enter(tid, p.gate))
    msg = await s.expect_gate(tid, mark)
    if msg.get("state") != "cmd_failed" or msg.get("reason") != "not_connected":
        raise ScenarioFailed(f"expected cmd_failed not_connected, got {_brief(msg)}")
    await s.start_controller()
    await s.wait_link(up=True)
    await s.expect_no_open(tid, mark, NO_OPEN_WINDOW_S)
    await walk_back(s, tid)
    s.note(f"cmd_failed not_connected; no open frame {NO_OPEN_WINDOW_S:g} s after the reconnect")


# -- registry ----------------------------------------------------------------------------------


def _need_two_pos(plan: SitePlan) -> str | None:
    return None if len(plan.pos) >= 2 else f"one POS zone only ({plan.name(plan.pos[0])})"


def _need_short_dwell(plan: SitePlan) -> str | None:
    if plan.min_dwell_s <= 2.5:
        return f"min_dwell_ms {plan.min_dwell_s * 1000:.0f}: a 2 s dwell already qualifies"
    return None


def _need_buffer(plan: SitePlan) -> str | None:
    if plan.buffer_s <= 0:
        return "[acc].buffer_ms = 0: nothing is buffered"
    if plan.min_dwell_s <= 0:
        return "min_dwell_ms = 0: every ACC matches at once"
    return None


def _always(_: SitePlan) -> str | None:
    return None


@attrs.frozen
class Scenario:
    name: str
    spec: str
    timeout_s: float  # simulation.md §3 table (at the default 7 s min dwell)
    script: Callable[[Stage], Awaitable[None]]
    pos_roles: int = 1
    exclusive: bool = False  # runs alone, after the others (it stops the controller)
    journey: bool = False  # waits for its journey: started first so the 10 s holds overlap
    skip_reason: Callable[[SitePlan], str | None] = _always
    summary: str = ""

    def timeout_for(self, plan: SitePlan) -> float:
        """The table's timeout; a site with a longer min dwell gets the difference on top."""
        return self.timeout_s + max(0.0, plan.min_dwell_s - SPEC_MIN_DWELL_S)


SCENARIOS: Final[tuple[Scenario, ...]] = (
    Scenario("happy_path", "S159", 25.0, happy_path, journey=True,
             summary="pay, gate opens, door feedback, exit line → journey out=exit"),
    Scenario("no_payment", "S160", 15.0, no_payment,
             summary="dwell without ACC → blocked, no open frame"),
    Scenario("fast_exit", "S161", 10.0, fast_exit, skip_reason=_need_short_dwell,
             summary="2 s dwell, ACC buffered then expired → blocked"),
    Scenario("gate_zone_exit", "S162", 15.0, gate_zone_exit,
             summary="paid customer opens the gate without crossing the exit line"),
    Scenario("multiple_pos_zones", "S163", 20.0, multiple_pos_zones, pos_roles=2,
             skip_reason=_need_two_pos, summary="POS_1 3 s, POS_2 paid → open frame"),
    Scenario("acc_before_dwell", "S164", 15.0, acc_before_dwell, skip_reason=_need_buffer,
             summary="ACC before the min dwell is buffered and matched at the POS exit"),
    Scenario("stitch", "S165", 25.0, stitch, journey=True,
             summary="track lost in the POS, re-created → opens for the new id, one journey"),
    Scenario("link_down", "S166", 20.0, link_down, exclusive=True,
             summary="controller down → cmd_failed not_connected, no late open"),
)  # fmt: skip
SCENARIO_NAMES: Final = tuple(s.name for s in SCENARIOS)


def scenario(name: str) -> Scenario:
    for found in SCENARIOS:
        if found.name == name:
            return found
    raise KeyError(name)
