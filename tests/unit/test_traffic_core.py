"""The synthetic traffic drives the real core as the demo would (simulation.md §1–§2).

Model output goes through the Xovis decoder and the tracker on a fake clock (ticks every 1000 ms,
ACC lines as `AccInput` from their terminal IP), so each customer kind must produce the gateway
outcome the §2 table names: payers pay and open the gate, non-payers are blocked, browsers return.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import attrs

from gateway.codecs.xovis import XovisDecoder, XovisStats
from gateway.config.loader import load_config
from gateway.config.model import Config
from gateway.core.clock import FakeClock
from gateway.core.effects import Effect, EmitJourney, Publish
from gateway.core.model import AccInput, GateCmd
from gateway.core.tracker import Tracker
from gateway.tools.traffic import CustomerKind, TrafficModel, TrafficParams, demo_geometry
from gateway.tools.traffic_model import AccLine, SceneParams

DEMO_TOML = Path(__file__).resolve().parents[1] / "data" / "demo.toml"
FRAME = 80
EGRESS_HOLD_MS = 12_000  # journeys are emitted 10 s after they end (behaviour.md §11.2)
QUIET = TrafficParams(
    couple_share=0.0,
    reentry_share=0.0,
    scene=SceneParams(truncate_share=0.0, missed_crossing_share=0.0, loss_share=0.0),
)


@attrs.define
class Gate:
    sent: list[GateCmd] = attrs.field(factory=list)

    def try_send(self, cmd: GateCmd) -> bool:
        self.sent.append(cmd)
        return True


@attrs.define
class Demo:
    """Model → decoder → tracker, on one fake clock."""

    config: Config
    model: TrafficModel
    clock: FakeClock = attrs.field(factory=FakeClock)
    gate: Gate = attrs.field(factory=Gate)
    effects: list[Effect] = attrs.field(factory=list)
    now: int = 0
    next_tick: int = 1000
    tracker: Tracker = attrs.field(init=False)
    decoder: XovisDecoder = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.tracker = Tracker(self.config, self.clock, self.gate, random.Random(1))
        self.decoder = XovisDecoder(self.config.xovis.group_tracks, XovisStats())

    def run(self, until_ms: int) -> None:
        while self.now < until_ms:
            while self.next_tick <= self.now:
                self.clock.set(self.next_tick)
                self.effects += self.tracker.tick()
                self.next_tick += 1000
            self.clock.set(self.now)
            for out in self.model.step(self.now, self.clock.wall_ms()):
                recv_ns = self.clock.mono_ns()
                if isinstance(out, AccLine):
                    receipt = out.line.decode().strip().removeprefix("ACC ")
                    self.effects += self.tracker.handle_acc(
                        AccInput(recv_ns, out.source_ip, receipt)
                    )
                    continue
                result = self.decoder.decode(out.payload, recv_ns=recv_ns, topic=out.topic)
                if result.batch is not None:
                    self.effects += self.tracker.handle_batch(result.batch)
            self.now += FRAME

    def run_until_empty(self, limit_ms: int) -> None:
        end = self.now + limit_ms
        self.run(self.now + FRAME)
        while self.model.scene.walkers:
            assert self.now < end, "walkers still in the store"
            self.run(self.now + FRAME)

    def journeys(self) -> list[dict[str, Any]]:
        return [dict(e.record) for e in self.effects if isinstance(e, EmitJourney)]

    def published(self, kind: str) -> list[dict[str, Any]]:
        return [dict(e.payload) for e in self.effects if isinstance(e, Publish) and e.kind == kind]


def demo(rate: float, seed: int, params: TrafficParams | None = None) -> Demo:
    config = load_config(DEMO_TOML)
    site = demo_geometry(config.zones, config.acc)
    return Demo(config, TrafficModel(site, rate, seed, params=params))


def one_customer(kind: CustomerKind, seed: int) -> Demo:
    d = demo(0.0, seed, QUIET)
    d.model.add_customer(kind)
    d.run_until_empty(180_000)
    d.run(d.now + EGRESS_HOLD_MS)
    return d


def test_payer_pays_opens_the_gate_and_exits() -> None:
    d = one_customer(CustomerKind.PAYER, 1)
    ((journey),) = d.journeys()
    assert (journey["out"], journey["auth"], journey["acc"]) == ("exit", True, True)
    assert "gate_cmd" in journey
    assert len(d.gate.sent) == 1
    assert [p["t"] for p in d.published("acc")] == ["matched"]


def test_dwell_user_is_authorized_by_the_dwell_zone() -> None:
    d = one_customer(CustomerKind.DWELL_USER, 2)
    ((journey),) = d.journeys()
    assert (journey["out"], journey["auth"], journey["acc"]) == ("exit", True, False)
    assert len(d.gate.sent) == 1


def test_walk_back_is_blocked_and_stays_in_the_store() -> None:
    d = one_customer(CustomerKind.WALK_BACK, 3)
    assert d.gate.sent == []
    assert [p["state"] for p in d.published("gate")] == ["blocked"]
    ((journey),) = d.journeys()
    assert journey["auth"] is False
    assert journey["out"] != "exit"


def test_browser_returns() -> None:
    d = one_customer(CustomerKind.BROWSER, 4)
    ((journey),) = d.journeys()
    assert (journey["out"], journey["auth"]) == ("returned", False)
    assert d.gate.sent == []


def test_tailgater_is_blocked_then_leaves_behind_a_payer() -> None:
    d = demo(0.0, 5, QUIET)
    d.model.add_customer(CustomerKind.TAILGATER)
    while not d.published("gate"):
        d.run(d.now + FRAME)
    d.model.add_customer(CustomerKind.PAYER)
    d.run_until_empty(180_000)
    d.run(d.now + EGRESS_HOLD_MS)
    assert len(d.gate.sent) == 1
    outcomes = sorted((j["out"], j["auth"]) for j in d.journeys())
    assert outcomes == [("exit", False), ("exit", True)]


def test_a_demo_half_hour_gives_the_expected_outcomes() -> None:
    d = demo(4.0, 2026)
    d.run(30 * 60_000)
    d.model.rate_per_min = 0.0  # let the last customers leave
    d.run(d.now + 120_000)
    s = d.model.summary()
    authorized = s["customers_payer"] + s["customers_dwell_user"]
    opens = len(d.gate.sent)
    assert 0.85 * authorized <= opens <= authorized + s["reentries"]
    acc = Counter(p["t"] for p in d.published("acc"))
    assert acc["matched"] >= 0.85 * s["acc_lines"]
    blocked = [p for p in d.published("gate") if p["state"] == "blocked"]
    assert len(blocked) >= s["customers_walk_back"] + s["customers_tailgater"]
    outcomes = Counter((j["out"], j["auth"]) for j in d.journeys())
    assert outcomes[("exit", True)] >= 0.85 * authorized
    assert outcomes[("returned", False)] >= 0.8 * s["customers_browser"]
    stitched = [j for j in d.journeys() if len(j["tids"]) > 1]
    assert stitched  # lost tracks are stitched back onto their journeys
