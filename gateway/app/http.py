"""HTTP server: hypercorn (Trio worker) + starlette — health, metrics, control routes (§8).

The routes only move data: `/acc/simulate` offers an `AccInput` to the events channel with
`send_nowait`, `/door/simulate` sets the door cell, `/gate/open` goes through the gate worker and
answers with its real outcome. Control routes need the bearer token (constant-time compare);
without a configured token they answer 403 unless the caller (demo/sim) allowed them.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve as hyper_serve
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.app.dashboard import dashboard_routes
from gateway.app.logs import RateLimiter
from gateway.app.state import Components
from gateway.app.ws import ws_routes
from gateway.config.model import Config
from gateway.core.effects import Publish
from gateway.core.model import DOOR_STATUSES, AccInput, Clock, DoorReading, GateCmd
from gateway.io.gate_worker import GateJob, GateOutcome

log = logging.getLogger("gateway.http")

Endpoint = Callable[[Request], Awaitable[Response]]

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
}
OPEN_WAIT_EXTRA_MS = 1000  # /gate/open waits for the worker ≤ write/HTTP timeout + 1000 ms (§8)
# shutdown is the last step of D15 (target < 2 s; S150 < 5.5 s): in-flight requests get this long
GRACEFUL_STOP_S = 0.25


@attrs.define(slots=True, eq=False)
class HttpContext:
    """Everything the routes touch, handed in by the runtime (no globals)."""

    config: Config
    clock: Clock
    comp: Components
    allow_control_without_token: bool = False
    shutting_down: bool = False
    limiter: RateLimiter = attrs.field(factory=RateLimiter)


def _json(body: dict[str, Any], status: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**CORS, **headers})


def _control_denied(ctx: HttpContext, request: Request) -> JSONResponse | None:
    if ctx.shutting_down:
        return _json({"ok": False, "error": "shutting_down"}, 503)
    token = ctx.config.http.token
    if token is None:
        if ctx.allow_control_without_token:
            return None
        return _json({"ok": False, "error": "control_disabled"}, 403)
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode(), token.encode()
    ):
        return _json({"ok": False, "error": "unauthorized"}, 401, **{"WWW-Authenticate": "Bearer"})
    return None


def _gate_payload(ctx: HttpContext, state: str, **extra: object) -> Publish:
    payload: dict[str, object] = {"site": ctx.config.site.id, "ts": ctx.clock.wall_ms()}
    payload.update(state=state, src="http", **extra)
    return Publish("gate", payload)


async def _open_manually(ctx: HttpContext, wait_s: float) -> GateOutcome:
    """Enqueue a manual open (track 0, src http), publish `cmd_enqueued`/`cmd_dropped`, and wait
    for the worker's outcome (interfaces.md §8 `POST /gate/open`)."""
    now_ns = ctx.clock.mono_ns()
    cmd = GateCmd(track_id=0, src="http", trigger_recv_ns=now_ns, enqueued_ns=now_ns)
    done = trio.Event()
    outcomes: list[GateOutcome] = []

    def reply(outcome: GateOutcome) -> None:
        outcomes.append(outcome)
        done.set()

    manual = ctx.comp.manual_stats
    assert ctx.comp.gate_send is not None
    try:
        ctx.comp.gate_send.send_nowait(GateJob(cmd, reply))
    except trio.WouldBlock:
        manual.dropped += 1
        ctx.comp.publish(_gate_payload(ctx, "cmd_dropped", reason="queue_full"))
        return GateOutcome(ok=False, reason="queue_full", latency_us=0)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        return GateOutcome(ok=False, reason="shutting_down", latency_us=0)
    manual.accepted += 1
    ctx.comp.publish(_gate_payload(ctx, "cmd_enqueued"))
    with trio.move_on_after(wait_s):
        await done.wait()
    if outcomes:
        return outcomes[0]
    return GateOutcome(
        ok=False, reason="timeout", latency_us=(ctx.clock.mono_ns() - now_ns) // 1000
    )


