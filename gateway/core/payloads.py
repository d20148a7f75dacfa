"""MQTT egress / live-feed payload builders in the exact field order of interfaces.md §7.

`site` comes first; optional fields are omitted when absent (None).
"""

from __future__ import annotations

from typing import Any

from gateway.core.effects import Publish


def _put(d: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        d[key] = value


def track(
    site: str,
    ts: int,
    t: str,
    tid: int,
    auth: bool,
    dwell_ms: int,
    *,
    prev_tid: int | None = None,
    stitch_dist_cm: int | None = None,
    stitch_time_ms: int | None = None,
    parent_jid: str | None = None,
) -> Publish:
    """`gateway/tracks`: site, ts, t, tid, prev_tid?, auth, dwell_ms, stitch_*?, parent_jid?"""
    p: dict[str, Any] = {"site": site, "ts": ts, "t": t, "tid": tid}
    _put(p, "prev_tid", prev_tid)
    p["auth"] = auth
    p["dwell_ms"] = dwell_ms
    _put(p, "stitch_dist_cm", stitch_dist_cm)
    _put(p, "stitch_time_ms", stitch_time_ms)
    _put(p, "parent_jid", parent_jid)
    return Publish("track", p)


def zone(
    site: str,
    tid: int,
    t: str,
    z: str,
    ts: int,
    auth: bool,
    dwell_ms: int | None,
    total_dwell_ms: int,
    event_time: int,
) -> Publish:
    """`gateway/events`: site, tid, t, z, ts, auth, dwell_ms?, total_dwell_ms, event_time."""
    p: dict[str, Any] = {"site": site, "tid": tid, "t": t, "z": z, "ts": ts, "auth": auth}
    _put(p, "dwell_ms", dwell_ms)
    p["total_dwell_ms"] = total_dwell_ms
    p["event_time"] = event_time
    return Publish("zone", p)


def gate(
    site: str,
    ts: int,
    state: str,
    src: str,
    *,
    tid: int | None = None,
    reason: str | None = None,
) -> Publish:
    """`gateway/gate` as produced by the core: site, ts, state, tid?, src, reason?."""
    p: dict[str, Any] = {"site": site, "ts": ts, "state": state}
    _put(p, "tid", tid)
    p["src"] = src
    _put(p, "reason", reason)
    return Publish("gate", p)


ACC_FIELDS: tuple[str, ...] = (
    "tid",
    "dwell_ms",
    "gate_zone",
    "gate_entry_ts",
    "delta_ms",
    "gate_cmd_at",
    "debug_active",
    "debug_pending",
    "receipt",
    "zone_dwell_ms",
    "count",
    "buffered_ms",
    "reason",
)


def acc(site: str, ts: int, t: str, ip: str, pos: str | None, **fields: Any) -> Publish:
    """`gateway/acc`: site, ts, t, ip, pos?, then ACC_FIELDS in order (None/empty omitted)."""
    p: dict[str, Any] = {"site": site, "ts": ts, "t": t, "ip": ip}
    _put(p, "pos", pos)
    for key in ACC_FIELDS:
        value = fields.get(key)
        if value is not None and value != []:
            p[key] = value
    unknown = set(fields) - set(ACC_FIELDS)
    if unknown:
        raise ValueError(f"unknown acc payload fields: {sorted(unknown)}")
    return Publish("acc", p)
