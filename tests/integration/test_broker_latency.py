"""Publish → receive hop through the embedded broker vs. Mosquitto (measured-mqtt-floor.md).

Prints p50/p99/max for both; asserts only delivery (every message, in order, intact), never a
wall-clock threshold. Both paho clients set TCP_NODELAY, as the gateway's own clients do.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway.config.model import BrokerConfig
from gateway.io.broker import BrokerStats, EmbeddedBroker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOST = "127.0.0.1"
RATE_HZ = 1000  # the notes' reference rate
COUNT = 1000
FRAME_BYTES = 2200  # a 20-object Xovis frame (measured-mqtt-floor.md)
WAIT_S = 20.0


@pytest.fixture
def embedded_port() -> Iterator[int]:
    stats = BrokerStats()
    broker = EmbeddedBroker(BrokerConfig(bind_address=HOST, port=0), stats)
    broker.start()
    try:
        yield stats.port
    finally:
        broker.stop()


def _client(port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv311)
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.connect(HOST, port)
    sock = client.socket()
    assert isinstance(sock, socket.socket)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.loop_start()
    assert connected.wait(WAIT_S)
    return client


def _hop_ns(port: int, topic: str, count: int) -> list[int]:
    """Paced QoS 0 publishes; each payload carries its sequence number and send time."""
    latencies: list[int] = []
    seqs: list[int] = []
    frames: list[bytes] = []
    done = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        latencies.append(time.perf_counter_ns() - int(msg.payload[8:28]))
        seqs.append(int(msg.payload[:8]))
        frames.append(bytes(msg.payload))
        if len(seqs) == count:
            done.set()

    sub = _client(port)
    pub: mqtt.Client | None = None
    subscribed = threading.Event()
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.on_message = on_message
    try:
        sub.subscribe(topic, 0)
        assert subscribed.wait(WAIT_S)
        pub = _client(port)
        pad = b"x" * (FRAME_BYTES - 28)
        start = time.perf_counter()
        for i in range(count):
            ahead = start + i / RATE_HZ - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)  # pacing the load generator, not waiting for a result
            pub.publish(topic, b"%08d%020d" % (i, time.perf_counter_ns()) + pad, qos=0)
        done.wait(WAIT_S)
    finally:
        for client in (pub, sub):
            if client is not None:
                client.disconnect()
                client.loop_stop()
    assert seqs == list(range(count))
    assert all(len(f) == FRAME_BYTES for f in frames)
    return latencies


def _report(name: str, latencies: list[int]) -> str:
    ordered = sorted(latencies)

    def ms(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    line = (
        f"{name}: hop at {RATE_HZ} msg/s, {FRAME_BYTES} B, n={len(ordered)}: "
        f"p50 {ms(0.5):.3f} ms, p99 {ms(0.99):.3f} ms, max {ordered[-1] / 1e6:.3f} ms"
    )
    print(line)
    return line


def test_hop_through_embedded_broker_and_mosquitto(
    embedded_port: int,
    mosquitto: Any,  # conftest's MosquittoServer (conftest is not importable as a module)
    mqtt_topic_prefix: str,
) -> None:
    mosq_port = int(mosquitto.port)
    topic = f"{mqtt_topic_prefix}/hop"
    for port in (embedded_port, mosq_port):  # warm both paths (imports, first allocations)
        _hop_ns(port, topic, 50)
    embedded = _hop_ns(embedded_port, topic, COUNT)
    mosq = _hop_ns(mosq_port, topic, COUNT)
    assert len(embedded) == len(mosq) == COUNT
    _report("embedded amqtt (in-process thread)", embedded)
    _report("mosquitto (set_tcp_nodelay true)", mosq)
