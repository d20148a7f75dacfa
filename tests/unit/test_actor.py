"""Tracker actor (README rule 1): effects dispatch, never blocking, yielding after gate commands.

A stub tracker stands in for the core so each property is pinned alone; the last tests read
actor.py's syntax tree to check that the live consumers await nothing but their channel, their
cell and their ticker, and that nothing on the live path uses a blocking `send`.
"""

from __future__ import annotations

import ast
import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import gateway.app.actor as actor_module
from gateway.app.actor import QueueGatePort, TrackerActor, TrackerCrashed
from gateway.app.latest import LatestValue
from gateway.app.livefeed import LiveFeedHub
from gateway.core.effects import DoorFeed, Effect, EmitJourney, Log, Publish
from gateway.core.model import AccInput, DoorReading, GateCmd
from gateway.io.egress import EgressStats
from gateway.io.gate_worker import GateJob


def acc(receipt: str) -> AccInput:
    return AccInput(recv_ns=0, ip="10.0.0.1", receipt=receipt)


class StubTracker:
    """Records calls; `effects[receipt]` is returned for that ACC, `opens` receipts enqueue."""

    def __init__(self) -> None:
        self.port: QueueGatePort | None = None
        self.handled: list[str] = []
        self.effects: dict[str, list[Effect]] = {}
        self.opens: set[str] = set()
        self.doors: list[DoorReading] = []
        self.ticks: list[float] = []
        self.on_tick: Callable[[], None] | None = None
        self.shutdown_effects: list[Effect] = []

    def handle_acc(self, item: AccInput) -> list[Effect]:
        assert item.receipt is not None
        self.handled.append(item.receipt)
        if item.receipt == "raise":
            raise ValueError("core bug")
        if item.receipt in self.opens and self.port is not None:
            self.port.try_send(GateCmd(1, "acc", 0, 0))
        return self.effects.get(item.receipt, [])

    def handle_door(self, reading: DoorReading) -> list[Effect]:
        self.doors.append(reading)
        return []

    def tick(self) -> list[Effect]:
        self.ticks.append(trio.current_time())
        if self.on_tick is not None:
            self.on_tick()
        return []

    def shutdown(self) -> list[Effect]:
        return self.shutdown_effects


class Rig:
    def __init__(
        self, *, gate: int = 64, journal: int = 100, egress: int = 1000, hub: bool = False
    ) -> None:
        self.tracker = StubTracker()
        self.gate_send, self.gate_recv = trio.open_memory_channel[GateJob](gate)
        self.journal_send, self.journal_recv = trio.open_memory_channel[object](journal)
        self.egress_send, self.egress_recv = trio.open_memory_channel[Publish](egress)
        self.egress_stats = EgressStats()
        self.port = QueueGatePort(self.gate_send)
        self.tracker.port = self.port
        self.hub = LiveFeedHub(8, 4) if hub else None
        self.actor = TrackerActor(
            tracker=self.tracker,  # type: ignore[arg-type]
            site="netto",
            gate_port=self.port,
            journal_send=self.journal_send,
            egress_send=self.egress_send,
            egress_stats=self.egress_stats,
            hub=self.hub,
        )

    def egress(self) -> list[Publish]:
        out = []
        while True:
            try:
                out.append(self.egress_recv.receive_nowait())
            except trio.WouldBlock:
                return out


def journey(jid: str) -> EmitJourney:
    return EmitJourney({"jid": jid, "out": "exit"}, "exit")


def test_queue_gate_port_never_blocks_and_reports_room() -> None:
    send, receive = trio.open_memory_channel[GateJob](2)
    port = QueueGatePort(send)
    cmd = GateCmd(7, "tracker", 1, 2)
    assert [port.try_send(cmd) for _ in range(3)] == [True, True, False]
    assert port.enqueued == 2
    assert receive.receive_nowait() == GateJob(cmd, None)
    send.close()
    assert port.try_send(cmd) is False  # closed during shutdown: not enqueued (D7)
    assert port.enqueued == 2


