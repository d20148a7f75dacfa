"""Trio side of the synthetic traffic: Xovis frames over MQTT on absolute deadlines, ACC over TCP.

paho-mqtt 2.x runs its own network thread (`loop_start`); TCP_NODELAY is set on its socket as soon
as paho opens it, reconnects included (simulation.md §6). ACC lines use one TCP connection per
terminal, bound to the terminal's 127.0.0.k source address (Linux routes all of 127/8 to loopback),
reconnected when it drops (interfaces.md §2).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import attrs
import paho.mqtt.client as mqtt
import trio
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway.app.logs import log_event
from gateway.tools.traffic import TrafficSource
from gateway.tools.traffic_model import AccLine, SensorMessage

logger = logging.getLogger(__name__)

MQTT_CONNECT_TIMEOUT_S: Final = 10.0  # TCP connect + CONNACK (interfaces.md §1.1)
MQTT_KEEPALIVE_S: Final = 30  # interfaces.md §1.1
MQTT_RECONNECT_S: Final = (1, 10)  # paho's own reconnect backoff, as the ingress (§1.1)
MQTT_STOP_S: Final = 2.0  # disconnect + network-thread join at the end
MQTT_CLIENT_ID: Final = "gateway-traffic"
ACC_CONNECT_TIMEOUT_S: Final = 5.0
ACC_SEND_TIMEOUT_S: Final = 5.0
ACC_RECONNECT_MIN_S: Final = 0.2  # a dropped terminal connection is re-opened quickly…
ACC_RECONNECT_MAX_S: Final = 5.0  # …backing off while the listener stays away
ACC_QUEUE_LINES: Final = 64  # per terminal; a full queue drops the line (counted)
ACC_DRAIN_S: Final = 2.0  # at the end, time left for queued ACC lines
_RECV_BYTES: Final = 4096  # the gateway never replies (§2); anything read is discarded


@attrs.define
class TrafficIoStats:
    """What the sender did; read by the demo summary and the bench."""

    frames: int = 0
    frames_skipped: int = 0  # deadlines missed by more than one period (skipped, never bursted)
    published: int = 0
    publish_failed: int = 0  # paho refused (not connected)
    acc_sent: int = 0
    acc_dropped: int = 0  # terminal queue full
    acc_connects: int = 0
    acc_connect_failures: int = 0
    acc_disconnects: int = 0


class MqttPublisher:
    """A connected paho client with its own network thread; `publish` never blocks."""

    def __init__(self, client: mqtt.Client, stats: TrafficIoStats) -> None:
        self._client = client
        self.stats = stats

    def publish(self, topic: str, payload: bytes) -> bool:
        """QoS 0 publish; False (and counted) when paho is not connected."""
        info = self._client.publish(topic, payload, qos=0)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.stats.published += 1
            return True
        self.stats.publish_failed += 1
        return False


def _set_nodelay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    """paho never sets TCP_NODELAY; without it a frame waits for the delayed ACK (~13 ms)."""
    with contextlib.suppress(OSError, AttributeError):  # a non-TCP transport has no Nagle
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@contextlib.asynccontextmanager
async def open_mqtt_publisher(
    host: str,
    port: int,
    *,
    client_id: str = MQTT_CLIENT_ID,
    stats: TrafficIoStats | None = None,
) -> AsyncIterator[MqttPublisher]:
    """Connect (CONNACK awaited) and start paho's network thread; stop it on exit.

    Raises OSError (refused, unreachable, no CONNACK) or trio.TooSlowError (connect timeout).
    """
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
    )
    connacked = threading.Event()
    refused: list[str] = []

    def on_connect(_c: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connacked.set()

    client.on_socket_open = _set_nodelay
    client.on_connect = on_connect
    client.reconnect_delay_set(*MQTT_RECONNECT_S)
    try:
        with trio.fail_after(MQTT_CONNECT_TIMEOUT_S):
            await trio.to_thread.run_sync(
                client.connect, host, port, MQTT_KEEPALIVE_S, abandon_on_cancel=True
            )
            client.loop_start()
            # the worker waits at most the connect timeout, so an abandoned one ends by itself
            answered = await trio.to_thread.run_sync(
                connacked.wait, MQTT_CONNECT_TIMEOUT_S, abandon_on_cancel=True
            )
        if refused:
            raise ConnectionRefusedError(f"broker refused the connection: {refused[0]}")
        if not answered:
            raise ConnectionError("no CONNACK from the broker")
        log_event(logger, logging.INFO, "traffic_mqtt_connected", host=host, port=port)
        yield MqttPublisher(client, stats if stats is not None else TrafficIoStats())
    finally:
        client.disconnect()
        with trio.CancelScope(shield=True), trio.move_on_after(MQTT_STOP_S):
            await trio.to_thread.run_sync(client.loop_stop, abandon_on_cancel=True)


@attrs.define
class _Outbox:
    """The line being sent survives a reconnect: it is retried on the next connection."""

    carry: bytes | None = None


async def _pump(
    stream: trio.SocketStream,
    lines: trio.MemoryReceiveChannel[bytes],
    outbox: _Outbox,
    stats: TrafficIoStats,
) -> None:
    while True:
        if outbox.carry is None:
            outbox.carry = await lines.receive()
        with trio.fail_after(ACC_SEND_TIMEOUT_S):
            await stream.send_all(outbox.carry)
        outbox.carry = None
        stats.acc_sent += 1


async def _watch_close(stream: trio.SocketStream, scope: trio.CancelScope) -> None:
    """The listener never writes: EOF or a reset means the connection is gone."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while await stream.receive_some(_RECV_BYTES):
            pass
    scope.cancel()


