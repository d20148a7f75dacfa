"""The paho Trio shim against a real mosquitto: round trips, PUBACKs, big payloads, failures."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

import pytest
import trio

from gateway.io.mqtt_shim import (
    Connack,
    Message,
    MqttClient,
    MqttCodeError,
    MqttError,
    MqttReentrantError,
)

if TYPE_CHECKING:
    from conftest import MosquittoServer

pytestmark = pytest.mark.integration

STEP_S = 5.0  # generous bound on every wait below; none is a performance threshold


def _client(server: MosquittoServer, name: str, **kwargs: object) -> MqttClient:
    return MqttClient(
        server.host,
        server.port,
        client_id=f"{name}-{os.getpid()}",
        **kwargs,  # type: ignore[arg-type]
    )


async def _collect(client: MqttClient, n: int) -> list[Message]:
    got: list[Message] = []
    with trio.fail_after(STEP_S):
        async for msg in client.messages:
            got.append(msg)
            if len(got) == n:
                break
    return got


@pytest.mark.parametrize("qos", [0, 1])
async def test_roundtrip_qos(mosquitto: MosquittoServer, mqtt_topic_prefix: str, qos: int) -> None:
    topic = f"{mqtt_topic_prefix}/a"
    async with _client(mosquitto, "sub") as sub, _client(mosquitto, "pub") as pub:
        with trio.fail_after(STEP_S):
            await sub.subscribe(f"{mqtt_topic_prefix}/#", qos=qos)
            for i in range(10):
                await pub.publish(topic, b"m%d" % i, qos=qos)
        got = await _collect(sub, 10)
    assert [m.payload for m in got] == [b"m%d" % i for i in range(10)]
    assert {m.topic for m in got} == {topic}
    assert {m.qos for m in got} == {qos}
    assert all(m.recv_ns > 0 for m in got)
    assert not sub.connected
    assert not pub.connected


async def test_qos1_publish_waits_for_puback(
    mosquitto: MosquittoServer, mqtt_topic_prefix: str
) -> None:
    async with _client(mosquitto, "pub") as pub:
        delivery = pub.publish_nowait(f"{mqtt_topic_prefix}/j", b"journey", qos=1)
        assert not delivery.done  # nothing is read before the Trio loop runs
        with trio.fail_after(STEP_S):
            await delivery.wait()
        assert delivery.done
        assert delivery.error is None


async def test_256_kib_payload(mosquitto: MosquittoServer, mqtt_topic_prefix: str) -> None:
    payload = os.urandom(256 * 1024)
    async with _client(mosquitto, "sub") as sub, _client(mosquitto, "pub") as pub:
        with trio.fail_after(STEP_S):
            await sub.subscribe(f"{mqtt_topic_prefix}/big")
            await pub.publish(f"{mqtt_topic_prefix}/big", payload, qos=1)
        (msg,) = await _collect(sub, 1)
    assert msg.payload == payload


async def test_socket_has_nodelay_and_connack_hook(mosquitto: MosquittoServer) -> None:
    seen: list[Connack] = []
    client = _client(mosquitto, "nodelay", on_connack=seen.append)
    async with client:
        sock = client._sock
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert seen == [Connack(session_present=False, code=0)]


async def test_client_is_reusable_not_reentrant(mosquitto: MosquittoServer) -> None:
    client = _client(mosquitto, "reuse")
    for _ in range(2):
        async with client:
            assert client.connected
            with pytest.raises(MqttReentrantError):
                await client.__aenter__()
        assert not client.connected
    with pytest.raises(MqttError):
        client.publish_nowait("x/y", b"", qos=0)


async def test_connect_refused_raises_mqtt_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connect is refused
        client = MqttClient("127.0.0.1", port, client_id="refused")
        with pytest.raises(MqttError, match="failed"):
            async with client:
                pytest.fail("must not connect")
    assert not client.connected


async def test_broker_stop_ends_messages_with_mqtt_error(
    mosquitto: MosquittoServer, mqtt_topic_prefix: str
) -> None:
    async with _client(mosquitto, "lost", keepalive=5) as client:
        await client.subscribe(f"{mqtt_topic_prefix}/#")
        d = client.publish_nowait(f"{mqtt_topic_prefix}/x", b"1", qos=1)
        await d.wait()
        await trio.to_thread.run_sync(mosquitto.kill)
        with trio.fail_after(STEP_S), pytest.raises(MqttCodeError):
            async for _ in client.messages:
                pass
        assert not client.connected
        with trio.fail_after(STEP_S):
            await client.wait_disconnected()
        with pytest.raises(MqttError):
            await client.publish(f"{mqtt_topic_prefix}/x", b"2", qos=1)


async def test_pending_qos1_fails_when_connection_drops(
    mosquitto: MosquittoServer, mqtt_topic_prefix: str
) -> None:
    async with _client(mosquitto, "drop") as client:
        mosquitto.pause()  # no PUBACK can come back
        delivery = client.publish_nowait(f"{mqtt_topic_prefix}/x", b"late", qos=1)
        await trio.to_thread.run_sync(mosquitto.kill)
        with trio.fail_after(STEP_S), pytest.raises(MqttCodeError):
            await delivery.wait()
        with pytest.raises(MqttError):
            client.publish_nowait(f"{mqtt_topic_prefix}/x", b"later", qos=1)


async def test_cancellation_closes_cleanly(mosquitto: MosquittoServer) -> None:
    client = _client(mosquitto, "cancel")
    with trio.move_on_after(0.2):
        async with client:
            await trio.sleep_forever()
    assert not client.connected
    async with client:  # still usable afterwards
        assert client.connected
