"""Xovis MQTT ingress: connect, subscribe, decode, hand off (interfaces.md §1.1–§1.3).

Per message: skip the gateway's own egress topics, copy to the analysis log, decode, then
`send_nowait` the batch into the events channel and stream positions to the egress channel. A full
channel drops and counts; nothing here ever waits for the tracker (README rule 2), so the MQTT
client keeps serving keep-alives under any load.
"""

from __future__ import annotations

import logging
import time
from typing import Final

import attrs
import trio

from gateway.app.logs import RateLimiter, log_event
from gateway.codecs.xovis import XovisDecoder, XovisStats
from gateway.config.model import Config
from gateway.core.effects import Publish
from gateway.io.analysis_log import AnalysisRecord
from gateway.io.egress import EgressStats, offer
from gateway.io.mqtt_shim import KEEPALIVE_S, Connack, Message, MqttClient, MqttError
from gateway.io.position_stream import PositionStreamer

log = logging.getLogger("gateway.mqtt_ingress")

RECONNECT_FIRST_S: Final = 1.0  # §1.1: 1 s, 2 s, 4 s … capped at 10 s, reset after a CONNACK
RECONNECT_MAX_S: Final = 10.0
SUBSCRIBE_TIMEOUT_S: Final = 10.0  # README rule 4: SUBACK bound, same as the connect bound


@attrs.define(slots=True)
class IngressStats:
    """Plain counters and state for /metrics and /health (`mqtt_ingress` component)."""

    connected: bool = False
    subscribed: bool = False  # SUBACK received on the current connection
    since_wall_ms: int | None = None  # last connect or disconnect
    last_message_mono_ns: int | None = None
    reconnects: int = 0
    events_dropped: int = 0
    messages_skipped_own_topic: int = 0
    analysis_dropped: int = 0
    inbound_dropped: int = 0  # shim's socket → ingress hand-off full


@attrs.define(slots=True)
class _Handler:
    """The synchronous per-message path; one instance per ingress task."""

    events: trio.MemorySendChannel[object]
    egress: trio.MemorySendChannel[Publish]
    stats: IngressStats
    decoder: XovisDecoder
    streamer: PositionStreamer
    skip_topics: frozenset[str]
    analysis: trio.MemorySendChannel[AnalysisRecord] | None
    egress_stats: EgressStats
    limiter: RateLimiter = attrs.field(factory=RateLimiter)

    def handle(self, msg: Message) -> None:
        stats = self.stats
        stats.last_message_mono_ns = msg.recv_ns
        if msg.topic in self.skip_topics:  # §1.1: our own egress, never parsed (S112)
            stats.messages_skipped_own_topic += 1
            return
        if self.analysis is not None:
            try:
                self.analysis.send_nowait(AnalysisRecord(time.time_ns(), msg.topic, msg.payload))
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                stats.analysis_dropped += 1
        result = self.decoder.decode(msg.payload, recv_ns=msg.recv_ns, topic=msg.topic)
        if result.error is not None:
            self.limiter.log(
                log,
                logging.WARNING,
                "malformed",
                "xovis_malformed",
                topic=msg.topic,
                error=result.error,
                excerpt=result.excerpt,
            )
        batch = result.batch
        if batch is None:
            return
        try:
            self.events.send_nowait(batch)
        except trio.WouldBlock:
            stats.events_dropped += result.event_count
            self.limiter.log(
                log,
                logging.WARNING,
                "events_full",
                "mqtt_events_dropped",
                events=result.event_count,
                dropped_total=stats.events_dropped,
            )
        positions = self.streamer.on_batch(
            batch, msg.recv_ns // 1_000_000, time.time_ns() // 1_000_000
        )
        if positions:
            egress = self.egress
            half = egress.statistics().max_buffer_size / 2
            for item in positions:
                if egress.statistics().current_buffer_used < half:
                    offer(egress, item, self.egress_stats)
                else:  # §1.3: positions are shed first so journeys and gate events keep room
                    self.egress_stats.dropped["positions_shed"] += 1


async def run_mqtt_ingress(
    config: Config,
    events: trio.MemorySendChannel[object],
    egress: trio.MemorySendChannel[Publish],
    stats: IngressStats,
    xovis_stats: XovisStats,
    analysis: trio.MemorySendChannel[AnalysisRecord] | None = None,
    egress_stats: EgressStats | None = None,
    *,
    keepalive_s: int = KEEPALIVE_S,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run forever: (re)connect with backoff, re-subscribe after every CONNACK, hand off."""
    mqtt = config.mqtt
    handler = _Handler(
        events=events,
        egress=egress,
        stats=stats,
        decoder=XovisDecoder(config.xovis.group_tracks, xovis_stats),
        streamer=PositionStreamer(config.site.id),
        skip_topics=frozenset(config.mqtt_egress.topics),
        analysis=analysis,
        egress_stats=egress_stats if egress_stats is not None else EgressStats(),
    )
    limiter = RateLimiter()
    backoff, first = RECONNECT_FIRST_S, True

    def on_connack(connack: Connack) -> None:
        nonlocal backoff
        backoff = RECONNECT_FIRST_S
        stats.connected, stats.since_wall_ms = True, time.time_ns() // 1_000_000

    # ready at once: a broker that is down must not hold up the gateway's start (health shows it)
    task_status.started()
    client = MqttClient(
        mqtt.host,
        mqtt.port,
        client_id=mqtt.client_id,
        username=mqtt.username,
        password=mqtt.password,
        keepalive=keepalive_s,
        on_connack=on_connack,
    )  # reused across reconnects: its counters are cumulative
    while True:
        if not first:
            stats.reconnects += 1
        first = False
        try:
            async with client:
                log_event(
                    log,
                    logging.INFO,
                    "mqtt_connected",
                    client="ingress",
                    host=mqtt.host,
                    port=mqtt.port,
                    topic=mqtt.topic,
                )
                with trio.fail_after(SUBSCRIBE_TIMEOUT_S):
                    await client.subscribe(mqtt.topic, qos=0)
                stats.subscribed = True
                async for msg in client.messages:
                    handler.handle(msg)
                    stats.inbound_dropped = client.inbound_dropped
        except (MqttError, trio.TooSlowError) as exc:
            limiter.log(
                log,
                logging.WARNING,
                "connect",
                "mqtt_ingress_error",
                host=mqtt.host,
                port=mqtt.port,
                error=str(exc),
            )
        finally:
            stats.inbound_dropped = client.inbound_dropped
            if stats.connected:
                stats.since_wall_ms = time.time_ns() // 1_000_000
                log_event(log, logging.INFO, "mqtt_disconnected", client="ingress")
            stats.connected = stats.subscribed = False
        await trio.sleep(backoff)
        backoff = min(backoff * 2, RECONNECT_MAX_S)
