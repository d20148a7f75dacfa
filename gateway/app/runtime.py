"""`gateway run`: the nursery tree, its channels and the ordered shutdown (README "Architecture").

One root nursery owns every task. Stages have their own cancel scopes so shutdown can stop them
in order (D15): ingest → tracker drain + finalization → gate worker → journal flush + fsync →
bounded egress drain → HTTP server. All channels are bounded with the `[queues]` capacities.
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from gateway import __version__
from gateway.app.actor import QueueGatePort, TrackerActor, TrackerCrashed
from gateway.app.clock import SystemClock
from gateway.app.http import HttpContext, serve_http
from gateway.app.latest import LatestValue
from gateway.app.livefeed import LiveFeedHub
from gateway.app.logs import log_event
from gateway.app.state import Components
from gateway.app.supervisor import supervise
from gateway.config.model import Config
from gateway.core.effects import Publish
from gateway.core.model import Clock, DoorReading
from gateway.core.tracker import Tracker
from gateway.io.acc_listener import serve_acc
from gateway.io.analysis_log import AnalysisRecord, run_analysis_log
from gateway.io.broker import run_broker
from gateway.io.egress import run_egress
from gateway.io.gate_http import HttpGate
from gateway.io.gate_link import GateLink
from gateway.io.gate_worker import GateJob, GateWorker
from gateway.io.journal import run_journal
from gateway.io.mqtt_ingress import run_mqtt_ingress
from gateway.io.rs485_poller import run_rs485_poller

log = logging.getLogger("gateway.runtime")

GC_GEN0_THRESHOLD = 5000  # README rule 7 (700 by default): fewer, still short, young collections
EGRESS_STARTUP_WAIT_S = 2.0  # start-up: wait at most this long for the egress connection
GATE_DRAIN_S = 1.0  # shutdown: how long the gate worker may finish queued commands
JOURNAL_CLOSE_S = 10.0  # shutdown: bound on the final flush + fsync
# shutdown: the egress drain ends at most this long after the stop request. interfaces.md §7
# bounds the drain by 5 s in total and S150 wants the process gone within 5.5 s of SIGTERM; the
# steps after the drain (HTTP stop ≤ HTTP_STOP_S) and the interpreter's own exit (~0.2 s with
# our imports, more on a loaded box) need the rest, so the drain gets 4.5 s
EGRESS_DEADLINE_S = 4.5
HTTP_STOP_S = 0.5  # shutdown: bound on hypercorn's graceful stop (GRACEFUL_STOP_S), then cancel


@attrs.define(slots=True)
class RunOptions:
    """Knobs for demo/sim/tests; production uses the defaults.

    The test hooks (S147, S149, S151, S152) change nothing when left at their defaults.
    """

    allow_control_without_token: bool = False
    install_signal_handlers: bool = True
    before_item: Callable[[object], None] | None = None  # tracker test hook (S152 raises)
    ingress_crashes: int = 0  # S151: the ingress task raises this many times at start
    # S151: every item received here crashes the running ingress task once
    crash_ingress: trio.MemoryReceiveChannel[object] | None = None
    # S147/S149 "tracker held": the events consumer stops after this many items (door
    # consumer and ticker keep running); queued items wait for `release_events` or shutdown
    hold_events_after: int | None = None
    release_events: trio.Event | None = None
    clock: Clock | None = None  # tests: a clock they can move (default SystemClock)
    ready: Callable[[Components], None] | None = None
    # process-level GC tuning after start-up (README rule 7); `gateway run` sets it — in-process
    # users (tests, sim) leave it off because gc.freeze() would pin their garbage for good
    tune_gc: bool = False


def tune_gc() -> None:
    """README rule 7: freeze the start-up heap and raise the generation-0 threshold.

    Measured by `gateway bench` (docs/performance.md): without it, full collections over the
    whole heap paused the loop 14–114 ms; with it the longest pause fell to ~30 ms.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 10, 10)


async def _run_then_set(fn: Callable[[], Awaitable[Any]], done: trio.Event) -> None:
    try:
        await fn()
    finally:
        done.set()


