"""Tracker actor: the only task family that touches domain state (README "Architecture").

Three consumers call the synchronous core — events from the events channel, door changes from
the LatestValue cell, and a 1 s ticker — and dispatch the returned effects with `send_nowait`.
The actor awaits only channel receive, `wait_changed` and sleep (concurrency rule 1); the one
other await in this module, `flush_overflow`, runs only after the tracker stage has ended.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import trio

from gateway.app.latest import LatestValue
from gateway.app.livefeed import LiveFeedHub
from gateway.app.logs import RateLimiter, log_event
from gateway.codecs.journey_json import encode_payload
from gateway.core.effects import DoorFeed, Effect, EmitJourney, Log, Publish
from gateway.core.model import AccInput, DoorReading, GateCmd, XovisBatch
from gateway.core.tracker import Tracker
from gateway.io.egress import EgressStats
from gateway.io.gate_worker import GateJob

log = logging.getLogger("gateway.tracker")

TICK_S = 1.0  # behaviour.md §4.10
JOURNAL_BACKLOG_MAX = 10_000  # journeys waiting for the journal channel; beyond: dropped, counted
# queued items handled per wake-up before yielding: a batch of 40-object frames is ~1 ms of work,
# so the RS485 poller, the gate worker and the MQTT socket wait no longer than that (with 64 the
# bench saw RS485 poll-start deviations p99 ≈ 9 ms; with 16, ≈ 5 ms: docs/performance.md)
DRAIN_BATCH = 16


class TrackerCrashed(Exception):
    """A core handler raised: fatal for the process (README concurrency rule 5)."""


@attrs.define(slots=True)
class RuntimeStats:
    journey_egress_received: int = 0
    journey_egress_dropped: int = 0
    events_handled: int = 0
    door_changes: int = 0


@attrs.define(slots=True)
class QueueGatePort:
    """GatePort over the gate channel: `try_send` never blocks; the bool decides the count (D7)."""

    send: trio.MemorySendChannel[GateJob]
    enqueued: int = 0

    def try_send(self, cmd: GateCmd) -> bool:
        try:
            self.send.send_nowait(GateJob(cmd, None))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        self.enqueued += 1
        return True


@attrs.define(slots=True, eq=False)
class TrackerActor:
    tracker: Tracker
    site: str
    gate_port: QueueGatePort
    journal_send: trio.MemorySendChannel[object]
    egress_send: trio.MemorySendChannel[Publish]
    egress_stats: EgressStats
    hub: LiveFeedHub | None
    stats: RuntimeStats = attrs.field(factory=RuntimeStats)
    # test hook: called before each handled item (S147 holds the tracker, S152 raises)
    before_item: Callable[[object], None] | None = None
    _limiter: RateLimiter = attrs.field(factory=RateLimiter)
    crashed: BaseException | None = None
    # set by `begin_shutdown`: during the shutdown drain + finalization nothing consumes the
    # journal/egress channels, so what does not fit waits here for `flush_overflow`
    _overflow: list[tuple[trio.MemorySendChannel[Any], object]] | None = None
    # journeys waiting for room in the journal channel: a tick can release more journeys at
    # once than the channel holds (100), and the journal is the durable record, so they wait
    # here (bounded) and are moved into the channel as the writer makes room — never awaited
    _journal_backlog: deque[Mapping[str, Any]] = attrs.field(factory=deque)

    # ---- effects -------------------------------------------------------------------------
    def dispatch(self, effects: Iterable[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Publish):
                self._offer(effect)
            elif isinstance(effect, EmitJourney):
                self._emit_journey(effect)
            elif isinstance(effect, DoorFeed):
                if self.hub is not None:
                    self.hub.publish(
                        "door",
                        encode_payload(
                            {
                                "status": effect.status,
                                "fault": effect.fault,
                                "alarm": effect.alarm,
                                "source": effect.source,
                            }
                        ),
                    )
            elif isinstance(effect, Log) and log.isEnabledFor(effect.level):
                log.log(effect.level, effect.event, extra={"fields": dict(effect.fields)})

    def _offer(self, item: Publish) -> None:
        try:
            self.egress_send.send_nowait(item)
        except trio.WouldBlock:
            if self._overflow is not None:
                self._overflow.append((self.egress_send, item))
                return
            self.egress_stats.dropped["queue_full"] = (
                self.egress_stats.dropped.get("queue_full", 0) + 1
            )
            self._limiter.log(log, logging.WARNING, "egress_full", "egress_queue_full")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # shutting down after the egress drain: nothing left to deliver to

    def _emit_journey(self, effect: EmitJourney) -> None:
        self.stats.journey_egress_received += 1
        backlog = self._journal_backlog
        backlog.append(effect.record)
        self.pump_journal()
        if len(backlog) > JOURNAL_BACKLOG_MAX:
            backlog.popleft()
            self.stats.journey_egress_dropped += 1
            self._limiter.log(log, logging.WARNING, "journal_full", "journal_backlog_full")
        self._offer(Publish("journey", {"site": self.site, **effect.record}))

    def pump_journal(self) -> None:
        """Move waiting journeys into the journal channel while it has room (never blocks)."""
        backlog = self._journal_backlog
        while backlog:
            try:
                self.journal_send.send_nowait(backlog[0])
            except trio.WouldBlock:
                return
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self.stats.journey_egress_dropped += len(backlog)
                backlog.clear()
                self._limiter.log(log, logging.WARNING, "journal_closed", "journal_closed")
                return
            backlog.popleft()

    @property
    def journal_backlog(self) -> int:
        return len(self._journal_backlog)

    # ---- consumers -----------------------------------------------------------------------
    def handle(self, item: object) -> None:
        """Run one input through the core; any exception is fatal (TrackerCrashed)."""
        try:
            if self.before_item is not None:
                self.before_item(item)
            if isinstance(item, XovisBatch):
                effects = self.tracker.handle_batch(item)
            elif isinstance(item, AccInput):
                effects = self.tracker.handle_acc(item)
            else:
                log_event(log, logging.WARNING, "unknown_event_item", type=type(item).__name__)
                return
            self.stats.events_handled += 1
            if self._journal_backlog:
                self.pump_journal()  # room freed by the writer goes to waiting journeys first
            self.dispatch(effects)
        except Exception as exc:
            self.crashed = exc
            raise TrackerCrashed(str(exc)) from exc

    async def consume_events(
        self, receive: trio.MemoryReceiveChannel[object], limit: int | None = None
    ) -> None:
        """Handle items until the channel ends; with `limit`, return after that many (test hook).

        Items already queued are handled without a checkpoint each (≤ DRAIN_BATCH per wake-up),
        but after an item that enqueued a gate command the actor yields before taking the next
        one: the gate worker, woken by `send_nowait`, then writes the frame first whatever order
        Trio's scheduler picks for the next batch (it reverses batches at random).
        """
        left = -1 if limit is None else limit  # -1: unlimited
        if left == 0:
            return
        async for item in receive:
            sent = self.gate_port.enqueued
            self.handle(item)
            left -= 1
            for _ in range(DRAIN_BATCH):
                if left == 0 or self.gate_port.enqueued != sent:
                    break
                try:
                    item = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                self.handle(item)
                left -= 1
            if left == 0:
                return
            if self.gate_port.enqueued != sent:
                await trio.lowlevel.checkpoint()  # a pure yield: the gate worker goes first

    def drain(self, receive: trio.MemoryReceiveChannel[object]) -> int:
        """Handle everything still queued (shutdown step 2); returns the count."""
        count = 0
        while True:
            try:
                item = receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return count
            self.handle(item)
            count += 1

    async def consume_door(self, cell: LatestValue[DoorReading]) -> None:
        _, version = cell.get()
        while True:
            reading, version = await cell.wait_changed(version)
            self.stats.door_changes += 1
            try:
                self.dispatch(self.tracker.handle_door(reading))
            except Exception as exc:
                self.crashed = exc
                raise TrackerCrashed(str(exc)) from exc

    async def run_ticker(self) -> None:
        """Ticks at start + k × 1 s; a late tick runs once and missed deadlines are skipped."""
        start = trio.current_time()
        k = 1
        while True:
            await trio.sleep_until(start + k * TICK_S)
            try:
                self.pump_journal()
                self.dispatch(self.tracker.tick())
            except Exception as exc:
                self.crashed = exc
                raise TrackerCrashed(str(exc)) from exc
            k = max(k + 1, math.floor((trio.current_time() - start) / TICK_S) + 1)

    def begin_shutdown(self) -> None:
        """From now on journeys/publishes that find their channel full are kept, not dropped."""
        if self._overflow is None:
            self._overflow = []

    def finalize(self) -> None:
        """Shutdown finalization (behaviour.md §11.5) after the events channel was drained."""
        try:
            self.dispatch(self.tracker.shutdown())
        except Exception as exc:
            self.crashed = exc
            raise TrackerCrashed(str(exc)) from exc

    @property
    def overflow(self) -> int:
        return len(self._overflow or ())

    async def flush_overflow(self) -> int:
        """Shutdown only (the tracker stage has ended): deliver what `begin_shutdown` kept, in
        order, waiting for room; returns the count. Never called while the tracker runs."""
        pending, self._overflow = self._overflow or [], []
        journeys, self._journal_backlog = self._journal_backlog, deque()
        for record in journeys:
            try:
                await self.journal_send.send(record)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self.stats.journey_egress_dropped += 1
        for channel, item in pending:
            try:
                await channel.send(item)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                if channel is self.journal_send:
                    self.stats.journey_egress_dropped += 1
        return len(pending) + len(journeys)
