"""Runtime components: the stats objects, channels and handles shared by the shell's tasks.

`Components` is built once by the runtime and handed to HTTP, health and metrics code; it is
not a global. Every counter here is a plain int updated on the Trio thread (rule 7).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import attrs
import trio

from gateway.app.livefeed import LiveFeedHub, LiveFeedStats
from gateway.app.logs import log_event
from gateway.app.supervisor import SupervisorStats
from gateway.codecs.xovis import XovisStats
from gateway.config.model import Config
from gateway.core.effects import Publish
from gateway.core.model import Clock, DoorReading
from gateway.io.acc_listener import AccStats
from gateway.io.analysis_log import AnalysisStats
from gateway.io.broker import BrokerStats
from gateway.io.egress import EgressStats, offer
from gateway.io.gate_http import HttpGate
from gateway.io.gate_link import GateLink
from gateway.io.gate_worker import GateJob, GateStats
from gateway.io.journal import JournalStats
from gateway.io.mqtt_ingress import IngressStats
from gateway.io.rs485_poller import Rs485Stats

log = logging.getLogger("gateway.metrics")


@attrs.define(slots=True)
class ManualOpenStats:
    accepted: int = 0  # counts into gateway_gate_commands_total
    dropped: int = 0  # queue full: counts into gateway_gate_cmds_dropped_total


@attrs.define(eq=False)
class Components:
    config: Config
    clock: Clock
    gate_sender: GateLink | HttpGate
    supervisor_stats: SupervisorStats = attrs.field(factory=SupervisorStats)
    ingress_stats: IngressStats = attrs.field(factory=IngressStats)
    xovis_stats: XovisStats = attrs.field(factory=XovisStats)
    acc_stats: AccStats = attrs.field(factory=AccStats)
    rs485_stats: Rs485Stats = attrs.field(factory=Rs485Stats)
    gate_stats: GateStats = attrs.field(factory=GateStats)
    journal_stats: JournalStats = attrs.field(factory=JournalStats)
    egress_stats: EgressStats = attrs.field(factory=EgressStats)
    analysis_stats: AnalysisStats = attrs.field(factory=AnalysisStats)
    livefeed_stats: LiveFeedStats = attrs.field(factory=LiveFeedStats)
    broker_stats: BrokerStats = attrs.field(factory=BrokerStats)
    manual_stats: ManualOpenStats = attrs.field(factory=ManualOpenStats)
    # set by the runtime once built
    tracker: Any = None  # gateway.core.tracker.Tracker
    actor: Any = None  # gateway.app.actor.TrackerActor
    hub: LiveFeedHub | None = None
    door: Any = None  # LatestValue[DoorReading]
    events_send: Any = None
    events_recv: Any = None
    gate_send: trio.MemorySendChannel[GateJob] | None = None
    gate_recv: Any = None
    egress_send: trio.MemorySendChannel[Publish] | None = None
    http_ctx: Any = None
    started_mono_ns: int = attrs.field(factory=time.monotonic_ns)
    started_wall_ms: int = attrs.field(factory=lambda: time.time_ns() // 1_000_000)
    shutting_down: bool = False
    fatal: bool = False
    stop_requested: trio.Event = attrs.field(factory=trio.Event)

    @classmethod
    def create(cls, config: Config, clock: Clock) -> Components:
        gate_stats = GateStats()
        sender: GateLink | HttpGate
        if config.gate.mode == "tcp":
            sender = GateLink(config.gate, gate_stats, clock)
        else:
            sender = HttpGate(config.gate)
        return cls(config=config, clock=clock, gate_sender=sender, gate_stats=gate_stats)

    def request_stop(self) -> None:
        self.stop_requested.set()

    def publish(self, item: Publish) -> object:
        """Non-blocking egress offer used by the gate worker and HTTP routes."""
        if self.egress_send is None:
            return False
        return offer(self.egress_send, item, self.egress_stats)

    def door_reading(self) -> DoorReading:
        reading: DoorReading = self.door.get()[0]
        return reading

    # -- health / metrics (implemented in health.py / metrics.py) ---------------------------
    def health(self) -> tuple[dict[str, Any], int]:
        from gateway.app.health import build_health

        return build_health(self)

    async def metrics_text(self) -> bytes:
        from gateway.app.metrics import render_metrics

        return await render_metrics(self)

    def metrics_payload(self) -> dict[str, Any]:
        from gateway.app.metrics import metrics_payload

        return metrics_payload(self)

    async def run_summary_log(self) -> None:
        """INFO `metrics` summary every `[metrics].interval_secs` (interfaces.md §12)."""
        interval = self.config.metrics.interval_secs
        while True:
            await trio.sleep(interval)
            if self.tracker is None:
                continue
            c = self.tracker.counters
            g = self.tracker.gauges()
            log_event(
                log,
                logging.INFO,
                "metrics",
                events_total=c.events_total,
                events_per_sec=c.event_rate.per_sec(self.clock.mono_ms()),
                active_tracks=g.live_tracks,
                authorized_tracks=g.authorized_tracks,
                gate_cmds=c.gate_commands_total + self.manual_stats.accepted,
                journeys_active=g.journeys_active,
                journeys_held=g.journeys_held,
                mqtt_dropped=self.ingress_stats.events_dropped,
                acc_dropped=self.acc_stats.events_dropped,
                door=g.door_status,
            )