def test_dispatch_routes_every_effect_kind(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.tracker")
    rig = Rig(hub=True)
    assert rig.hub is not None
    with rig.hub.subscribe() as client:
        rig.actor.dispatch(
            [
                Publish("zone", {"site": "netto", "tid": 1}),
                journey("j1"),
                DoorFeed("open", 3, 0, "rs485"),
                Log(logging.INFO, "acc_authorized", {"tid": 1}),
            ]
        )
        feed = client.receive.receive_nowait()
    assert rig.journal_recv.receive_nowait() == {"jid": "j1", "out": "exit"}
    zone, published = rig.egress()
    assert zone == Publish("zone", {"site": "netto", "tid": 1})
    assert published.kind == "journey"
    assert list(published.payload) == ["site", "jid", "out"]  # `site` first (interfaces §7)
    assert published.payload["site"] == "netto"
    assert b'"kind":"door"' in feed
    assert b'"data":{"status":"open","fault":3,"alarm":0,"source":"rs485"}' in feed
    [record] = [r for r in caplog.records if r.getMessage() == "acc_authorized"]
    assert record.fields == {"tid": 1}  # type: ignore[attr-defined]
    assert rig.actor.stats.journey_egress_received == 1


def test_full_egress_drops_and_warns_once_while_journeys_wait_for_the_journal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(journal=1, egress=1)
    rig.actor.dispatch([journey("a"), journey("b"), journey("c")])
    assert rig.actor.stats.journey_egress_received == 3
    assert rig.actor.stats.journey_egress_dropped == 0  # the journal is the durable record
    assert rig.actor.journal_backlog == 2
    assert rig.egress_stats.dropped["queue_full"] == 2  # journeys b and c on the egress side
    assert rig.journal_recv.receive_nowait() == {"jid": "a", "out": "exit"}
    rig.actor.pump_journal()  # the writer made room: the next waiting journey moves in
    assert rig.journal_recv.receive_nowait() == {"jid": "b", "out": "exit"}
    rig.actor.pump_journal()
    assert rig.journal_recv.receive_nowait() == {"jid": "c", "out": "exit"}
    assert rig.actor.journal_backlog == 0
    warns = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warns.count("egress_queue_full") == 1  # ≤ 1 per second


def test_journal_backlog_is_bounded_drops_the_oldest_and_counts(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actor_module, "JOURNAL_BACKLOG_MAX", 2)
    rig = Rig(journal=1, egress=10)
    rig.actor.dispatch([journey(j) for j in "abcde"])  # a in the channel, b..e wait, cap 2
    assert rig.actor.journal_backlog == 2
    assert rig.actor.stats.journey_egress_dropped == 2  # b and c, the oldest waiting
    rig.actor.pump_journal()
    assert rig.journal_recv.receive_nowait()["jid"] == "a"
    rig.actor.pump_journal()
    assert rig.journal_recv.receive_nowait()["jid"] == "d"
    warns = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warns.count("journal_backlog_full") == 1


async def test_consumer_hands_a_gate_command_over_before_the_next_item() -> None:
    rig = Rig()
    rig.tracker.opens = {"b"}
    events_send, events_recv = trio.open_memory_channel[object](10)
    order: list[str] = []

    async def gate_worker() -> None:
        async for _ in rig.gate_recv:
            order.append(f"gate after {rig.tracker.handled[-1]}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(gate_worker)
        await trio.testing.wait_all_tasks_blocked()
        for r in "abcd":
            events_send.send_nowait(acc(r))
        events_send.close()
        await rig.actor.consume_events(events_recv)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert rig.tracker.handled == ["a", "b", "c", "d"]
    assert order == ["gate after b"]  # the worker ran before c was handled


class _CountingReceive:
    """A receive channel that logs how each item was taken: `A` awaited, `N` receive_nowait."""

    def __init__(self, inner: trio.MemoryReceiveChannel[object]) -> None:
        self.inner = inner
        self.log: list[str] = []

    def __aiter__(self) -> _CountingReceive:
        return self

    async def __anext__(self) -> object:
        try:
            item = await self.inner.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        self.log.append("A")
        return item

    def receive_nowait(self) -> object:
        item = self.inner.receive_nowait()
        self.log.append("N")
        return item


async def test_consumer_drains_a_burst_in_bounded_batches() -> None:
    rig = Rig()
    events_send, events_recv = trio.open_memory_channel[object](100)
    for i in range(50):
        events_send.send_nowait(acc(str(i)))
    events_send.close()
    counting = _CountingReceive(events_recv)
    await rig.actor.consume_events(counting)  # type: ignore[arg-type]
    assert len(rig.tracker.handled) == 50
    batches = [len(run) for run in "".join(counting.log).split("A")[1:]]
    # queued items are taken without a checkpoint each (receive_nowait), but after at most
    # DRAIN_BATCH of them the actor awaits again, so other tasks get their turn
    assert max(batches) == actor_module.DRAIN_BATCH
    assert sum(batches) + len(batches) == 50


async def test_consume_with_limit_stops_after_exactly_n_items() -> None:
    rig = Rig()
    events_send, events_recv = trio.open_memory_channel[object](10)
    for r in "abcdef":
        events_send.send_nowait(acc(r))
    await rig.actor.consume_events(events_recv, limit=0)
    assert rig.tracker.handled == []
    await rig.actor.consume_events(events_recv, limit=4)
    assert rig.tracker.handled == list("abcd")
    assert events_recv.statistics().current_buffer_used == 2
    assert rig.actor.drain(events_recv) == 2
    assert rig.tracker.handled == list("abcdef")


async def test_core_exception_is_fatal_tracker_crashed() -> None:
    rig = Rig()
    events_send, events_recv = trio.open_memory_channel[object](10)
    events_send.send_nowait(acc("ok"))
    events_send.send_nowait(acc("raise"))
    events_send.send_nowait(acc("never"))
    with pytest.raises(TrackerCrashed, match="core bug"):
        await rig.actor.consume_events(events_recv)
    assert isinstance(rig.actor.crashed, ValueError)
    assert rig.tracker.handled == ["ok", "raise"]


async def test_before_item_hook_raising_is_a_crash() -> None:
    rig = Rig()

    def hook(item: object) -> None:
        raise RuntimeError("test hook")

    rig.actor.before_item = hook
    with pytest.raises(TrackerCrashed):
        rig.actor.handle(acc("x"))
    assert rig.tracker.handled == []


async def test_door_consumer_sees_the_latest_value(autojump_clock: trio.testing.MockClock) -> None:
    rig = Rig()
    cell = LatestValue(DoorReading("unknown"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.actor.consume_door, cell)
        await trio.testing.wait_all_tasks_blocked()
        cell.set(DoorReading("moving"))
        cell.set(DoorReading("open"))  # coalesced: the reader only needs the latest
        await trio.testing.wait_all_tasks_blocked()
        cell.set(DoorReading("closed"))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert [d.status for d in rig.tracker.doors] == ["open", "closed"]
    assert rig.actor.stats.door_changes == 2


async def test_ticker_every_second_late_tick_runs_once_missed_ones_skipped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig()
    t0 = trio.current_time()

    def slow_third_tick() -> None:
        if len(rig.tracker.ticks) == 3:
            autojump_clock.jump(2.5)  # this tick "took" 2.5 s: deadlines 4 and 5 are missed

    rig.tracker.on_tick = slow_third_tick
    with trio.move_on_after(7.5):
        await rig.actor.run_ticker()
    assert [t - t0 for t in rig.tracker.ticks] == [1.0, 2.0, 3.0, 6.0, 7.0]


async def test_shutdown_keeps_what_does_not_fit_and_delivers_it_in_order() -> None:
    rig = Rig(journal=2, egress=3)
    rig.actor.begin_shutdown()
    rig.tracker.shutdown_effects = [journey(f"j{i}") for i in range(5)]
    rig.actor.finalize()
    assert rig.actor.journal_backlog == 3  # 3 journeys wait for the journal (capacity 2)
    assert rig.actor.overflow == 2  # + 2 journey publishes that did not fit the egress
    assert rig.actor.stats.journey_egress_dropped == 0
    assert rig.egress_stats.dropped["queue_full"] == 0
    journal: list[Any] = []
    published: list[str] = []

    async def consume() -> None:
        async for record in rig.journal_recv:
            journal.append(record["jid"])

    async def consume_egress() -> None:
        async for item in rig.egress_recv:
            published.append(item.payload["jid"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        nursery.start_soon(consume_egress)
        assert await rig.actor.flush_overflow() == 5
        rig.journal_send.close()
        rig.egress_send.close()
    assert journal == [f"j{i}" for i in range(5)]
    assert published == [f"j{i}" for i in range(5)]


# ---- structure: the live consumers await only their channel, cell and ticker -----------------

LIVE_CONSUMERS = {
    # method: the only awaits allowed (README rule 1; docs/architecture.md)
    "consume_events": {"async for receive", "await trio.lowlevel.checkpoint"},  # = sleep(0)
    "consume_door": {"await cell.wait_changed"},
    "run_ticker": {"await trio.sleep_until"},
}
SHUTDOWN_ONLY = {"flush_overflow"}  # called by the runtime after the tracker stage has ended


def _actor_class() -> ast.ClassDef:
    tree = ast.parse(Path(inspect.getfile(actor_module)).read_text())
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TrackerActor"]
    return cls


def _awaits(fn: ast.AsyncFunctionDef) -> set[str]:
    found = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Await):
            found.add(f"await {ast.unparse(node.value).split('(')[0]}")
        elif isinstance(node, ast.AsyncFor):
            found.add(f"async for {ast.unparse(node.iter)}")
        elif isinstance(node, ast.AsyncWith):
            found.add(f"async with {ast.unparse(node)}")
    return found


def test_live_consumers_await_only_channel_cell_and_ticker() -> None:
    methods = {n.name: n for n in _actor_class().body if isinstance(n, ast.AsyncFunctionDef)}
    assert set(methods) == set(LIVE_CONSUMERS) | SHUTDOWN_ONLY
    for name, allowed in LIVE_CONSUMERS.items():
        assert _awaits(methods[name]) == allowed, name


def test_live_path_uses_only_send_nowait() -> None:
    for node in _actor_class().body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if node.name in SHUTDOWN_ONLY:
            continue
        for call in ast.walk(node):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute):
                assert call.func.attr not in ("send", "receive"), (node.name, ast.unparse(call))


async def test_errors_in_door_tick_and_finalize_are_tracker_crashes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig()

    def explode(*_: object) -> list[Effect]:
        raise TypeError("not encodable")

    rig.tracker.handle_door = explode  # type: ignore[method-assign]
    rig.tracker.tick = explode  # type: ignore[method-assign]
    rig.tracker.shutdown = explode  # type: ignore[method-assign]
    cell = LatestValue(DoorReading("unknown"))

    async def consume_door() -> None:
        with pytest.raises(TrackerCrashed):
            await rig.actor.consume_door(cell)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume_door)
        await trio.testing.wait_all_tasks_blocked()
        cell.set(DoorReading("open"))
    with pytest.raises(TrackerCrashed):
        await rig.actor.run_ticker()
    with pytest.raises(TrackerCrashed):
        rig.actor.finalize()
    assert isinstance(rig.actor.crashed, TypeError)
