"""Human summary of a validated `Config`, printed by `gateway check-config` (interfaces.md §10).

Shows what the gateway will actually do with the file: site, zones with names and roles, gate
target, ACC mapping, egress targets and enabled components. Secrets are never printed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.config.model import Config


def _mask_url(url: str) -> str:
    """`http://user:pass@host/x` → `http://***@host/x`: credentials stay out of terminals."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"***@{host}").geturl()


def _creds(username: str | None, password: str | None) -> str:
    return "credentials set" if username is not None and password is not None else "anonymous"


def components(cfg: Config) -> dict[str, bool]:
    """Every long-lived component and whether this config enables it."""
    return {
        "mqtt_ingress": True,
        "broker": cfg.broker_enabled,
        f"gate ({cfg.gate.mode})": True,
        "rs485": cfg.rs485.enabled,
        "acc_listener": cfg.acc.listener_enabled,
        "journal": True,
        "mqtt_egress": cfg.mqtt_egress.enabled,
        "http": cfg.metrics.prometheus_port != 0,
        "analysis_log": cfg.analysis_log.enabled,
    }


def zone_rows(cfg: Config) -> list[tuple[int, str, str]]:
    """(id, name, role) for every configured or named zone/line, by id."""
    z = cfg.zones
    ids = {*z.pos_zones, *z.dwell_zones, z.gate_zone, z.exit_line, *z.names}
    ids.update(i for i in (z.entry_line, z.approach_line, z.store_zone) if i is not None)
    return [(i, z.name(i), z.role(i)) for i in sorted(ids)]


def summary_lines(cfg: Config) -> list[str]:
    lines = [f"config: {cfg.path}", f"site: {cfg.site.id}"]
    m = cfg.mqtt
    lines.append(
        f"mqtt ingress: {m.host}:{m.port} topic '{m.topic}' "
        f"client_id {m.client_id} ({_creds(m.username, m.password)})"
    )
    b = cfg.broker
    if b is None:
        lines.append("broker: none (no [broker] section; an external broker is required)")
    elif not b.enabled:
        lines.append("broker: disabled ([broker].enabled = false)")
    else:
        lines.append(f"broker: embedded on {b.bind_address}:{b.port}")
    lines.append("zones:")
    lines.extend(f"  {zid:>6}  {name:<16} {role}" for zid, name, role in zone_rows(cfg))
    pt, ex = cfg.pos_tracking, cfg.exit_detection
    lines.append(
        f"dwell: min {pt.min_dwell_ms} ms, exit grace {pt.exit_grace_ms} ms; exit region "
        f"y > {ex.position_threshold_y_m}, "
        f"{ex.position_threshold_x_min_m} ≤ x ≤ {ex.position_threshold_x_max_m}"
    )
    g = cfg.gate
    if g.mode == "tcp":
        target = f"tcp {g.tcp_addr} (CloudPlus, door {g.door}, liveness {g.heartbeat_timeout_s} s)"
    else:
        target = f"http {_mask_url(g.http_url)} (timeout {g.timeout_ms} ms)"
    lines.append(f"gate: {target}; commands older than {g.max_command_age_ms} ms are dropped")
    r = cfg.rs485
    if r.enabled:
        lines.append(
            f"rs485: {r.device} {r.baud} baud, poll {r.poll_interval_ms} ms, machine {r.machine}"
        )
    else:
        lines.append("rs485: disabled (door state unknown)")
    a = cfg.acc
    if a.listener_enabled:
        allowed = "all" if a.allowed_ips is None else ", ".join(a.allowed_ips) or "nobody"
        lines.append(
            f"acc: listener {a.bind}:{a.listener_port}, dedup {a.dedup_window_s} s, "
            f"buffer {a.buffer_ms} ms, allowed peers: {allowed}"
        )
    else:
        lines.append("acc: listener disabled")
    if not a.ip_to_pos:
        lines.append("  no ip_to_pos mapping (every ACC is unmatched)")
    for ip, pos in a.ip_to_pos.items():
        lines.append(f"  {ip} -> {pos} (zone {cfg.zones.zone_id_by_name(pos)})")
    e = cfg.egress
    rotate = f"size:{e.rotate_mb}" if e.rotate == "size" else e.rotate
    lines.append(f"egress: journal {e.file} (rotate {rotate})")
    me = cfg.mqtt_egress
    if me.enabled:
        lines.append(
            f"  mqtt {me.host}:{me.port} ({_creds(me.username, me.password)}), metrics every "
            f"{me.metrics_publish_interval_secs} s, topics {', '.join(me.topics)}"
        )
    else:
        lines.append("  mqtt egress disabled")
    al = cfg.analysis_log
    if al.enabled:
        rotation = f"size:{al.rotation_mb}" if al.rotation == "size" else al.rotation
        lines.append(f"  analysis log {al.dir} (rotation {rotation})")
    h = cfg.http
    if cfg.metrics.prometheus_port:
        control = "token set" if h.token is not None else "disabled (no token)"
        lines.append(
            f"http: {h.bind}:{cfg.metrics.prometheus_port} (/health /metrics /ws), "
            f"control routes {control}"
        )
    else:
        lines.append("http: disabled (prometheus_port = 0)")
    comps = components(cfg)
    lines.append("enabled: " + ", ".join(k for k, on in comps.items() if on))
    off = [k for k, on in comps.items() if not on]
    if off:
        lines.append("disabled: " + ", ".join(off))
    return lines
