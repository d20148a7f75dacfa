"""Frozen configuration classes handed to every component (interfaces.md §11.2).

They hold validated values only; `gateway.config.loader` is the one place that builds them.
No component imports a global config: the loaded `Config` is passed down explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

GroupPolicy = Literal["ignore", "track"]
GateMode = Literal["tcp", "http"]


@attrs.frozen
class SiteConfig:
    id: str = "gateway"


@attrs.frozen
class MqttConfig:
    host: str
    port: int = 1883
    topic: str = "#"
    username: str | None = None
    password: str | None = None
    client_id: str = "gateway-poc"


@attrs.frozen
class BrokerConfig:
    """Embedded broker; present only when a `[broker]` section exists (interfaces.md §11.1)."""

    enabled: bool = True
    bind_address: str = "0.0.0.0"
    port: int = 1883


@attrs.frozen
class GateConfig:
    mode: GateMode
    tcp_addr: str = ""
    http_url: str = ""
    timeout_ms: int = 2000
    door: int = 1
    connect_timeout_ms: int = 10_000
    write_timeout_ms: int = 5000
    reconnect_delay_ms: int = 2000
    heartbeat_timeout_s: int = 45
    max_command_age_ms: int = 2000

    @property
    def tcp_host_port(self) -> tuple[str, int]:
        host, _, port = self.tcp_addr.rpartition(":")
        return host.strip("[]"), int(port)


@attrs.frozen
class Rs485Config:
    enabled: bool = False
    device: str = ""
    baud: int = 19200
    poll_interval_ms: int = 250
    machine: int = 1
    unknown_after_failures: int = 8


ZoneRole = Literal[
    "pos", "dwell", "gate", "exit_line", "entry_line", "approach_line", "store", "other"
]


@attrs.frozen
class ZonesConfig:
    pos_zones: tuple[int, ...]
    gate_zone: int
    exit_line: int
    dwell_zones: tuple[int, ...] = ()
    entry_line: int | None = None
    approach_line: int | None = None
    store_zone: int | None = None
    names: Mapping[int, str] = attrs.field(factory=dict)

    def name(self, geometry_id: int) -> str:
        """Label of a zone or line; `ZONE_<id>` when unnamed (behaviour.md §1)."""
        found = self.names.get(geometry_id)
        return found if found is not None else f"ZONE_{geometry_id}"

    def role(self, geometry_id: int) -> ZoneRole:
        if geometry_id in self.pos_zones:
            return "pos"
        if geometry_id in self.dwell_zones:
            return "dwell"
        if geometry_id == self.gate_zone:
            return "gate"
        if geometry_id == self.exit_line:
            return "exit_line"
        if geometry_id == self.entry_line:
            return "entry_line"
        if geometry_id == self.approach_line:
            return "approach_line"
        if self.is_store(geometry_id):
            return "store"
        return "other"

    def is_store(self, geometry_id: int | None) -> bool:
        """Store zone by id, or by the one compatibility name rule `STORE` (behaviour.md §1)."""
        if geometry_id is None:
            return False
        return geometry_id == self.store_zone or self.names.get(geometry_id) == "STORE"

    def zone_id_by_name(self, name: str) -> int | None:
        """POS/DWELL zone id for a zone name (names are unique there, §11.3)."""
        for zid in (*self.pos_zones, *self.dwell_zones):
            if self.name(zid) == name:
                return zid
        return None


@attrs.frozen
class PosTrackingConfig:
    min_dwell_ms: int = 7000
    exit_grace_ms: int = 5000


@attrs.frozen
class ExitDetectionConfig:
    position_threshold_y_m: float = 2.3
    position_threshold_x_min_m: float = 1.5
    position_threshold_x_max_m: float = 3.0


@attrs.frozen
class MetricsConfig:
    interval_secs: int = 10
    prometheus_port: int = 9090


@attrs.frozen
class HttpConfig:
    bind: str = "0.0.0.0"
    token: str | None = None
    max_ws_clients: int = 16


@attrs.frozen
class AccConfig:
    listener_enabled: bool = True
    listener_port: int = 25803
    bind: str = "0.0.0.0"
    ip_to_pos: Mapping[str, str] = attrs.field(factory=dict)
    dedup_window_s: int = 10
    buffer_ms: int = 2000
    allowed_ips: tuple[str, ...] | None = None  # IPs or CIDRs; None = everyone
    max_line_bytes: int = 256
    max_connections: int = 32


@attrs.frozen
class XovisConfig:
    group_tracks: GroupPolicy = "ignore"


@attrs.frozen
class QueuesConfig:
    events: int = 1000
    gate: int = 64
    journeys: int = 100
    egress: int = 1000
    analysis: int = 1000
    ws_client: int = 256


RotateKind = Literal["none", "daily", "size"]


@attrs.frozen
class EgressConfig:
    file: str = "journeys.jsonl"
    rotate: RotateKind = "none"
    rotate_mb: int = 0  # only for rotate == "size"


@attrs.frozen
class MqttEgressConfig:
    """Resolved egress target: host/port/credentials already fall back to `[mqtt]`."""

    enabled: bool
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    journeys_topic: str = "gateway/journeys"
    events_topic: str = "gateway/events"
    metrics_topic: str = "gateway/metrics"
    gate_topic: str = "gateway/gate"
    tracks_topic: str = "gateway/tracks"
    acc_topic: str = "gateway/acc"
    positions_topic: str = "gateway/positions"
    metrics_publish_interval_secs: int = 5

    @property
    def topics(self) -> tuple[str, ...]:
        return (
            self.journeys_topic,
            self.events_topic,
            self.metrics_topic,
            self.gate_topic,
            self.tracks_topic,
            self.acc_topic,
            self.positions_topic,
        )


AnalysisRotateKind = Literal["daily", "size"]


@attrs.frozen
class AnalysisLogConfig:
    enabled: bool = False
    dir: str = "logs"
    rotation: AnalysisRotateKind = "daily"
    rotation_mb: int = 0


@attrs.frozen
class Config:
    """The whole validated site configuration."""

    path: str
    site: SiteConfig
    mqtt: MqttConfig
    gate: GateConfig
    zones: ZonesConfig
    mqtt_egress: MqttEgressConfig
    broker: BrokerConfig | None = None
    rs485: Rs485Config = attrs.field(factory=Rs485Config)
    pos_tracking: PosTrackingConfig = attrs.field(factory=PosTrackingConfig)
    exit_detection: ExitDetectionConfig = attrs.field(factory=ExitDetectionConfig)
    metrics: MetricsConfig = attrs.field(factory=MetricsConfig)
    http: HttpConfig = attrs.field(factory=HttpConfig)
    acc: AccConfig = attrs.field(factory=AccConfig)
    xovis: XovisConfig = attrs.field(factory=XovisConfig)
    queues: QueuesConfig = attrs.field(factory=QueuesConfig)
    egress: EgressConfig = attrs.field(factory=EgressConfig)
    analysis_log: AnalysisLogConfig = attrs.field(factory=AnalysisLogConfig)
    warnings: tuple[str, ...] = ()

    @property
    def broker_enabled(self) -> bool:
        return self.broker is not None and self.broker.enabled
