"""Egress router: one consumer of the egress channel → live feed + MQTT egress (interfaces.md §7).

Each payload is encoded once. Journeys go out QoS 1 through an in-memory backlog (in order, at most
20 unacknowledged, removed on PUBACK, re-sent after a reconnect: at-least-once); every other kind
is QoS 0 and dropped while disconnected. Producers hand items over with `offer` (never blocks).
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import trio

from gateway.app.logs import RateLimiter, log_event
from gateway.codecs.journey_json import encode_payload
from gateway.config.model import Config, MqttEgressConfig
from gateway.core.effects import Publish
from gateway.io.mqtt_shim import Delivery, MqttClient, MqttError

log = logging.getLogger("gateway.egress")

BACKLOG_CAPACITY: Final = 10_000  # §7: journeys kept while disconnected; oldest dropped
MAX_UNACKED: Final = 20  # §7: QoS 1 journeys in flight
EGRESS_DRAIN_BATCH: Final = 32  # queued items routed per wake-up once the channel backs up
EGRESS_BACKLOG_ITEMS: Final = 100  # "backed up": this many items already waiting
DRAIN_S: Final = 5.0  # §7 / D15: channel + backlog drain on shutdown, in total
RECONNECT_FIRST_S: Final = 1.0  # §1.1 backoff 1, 2, 4 … ≤ 10 s, reset after a CONNACK
RECONNECT_MAX_S: Final = 10.0
DROP_REASONS: Final = ("queue_full", "disconnected", "backlog_full", "positions_shed")

_limiter = RateLimiter()


@attrs.define(slots=True)
class EgressStats:
    """Plain counters for /metrics and /health (`gateway_mqtt_egress_dropped_total{reason}`)."""

    connected: bool = False
    reconnects: int = 0
    dropped: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    backlog: int = 0
    published: int = 0


def offer(send: trio.MemorySendChannel[Publish], item: Publish, stats: EgressStats) -> bool:
    """Producer side: `send_nowait`; a full channel drops the item (`queue_full`, WARN ≤ 1/s)."""
    try:
        send.send_nowait(item)
    except trio.WouldBlock:
        stats.dropped["queue_full"] += 1
        _limiter.log(log, logging.WARNING, "queue_full", "mqtt_egress_queue_full", kind=item.kind)
        return False
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        return False  # shutting down: the router is gone
    return True


def topic_map(cfg: MqttEgressConfig) -> dict[str, str]:
    """Publish kind → `[mqtt_egress].<name>_topic`."""
    return {
        "journey": cfg.journeys_topic,
        "zone": cfg.events_topic,
        "track": cfg.tracks_topic,
        "gate": cfg.gate_topic,
        "acc": cfg.acc_topic,
        "position": cfg.positions_topic,
        "metrics": cfg.metrics_topic,
    }


@attrs.define(slots=True, eq=False)
class JourneyEntry:
    topic: str
    data: bytes


@attrs.define(slots=True)
class JourneyBacklog:
    """Ordered journeys not yet acknowledged; sans-I/O bookkeeping of the QoS 1 window.

    `entries[:_sent]` went out on the current connection; `_in_flight` counts sent entries whose
    PUBACK is pending, including ones that overflow already pushed out of the backlog.
    """

    capacity: int = BACKLOG_CAPACITY
    max_unacked: int = MAX_UNACKED
    _entries: collections.deque[JourneyEntry] = attrs.field(factory=collections.deque)
    _sent: int = 0
    _in_flight: int = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def append(self, entry: JourneyEntry) -> JourneyEntry | None:
        """Queue a journey; returns the oldest one when it had to be dropped (`backlog_full`)."""
        dropped = None
        if len(self._entries) >= self.capacity:
            dropped = self._entries.popleft()
            self._sent = max(0, self._sent - 1)
        self._entries.append(entry)
        return dropped

    def next_to_send(self) -> JourneyEntry | None:
        """The next unsent journey, or None when none is waiting or the window is full."""
        if self._in_flight >= self.max_unacked or self._sent >= len(self._entries):
            return None
        entry = self._entries[self._sent]
        self._sent += 1
        self._in_flight += 1
        return entry

    def acked(self, entry: JourneyEntry) -> None:
        """PUBACK for `entry`; call in send order."""
        self._in_flight -= 1
        if self._entries and self._entries[0] is entry:
            self._entries.popleft()
            self._sent -= 1

    def reset_connection(self) -> None:
        """New connection: every journey still here is unacknowledged and is sent again."""
        self._sent = 0
        self._in_flight = 0


class _Router:
    def __init__(
        self,
        config: Config,
        stats: EgressStats,
        livefeed: Callable[[str, bytes], None] | None,
    ) -> None:
        self.cfg = config.mqtt_egress
        self.stats = stats
        self.livefeed = livefeed
        self.topics = topic_map(self.cfg)
        self.backlog = JourneyBacklog()
        self.client: MqttClient | None = None
        self._send_wakeup = trio.Event()
        self._emptied = trio.Event()
        self._emptied.set()

    def route(self, item: Publish) -> None:
        data = encode_payload(item.payload)
        if self.livefeed is not None:
            self.livefeed(item.kind, data)
        if not self.cfg.enabled:
            return
        topic = self.topics[item.kind]
        if item.kind == "journey":
            self._enqueue_journey(topic, data)
        else:
            self.publish_qos0(topic, data)

    def _enqueue_journey(self, topic: str, data: bytes) -> None:
        backlog, stats = self.backlog, self.stats
        if backlog.append(JourneyEntry(topic, data)) is not None:
            stats.dropped["backlog_full"] += 1
            _limiter.log(log, logging.WARNING, "backlog_full", "mqtt_egress_backlog_full")
        stats.backlog = len(backlog)
        if self._emptied.is_set():
            self._emptied = trio.Event()
        self._send_wakeup.set()

    def publish_qos0(self, topic: str, data: bytes) -> None:
        client, dropped = self.client, self.stats.dropped
        if client is None or not client.connected:
            dropped["disconnected"] += 1
            return
        try:
            client.publish_nowait(topic, data)
        except trio.WouldBlock:  # the broker socket is backed up: same effect as a full queue
            dropped["queue_full"] += 1
        except MqttError:
            dropped["disconnected"] += 1
        else:
            self.stats.published += 1

    async def wait_backlog_empty(self) -> None:
        while len(self.backlog):
            await self._emptied.wait()

    async def run_metrics(self, payload: Callable[[], Mapping[str, Any]]) -> None:
        interval = float(self.cfg.metrics_publish_interval_secs)
        deadline = trio.current_time()
        while True:
            deadline += interval
            await trio.sleep_until(deadline)
            data = encode_payload(payload())
            if self.livefeed is not None:
                self.livefeed("metrics", data)
            if self.cfg.enabled:
                self.publish_qos0(self.topics["metrics"], data)

    async def run_connection(self) -> None:
        """Connect loop (interfaces.md §7: reconnect as §1.1, counted as `client="egress"`)."""
        cfg, stats = self.cfg, self.stats
        backoff, first = RECONNECT_FIRST_S, True
        while True:
            if not first:
                stats.reconnects += 1
            first = False
            client = MqttClient(
                cfg.host,
                cfg.port,
                client_id=f"gateway-egress-{os.getpid()}",
                username=cfg.username,
                password=cfg.password,
            )
            try:
                async with client:
                    backoff = RECONNECT_FIRST_S
                    self.client, stats.connected = client, True
                    log_event(
                        log,
                        logging.INFO,
                        "mqtt_connected",
                        client="egress",
                        host=cfg.host,
                        port=cfg.port,
                    )
                    await self._serve_connection(client)
            except MqttError as exc:
                _limiter.log(
                    log,
                    logging.WARNING,
                    "connect",
                    "mqtt_egress_connect_failed",
                    host=cfg.host,
                    port=cfg.port,
                    error=str(exc),
                )
            finally:
                if stats.connected:
                    log_event(log, logging.INFO, "mqtt_disconnected", client="egress")
                self.client, stats.connected = None, False
            await trio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_S)

    async def _serve_connection(self, client: MqttClient) -> None:
        self.backlog.reset_connection()
        in_flight: collections.deque[tuple[JourneyEntry, Delivery]] = collections.deque()
        ack_wakeup = [trio.Event()]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_loop, client, in_flight, ack_wakeup)
            nursery.start_soon(self._ack_loop, in_flight, ack_wakeup)
            await client.wait_disconnected()
            nursery.cancel_scope.cancel()

    async def _send_loop(
        self,
        client: MqttClient,
        in_flight: collections.deque[tuple[JourneyEntry, Delivery]],
        ack_wakeup: list[trio.Event],
    ) -> None:
        while True:
            entry = self.backlog.next_to_send()
            if entry is None:
                await self._send_wakeup.wait()
                self._send_wakeup = trio.Event()
                continue
            try:
                delivery = client.publish_nowait(entry.topic, entry.data, qos=1)
            except MqttError:
                return  # lost: the connection loop reconnects and re-sends
            in_flight.append((entry, delivery))
            ack_wakeup[0].set()
            await trio.lowlevel.checkpoint()

    async def _ack_loop(
        self,
        in_flight: collections.deque[tuple[JourneyEntry, Delivery]],
        ack_wakeup: list[trio.Event],
    ) -> None:
        backlog, stats = self.backlog, self.stats
        while True:
            if not in_flight:
                await ack_wakeup[0].wait()
                ack_wakeup[0] = trio.Event()
                continue
            entry, delivery = in_flight[0]
            try:
                await delivery.wait()
            except MqttError:
                return
            in_flight.popleft()
            backlog.acked(entry)
            stats.published += 1
            stats.backlog = len(backlog)
            self._send_wakeup.set()
            if not len(backlog):
                self._emptied.set()


async def run_egress(
    config: Config,
    receive: trio.MemoryReceiveChannel[Publish],
    stats: EgressStats,
    *,
    livefeed: Callable[[str, bytes], None] | None,
    metrics_payload: Callable[[], Mapping[str, Any]] | None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Route until `receive` is closed, then drain the journey backlog for at most 5 s."""
    router = _Router(config, stats, livefeed)
    async with trio.open_nursery() as nursery:
        if config.mqtt_egress.enabled:
            nursery.start_soon(router.run_connection)
        if metrics_payload is not None:
            nursery.start_soon(router.run_metrics, metrics_payload)
        task_status.started()
        async for item in receive:
            router.route(item)
            # Normally one item per scheduling round, so a gate command never waits behind a
            # burst of position publishes. Only when the channel backs up (one round per item
            # cannot keep up with a tracker that hands over bursts) take a bounded batch.
            if receive.statistics().current_buffer_used < EGRESS_BACKLOG_ITEMS:
                continue
            for _ in range(EGRESS_DRAIN_BATCH):
                try:
                    router.route(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
        with trio.move_on_after(DRAIN_S):
            await router.wait_backlog_empty()
        if len(router.backlog):
            log_event(
                log, logging.WARNING, "mqtt_egress_drain_incomplete", backlog=len(router.backlog)
            )
        nursery.cancel_scope.cancel()
