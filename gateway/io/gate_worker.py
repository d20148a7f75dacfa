"""Gate worker: turns open commands from the gate channel into controller writes (behaviour.md §12).

One command at a time: measure queue delay, drop stale commands, fail at once when the TCP link
is down (never queued for a reconnect, D12), write, and publish `cmd_sent` only after the write
returned — or `cmd_failed` with its reason. `open_manually` is the POST /gate/open path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import attrs
import trio

from gateway.app.logs import RateLimiter, log_event
from gateway.codecs.cloudplus import encode_open
from gateway.config.model import GateConfig
from gateway.core.effects import Publish
from gateway.core.model import Clock, GateCmd
from gateway.core.stats import BUCKETS_F, BUCKETS_R, Histogram, RollingWindow
from gateway.io.gate_http import HttpGateError
from gateway.io.gate_link import GateNotConnected, GateWriteError, GateWriteTimeout

logger = logging.getLogger(__name__)

QUEUE_DELAY_WARN_US = 1000  # behaviour.md §12: WARN (rate-limited) above 1000 µs
SRC = "gate_worker"

# cmd_failed reasons (interfaces.md §7; POST /gate/open adds queue_full, timeout, shutting_down)
STALE = "stale"
NOT_CONNECTED = "not_connected"
WRITE_TIMEOUT = "write_timeout"
WRITE_ERROR = "write_error"
HTTP_STATUS = "http_status"
HTTP_ERROR = "http_error"
# label values of gateway_gate_cmds_failed_total (interfaces.md §9.2); stale is counted apart
FAILED_REASONS = (NOT_CONNECTED, WRITE_TIMEOUT, WRITE_ERROR, HTTP_STATUS, HTTP_ERROR)
QUEUE_FULL = "queue_full"
TIMEOUT = "timeout"
SHUTTING_DOWN = "shutting_down"


@runtime_checkable
class HttpSender(Protocol):
    """HTTP mode (`HttpGate`): one GET per command, returns the status."""

    async def request(self) -> int: ...


class LinkSender(Protocol):
    """TCP mode (`GateLink`)."""

    @property
    def connected(self) -> bool: ...

    async def write(self, data: bytes) -> None: ...


@attrs.frozen
class GateOutcome:
    """What happened to one command; `latency_us` = trigger → bytes written / response received."""

    ok: bool
    reason: str | None
    latency_us: int
    http_status: int | None = None


@attrs.frozen
class GateJob:
    cmd: GateCmd
    reply: Callable[[GateOutcome], None] | None = None


def _counter() -> dict[str, int]:
    return {}


@attrs.define
class GateStats:
    """Plain-int gate metrics read by the Prometheus collector at scrape time (rule 7)."""

    cmds_sent: int = 0
    cmds_dropped: int = 0  # worker-side drops: stale, not connected, write/HTTP failures
    cmds_stale: int = 0
    cmds_failed: dict[str, int] = attrs.field(factory=_counter)
    link_connected: int = 0
    connects: dict[str, int] = attrs.field(factory=lambda: {"ok": 0, "failed": 0})
    heartbeats: int = 0
    heartbeat_acks: int = 0
    rx_bad_frames: int = 0
    cloudplus_queue_depth: int = 0
    last_http_failed: bool = False
    queue_delay_us: Histogram = attrs.field(factory=lambda: Histogram(BUCKETS_R))
    send_latency_us: Histogram = attrs.field(factory=lambda: Histogram(BUCKETS_R))
    enqueue_to_send_us: Histogram = attrs.field(factory=lambda: Histogram(BUCKETS_R))
    recv_to_wire_us: Histogram = attrs.field(factory=lambda: Histogram(BUCKETS_F))
    queue_delay_window: RollingWindow = attrs.field(factory=RollingWindow)
    send_latency_window: RollingWindow = attrs.field(factory=RollingWindow)
    enqueue_to_send_window: RollingWindow = attrs.field(factory=RollingWindow)
    recv_to_wire_window: RollingWindow = attrs.field(factory=RollingWindow)


@attrs.define(eq=False)
class GateWorker:
    """The gate channel's one consumer; `sender` is a `GateLink` (tcp) or an `HttpGate` (http)."""

    _config: GateConfig
    _site: str
    _clock: Clock
    _sender: LinkSender | HttpSender
    _publish: Callable[[Publish], object]
    _stats: GateStats
    _frame: bytes = attrs.field(init=False)
    _http: HttpSender | None = attrs.field(init=False, default=None)
    _link: LinkSender | None = attrs.field(init=False, default=None)
    _warn: RateLimiter = attrs.field(init=False, factory=RateLimiter)

    def __attrs_post_init__(self) -> None:
        self._frame = encode_open(self._config.door)
        if isinstance(self._sender, HttpSender):  # decided once, not per command
            self._http = self._sender
        else:
            self._link = self._sender

    async def run(self, receive: trio.MemoryReceiveChannel[GateJob]) -> None:
        async for job in receive:
            outcome = await self.handle(job)
            if job.reply is not None:
                job.reply(outcome)

    async def handle(self, job: GateJob) -> GateOutcome:
        """Process one command to its outcome (also publishes and counts)."""
        cmd = job.cmd
        pickup_ns = self._clock.mono_ns()
        now_ms = self._clock.mono_ms()
        queue_delay_us = (pickup_ns - cmd.enqueued_ns) // 1000
        self._stats.queue_delay_us.observe(queue_delay_us)
        self._stats.queue_delay_window.observe(now_ms, queue_delay_us)
        if queue_delay_us > QUEUE_DELAY_WARN_US:
            self._warn.log(
                logger, logging.WARNING, "queue_delay", "gate_queue_delay_high",
                queue_delay_us=queue_delay_us,
            )  # fmt: skip
        age_ms = (pickup_ns - cmd.enqueued_ns) // 1_000_000  # integer ms (behaviour.md §12)
        if age_ms > self._config.max_command_age_ms:
            self._stats.cmds_stale += 1
            return self._failed(cmd, STALE, pickup_ns, age_ms=age_ms)
        link, http = self._link, self._http
        start_ns = self._clock.mono_ns()
        http_status: int | None = None
        try:
            if http is not None:
                http_status = await http.request()
            elif link is None or not link.connected:
                return self._failed(cmd, NOT_CONNECTED, start_ns)
            else:
                await link.write(self._frame)
        except GateNotConnected:
            return self._failed(cmd, NOT_CONNECTED, self._clock.mono_ns())
        except GateWriteTimeout:
            return self._failed(cmd, WRITE_TIMEOUT, self._clock.mono_ns())
        except GateWriteError:
            return self._failed(cmd, WRITE_ERROR, self._clock.mono_ns())
        except HttpGateError:
            self._stats.last_http_failed = True
            return self._failed(cmd, HTTP_ERROR, self._clock.mono_ns())
        done_ns = self._clock.mono_ns()
        if http_status is not None:
            self._stats.last_http_failed = not 200 <= http_status < 300
            if self._stats.last_http_failed:
                return self._failed(cmd, HTTP_STATUS, done_ns, http_status=http_status)
        return self._sent(cmd, queue_delay_us, start_ns, done_ns)

    def _sent(self, cmd: GateCmd, queue_delay_us: int, start_ns: int, done_ns: int) -> GateOutcome:
        stats = self._stats
        now_ms = self._clock.mono_ms()
        send_latency_us = (done_ns - start_ns) // 1000
        enqueue_to_send_us = (done_ns - cmd.enqueued_ns) // 1000
        recv_to_wire_us = (done_ns - cmd.trigger_recv_ns) // 1000
        stats.cmds_sent += 1
        stats.send_latency_us.observe(send_latency_us)
        stats.send_latency_window.observe(now_ms, send_latency_us)
        stats.enqueue_to_send_us.observe(enqueue_to_send_us)
        stats.enqueue_to_send_window.observe(now_ms, enqueue_to_send_us)
        stats.recv_to_wire_us.observe(recv_to_wire_us)
        stats.recv_to_wire_window.observe(now_ms, recv_to_wire_us)
        payload = self._payload("cmd_sent", cmd)
        payload["queue_delay_us"] = queue_delay_us
        payload["send_latency_us"] = send_latency_us
        payload["enqueue_to_send_us"] = enqueue_to_send_us
        payload["recv_to_wire_us"] = recv_to_wire_us
        payload["trigger"] = cmd.src
        self._publish(Publish("gate", payload))
        log_event(
            logger, logging.INFO, "gate_cmd_sent", tid=cmd.track_id, trigger=cmd.src,
            recv_to_wire_us=recv_to_wire_us, send_latency_us=send_latency_us,
        )  # fmt: skip
        return GateOutcome(ok=True, reason=None, latency_us=recv_to_wire_us)

    def _failed(
        self, cmd: GateCmd, reason: str, at_ns: int, *, http_status: int | None = None, **log: Any
    ) -> GateOutcome:
        stats = self._stats
        stats.cmds_dropped += 1
        if reason != STALE:  # stale has its own counter (gateway_gate_cmds_stale_total)
            stats.cmds_failed[reason] = stats.cmds_failed.get(reason, 0) + 1
        payload = self._payload("cmd_failed", cmd)
        payload["reason"] = reason
        payload["trigger"] = cmd.src
        if http_status is not None:
            payload["http_status"] = http_status
        self._publish(Publish("gate", payload))
        log_event(
            logger, logging.INFO, "gate_cmd_failed", tid=cmd.track_id, trigger=cmd.src,
            reason=reason, **({"http_status": http_status} if http_status is not None else {}),
            **log,
        )  # fmt: skip
        latency_us = max(0, (at_ns - cmd.trigger_recv_ns) // 1000)
        return GateOutcome(ok=False, reason=reason, latency_us=latency_us, http_status=http_status)

    def _payload(self, state: str, cmd: GateCmd) -> dict[str, Any]:
        """`site, ts, state, tid?, src` — the head of every gate payload (interfaces.md §7)."""
        payload: dict[str, Any] = {"site": self._site, "ts": self._clock.wall_ms(), "state": state}
        if cmd.track_id != 0:  # manual opens (track id 0, src http) carry no tid
            payload["tid"] = cmd.track_id
        payload["src"] = SRC
        return payload


async def open_manually(
    send: trio.MemorySendChannel[GateJob], clock: Clock, wait_s: float
) -> GateOutcome:
    """POST /gate/open: enqueue a manual open (track 0, src http) and wait ≤ `wait_s` for it.

    The caller counts `gateway_gate_commands_total` / publishes `cmd_enqueued` or `cmd_dropped`
    from the outcome (`queue_full` means it was never enqueued).
    """
    now_ns = clock.mono_ns()
    cmd = GateCmd(track_id=0, src="http", trigger_recv_ns=now_ns, enqueued_ns=now_ns)
    outcomes: list[GateOutcome] = []
    done = trio.Event()

    def reply(outcome: GateOutcome) -> None:
        outcomes.append(outcome)
        done.set()

    try:
        send.send_nowait(GateJob(cmd, reply))
    except trio.WouldBlock:
        await trio.lowlevel.checkpoint()
        return GateOutcome(ok=False, reason=QUEUE_FULL, latency_us=0)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        await trio.lowlevel.checkpoint()
        return GateOutcome(ok=False, reason=SHUTTING_DOWN, latency_us=0)
    with trio.move_on_after(wait_s):
        await done.wait()
    if outcomes:
        return outcomes[0]
    return GateOutcome(ok=False, reason=TIMEOUT, latency_us=(clock.mono_ns() - now_ns) // 1000)
