"""CloudPlus "TypeB" gate-controller framing (interfaces.md §4.1), sans-I/O.

`FrameParser.feed(bytes) -> list[Frame]` takes any split of the input and never raises; encoders
build every frame the gateway, the mock controller and the tools need. The two directions use
opposite length byte orders (hardware-verified, [ref]): device → gateway big-endian, gateway →
device little-endian.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import attrs

LengthEndian = Literal["big", "little"]

# Framing: STX · rand · command · address · door · len(2) · data[len] · checksum · ETX
STX = 0x02
ETX = 0x03
HEADER_LEN = 7  # STX, rand, command, address, door, len_a, len_b
FRAME_OVERHEAD = 9  # header + checksum + ETX; total frame length = len + 9 (§4.1)
MAX_DATA_LEN = 4096  # declared length above this → drop one byte and resync (§4.1)
# The receive buffer never holds more than one declared frame (≤ 4096 + 9 bytes) plus one chunk.

# Commands, gateway → device
CMD_OPEN = 0x2C  # open door: the only command the gateway sends
CMD_NORMALLY_OPEN = 0x2D
CMD_CLOSE = 0x2E
CMD_TIME_SYNC = 0x07
# Commands, device → gateway
CMD_HEARTBEAT = 0x56  # also the ack's command byte
CMD_CARD_REQUEST = 0x53

COMMAND_NAMES: dict[int, str] = {
    CMD_OPEN: "open",
    CMD_NORMALLY_OPEN: "normally_open",
    CMD_CLOSE: "close",
    CMD_TIME_SYNC: "time_sync",
    CMD_HEARTBEAT: "heartbeat",
    CMD_CARD_REQUEST: "card_request",
}

ADDRESS_ALL = 0xFF  # address of open / normally-open / close / time-sync frames
DEFAULT_DOOR = 1

# Heartbeat data layout (§4.1)
HEARTBEAT_MIN_DATA = 50  # shorter heartbeats are ignored without ack [ref]
HB_DOOR_STATE = 7
HB_RELAY = 12
HB_VERSION = 18
HB_OEM_LO = 19
HB_OEM_HI = 20
HB_SERIAL = slice(21, 27)
SERIAL_LEN = 6


class CloudPlusError(ValueError):
    """Invalid arguments to an encoder; the parser itself never raises."""


@attrs.frozen
class Frame:
    """One checked frame; `raw` is its exact bytes (STX … ETX)."""

    rand: int
    command: int
    address: int
    door: int
    data: bytes
    raw: bytes


@attrs.frozen
class Heartbeat:
    """Decoded device heartbeat (≥ 50 data bytes)."""

    rand: int
    door_state: int
    relay: int
    version: int
    oem: int  # data[19] | data[20] << 8
    serial: bytes


def checksum(data: bytes | bytearray | memoryview) -> int:
    """XOR of every byte from STX through the last data byte."""
    acc = 0
    for b in data:
        acc ^= b
    return acc


def _byte(name: str, value: int) -> int:
    if not 0 <= value <= 0xFF:
        raise CloudPlusError(f"{name} must be 0–255, got {value}")
    return value


def encode_frame(
    *,
    rand: int,
    command: int,
    address: int,
    door: int,
    data: bytes = b"",
    length_endian: LengthEndian,
) -> bytes:
    """Build one frame; `length_endian` is "little" towards a device, "big" from one."""
    if len(data) > MAX_DATA_LEN:
        raise CloudPlusError(f"data length {len(data)} exceeds {MAX_DATA_LEN}")
    head = bytes(
        (
            STX,
            _byte("rand", rand),
            _byte("command", command),
            _byte("address", address),
            _byte("door", door),
        )
    )
    body = head + len(data).to_bytes(2, length_endian) + data
    return body + bytes((checksum(body), ETX))


def encode_open(door: int = DEFAULT_DOOR) -> bytes:
    """Open door: door 1 = `02 00 2C FF 01 00 00 D0 03` (S122)."""
    return encode_frame(
        rand=0, command=CMD_OPEN, address=ADDRESS_ALL, door=door, length_endian="little"
    )


def encode_normally_open(door: int = DEFAULT_DOOR) -> bytes:
    return encode_frame(
        rand=0, command=CMD_NORMALLY_OPEN, address=ADDRESS_ALL, door=door, length_endian="little"
    )


def encode_close(door: int = DEFAULT_DOOR) -> bytes:
    return encode_frame(
        rand=0, command=CMD_CLOSE, address=ADDRESS_ALL, door=door, length_endian="little"
    )


def encode_time_sync(when: dt.datetime, door: int = DEFAULT_DOOR) -> bytes:
    """Time sync (local time): sec, min, hour, weekday 1–7 (Mon = 1), day, month, year % 100."""
    data = bytes(
        (
            when.second,
            when.minute,
            when.hour,
            when.isoweekday(),
            when.day,
            when.month,
            when.year % 100,
        )
    )
    return encode_frame(
        rand=0,
        command=CMD_TIME_SYNC,
        address=ADDRESS_ALL,
        door=door,
        data=data,
        length_endian="little",
    )


def encode_heartbeat(
    *,
    rand: int = 0,
    door_state: int = 0,
    relay: int = 0,
    version: int = 0,
    oem: int = 0x0001,
    serial: bytes = b"SIMDEV",
    data_len: int = HEARTBEAT_MIN_DATA,
    length_endian: LengthEndian = "big",
) -> bytes:
    """Device-side heartbeat (for the mock); "little" reproduces the reference mock's bug."""
    if len(serial) != SERIAL_LEN:
        raise CloudPlusError(f"serial must be {SERIAL_LEN} bytes, got {len(serial)}")
    if not 0 <= oem <= 0xFFFF:
        raise CloudPlusError(f"oem must be 0–65535, got {oem}")
    data = bytearray(max(data_len, HB_SERIAL.stop))
    data[HB_DOOR_STATE] = _byte("door_state", door_state)
    data[HB_RELAY] = _byte("relay", relay)
    data[HB_VERSION] = _byte("version", version)
    data[HB_OEM_LO] = oem & 0xFF
    data[HB_OEM_HI] = oem >> 8
    data[HB_SERIAL] = serial
    return encode_frame(
        rand=rand,
        command=CMD_HEARTBEAT,
        address=0,
        door=0,
        data=bytes(data[:data_len]),
        length_endian=length_endian,
    )


