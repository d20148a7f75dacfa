"""`gateway replay --offline`: a capture through the domain core on a fake clock (simulation.md §5).

Deterministic: the clock comes from each record's receipt time, ticks run as in the scenario
harness (every 1000 ms deadline ≤ t, in order, before the input at t) and jid/pid come from a
seeded random source, so two runs over one capture write byte-identical journeys.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Final

import attrs

from gateway.codecs.journey_json import encode_journey
from gateway.codecs.xovis import XovisDecoder, XovisStats
from gateway.config.model import Config
from gateway.core.clock import FakeClock
from gateway.core.effects import Effect, EmitJourney
from gateway.core.model import AccInput, DoorReading, GateCmd
from gateway.core.tracker import Tracker
from gateway.tools.replay import (
    DEFAULT_RAW_TOPIC,
    AccRecord,
    MqttRecord,
    ReadStats,
    RecordReader,
    Timed,
)

DEFAULT_SEED: Final = 1  # jid/pid random source; any fixed value makes runs repeatable
TICK_MS: Final = 1000  # behaviour.md §4.10, as the scenario harness
MAX_GAP_TICKS: Final = 3600  # ticks run across one gap; the rest of a longer gap is skipped
MAX_DRAIN_TICKS: Final = 120  # after the input: > stitch pool (8 s) + egress hold (10 s)
SIMULATED_IP: Final = "simulated"  # AccInput.ip of a payment named by zone (core/model.py)
OUTCOMES: Final = ("exit", "returned", "lost", "pass_through", "in_progress")
_MS_NS: Final = 1_000_000


@attrs.define(slots=True)
class AcceptingGate:
    """Gate port that accepts every command; `opens` counts them."""

    opens: int = 0

    def try_send(self, cmd: GateCmd) -> bool:
        self.opens += 1
        return True


@attrs.define(slots=True)
class OfflineSummary:
    journeys: dict[str, int]
    opens: int
    acc_matched: int
    acc_unmatched: int
    stitches: int
    mqtt_messages: int
    xovis: XovisStats
    acc_inputs: int
    door_readings: int
    door_rejected: int  # bad checksum or unknown status
    skipped_own_topic: int
    skipped_ticks: int
    duration_ms: int

    def lines(self) -> list[str]:
        journeys = ", ".join(f"{k} {self.journeys.get(k, 0)}" for k in OUTCOMES)
        x = self.xovis
        return [
            f"journeys {sum(self.journeys.values())}: {journeys}",
            f"opens {self.opens}, acc matched {self.acc_matched}, unmatched {self.acc_unmatched}, "
            f"stitches {self.stitches}",
            f"mqtt messages {self.mqtt_messages} (skipped own topic {self.skipped_own_topic}), "
            f"xovis events {x.events_received}, malformed {x.malformed}, "
            f"group ignored {x.group_ignored}",
            f"acc inputs {self.acc_inputs}, door readings {self.door_readings} "
            f"(rejected {self.door_rejected})",
            f"fake clock at end {self.duration_ms / 1000:.1f} s (drain included), "
            f"skipped ticks {self.skipped_ticks}",
        ]


class OfflineReplay:
    """Feed `Timed` records in order, then `finish()`; `emit` receives each journal line."""

    def __init__(
        self, config: Config, emit: Callable[[bytes], object], *, seed: int = DEFAULT_SEED
    ) -> None:
        self._emit = emit
        self._clock = FakeClock()
        self._gate = AcceptingGate()
        self._tracker = Tracker(config, self._clock, self._gate, random.Random(seed))
        self._decoder = XovisDecoder(config.xovis.group_tracks, XovisStats())
        self._skip_topics = frozenset(config.mqtt_egress.topics)
        self._base_ms: int | None = None
        self._next_tick = TICK_MS
        self._last_door: DoorReading | None = None
        self._journeys = dict.fromkeys(OUTCOMES, 0)
        self._mqtt = self._acc = self._doors = self._door_rejected = 0
        self._skipped_own = self._skipped_ticks = 0

    @property
    def tracker(self) -> Tracker:
        return self._tracker

    def feed(self, item: Timed) -> None:
        ts_ms = item.ts_ns // _MS_NS
        if self._base_ms is None:
            self._base_ms = ts_ms
            self._clock.wall_base_ms = ts_ms
        self._advance(max(ts_ms - self._base_ms, self._clock.now_ms))
        tracker, record, recv_ns = self._tracker, item.record, self._clock.mono_ns()
        if isinstance(record, MqttRecord):
            topic = record.topic or DEFAULT_RAW_TOPIC
            if topic in self._skip_topics:  # interfaces.md §1.1: own egress is never parsed
                self._skipped_own += 1
                return
            self._mqtt += 1
            result = self._decoder.decode(record.payload, recv_ns=recv_ns, topic=topic)
            if result.batch is not None:
                self._run(tracker.handle_batch(result.batch))
        elif isinstance(record, AccRecord):
            self._acc += 1
            ip = record.kiosk_ip if record.kiosk_ip is not None else SIMULATED_IP
            pos = record.pos_zone if ip == SIMULATED_IP else None
            self._run(tracker.handle_acc(AccInput(recv_ns, ip, record.receipt, pos)))
        elif not record.checksum_ok or record.status is None:
            self._door_rejected += 1
        else:
            reading = DoorReading(record.status, record.fault, record.alarm)
            self._doors += 1
            if reading != self._last_door:  # the door cell passes on changes only (§10.1)
                self._last_door = reading
                self._run(tracker.handle_door(reading))

    def _advance(self, target_ms: int) -> None:
        """Every tick with deadline ≤ target, in order; a long gap runs its first hour only."""
        due = (target_ms - self._next_tick) // TICK_MS + 1
        if due > MAX_GAP_TICKS:
            self._skipped_ticks += due - MAX_GAP_TICKS
            for _ in range(MAX_GAP_TICKS):
                self._tick()
            self._next_tick += (due - MAX_GAP_TICKS) * TICK_MS
        while self._next_tick <= target_ms:
            self._tick()
        self._clock.set(target_ms)

    def _tick(self) -> None:
        self._clock.set(self._next_tick)
        self._run(self._tracker.tick())
        self._next_tick += TICK_MS

    def _run(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, EmitJourney):
                self._journeys[effect.outcome] = self._journeys.get(effect.outcome, 0) + 1
                self._emit(encode_journey(effect.record) + b"\n")

    def finish(self) -> OfflineSummary:
        """Tick until nothing is held or pooled (bounded), then shut the core down."""
        core = self._tracker.state
        for _ in range(MAX_DRAIN_TICKS):
            if not core.journeys.held and not len(core.pool):
                break
            self._tick()
        self._run(self._tracker.shutdown())
        c = self._tracker.counters
        return OfflineSummary(
            journeys=dict(self._journeys),
            opens=self._gate.opens,
            acc_matched=c.acc_matched,
            acc_unmatched=sum(c.acc_unmatched.values()),
            stitches=c.stitch_matched,
            mqtt_messages=self._mqtt,
            xovis=self._decoder.stats,
            acc_inputs=self._acc,
            door_readings=self._doors,
            door_rejected=self._door_rejected,
            skipped_own_topic=self._skipped_own,
            skipped_ticks=self._skipped_ticks,
            duration_ms=self._clock.now_ms,
        )


def replay_offline(
    lines: Iterable[bytes],
    config: Config,
    emit: Callable[[bytes], object],
    *,
    seed: int = DEFAULT_SEED,
) -> tuple[OfflineSummary, ReadStats]:
    """Read every line, replay it, drain; → (outcome summary, line counts)."""
    reader = RecordReader()
    replay = OfflineReplay(config, emit, seed=seed)
    for line in lines:
        for item in reader.feed(line):
            replay.feed(item)
    for item in reader.close():
        replay.feed(item)
    return replay.finish(), reader.stats
