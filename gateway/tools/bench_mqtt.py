"""The bench's raw MQTT subscriber: the "raw broker hop" end of simulation.md §6.

A bare MQTT 3.1.1 client on a Trio socket (TCP_NODELAY) in the bench process — no paho, no
parsing of payloads — so a trial message's receipt is stamped on the same monotonic clock and
event loop as the mock controller's open-frame reads. Registered payloads (`expect`) are
matched by their bytes; `$SYS` topics keep their latest value (broker drop counters).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Final

import trio

CONNECT_TIMEOUT_S: Final = 10.0
KEEPALIVE_S: Final = 60
PING_EVERY_S: Final = 30.0
READ_BYTES: Final = 65536
MAX_PACKET_BYTES: Final = 4 * 1024 * 1024  # the bench's own messages are a few KB

# MQTT 3.1.1 packet types (OASIS mqtt-v3.1.1 §2.2.1), high nibble of the first byte
CONNECT, CONNACK, PUBLISH, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP = 1, 2, 3, 8, 9, 12, 13


class RawMqttError(Exception):
    """Connect/subscribe refused, a malformed packet, or the connection closed."""


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _remaining_length(len(body)) + body


def connect_packet(client_id: str) -> bytes:
    # protocol name, level 4 (3.1.1), flags = clean session, keep-alive (§3.1)
    header = _utf8("MQTT") + bytes([4, 0x02]) + KEEPALIVE_S.to_bytes(2, "big")
    return _packet(CONNECT << 4, header + _utf8(client_id))


def subscribe_packet(packet_id: int, topics: Sequence[str]) -> bytes:
    body = packet_id.to_bytes(2, "big") + b"".join(_utf8(t) + b"\x00" for t in topics)
    return _packet((SUBSCRIBE << 4) | 0x02, body)  # §3.8.1: flags 0010


def split_packets(buf: bytearray) -> list[tuple[int, bytes]]:
    """Remove and return every complete (first byte, body) packet at the front of `buf`."""
    out: list[tuple[int, bytes]] = []
    while len(buf) >= 2:
        length, mult, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return out  # length bytes incomplete
            byte = buf[i]
            length += (byte & 0x7F) * mult
            mult *= 128
            i += 1
            if not byte & 0x80:
                break
            if i > 4:
                raise RawMqttError("malformed remaining length")
        if length > MAX_PACKET_BYTES:
            raise RawMqttError(f"packet of {length} bytes")
        if len(buf) < i + length:
            return out
        out.append((buf[0], bytes(buf[i : i + length])))
        del buf[: i + length]
    return out


def parse_publish(first: int, body: bytes) -> tuple[str, bytes]:
    """(topic, payload) of a PUBLISH body; QoS > 0 bodies carry a packet id after the topic."""
    n = int.from_bytes(body[:2], "big")
    topic = body[2 : 2 + n].decode(errors="replace")
    start = 2 + n + (2 if (first >> 1) & 0x03 else 0)
    return topic, body[start:]


class RawSubscriber:
    """`await RawSubscriber.connect(...)` (CONNACK + SUBACK awaited), then `serve` in a task."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buf = bytearray()
        self._expected: dict[bytes, int] = {}
        self.seen_ns: dict[int, int] = {}  # key given to `expect` → receipt (monotonic ns)
        self.sys_values: dict[str, str] = {}  # $SYS topic → latest payload
        self.messages = 0
        self.bytes = 0

    @classmethod
    async def connect(
        cls, host: str, port: int, topics: Sequence[str], client_id: str
    ) -> RawSubscriber:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            stream = await trio.open_tcp_stream(host, port)
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sub = cls(stream)
            await stream.send_all(connect_packet(client_id))
            first, body = await sub._next_packet()
            if first >> 4 != CONNACK or len(body) < 2 or body[1] != 0:
                raise RawMqttError(f"CONNACK refused: {body.hex()}")
            await stream.send_all(subscribe_packet(1, topics))
            first, body = await sub._next_packet()
            if first >> 4 != SUBACK or any(b == 0x80 for b in body[2:]):
                raise RawMqttError(f"SUBACK refused: {body.hex()}")
        return sub

    async def _next_packet(self) -> tuple[int, bytes]:
        while True:
            packets = split_packets(self._buf)
            if packets:
                first, body = packets[0]
                rest = b"".join(_packet(f, b) for f, b in packets[1:])
                self._buf[:0] = rest  # keep any further packets for `serve`
                return first, body
            data = await self._stream.receive_some(READ_BYTES)
            if not data:
                raise RawMqttError("connection closed")
            self._buf += data

    def expect(self, payload: bytes, key: int) -> None:
        """Stamp the receipt of `payload` under `key` (register before publishing it)."""
        self._expected[payload] = key

    async def serve(self) -> None:
        """Read until cancelled; every packet of one read shares that read's timestamp."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ping)
            stream, buf, expected = self._stream, self._buf, self._expected
            now = time.monotonic_ns()  # packets that came with CONNACK/SUBACK (retained $SYS)
            while True:
                for first, body in split_packets(buf):
                    if first >> 4 != PUBLISH:
                        continue
                    self.messages += 1
                    topic, payload = parse_publish(first, body)
                    key = expected.pop(payload, None)
                    if key is not None:
                        self.seen_ns[key] = now
                    elif topic.startswith("$SYS/"):
                        self.sys_values[topic] = payload.decode(errors="replace")
                data = await stream.receive_some(READ_BYTES)
                now = time.monotonic_ns()
                if not data:
                    raise RawMqttError("broker closed the connection")
                buf += data
                self.bytes += len(data)

    async def _ping(self) -> None:
        while True:
            await trio.sleep(PING_EVERY_S)
            await self._stream.send_all(bytes([PINGREQ << 4, 0]))

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)