def decode_heartbeat(frame: Frame) -> Heartbeat | None:
    """The heartbeat in `frame`, or None when it is not one or has < 50 data bytes [ref]."""
    data = frame.data
    if frame.command != CMD_HEARTBEAT or len(data) < HEARTBEAT_MIN_DATA:
        return None
    return Heartbeat(
        rand=frame.rand,
        door_state=data[HB_DOOR_STATE],
        relay=data[HB_RELAY],
        version=data[HB_VERSION],
        oem=data[HB_OEM_LO] | data[HB_OEM_HI] << 8,
        serial=bytes(data[HB_SERIAL]),
    )


def build_heartbeat_ack(hb: Heartbeat) -> bytes:
    """Ack: command 56, the heartbeat's rand, address/door 00, data = OEM big-endian (§4.1)."""
    return encode_frame(
        rand=hb.rand,
        command=CMD_HEARTBEAT,
        address=0,
        door=0,
        data=bytes((hb.oem >> 8, hb.oem & 0xFF)),
        length_endian="little",
    )


@attrs.define(slots=True)
class FrameParser:
    """Incremental receiver (§4.1 receive rules). `bad_frames` counts ETX/checksum failures."""

    length_endian: LengthEndian = "big"
    bad_frames: int = 0
    skipped_bytes: int = 0  # bytes discarded while resyncing (garbage, oversized lengths)
    _buf: bytearray = attrs.field(factory=bytearray)

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        out: list[Frame] = []
        while True:
            start = buf.find(STX)
            if start < 0:  # nothing here can start a frame; keep waiting for new bytes
                self.skipped_bytes += len(buf)
                buf.clear()
                return out
            if start:
                self.skipped_bytes += start
                del buf[:start]
            if len(buf) < FRAME_OVERHEAD:
                return out
            length = int.from_bytes(buf[5:7], self.length_endian)
            if length > MAX_DATA_LEN:
                self.skipped_bytes += 1
                del buf[0]
                continue
            total = length + FRAME_OVERHEAD
            if len(buf) < total:
                return out
            if buf[total - 1] != ETX or checksum(buf[: total - 2]) != buf[total - 2]:
                self.bad_frames += 1
                del buf[:total]
                continue
            raw = bytes(buf[:total])
            del buf[:total]
            out.append(
                Frame(
                    rand=raw[1],
                    command=raw[2],
                    address=raw[3],
                    door=raw[4],
                    data=raw[HEADER_LEN : total - 2],
                    raw=raw,
                )
            )
