"""Strict TOML loader: site file → validated `Config`, or `ConfigError` listing every problem.

interfaces.md §11.2 (schema) and §11.3 (validation, D14): nothing falls back to built-in site
defaults, and every message reads `config error: <file>: <key>: <problem>`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Sequence
from typing import cast
from urllib.parse import urlsplit

import attrs

from gateway.config.model import (
    AccConfig,
    AnalysisLogConfig,
    AnalysisRotateKind,
    BrokerConfig,
    Config,
    EgressConfig,
    ExitDetectionConfig,
    GateConfig,
    GateMode,
    GroupPolicy,
    HttpConfig,
    MetricsConfig,
    MqttConfig,
    MqttEgressConfig,
    PosTrackingConfig,
    QueuesConfig,
    RotateKind,
    Rs485Config,
    SiteConfig,
    XovisConfig,
    ZonesConfig,
)
from gateway.config.reader import (
    INT_KEY,
    Context,
    Table,
    is_int,
    parse_ip,
)

BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)  # interfaces.md §11.2
INT32 = (-(2**31), 2**31 - 1)  # Xovis geometry ids are int32
ROTATE_MB_MAX = 100_000  # §11.2 `size:<MB>`, MB int 1–100000
TOKEN_MIN_CHARS = 16  # §10 check-config: warn on a shorter token
POLL_WARN_MS = 200  # §10 check-config: warn on a faster RS485 poll
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::")  # clash with every address (§11.3)
EGRESS_TOPICS = ("journeys", "events", "metrics", "gate", "tracks", "acc", "positions")
QUEUE_DEFAULTS = {"events": 1000, "gate": 64, "journeys": 100, "egress": 1000, "analysis": 1000}
QUEUE_DEFAULTS["ws_client"] = 256
_TOML_AT = re.compile(
    r"^(?P<msg>.*) \(at (?:line (?P<line>\d+), column (?P<col>\d+)|end of document)\)$"
)


class ConfigError(Exception):
    """The file is unusable; `errors` holds every `config error: <file>: <key>: <problem>` line."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors: list[str] = list(errors)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a site file; raises `ConfigError` on any problem."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError([f"config error: {name}: cannot read file ({reason})"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        reason = f"not valid UTF-8: byte 0x{data[exc.start]:02x} on line {line}"
        raise ConfigError([f"config error: {name}: cannot read file ({reason})"]) from None
    return parse_config(text, name)


def parse_config(text: str, path: str) -> Config:
    """Validate TOML text; `path` names the file in messages and becomes `Config.path`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_AT.match(str(exc))
        if found is None:
            where, msg = "TOML", str(exc)
        elif found["line"] is None:
            where, msg = "end of file", found["msg"]
        else:
            where, msg = f"line {found['line']}, column {found['col']}", found["msg"]
        raise ConfigError([f"config error: {path}: {where}: TOML syntax error: {msg}"]) from None
    ctx = Context(path)
    cfg = _build(ctx, Table(ctx, "", doc, present=True))
    if ctx.errors:
        raise ConfigError(ctx.errors)
    return cfg


# ------------------------------------------------------------------------------------------------
# ------------------------------------------------------------------------------------------------
# sections


def _build(ctx: Context, root: Table) -> Config:
    site_t = root.table("site")
    site = SiteConfig(id=site_t.string("id", "gateway", 1, 64))
    site_t.finish()
    mqtt = _mqtt(root.table("mqtt"))
    broker_t = root.table("broker")
    broker = _broker(broker_t)
    gate = _gate(root.table("gate"))
    rs485 = _rs485(root.table("rs485"))
    zones_t = root.table("zones")
    zones = _zones(zones_t)
    pos_tracking = _min_dwell(ctx, root.table("pos_tracking"), root.table("authorization"))
    exit_detection = _exit_detection(root.table("exit_detection"))
    metrics_t = root.table("metrics")
    metrics = MetricsConfig(
        interval_secs=metrics_t.integer("interval_secs", 10, 1, 3600),
        prometheus_port=metrics_t.integer("prometheus_port", 9090, 0, 65535),
    )
    metrics_t.finish()
    if metrics_t.get("prometheus_port") is None:  # interfaces.md §11.1, visible difference (2)
        ctx.warnings.append(
            "[metrics].prometheus_port: not set; HTTP port is 9090 (reference default 80)"
        )
    http_t = root.table("http")
    http = _http(http_t)
    acc_t = root.table("acc")
    zones_ok = zones_t.ok("pos_zones", "dwell_zones", "names")
    acc = _acc(ctx, acc_t, zones if zones_ok else None)
    xovis_t = root.table("xovis")
    group = xovis_t.choice("group_tracks", "ignore", ("ignore", "track"))
    xovis_t.finish()
    queues_t = root.table("queues")
    queues = QueuesConfig(
        **{k: queues_t.integer(k, d, 1, 1_000_000) for k, d in QUEUE_DEFAULTS.items()}
    )
    queues_t.finish()
    egress_t = root.table("egress")
    journal_file = egress_t.string("file", "journeys.jsonl", 1)
    rotate, rotate_mb = _rotation(egress_t, "rotate", "none", ("none", "daily"))
    egress_t.finish()
    mqtt_egress = _mqtt_egress(root.table("mqtt_egress"), mqtt)
    alog_t = root.table("analysis_log")
    alog_enabled = alog_t.boolean("enabled", False)
    alog_dir = alog_t.string("dir", "logs", 1)
    rotation, rotation_mb = _rotation(alog_t, "rotation", "daily", ("daily",))
    alog_t.finish()
    root.finish()

    listeners: list[_Listener] = []
    if metrics.prometheus_port and metrics_t.ok("prometheus_port") and http_t.ok("bind"):
        listeners.append(
            _Listener(
                "the HTTP server", metrics_t, "prometheus_port", http.bind, metrics.prometheus_port
            )
        )
    if acc.listener_enabled and acc_t.ok("listener_enabled", "listener_port", "bind"):
        listeners.append(
            _Listener("the ACC listener", acc_t, "listener_port", acc.bind, acc.listener_port)
        )
    if broker is not None and broker.enabled and broker_t.ok("enabled", "port", "bind_address"):
        listeners.append(
            _Listener("the embedded broker", broker_t, "port", broker.bind_address, broker.port)
        )
    _check_listeners(listeners)
    _advise(ctx, mqtt, broker, rs485, http)
    return Config(
        path=ctx.path,
        site=site,
        mqtt=mqtt,
        gate=gate,
        zones=zones,
        mqtt_egress=mqtt_egress,
        broker=broker,
        rs485=rs485,
        pos_tracking=pos_tracking,
        exit_detection=exit_detection,
        metrics=metrics,
        http=http,
        acc=acc,
        xovis=XovisConfig(group_tracks=cast(GroupPolicy, group)),
        queues=queues,
        egress=EgressConfig(journal_file, cast(RotateKind, rotate), rotate_mb),
        analysis_log=AnalysisLogConfig(
            alog_enabled, alog_dir, cast(AnalysisRotateKind, rotation), rotation_mb
        ),
        warnings=tuple(ctx.warnings),
    )


def _valid_filter(topic: str) -> bool:
    """MQTT topic filter: `#` only as the whole last level, `+` only as a whole level."""
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return "\0" not in topic


def _mqtt(t: Table) -> MqttConfig:
    host = t.string("host", "", 1, req=True)
    port = t.integer("port", 1883, 1, 65535)
    topic = t.string("topic", "#", 1)
    if t.ok("topic") and not _valid_filter(topic):
        t.fail("topic", f"'{topic}' is not a valid MQTT topic filter")
    username, password = t.opt_string("username"), t.opt_string("password")
    client_id = t.string("client_id", "gateway-poc", 1, 64)
    t.finish()
    if (username is None) != (password is None):
        t.ctx.warnings.append("[mqtt]: username and password are used only when both are set")
    return MqttConfig(host, port, topic, username, password, client_id)


def _broker(t: Table) -> BrokerConfig | None:
    if not t.present:  # interfaces.md §11.1, visible difference (1)
        return None
    cfg = BrokerConfig(
        enabled=t.boolean("enabled", True),
        bind_address=t.ip("bind_address", "0.0.0.0"),
        port=t.integer("port", 1883, 1, 65535),
    )
    t.finish()
    return cfg


def _host_port_problem(addr: str) -> str | None:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()):
        return f"'{addr}' is not host:port"
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        return f"'{addr}': an IPv6 host must be written in brackets, e.g. [::1]:8000"
    if not 1 <= int(port) <= 65535:
        return f"'{addr}': port {int(port)} is out of range 1–65535"
    return None


def _gate(t: Table) -> GateConfig:
    mode = t.choice("mode", "tcp", ("tcp", "http"), req=True)
    tcp_addr = t.string("tcp_addr", "")
    http_url = t.string("http_url", "")
    if t.ok("mode", "tcp_addr") and mode == "tcp" and not tcp_addr:
        t.fail(
            "tcp_addr",
            "missing required key (mode is 'tcp')"
            if t.get("tcp_addr") is None
            else "must not be empty when mode is 'tcp'",
        )
    if t.ok("mode", "http_url") and mode == "http" and not http_url:
        t.fail("http_url", "must not be empty when mode is 'http'")
    problem = _host_port_problem(tcp_addr) if tcp_addr and t.ok("tcp_addr") else None
    if problem:
        t.fail("tcp_addr", problem)
    url = urlsplit(http_url)
    if http_url and t.ok("http_url") and (url.scheme not in ("http", "https") or not url.hostname):
        t.fail("http_url", f"'{http_url}' is not an http:// or https:// URL")
    cfg = GateConfig(
        mode=cast(GateMode, mode),
        tcp_addr=tcp_addr,
        http_url=http_url,
        timeout_ms=t.integer("timeout_ms", 2000, 100, 60_000),
        door=t.integer("door", 1, 1, 2),
        connect_timeout_ms=t.integer("connect_timeout_ms", 10_000, 100, 60_000),
        write_timeout_ms=t.integer("write_timeout_ms", 5000, 100, 60_000),
        reconnect_delay_ms=t.integer("reconnect_delay_ms", 2000, 100, 60_000),
        heartbeat_timeout_s=t.integer("heartbeat_timeout_s", 45, 5, 3600),
        max_command_age_ms=t.integer("max_command_age_ms", 2000, 100, 60_000),
    )
    t.finish()
    return cfg


def _rs485(t: Table) -> Rs485Config:
    if not t.present:
        return Rs485Config(enabled=False)
    enabled = t.boolean("enabled", True)
    device = t.string("device", "")
    if enabled and t.ok("enabled", "device") and not device:
        t.fail(
            "device",
            "missing required key (rs485 is enabled)"
            if t.get("device") is None
            else "must not be empty when rs485 is enabled",
        )
    baud = t.integer("baud", 19200, 1)
    if t.ok("baud") and baud not in BAUD_RATES:
        t.fail("baud", f"{baud} is not one of " + ", ".join(map(str, BAUD_RATES)))
    cfg = Rs485Config(
        enabled=enabled,
        device=device,
        baud=baud,
        poll_interval_ms=t.integer("poll_interval_ms", 250, 50, 10_000),
        machine=t.integer("machine", 1, 1, 255),
        unknown_after_failures=t.integer("unknown_after_failures", 8, 1, 1000),
    )
    t.finish()
    return cfg


# the order in which a zone id's role is claimed; a later claim of the same id is the error
_ROLE_KEYS = (
    "pos_zones",
    "dwell_zones",
    "gate_zone",
    "store_zone",
    "exit_line",
    "entry_line",
    "approach_line",
)


def _zones(t: Table) -> ZonesConfig:
    lo, hi = INT32
    ids = {
        "pos_zones": [cast(int, v) for v in t.array("pos_zones", is_int, "integer", req=True)],
        "dwell_zones": [cast(int, v) for v in t.array("dwell_zones", is_int, "integer")],
    }
    for k in ("pos_zones", "dwell_zones"):
        for i, zid in enumerate(ids[k]):
            if not lo <= zid <= hi:
                t.bad.add(k)
                t.ctx.error(f"{t.key(k)}[{i}]", f"{zid} is out of range {lo}–{hi}")
    for k in ("gate_zone", "exit_line", "entry_line", "approach_line", "store_zone"):
        found = t.opt_integer(k, lo, hi, req=k in ("gate_zone", "exit_line"))
        ids[k] = [] if found is None else [found]
    names = _zone_names(t.table("names"))
    t.finish()
    seen: dict[int, str] = {}
    for k in _ROLE_KEYS:
        for zid in ids[k] if t.ok(k) else []:
            if zid not in seen:
                seen[zid] = k
            elif seen[zid] == k:
                t.fail(k, f"{zid} is listed twice")
            else:
                t.fail(k, f"{zid} is already used by [zones].{seen[zid]}")

    def one(k: str) -> int | None:
        return ids[k][0] if ids[k] else None

    zones = ZonesConfig(
        pos_zones=tuple(ids["pos_zones"]),
        gate_zone=one("gate_zone") or 0,
        exit_line=one("exit_line") or 0,
        dwell_zones=tuple(ids["dwell_zones"]),
        entry_line=one("entry_line"),
        approach_line=one("approach_line"),
        store_zone=one("store_zone"),
        names=names,
    )
    if t.ok("pos_zones", "dwell_zones", "names"):  # behaviour.md §6: names map ACC → zone
        owner: dict[str, int] = {}
        for zid in (*zones.pos_zones, *zones.dwell_zones):
            name = zones.name(zid)
            first = owner.setdefault(name, zid)
            if first != zid:
                named = zid if zid in names else first
                t.bad.add("names")
                t.ctx.error(
                    f"[zones.names].{named}",
                    f"'{name}' names both zone {first} and zone {zid} (POS/DWELL names are unique)",
                )
    return zones


def _zone_names(t: Table) -> dict[int, str]:
    names: dict[int, str] = {}
    for k in list(t.data):
        value = t.string(k, "", 1, 64)
        if not INT_KEY.fullmatch(k) or not INT32[0] <= int(k) <= INT32[1]:
            t.fail(k, "key must be an integer zone id")
        elif int(k) in names:
            t.fail(k, f"zone {int(k)} is named twice")
        elif t.ok(k):
            names[int(k)] = value
    return names


def _min_dwell(ctx: Context, pt: Table, auth: Table) -> PosTrackingConfig:
    """`[authorization].min_dwell_ms` is the deprecated spelling (behaviour.md §14) [ref]."""
    min_dwell = pt.opt_integer("min_dwell_ms", 0, 3_600_000)
    exit_grace = pt.integer("exit_grace_ms", 5000, 0, 600_000)
    old = auth.opt_integer("min_dwell_ms", 0, 3_600_000)
    pt.finish()
    auth.finish()
    deprecated = "[authorization].min_dwell_ms: deprecated, use [pos_tracking].min_dwell_ms"
    if old is not None and min_dwell is not None and old != min_dwell:
        auth.fail("min_dwell_ms", f"{old} conflicts with [pos_tracking].min_dwell_ms = {min_dwell}")
    elif old is not None and min_dwell is not None:
        ctx.warnings.append(f"{deprecated} (same value, ignored)")
    elif old is not None:
        ctx.warnings.append(f"{deprecated} ({old} ms applied)")
        min_dwell = old
    return PosTrackingConfig(7000 if min_dwell is None else min_dwell, exit_grace)


def _exit_detection(t: Table) -> ExitDetectionConfig:
    keys = ("position_threshold_y_m", "position_threshold_x_min_m", "position_threshold_x_max_m")
    y, x_min, x_max = (t.number(k, d) for k, d in zip(keys, (2.3, 1.5, 3.0), strict=True))
    t.finish()
    if t.ok(*keys[1:]) and x_min > x_max:
        t.fail(keys[1], f"{x_min} is greater than position_threshold_x_max_m {x_max}")
    return ExitDetectionConfig(y, x_min, x_max)


def _http(t: Table) -> HttpConfig:
    cfg = HttpConfig(
        bind=t.ip("bind", "0.0.0.0"),
        token=t.opt_string("token", 1),
        max_ws_clients=t.integer("max_ws_clients", 16, 1, 1000),
    )
    t.finish()
    return cfg


def _acc(ctx: Context, t: Table, zones: ZonesConfig | None) -> AccConfig:
    for k in ("flicker_merge_s", "recent_exit_window_ms"):
        if t.get(k) is not None and t.opt_integer(k, 0) is not None:
            ctx.warnings.append(f"[acc].{k}: accepted, no effect")
    allowed: tuple[str, ...] | None = None
    if t.get("allowed_ips") is not None:
        items = [
            cast(str, v) for v in t.array("allowed_ips", lambda v: isinstance(v, str), "string")
        ]
        for i, item in enumerate(items):
            problem = _network_problem(item)
            if problem is not None:
                t.bad.add("allowed_ips")
                ctx.error(f"[acc].allowed_ips[{i}]", problem)
        allowed = tuple(items)
        if t.ok("allowed_ips") and not items:
            ctx.warnings.append("[acc].allowed_ips: empty, every ACC connection will be refused")
    cfg = AccConfig(
        listener_enabled=t.boolean("listener_enabled", True),
        listener_port=t.integer("listener_port", 25803, 1, 65535),
        bind=t.ip("bind", "0.0.0.0"),
        ip_to_pos=_ip_to_pos(t.table("ip_to_pos"), zones),
        dedup_window_s=t.integer("dedup_window_s", 10, 0, 3600),
        buffer_ms=t.integer("buffer_ms", 2000, 0, 60_000),
        allowed_ips=allowed,
        max_line_bytes=t.integer("max_line_bytes", 256, 16, 65536),
        max_connections=t.integer("max_connections", 32, 1, 1024),
    )
    t.finish()
    return cfg


def _network_problem(text: str) -> str | None:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return f"'{text}' is not an IP address or CIDR network"
    if "/" in text and net.network_address != ipaddress.ip_address(text.partition("/")[0]):
        return f"'{text}' has host bits set (did you mean '{net}'?)"
    return None


def _ip_to_pos(t: Table, zones: ZonesConfig | None) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for k in list(t.data):
        name = t.string(k, "")
        ip = parse_ip(k)
        if ip is None:
            t.fail(k, "key is not an IP address")
        elif ip in mapping:
            t.fail(k, f"{ip} is mapped twice")
        elif t.ok(k) and zones is not None and zones.zone_id_by_name(name) is None:
            t.fail(k, f"'{name}' is not the name of a POS or DWELL zone")
        elif t.ok(k):
            mapping[ip] = name
    return mapping


def _rotation(t: Table, k: str, default: str, plain: Sequence[str]) -> tuple[str, int]:
    """`none`/`daily` or `size:<MB>` (interfaces.md §5, §6); a bad MB is an error, never 100."""
    text = t.string(k, default)
    if not t.ok(k) or text in plain:
        return (text if t.ok(k) else default), 0
    if text.startswith("size:"):
        mb = text.removeprefix("size:")
        if mb.isascii() and mb.isdigit() and 1 <= int(mb) <= ROTATE_MB_MAX:
            return "size", int(mb)
        t.fail(k, f"'{text}': size must be a whole number of MB 1–{ROTATE_MB_MAX}")
    else:
        t.fail(k, f"'{text}' is not one of " + ", ".join(f"'{p}'" for p in (*plain, "size:<MB>")))
    return default, 0


def _mqtt_egress(t: Table, mqtt: MqttConfig) -> MqttEgressConfig:
    """Host, port and credentials fall back to `[mqtt]` one by one (interfaces.md §7)."""
    host = t.opt_string("host", 1)
    port = t.opt_integer("port", 1, 65535)
    username, password = t.opt_string("username"), t.opt_string("password")
    topics: dict[str, str] = {}
    for name in EGRESS_TOPICS:
        k = f"{name}_topic"
        topic = topics[k] = t.string(k, f"gateway/{name}", 1)
        if t.ok(k) and ("+" in topic or "#" in topic):
            t.fail(k, f"'{topic}' must not contain the wildcards '+' or '#'")
    cfg = MqttEgressConfig(
        enabled=t.boolean("enabled", True),
        host=mqtt.host if host is None else host,
        port=mqtt.port if port is None else port,
        username=mqtt.username if username is None else username,
        password=mqtt.password if password is None else password,
        metrics_publish_interval_secs=t.integer("metrics_publish_interval_secs", 5, 1, 3600),
        **topics,
    )
    t.finish()
    return cfg


# ------------------------------------------------------------------------------------------------
# cross-section rules


@attrs.frozen
class _Listener:
    label: str
    table: Table
    key: str
    bind: str
    port: int


def _check_listeners(listeners: list[_Listener]) -> None:
    """Two enabled listeners on one port clash on one address; a wildcard clashes with all."""
    for i, new in enumerate(listeners):
        for old in listeners[:i]:
            wild = new.bind in WILDCARD_BINDS or old.bind in WILDCARD_BINDS
            if new.port == old.port and (new.bind == old.bind or wild):
                new.table.fail(
                    new.key,
                    f"port {new.port} on {new.bind} clashes with {old.label} "
                    f"([{old.table.name}].{old.key}) on {old.bind}",
                )
                break


def _advise(
    ctx: Context,
    mqtt: MqttConfig,
    broker: BrokerConfig | None,
    rs485: Rs485Config,
    http: HttpConfig,
) -> None:
    """Warnings `gateway check-config` prints and `gateway run` logs (interfaces.md §10)."""
    if mqtt.host in LOCAL_HOSTS and (broker is None or not broker.enabled):
        ctx.warnings.append(
            f"[mqtt].host: no embedded broker; a broker must listen on localhost:{mqtt.port}"
        )
    if rs485.enabled and rs485.poll_interval_ms < POLL_WARN_MS:
        ctx.warnings.append(
            f"[rs485].poll_interval_ms: {rs485.poll_interval_ms} ms is below {POLL_WARN_MS} ms"
        )
    if http.token is not None and len(http.token) < TOKEN_MIN_CHARS:
        ctx.warnings.append(f"[http].token: shorter than {TOKEN_MIN_CHARS} characters")