def _crash_first(n: int, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Test hook for S151: raise `n` times before running the real task."""
    left = [n]

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise RuntimeError("test hook: ingress crash")
        return await fn(*args, **kwargs)

    return wrapped


def _crash_on_request(
    requests: trio.MemoryReceiveChannel[object], fn: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    """Test hook for S151: run `fn`; each item from `requests` makes this run raise."""

    async def wrapped(
        *args: Any, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as n:
            value = await n.start(functools.partial(fn, *args))
            task_status.started(value)
            await requests.receive()
            raise RuntimeError("test hook: ingress crash")

    return wrapped


async def run_gateway(config: Config, options: RunOptions | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `Components.request_stop`); returns the exit code."""
    opts = options or RunOptions()
    clock = opts.clock or SystemClock()
    q = config.queues
    events_send, events_recv = trio.open_memory_channel[object](q.events)
    gate_send, gate_recv = trio.open_memory_channel[GateJob](q.gate)
    journal_send, journal_recv = trio.open_memory_channel[object](q.journeys)
    egress_send, egress_recv = trio.open_memory_channel[Publish](q.egress)
    analysis_send, analysis_recv = trio.open_memory_channel[AnalysisRecord](q.analysis)

    comp = Components.create(config, clock)
    comp.events_send, comp.gate_send, comp.egress_send = events_send, gate_send, egress_send
    comp.events_recv, comp.gate_recv = events_recv, gate_recv
    hub = LiveFeedHub(q.ws_client, config.http.max_ws_clients, comp.livefeed_stats)
    comp.hub = hub
    door = LatestValue(DoorReading("unknown", 0, 0, "rs485"))
    comp.door = door
    gate_port = QueueGatePort(gate_send)
    tracker = Tracker(config, clock, gate_port)
    comp.tracker = tracker
    actor = TrackerActor(
        tracker=tracker,
        site=config.site.id,
        gate_port=gate_port,
        journal_send=journal_send,
        egress_send=egress_send,
        egress_stats=comp.egress_stats,
        hub=hub,
        before_item=opts.before_item,
    )
    comp.actor = actor
    sup = comp.supervisor_stats
    worker = GateWorker(
        config.gate, config.site.id, clock, comp.gate_sender, comp.publish, comp.gate_stats
    )

    log_event(
        log, logging.INFO, "gateway_starting", version=__version__, site=config.site.id,
        config=config.path,
    )  # fmt: skip
    log_event(
        log, logging.INFO, "config_loaded", path=config.path, gate=config.gate.mode,
        mqtt=f"{config.mqtt.host}:{config.mqtt.port}", pos_zones=len(config.zones.pos_zones),
        broker=config.broker_enabled, rs485=config.rs485.enabled, warnings=len(config.warnings),
    )  # fmt: skip

    stop = comp.stop_requested
    hard_stop = trio.Event()
    http_shutdown = trio.Event()
    journal_done, egress_done, http_done = trio.Event(), trio.Event(), trio.Event()

    async with trio.open_nursery() as root:
        if opts.install_signal_handlers:
            root.start_soon(_watch_signals, stop, hard_stop)

        # --- output stage: HTTP, journal, egress, gate -----------------------------------
        if config.metrics.prometheus_port:
            ctx = HttpContext(
                config=config,
                clock=clock,
                comp=comp,
                allow_control_without_token=opts.allow_control_without_token,
            )
            comp.http_ctx = ctx

            async def http_task() -> None:
                await supervise("http", serve_http, ctx, http_shutdown, stats=sup)

            root.start_soon(_run_then_set, http_task, http_done)
        else:
            http_done.set()

        async def journal_task() -> None:
            await supervise(
                "journal", run_journal, config.egress, journal_recv, comp.journal_stats, stats=sup
            )

        async def egress_task() -> None:
            await supervise(
                "egress",
                _egress_entry(config, egress_recv, comp),
                stats=sup,
            )

        if config.broker is not None and config.broker.enabled:
            # the embedded broker must listen before the MQTT clients connect to it
            await root.start(
                functools.partial(
                    supervise, "broker", run_broker, config.broker, comp.broker_stats, stats=sup
                )
            )
        root.start_soon(_run_then_set, journal_task, journal_done)
        root.start_soon(_run_then_set, egress_task, egress_done)
        root.start_soon(comp.run_summary_log)

        gate_scope = trio.CancelScope()

        async def gate_stage() -> None:
            with gate_scope:
                async with trio.open_nursery() as n:
                    link = comp.gate_sender
                    if isinstance(link, GateLink):
                        n.start_soon(lambda: supervise("gate_link", link.run, stats=sup))
                    n.start_soon(
                        lambda: supervise(
                            "gate_worker", _worker_entry(worker, gate_recv), stats=sup
                        )
                    )

        root.start_soon(gate_stage)

        # --- tracker actor ----------------------------------------------------------------
        tracker_scope = trio.CancelScope()
        tracker_done = trio.Event()

        async def consume_events() -> None:
            if opts.hold_events_after is not None:  # test hook: "the tracker held"
                await actor.consume_events(events_recv, limit=opts.hold_events_after)
                if opts.release_events is None:
                    await trio.sleep_forever()  # held until shutdown drains the channel
                else:
                    await opts.release_events.wait()
            await actor.consume_events(events_recv)

        async def tracker_stage() -> None:
            try:
                with tracker_scope:
                    async with trio.open_nursery() as n:
                        n.start_soon(consume_events)
                        n.start_soon(actor.consume_door, door)
                        n.start_soon(actor.run_ticker)
            except* TrackerCrashed:
                log.critical(
                    "tracker_crashed", exc_info=actor.crashed, extra={"fields": {"fatal": True}}
                )
                comp.fatal = True
                stop.set()
            finally:
                tracker_done.set()

        root.start_soon(tracker_stage)

        # --- ingest stage -----------------------------------------------------------------
        ingest_scope = trio.CancelScope()
        ingest_done = trio.Event()

        async def ingest_stage() -> None:
            try:
                with ingest_scope:
                    async with trio.open_nursery() as n:
                        ingress: Callable[..., Awaitable[Any]] = run_mqtt_ingress
                        if opts.crash_ingress is not None:
                            ingress = _crash_on_request(opts.crash_ingress, ingress)
                        if opts.ingress_crashes:
                            ingress = _crash_first(opts.ingress_crashes, ingress)
                        analysis = analysis_send if config.analysis_log.enabled else None
                        tasks: list[tuple[str, Callable[..., Awaitable[Any]], tuple[Any, ...]]] = [
                            ("mqtt_ingress", ingress, (
                                config, events_send, egress_send, comp.ingress_stats,
                                comp.xovis_stats, analysis, comp.egress_stats,
                            )),
                        ]  # fmt: skip
                        if config.acc.listener_enabled:
                            acc_args = (config.acc, events_send, comp.acc_stats)
                            tasks.append(("acc_listener", serve_acc, acc_args))
                        if config.rs485.enabled:
                            rs485_args = (config.rs485, door, comp.rs485_stats)
                            poller = _after_egress_connects(config, comp, run_rs485_poller)
                            tasks.append(("rs485", poller, rs485_args))
                        if config.analysis_log.enabled:
                            analysis_args = (
                                config.analysis_log, config.site.id, analysis_recv,
                                comp.analysis_stats,
                            )  # fmt: skip
                            tasks.append(("analysis_log", run_analysis_log, analysis_args))
                        for name, fn, args in tasks:
                            n.start_soon(functools.partial(supervise, name, fn, *args, stats=sup))
            finally:
                ingest_done.set()

        root.start_soon(ingest_stage)
        comp.started_mono_ns = time.monotonic_ns()
        if opts.ready is not None:
            opts.ready(comp)
        if opts.tune_gc:
            tune_gc()

        # --- wait for a stop, then the ordered shutdown (D15) -----------------------------
        await stop.wait()
        t0 = time.monotonic()
        egress_deadline = trio.current_time() + EGRESS_DEADLINE_S
        comp.shutting_down = True
        if comp.http_ctx is not None:
            comp.http_ctx.shutting_down = True
        log_event(log, logging.INFO, "shutdown_started", fatal=comp.fatal)
        ingest_scope.cancel()
        await ingest_done.wait()
        tracker_scope.cancel()
        await tracker_done.wait()
        actor.begin_shutdown()
        if not comp.fatal:
            try:
                drained = actor.drain(events_recv)
                actor.finalize()
            except TrackerCrashed:
                log.critical("tracker_crashed_during_drain", exc_info=actor.crashed)
                comp.fatal = True
            else:
                log_event(log, logging.INFO, "shutdown_drained", events=drained)
        with trio.move_on_after(JOURNAL_CLOSE_S):
            # what did not fit the journal/egress channels during the drain (journal first)
            await actor.flush_overflow()
        await _wait_gate_worker_idle(gate_recv)
        gate_scope.cancel()
        if isinstance(comp.gate_sender, HttpGate):
            with trio.move_on_after(1.0, shield=True):
                await comp.gate_sender.aclose()
        journal_send.close()
        with trio.move_on_after(JOURNAL_CLOSE_S):
            await journal_done.wait()
        log_event(log, logging.INFO, "shutdown_journal_flushed", lines=comp.journal_stats.lines)
        egress_send.close()
        if hard_stop.is_set():
            log_event(log, logging.WARNING, "shutdown_egress_drain_skipped")
        else:
            with trio.move_on_at(egress_deadline):
                # until the egress task is done, a second signal arrives, or the deadline
                async with trio.open_nursery() as n:
                    for event in (egress_done, hard_stop):
                        n.start_soon(_cancel_when_set, event, n.cancel_scope)
            if not egress_done.is_set():
                log_event(
                    log, logging.WARNING, "shutdown_egress_drain_incomplete",
                    backlog=comp.egress_stats.backlog,
                )  # fmt: skip
        http_shutdown.set()
        with trio.move_on_after(HTTP_STOP_S):
            await http_done.wait()
        code = 1 if (comp.fatal or hard_stop.is_set()) else 0
        log_event(
            log, logging.INFO, "shutdown_complete", exit_code=code,
            duration_ms=int((time.monotonic() - t0) * 1000),
        )  # fmt: skip
        root.cancel_scope.cancel()
    return code


async def _wait_gate_worker_idle(gate_recv: trio.MemoryReceiveChannel[GateJob]) -> None:
    """Shutdown step 4: let the worker finish queued commands (and the one it is writing),
    bounded by GATE_DRAIN_S. Idle = channel empty and the worker waiting in `receive`."""
    with trio.move_on_after(GATE_DRAIN_S):
        # no event exists for "channel empty": poll the statistics, bounded by GATE_DRAIN_S
        while True:
            st = gate_recv.statistics()
            if st.current_buffer_used == 0 and st.tasks_waiting_receive > 0:
                return
            await trio.sleep(0.01)


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _after_egress_connects(
    config: Config, comp: Components, fn: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    """Start `fn` once the egress client is connected, waiting at most EGRESS_STARTUP_WAIT_S.

    The first door reading is a QoS 0 publish: without this it is dropped as `disconnected` at
    every start, and consumers never learn the starting door state. Only the RS485 poller waits;
    payments and sensor input start at once.
    """

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        if config.mqtt_egress.enabled:
            with trio.move_on_after(EGRESS_STARTUP_WAIT_S):
                while not comp.egress_stats.connected:  # noqa: ASYNC110 - no event exists
                    await trio.sleep(0.01)
        return await fn(*args, **kwargs)

    return wrapped


def _egress_entry(
    config: Config, receive: trio.MemoryReceiveChannel[Publish], comp: Components
) -> Callable[..., Awaitable[None]]:
    async def entry(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await run_egress(
            config,
            receive,
            comp.egress_stats,
            livefeed=comp.hub.publish if comp.hub is not None else None,
            metrics_payload=comp.metrics_payload,
            task_status=task_status,
        )

    return entry


def _worker_entry(
    worker: GateWorker, receive: trio.MemoryReceiveChannel[GateJob]
) -> Callable[..., Awaitable[None]]:
    async def entry(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await worker.run(receive)

    return entry


async def _watch_signals(stop: trio.Event, hard_stop: trio.Event) -> None:
    """First SIGTERM/SIGINT → graceful stop; a second one skips the egress drain (exit 1)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if not stop.is_set():
                log_event(log, logging.INFO, "shutdown_signal", signal=signal.Signals(signum).name)
                stop.set()
            else:
                log_event(log, logging.WARNING, "shutdown_second_signal")
                hard_stop.set()


def main_run(config: Config, options: RunOptions | None = None) -> int:
    """`gateway run`: 0 after a graceful stop, 1 after a tracker crash or any other fatal error
    (the journal task flushes in its shielded `finally` before the error gets here)."""
    sys.setswitchinterval(0.0005)  # README rule 7: bound the GIL hand-off from worker threads
    opts = options or RunOptions()
    opts.tune_gc = True
    try:
        return trio.run(run_gateway, config, opts)
    except Exception:  # the last boundary: report it as a runtime failure (exit code 1)
        log.critical("gateway_failed", exc_info=True)
        return 1
