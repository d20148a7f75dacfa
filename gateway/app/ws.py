"""Live feed over WebSocket, `WS /ws` (interfaces.md §8): hello, hub messages, health, heartbeat.

Each client gets three tasks. The writer sends `hello`, then the client's hub queue, plus
`health` and `heartbeat` on the client's own timers and `dropped` once an overflowed queue has
room again. It runs in the `writers` nursery, which outlives the handlers (see `_Session.run`).
The reader only watches for the disconnect. The watchdog drops a client whose send has been
blocked for longer than `send_block_close_s` (close 1008). The ticks are per client and bypass
the queue, so an overflowing client still gets `health` and `heartbeat`. The hub
(`LiveFeedHub.publish`) never waits for any of this.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import msgspec
import trio
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from gateway import __version__
from gateway.app.livefeed import FeedClient, TooManyClients, frame
from gateway.app.logs import log_event
from gateway.config.model import ZonesConfig

if TYPE_CHECKING:  # http.py imports this module to mount the route
    from gateway.app.http import HttpContext

log = logging.getLogger("gateway.ws")

WS_PATH = "/ws"
# close codes, RFC 6455 §7.4.1 / IANA registry
CLOSE_POLICY_VIOLATION = 1008  # interfaces.md §8: a send blocked > 5 s
CLOSE_INTERNAL_ERROR = 1011  # the runtime built no hub
CLOSE_TRY_AGAIN_LATER = 1013  # interfaces.md §8: more than [http].max_ws_clients
# what a send raises once the peer or the session is gone (starlette: WebSocketDisconnect on
# OSError, WebSocketDisconnected after a close; trio: the hub closed the client's queue)
SOCKET_GONE = (
    WebSocketDisconnect,
    WebSocketDisconnected,
    trio.ClosedResourceError,
    trio.BrokenResourceError,
)


@attrs.frozen
class FeedTiming:
    """Every wait of a feed client, in seconds (defaults: interfaces.md §8)."""

    health_interval_s: float = 5.0
    heartbeat_interval_s: float = 15.0
    send_block_close_s: float = 5.0
    # the handshake answer and the close frame are single small writes
    handshake_timeout_s: float = 5.0
    close_timeout_s: float = 1.0


@attrs.define(slots=True)
class FeedCounters:
    """Per-route counters (the hub keeps `clients` and `dropped`)."""

    connected: int = 0
    refused: int = 0  # closed 1013
    closed_slow: int = 0  # closed 1008


def zone_table(zones: ZonesConfig) -> dict[str, dict[str, str]]:
    """`{id: {name, role}}` for every configured zone and line (JSON keys are strings)."""
    ids: list[int] = [*zones.pos_zones, *zones.dwell_zones, zones.gate_zone, zones.exit_line]
    ids += [z for z in (zones.entry_line, zones.approach_line, zones.store_zone) if z is not None]
    ids += list(zones.names)
    return {str(z): {"name": zones.name(z), "role": zones.role(z)} for z in sorted(set(ids))}


def _door(ctx: HttpContext) -> dict[str, Any]:
    if ctx.comp.door is None:
        return {"status": "unknown", "fault": 0, "alarm": 0, "source": "rs485"}
    reading = ctx.comp.door_reading()
    return {
        "status": reading.status,
        "fault": reading.fault,
        "alarm": reading.alarm,
        "source": reading.source,
    }


def hello_message(ctx: HttpContext) -> bytes:
    data = {
        "version": __version__,
        "site": ctx.config.site.id,
        "zones": zone_table(ctx.config.zones),
        "door": _door(ctx),
        "health": ctx.comp.health()[0],
    }
    return frame("hello", ctx.clock.wall_ms(), msgspec.json.encode(data))


def health_message(ctx: HttpContext) -> bytes:
    return frame("health", ctx.clock.wall_ms(), msgspec.json.encode(ctx.comp.health()[0]))


@attrs.define(slots=True, eq=False)
class _Session:
    ws: WebSocket
    ctx: HttpContext
    client: FeedClient
    timing: FeedTiming
    sending_since: float | None = None  # trio.current_time() when the current send began
    send_started: trio.Event = attrs.field(factory=trio.Event)
    stuck: bool = False

    async def run(self, writers: trio.Nursery, release: Callable[[], None]) -> None:
        """Until the client leaves or a send stays blocked (then `release` the hub slot at once).

        The writer runs in `writers`, not under this handler: hypercorn shields its socket
        writes, so a writer blocked on a peer that stopped reading cannot be cancelled, only
        woken by closing the socket, which hypercorn does once this handler has returned.
        """
        writer_scope = trio.CancelScope()
        try:
            async with trio.open_nursery() as nursery:
                writers.start_soon(self._write, writer_scope, nursery.cancel_scope)
                nursery.start_soon(self._read_until_disconnect, nursery.cancel_scope)
                await self._wait_send_blocked()
                self.stuck = True
                release()
                nursery.cancel_scope.cancel()
        finally:
            writer_scope.cancel()

    async def _send(self, message: bytes) -> None:
        self.sending_since = trio.current_time()
        self.send_started.set()
        try:
            await self.ws.send_text(message.decode())
        finally:
            self.sending_since = None

    async def _write(self, scope: trio.CancelScope, session: trio.CancelScope) -> None:
        """hello, then the queue and the ticks; ends the session when the socket is gone."""
        timing = self.timing
        receive = self.client.receive
        with scope:
            try:
                await self._send(hello_message(self.ctx))
                now = trio.current_time()
                next_health = now + timing.health_interval_s
                next_beat = now + timing.heartbeat_interval_s
                while True:
                    stats = receive.statistics()
                    if self.client.pending_drops and (
                        stats.current_buffer_used < stats.max_buffer_size
                    ):
                        count, self.client.pending_drops = self.client.pending_drops, 0
                        ts = self.ctx.clock.wall_ms()
                        await self._send(frame("dropped", ts, b'{"count":%d}' % count))
                    message: bytes | None = None
                    with trio.move_on_at(min(next_health, next_beat)):
                        message = await receive.receive()
                    if message is not None:
                        await self._send(message)
                    now = trio.current_time()
                    if now >= next_health:
                        await self._send(health_message(self.ctx))
                        next_health = now + timing.health_interval_s
                    if now >= next_beat:
                        await self._send(frame("heartbeat", self.ctx.clock.wall_ms(), b"{}"))
                        next_beat = now + timing.heartbeat_interval_s
            except SOCKET_GONE:
                session.cancel()

    async def _read_until_disconnect(self, done: trio.CancelScope) -> None:
        """Client frames are ignored; the feed is one-way."""
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                done.cancel()
                return

    async def _wait_send_blocked(self) -> None:
        """Return once one send has been in progress for `send_block_close_s`."""
        limit = self.timing.send_block_close_s
        while True:
            since = self.sending_since
            if since is None:
                self.send_started = trio.Event()
                await self.send_started.wait()
                continue
            deadline = since + limit
            if trio.current_time() >= deadline:
                return
            await trio.sleep_until(deadline)


async def _close(ws: WebSocket, code: int, reason: str, timing: FeedTiming) -> None:
    with trio.move_on_after(timing.close_timeout_s):
        with contextlib.suppress(*SOCKET_GONE):
            await ws.close(code, reason)


async def serve_feed_client(
    ws: WebSocket,
    ctx: HttpContext,
    writers: trio.Nursery,
    timing: FeedTiming,
    counters: FeedCounters,
) -> None:
    """Accept, subscribe (or refuse with 1013), run the session, close 1008 if it was stuck."""
    with trio.move_on_after(timing.handshake_timeout_s) as handshake:
        await ws.accept()
    if handshake.cancelled_caught:
        return
    hub = ctx.comp.hub
    if hub is None:
        await _close(ws, CLOSE_INTERNAL_ERROR, "live feed unavailable", timing)
        return
    with contextlib.ExitStack() as stack:
        try:
            client = stack.enter_context(hub.subscribe())
        except TooManyClients:
            counters.refused += 1
            ctx.limiter.log(
                log, logging.WARNING, "ws_refused", "ws_client_refused",
                max_clients=hub.max_clients, refused_total=counters.refused,
            )  # fmt: skip
            await _close(ws, CLOSE_TRY_AGAIN_LATER, "too many clients", timing)
            return
        counters.connected += 1
        peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
        log_event(log, logging.INFO, "ws_client_connected", peer=peer, clients=hub.stats.clients)

        def forget_blocked_client() -> None:
            stack.close()  # leave the hub now: the queue stops filling, the slot is free
            counters.closed_slow += 1
            log_event(
                log, logging.WARNING, "ws_client_closed_slow", peer=peer,
                blocked_s=timing.send_block_close_s, closed_slow_total=counters.closed_slow,
            )  # fmt: skip

        session = _Session(ws, ctx, client, timing)
        await session.run(writers, forget_blocked_client)
    if session.stuck:
        # the close frame queues behind the blocked one; a peer that never reads does not get
        # it: after `close_timeout_s` we return and hypercorn closes the socket
        await _close(ws, CLOSE_POLICY_VIOLATION, "send blocked", timing)
    else:
        log_event(log, logging.INFO, "ws_client_disconnected", peer=peer, clients=hub.stats.clients)


def ws_routes(
    ctx: HttpContext,
    writers: trio.Nursery,
    timing: FeedTiming | None = None,
    counters: FeedCounters | None = None,
) -> list[BaseRoute]:
    """The `/ws` route. `writers` must outlive the server (open it around `hypercorn.serve`):
    each client's writer runs there, see `_Session.run`. `timing` defaults to the spec values."""
    feed_timing = timing if timing is not None else FeedTiming()
    feed_counters = counters if counters is not None else FeedCounters()

    async def endpoint(ws: WebSocket) -> None:
        await serve_feed_client(ws, ctx, writers, feed_timing, feed_counters)

    return [WebSocketRoute(WS_PATH, endpoint)]
