"""Embedded broker over real sockets: MQTT 3.1.1 clients, 256 KiB payloads, clean stop (issue 7.1).

mosquitto_pub/mosquitto_sub are the reference 3.1.1 clients (README "Dependencies"); paho-mqtt 2.x
is the client the gateway itself uses.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
import trio
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway.config.model import BrokerConfig
from gateway.io import broker as broker_mod
from gateway.io.broker import BrokerError, BrokerStats, EmbeddedBroker, run_broker

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
CLIENT_WAIT_S = 10  # bound on every client step, so a broken broker fails instead of hanging
SUB = "/usr/bin/mosquitto_sub"
PUB = "/usr/bin/mosquitto_pub"
# MQTT 3.1.1 CONNECT (§3.1): protocol "MQTT" level 4, clean session, keep-alive 60 s, empty id
CONNECT_V311 = bytes.fromhex("100c00044d5154540402003c0000")
CONNACK_OK = bytes.fromhex("20020000")


def _broker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "gateway-broker"]


@pytest.fixture
def embedded() -> Iterator[tuple[EmbeddedBroker, BrokerStats]]:
    stats = BrokerStats()
    broker = EmbeddedBroker(BrokerConfig(bind_address=HOST, port=0), stats)
    broker.start()
    try:
        yield broker, stats
    finally:
        broker.stop()


def _subscriber(port: int, topic: str, *extra: str) -> subprocess.Popen[bytes]:
    """mosquitto_sub (3.1.1, one message), returned once its SUBACK arrived (debug output)."""
    args = ["stdbuf", "-oL", SUB, "-d", "-V", "mqttv311", "-h", HOST, "-p", str(port)]
    args += ["-t", topic, "-C", "1", "-W", str(CLIENT_WAIT_S), *extra]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    for line in proc.stdout:  # ends at EOF if the client gives up (-W)
        if line.startswith(b"Subscribed"):
            return proc
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"mosquitto_sub never subscribed: {err!r}")


def _publish(
    port: int, topic: str, payload: bytes, qos: int = 0
) -> subprocess.CompletedProcess[str]:
    args = [PUB, "-V", "mqttv311", "-h", HOST, "-p", str(port), "-t", topic, "-q", str(qos), "-s"]
    return subprocess.run(args, input=payload.decode(), capture_output=True, text=True, timeout=30)


def _mqtt_connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=CLIENT_WAIT_S)
    sock.sendall(CONNECT_V311)
    assert sock.recv(4) == CONNACK_OK
    return sock


def test_mosquitto_clients_exchange_a_message_over_mqtt_311(
    embedded: tuple[EmbeddedBroker, BrokerStats],
) -> None:
    _, stats = embedded
    sub = _subscriber(stats.port, "shop/#", "-v")
    done = _publish(stats.port, "shop/door", b"open")
    out, _ = sub.communicate(timeout=CLIENT_WAIT_S)
    assert done.returncode == 0, done.stderr
    assert sub.returncode == 0
    assert out.splitlines()[-2:] == [b"shop/door open", b"Client (null) sending DISCONNECT"]


def test_256_kib_payload_goes_through_unchanged(
    embedded: tuple[EmbeddedBroker, BrokerStats],
) -> None:
    _, stats = embedded
    payload = os.urandom(128 * 1024).hex().encode()  # 256 KiB, printable so -F %p can show it
    assert len(payload) == 256 * 1024
    sub = _subscriber(stats.port, "big", "-q", "1", "-F", "%t %l %p")
    done = _publish(stats.port, "big", payload, qos=1)
    out, _ = sub.communicate(timeout=CLIENT_WAIT_S)
    assert done.returncode == 0, done.stderr
    assert b"big 262144 " + payload + b"\n" in out
    assert stats.refused_packets == 0


def test_paho_qos1_publish_is_acked_and_delivered(
    embedded: tuple[EmbeddedBroker, BrokerStats],
) -> None:
    _, stats = embedded
    got: list[mqtt.MQTTMessage] = []
    delivered = threading.Event()
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg)
        delivered.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv311)
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv311)
    try:
        sub.connect(HOST, stats.port)
        sub.loop_start()
        sub.subscribe("gateway/journeys", qos=1)
        assert subscribed.wait(CLIENT_WAIT_S)
        pub.connect(HOST, stats.port)
        pub.loop_start()
        info = pub.publish("gateway/journeys", b'{"jid":"j1"}', qos=1)
        info.wait_for_publish(CLIENT_WAIT_S)
        assert info.is_published()  # PUBACK received
        assert delivered.wait(CLIENT_WAIT_S)
    finally:
        for client in (pub, sub):
            client.disconnect()
            client.loop_stop()
    assert [(m.topic, m.payload, m.qos) for m in got] == [("gateway/journeys", b'{"jid":"j1"}', 1)]


def test_port_in_use_raises_broker_error_naming_address_and_port() -> None:
    with socket.create_server((HOST, 0)) as taken:
        port = taken.getsockname()[1]
        stats = BrokerStats()
        broker = EmbeddedBroker(BrokerConfig(bind_address=HOST, port=port), stats)
        with pytest.raises(BrokerError, match=rf"{HOST}:{port}.*Address already in use"):
            broker.start()
    assert stats.state == "degraded"
    assert f"{HOST}:{port}" in stats.detail
    assert stats.health()["state"] == "degraded"
    assert _broker_threads() == []
    broker.stop()  # nothing started: a no-op that keeps the failure visible
    assert stats.state == "degraded"


def test_stop_closes_clients_releases_the_port_and_leaves_no_thread() -> None:
    stats = BrokerStats()
    first = EmbeddedBroker(BrokerConfig(bind_address=HOST, port=0), stats)
    first.start()
    port = stats.port
    assert stats.health() == {"state": "ok", "bind": HOST, "port": port, "connections": 0}
    client = _mqtt_connect(port)
    silent = socket.create_connection((HOST, port), timeout=CLIENT_WAIT_S)  # never sends CONNECT
    with client, silent:
        first.stop()
        assert client.recv(1) == b""  # the session was closed by the broker, not left dangling
        assert silent.recv(1) == b""
    assert stats.state == "stopped"
    assert not first.running
    assert _broker_threads() == []

    again = BrokerStats()
    second = EmbeddedBroker(BrokerConfig(bind_address=HOST, port=port), again)
    second.start()  # same port right away
    try:
        assert again.port == port
        _mqtt_connect(port).close()
    finally:
        second.stop()
    assert _broker_threads() == []


def test_mqtt5_connect_gets_unacceptable_protocol_and_is_closed(
    embedded: tuple[EmbeddedBroker, BrokerStats],
) -> None:
    _, stats = embedded
    # MQTT 5 CONNECT (level 5, clean start, keep-alive 60 s, no properties, empty id)
    connect_v5 = bytes.fromhex("100d00044d5154540502003c000000")
    with socket.create_connection((HOST, stats.port), timeout=CLIENT_WAIT_S) as sock:
        sock.sendall(connect_v5)
        assert sock.recv(4) == bytes.fromhex("20020001")  # 3.1.1 §3.2.2.3: return code 1
        assert sock.recv(1) == b""


def test_port_probe_without_connect_logs_nothing_above_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stats = BrokerStats()
    broker = EmbeddedBroker(BrokerConfig(bind_address=HOST, port=0), stats)
    broker.start()
    try:
        socket.create_connection((HOST, stats.port), timeout=CLIENT_WAIT_S).close()
        _mqtt_connect(stats.port).close()
    finally:
        broker.stop()  # joins the loop, so both connections have been handled
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == []


def test_packet_above_cap_is_refused_and_broker_keeps_serving(
    embedded: tuple[EmbeddedBroker, BrokerStats],
) -> None:
    _, stats = embedded
    huge = b"x" * (broker_mod.MAX_PACKET_BYTES + 1)
    refused = _publish(stats.port, "big", huge, qos=1)
    assert refused.returncode != 0
    assert stats.refused_packets == 1
    sub = _subscriber(stats.port, "after", "-v")
    assert _publish(stats.port, "after", b"still-up").returncode == 0
    out, _ = sub.communicate(timeout=CLIENT_WAIT_S)
    assert b"after still-up\n" in out


def test_ipv6_loopback_bind() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    stats = BrokerStats()
    broker = EmbeddedBroker(BrokerConfig(bind_address="::1", port=0), stats)
    try:
        broker.start()
    except BrokerError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        with socket.create_connection(("::1", stats.port), timeout=CLIENT_WAIT_S) as sock:
            sock.sendall(CONNECT_V311)
            assert sock.recv(4) == CONNACK_OK
    finally:
        broker.stop()


def test_thread_ending_on_its_own_degrades_and_calls_on_exit() -> None:
    exited = threading.Event()
    stats = BrokerStats()
    broker = EmbeddedBroker(BrokerConfig(bind_address=HOST, port=0), stats, on_exit=exited.set)
    broker.start()
    loop = broker._loop  # test hook: crash the loop from outside, as an amqtt bug would
    assert loop is not None
    loop.call_soon_threadsafe(loop.stop)
    assert exited.wait(CLIENT_WAIT_S)
    assert stats.state == "degraded"
    assert "crashed" in stats.detail
    broker.stop()
    assert _broker_threads() == []


def test_amqtt_logs_quiet_unless_gateway_logs_debug() -> None:
    root = logging.getLogger()
    saved = root.level, logging.getLogger("amqtt").level
    try:
        root.setLevel(logging.INFO)
        broker_mod.quiet_library_logs()
        assert logging.getLogger("amqtt").level == logging.WARNING
        assert logging.getLogger("transitions").level == logging.WARNING
        root.setLevel(logging.DEBUG)
        broker_mod.quiet_library_logs()
        assert logging.getLogger("amqtt").getEffectiveLevel() == logging.DEBUG
    finally:
        root.setLevel(saved[0])
        logging.getLogger("amqtt").setLevel(saved[1])
        logging.getLogger("transitions").setLevel(logging.NOTSET)


async def test_run_broker_serves_until_cancelled_then_stops_within_bound() -> None:
    stats = BrokerStats()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_broker, BrokerConfig(bind_address=HOST, port=0), stats)
        assert stats.health()["state"] == "ok"
        stream = await trio.open_tcp_stream(HOST, stats.port)
        async with stream:
            await stream.send_all(CONNECT_V311)
            with trio.fail_after(CLIENT_WAIT_S):
                assert await stream.receive_some(4) == CONNACK_OK
            began = trio.current_time()
            nursery.cancel_scope.cancel()
    assert trio.current_time() - began < broker_mod.RUN_STOP_BOUND_S
    assert stats.state == "stopped"
    assert _broker_threads() == []


async def test_run_broker_bind_failure_raises_for_the_supervisor() -> None:
    with socket.create_server((HOST, 0)) as taken:
        port = taken.getsockname()[1]
        stats = BrokerStats()
        with pytest.RaisesGroup(pytest.RaisesExc(BrokerError, match=rf"{HOST}:{port}")):
            async with trio.open_nursery() as nursery:
                await nursery.start(run_broker, BrokerConfig(bind_address=HOST, port=port), stats)
    assert stats.health()["state"] == "degraded"
    assert _broker_threads() == []


async def test_run_broker_raises_when_the_broker_thread_dies() -> None:
    stats = BrokerStats()
    made: list[EmbeddedBroker] = []
    real = broker_mod.EmbeddedBroker

    def spy(*args: object, **kwargs: object) -> EmbeddedBroker:
        made.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(broker_mod, "EmbeddedBroker", spy)
        with pytest.RaisesGroup(pytest.RaisesExc(BrokerError, match="stopped unexpectedly")):
            async with trio.open_nursery() as nursery:
                await nursery.start(run_broker, BrokerConfig(bind_address=HOST, port=0), stats)
                loop = made[0]._loop
                assert loop is not None
                loop.call_soon_threadsafe(loop.stop)
    assert stats.state == "degraded"  # stays visible in /health until the supervisor restarts it
    assert _broker_threads() == []
