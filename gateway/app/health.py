"""`GET /health` body and status (interfaces.md §8): per-component state and the overall rule.

Overall: `down` if the tracker or the MQTT ingress is down or the process is shutting down;
else `degraded` if any component is degraded; else `ok`. 503 only for `down`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.io.gate_link import GateLink

if TYPE_CHECKING:
    from gateway.app.state import Components

TRACKER_STALE_MS = 3000  # tracker `down` when its last tick is older
INGRESS_DOWN_AFTER_MS = 30_000  # mqtt_ingress `down` after ≥ 30 s disconnected
JOURNAL_ERROR_WINDOW_NS = 60 * 1_000_000_000  # journal `degraded` after an error in the last 60 s


def _age_ms(now_ns: int, then_ns: int | None) -> int | None:
    return None if then_ns is None else max(0, (now_ns - then_ns) // 1_000_000)


def build_health(comp: Components) -> tuple[dict[str, Any], int]:
    cfg = comp.config
    now_ns = time.monotonic_ns()
    now_ms = now_ns // 1_000_000
    wall_ms = time.time_ns() // 1_000_000
    components: dict[str, dict[str, Any]] = {}

    # tracker
    gauges = comp.tracker.gauges() if comp.tracker is not None else None
    last_tick = gauges.last_tick_mono_ms if gauges is not None else None
    reference = last_tick if last_tick is not None else comp.started_mono_ns // 1_000_000
    tick_age = max(0, now_ms - reference)
    depth = comp.events_send.statistics().current_buffer_used if comp.events_send else 0
    components["tracker"] = {
        "state": "down" if tick_age > TRACKER_STALE_MS or comp.fatal else "ok",
        "last_tick_age_ms": tick_age if last_tick is not None else None,
        "live_tracks": gauges.live_tracks if gauges is not None else 0,
        "event_queue_depth": depth,
    }

    # mqtt_ingress
    ing = comp.ingress_stats
    if ing.connected:
        ing_state = "ok"
    else:
        since_ns = comp.started_mono_ns
        if ing.since_wall_ms is not None:
            since_ns = max(since_ns, now_ns - (wall_ms - ing.since_wall_ms) * 1_000_000)
        down = (now_ns - since_ns) // 1_000_000 >= INGRESS_DOWN_AFTER_MS
        ing_state = "down" if down else "degraded"
    components["mqtt_ingress"] = {
        "state": ing_state,
        "connected": ing.connected,
        "since": ing.since_wall_ms,
        "last_message_age_ms": _age_ms(now_ns, ing.last_message_mono_ns),
        "reconnects": ing.reconnects,
    }

    # gate
    sender = comp.gate_sender
    if isinstance(sender, GateLink):
        components["gate"] = {
            "state": "ok" if sender.connected else "degraded",
            "mode": "tcp",
            "connected": sender.connected,
            "since": sender.since_wall_ms,
            "last_rx_age_ms": _age_ms(now_ns, sender.last_rx_mono_ns),
            "detail": sender.detail,
        }
    else:
        failed = comp.gate_stats.last_http_failed
        components["gate"] = {
            "state": "degraded" if failed else "ok",
            "mode": "http",
            "last_command_failed": failed,
        }

    # rs485
    door = comp.door_reading() if comp.door is not None else None
    rs = comp.rs485_stats
    if cfg.rs485.enabled:
        door_status = door.status if door is not None else rs.door
        degraded = rs.consecutive_failures > 0 or not rs.port_open or door_status == "unknown"
        components["rs485"] = {
            "state": "degraded" if degraded else "ok",
            "door": door_status,
            "consecutive_failures": rs.consecutive_failures,
            "fault": rs.fault,
            "alarm": rs.alarm,
        }
    else:
        components["rs485"] = {
            "state": "disabled",
            "door": door.status if door is not None else "unknown",
        }

    # acc
    acc = comp.acc_stats
    if cfg.acc.listener_enabled:
        components["acc"] = {
            "state": "ok" if acc.listening else "degraded",
            "listening": acc.listening,
            "connections": acc.connections,
        }
    else:
        components["acc"] = {"state": "disabled"}

    # journal
    js = comp.journal_stats
    recent_error = (
        js.last_error_mono_ns is not None
        and now_ns - js.last_error_mono_ns < JOURNAL_ERROR_WINDOW_NS
    )
    components["journal"] = {
        "state": "degraded" if recent_error else "ok",
        "path": js.path,
        "last_flush_age_ms": _age_ms(now_ns, js.last_flush_mono_ns),
        "write_errors": js.write_errors,
    }

    # mqtt_egress
    eg = comp.egress_stats
    if cfg.mqtt_egress.enabled:
        components["mqtt_egress"] = {
            "state": "ok" if eg.connected else "degraded",
            "connected": eg.connected,
            "backlog": eg.backlog,
        }
    else:
        components["mqtt_egress"] = {"state": "disabled"}

    # broker
    if cfg.broker_enabled:
        components["broker"] = comp.broker_stats.health()
    else:
        components["broker"] = {"state": "disabled"}

    components["http"] = {"state": "ok", "ws_clients": comp.livefeed_stats.clients}

    states = {name: c["state"] for name, c in components.items()}
    if comp.shutting_down or states["tracker"] == "down" or states["mqtt_ingress"] == "down":
        status = "down"
    elif "degraded" in states.values() or "down" in states.values():
        status = "degraded"
    else:
        status = "ok"
    body = {
        "status": status,
        "site": cfg.site.id,
        "version": __version__,
        "ts": wall_ms,
        "uptime_s": round((now_ns - comp.started_mono_ns) / 1e9, 1),
        "shutting_down": comp.shutting_down,
        "components": components,
    }
    return body, 503 if status == "down" else 200
