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
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.app.latest import LatestValue
from gateway.config.model import Config
from gateway.core.model import DOOR_STATUSES, AccInput, Clock, DoorReading
from gateway.io.acc_listener import AccStats
from gateway.io.gate_worker import GateJob, open_manually

log = logging.getLogger("gateway.http")

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
}
OPEN_WAIT_EXTRA_MS = 1000  # /gate/open waits for the worker ≤ write/HTTP timeout + 1000 ms (§8)


@attrs.define(slots=True, eq=False)
class HttpContext:
    """Everything the routes touch, handed in by the runtime (no globals)."""

    config: Config
    clock: Clock
    health: Callable[[], tuple[dict[str, Any], int]]
    metrics: Callable[[], Awaitable[bytes]]
    events_send: trio.MemorySendChannel[object]
    gate_send: trio.MemorySendChannel[GateJob]
    door: LatestValue[DoorReading]
    acc_stats: AccStats
    allow_control_without_token: bool = False
    shutting_down: bool = False


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


def build_app(ctx: HttpContext) -> Starlette:
    async def health(_: Request) -> Response:
        body, status = ctx.health()
        return JSONResponse(body, status_code=status)

    async def metrics(_: Request) -> Response:
        return Response(await ctx.metrics(), media_type=METRICS_CONTENT_TYPE)

    async def index(_: Request) -> Response:
        body, _status = ctx.health()
        return HTMLResponse(
            "<!doctype html><title>gateway</title><h1>gateway "
            f"{ctx.config.site.id}</h1><p>status: <b>{body['status']}</b></p>"
            '<p><a href="/health">/health</a> · <a href="/metrics">/metrics</a></p>'
        )

    async def preflight(_: Request) -> Response:
        return Response(status_code=200, headers=CORS)

    async def gate_open(request: Request) -> Response:
        denied = _control_denied(ctx, request)
        if denied is not None:
            return denied
        gate = ctx.config.gate
        wait_ms = (gate.write_timeout_ms if gate.mode == "tcp" else gate.timeout_ms) + (
            OPEN_WAIT_EXTRA_MS
        )
        outcome = await open_manually(ctx.gate_send, ctx.clock, wait_ms / 1000)
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
        ctx.acc_stats.events_received += 1
        item = AccInput(recv_ns=ctx.clock.mono_ns(), ip="simulated", receipt=receipt, pos=pos)
        try:
            ctx.events_send.send_nowait(item)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            ctx.acc_stats.events_dropped += 1
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
        current, _ = ctx.door.get()
        ctx.door.set(DoorReading(status, current.fault, current.alarm, "simulate"))  # type: ignore[arg-type]
        return _json({"ok": True, "status": status})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"ok": False, "error": exc.detail}, status_code=exc.status_code)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/gate/open", gate_open, methods=["POST"]),
        Route("/acc/simulate", acc_simulate, methods=["POST"]),
        Route("/door/simulate", door_simulate, methods=["POST"]),
    ]
    routes += [
        Route(path, preflight, methods=["OPTIONS"])
        for path in ("/gate/open", "/acc/simulate", "/door/simulate")
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
    hc.graceful_timeout = 1.0
    await hyper_serve(build_app(ctx), hc, shutdown_trigger=shutdown.wait, task_status=task_status)  # type: ignore[arg-type]