async def run_acc_terminal(
    source_ip: str,
    host: str,
    port: int,
    lines: trio.MemoryReceiveChannel[bytes],
    stats: TrafficIoStats,
) -> None:
    """Send one terminal's lines from `source_ip` until `lines` ends; reconnects forever."""
    outbox = _Outbox()
    backoff = ACC_RECONNECT_MIN_S
    while True:
        try:
            with trio.fail_after(ACC_CONNECT_TIMEOUT_S):
                stream = await trio.open_tcp_stream(host, port, local_address=source_ip)
        except (OSError, trio.TooSlowError) as exc:
            stats.acc_connect_failures += 1
            log_event(logger, logging.DEBUG, "traffic_acc_connect_failed", ip=source_ip, err=exc)
            await trio.sleep(backoff)
            backoff = min(2 * backoff, ACC_RECONNECT_MAX_S)
            continue
        backoff = ACC_RECONNECT_MIN_S
        stats.acc_connects += 1
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(_watch_close, stream, nursery.cancel_scope)
            try:
                await _pump(stream, lines, outbox, stats)
            except trio.EndOfChannel:
                nursery.cancel_scope.cancel()
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                pass
            nursery.cancel_scope.cancel()
        stats.acc_disconnects += 1
        log_event(logger, logging.DEBUG, "traffic_acc_disconnected", ip=source_ip)


class _AccTerminals:
    """One queue + sender task per source IP, opened on the IP's first line."""

    def __init__(self, nursery: trio.Nursery, host: str, port: int, stats: TrafficIoStats) -> None:
        self._nursery = nursery
        self._host, self._port = host, port
        self._stats = stats
        self._queues: dict[str, trio.MemorySendChannel[bytes]] = {}

    def send_nowait(self, line: AccLine) -> None:
        queue = self._queues.get(line.source_ip)
        if queue is None:
            queue, rx = trio.open_memory_channel[bytes](ACC_QUEUE_LINES)
            self._queues[line.source_ip] = queue
            self._nursery.start_soon(
                run_acc_terminal, line.source_ip, self._host, self._port, rx, self._stats
            )
        try:
            queue.send_nowait(line.line)
        except trio.WouldBlock:
            self._stats.acc_dropped += 1

    def close(self) -> None:
        """No more lines: each sender ends once its queue is empty."""
        for queue in self._queues.values():
            queue.close()


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def _pace(
    model: TrafficSource,
    publisher: MqttPublisher,
    terminals: _AccTerminals,
    duration_s: float | None,
    speed: float,
    stats: TrafficIoStats,
) -> None:
    period_s = model.frame_period_ms / 1000.0 / speed
    t0 = trio.current_time()
    end = None if duration_s is None else t0 + duration_s
    k = 0
    while end is None or t0 + k * period_s < end:
        await trio.sleep_until(t0 + k * period_s)
        due = int((trio.current_time() - t0) / period_s)
        if due > k:  # more than a whole period late: skip the missed frames, never burst
            stats.frames_skipped += due - k
            k = due
        for out in model.step(round(k * model.frame_period_ms), _wall_ms()):
            if isinstance(out, SensorMessage):
                publisher.publish(out.topic, out.payload)
            else:
                terminals.send_nowait(out)
        stats.frames += 1
        k += 1


async def run_traffic(
    model: TrafficSource,
    *,
    mqtt_host: str,
    mqtt_port: int,
    acc_host: str,
    acc_port: int,
    duration_s: float | None,
    speed: float = 1.0,
    stats: TrafficIoStats | None = None,
    client_id: str = MQTT_CLIENT_ID,
    task_status: trio.TaskStatus[MqttPublisher] = trio.TASK_STATUS_IGNORED,
) -> TrafficIoStats:
    """Step `model` every frame period / `speed` of real time and send what it returns.

    `started()` hands over the connected publisher (the bench publishes its trial messages on
    it). Runs `duration_s` of real time (None = until cancelled); queued ACC lines then get up
    to `ACC_DRAIN_S` to go out.
    """
    if speed <= 0:
        raise ValueError("speed must be > 0")
    stats = stats if stats is not None else TrafficIoStats()
    async with (
        open_mqtt_publisher(mqtt_host, mqtt_port, client_id=client_id, stats=stats) as publisher,
        trio.open_nursery() as nursery,
    ):
        terminals = _AccTerminals(nursery, acc_host, acc_port, stats)
        task_status.started(publisher)
        await _pace(model, publisher, terminals, duration_s, speed, stats)
        terminals.close()
        nursery.cancel_scope.deadline = trio.current_time() + ACC_DRAIN_S
    return stats