def build_app(ctx: HttpContext, feed_writers: trio.Nursery) -> Starlette:
    """The app; `feed_writers` runs each WS client's sender outside its handler (see ws.py)."""

    async def health(_: Request) -> Response:
        body, status = ctx.comp.health()
        return JSONResponse(body, status_code=status)

    async def metrics(_: Request) -> Response:
        return Response(await ctx.comp.metrics_text(), media_type=METRICS_CONTENT_TYPE)

    def control(route: Callable[[Request], Awaitable[Response]]) -> Endpoint:
        """POST route + its OPTIONS preflight on one Route, so a 405 lists both in `Allow`."""

        async def endpoint(request: Request) -> Response:
            if request.method == "OPTIONS":
                return Response(status_code=200, headers=CORS)
            return await route(request)

        return endpoint

    async def gate_open(request: Request) -> Response:
        denied = _control_denied(ctx, request)
        if denied is not None:
            return denied
        gate = ctx.config.gate
        wait_ms = (gate.write_timeout_ms if gate.mode == "tcp" else gate.timeout_ms) + (
            OPEN_WAIT_EXTRA_MS
        )
        outcome = await _open_manually(ctx, wait_ms / 1000)
        if outcome.ok:
            return _json({"ok": True, "latency_us": outcome.latency_us})
        return _json({"ok": False, "error": outcome.reason or "unknown"}, 503)

    async def acc_simulate(request: Request) -> Response:
        denied = _control_denied(ctx, request)
        if denied is not None:
            return denied
        pos = request.query_params.get("pos", "POS_1")
        zones = ctx.config.zones
        if zones.zone_id_by_name(pos) is None:
            valid = [zones.name(z) for z in (*zones.pos_zones, *zones.dwell_zones)]
            return _json({"ok": False, "error": "unknown_pos", "valid": valid}, 400)
        receipt = request.query_params.get("receipt") or None
        ctx.comp.acc_stats.events_received += 1
        item = AccInput(recv_ns=ctx.clock.mono_ns(), ip="simulated", receipt=receipt, pos=pos)
        try:
            ctx.comp.events_send.send_nowait(item)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            acc = ctx.comp.acc_stats
            acc.events_dropped += 1
            ctx.limiter.log(
                log, logging.WARNING, "acc_full", "acc_event_dropped", ip="simulated",
                dropped_total=acc.events_dropped,
            )  # fmt: skip
            return _json({"ok": False, "error": "channel_full"}, 503)
        return _json({"ok": True, "pos": pos, "message": "ACC event sent to tracker"})

    async def door_simulate(request: Request) -> Response:
        denied = _control_denied(ctx, request)
        if denied is not None:
            return denied
        status = request.query_params.get("status", "")
        if status not in DOOR_STATUSES:
            valid = list(DOOR_STATUSES)
            return _json({"ok": False, "error": "invalid_status", "valid": valid}, 400)
        current, _ = ctx.comp.door.get()
        ctx.comp.door.set(DoorReading(status, current.fault, current.alarm, "simulate"))
        return _json({"ok": True, "status": status})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse(
            {"ok": False, "error": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    routes = [
        *dashboard_routes(),
        *ws_routes(ctx, feed_writers),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/gate/open", control(gate_open), methods=["POST", "OPTIONS"]),
        Route("/acc/simulate", control(acc_simulate), methods=["POST", "OPTIONS"]),
        Route("/door/simulate", control(door_simulate), methods=["POST", "OPTIONS"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


async def serve_http(
    ctx: HttpContext,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown` is set; reports the bound addresses via `started()`."""
    hc = HyperConfig()
    host = ctx.config.http.bind
    host = f"[{host}]" if ":" in host else host
    hc.bind = [f"{host}:{ctx.config.metrics.prometheus_port}"]
    hc.accesslog = None
    hc.errorlog = log
    hc.graceful_timeout = GRACEFUL_STOP_S
    async with trio.open_nursery() as feed_writers:
        app = build_app(ctx, feed_writers)
        await hyper_serve(app, hc, shutdown_trigger=shutdown.wait, task_status=task_status)  # type: ignore[arg-type]
        feed_writers.cancel_scope.cancel()
