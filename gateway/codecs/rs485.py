"""RS485 door-board frames (interfaces.md §3): 8-byte host commands and 18-byte board responses.

Sans-I/O: the poller feeds whatever bytes the port gave into a persistent `ResponseParser`; board
emulators feed host bytes into a `CommandParser`. Framing bytes and checksums live only here.
"""

from __future__ import annotations

from typing import Final

import attrs

from gateway.core.model import DoorStatus

# interfaces.md §3.2: command frame `7E 00 machine command d0 d1 d2 checksum`
COMMAND_START: Final = 0x7E
COMMAND_LEN: Final = 8
CMD_QUERY: Final = 0x10  # the only command the gateway sends
CMD_REBOOT: Final = 0x35  # data0 0x60
CMD_LEFT_OPEN_N: Final = 0x80  # data0 = N passers
CMD_LEFT_NORMALLY_OPEN: Final = 0x81
CMD_RIGHT_OPEN_N: Final = 0x82
CMD_RIGHT_NORMALLY_OPEN: Final = 0x83
CMD_CLOSE: Final = 0x84
BROADCAST_MACHINE: Final = 0x00  # never used for polling

# interfaces.md §3.3: response frame, 18 bytes starting with 7F
RESPONSE_START: Final = 0x7F
RESPONSE_LEN: Final = 18
COUNT_MAX: Final = 0xFF_FFFF  # 24-bit accumulated open counts

# The board answers one 18-byte frame per query, so anything beyond a few frames is line noise
# or stale answers; the newest bytes are kept (h11-style cap on an incomplete buffer).
MAX_BUFFERED_BYTES: Final = 256

# Byte 4 → door status (interfaces.md §3.3, behaviour.md §10.4); 02 is this site's resting position.
_STATUS_BY_BYTE: Final[dict[int, DoorStatus]] = {
    0x00: "closed",
    0x01: "open",
    0x02: "closed",
    0x03: "moving",
    0x04: "open",
}
# Status bytes an emulator sends for each state it can be in.
STATUS_BYTE: Final[dict[str, int]] = {"closed": 0x00, "open": 0x01, "moving": 0x03}


class Rs485Error(ValueError):
    """The codec's one error: an unencodable value or a frame that is not a valid response."""


def _checksum(body: bytes | bytearray) -> int:
    """Bitwise NOT of the 8-bit wrapping sum (§3.2, §3.3)."""
    return ~sum(body) & 0xFF


def _byte(name: str, value: int) -> int:
    if not 0 <= value <= 0xFF:
        raise Rs485Error(f"{name} {value} is not a byte")
    return value


def encode_command(
    machine: int, command: int, data0: int = 0, data1: int = 0, data2: int = 0
) -> bytes:
    """Host → board frame, e.g. close `7E 00 01 84 00 00 00 FC`."""
    body = bytes(
        (
            COMMAND_START,
            0x00,
            _byte("machine", machine),
            _byte("command", command),
            _byte("data0", data0),
            _byte("data1", data1),
            _byte("data2", data2),
        )
    )
    return body + bytes((_checksum(body),))


def encode_query(machine: int = 1) -> bytes:
    """The status query the poller sends: `7E 00 01 10 00 00 00 70` (S131)."""
    return encode_command(machine, CMD_QUERY)


def encode_response(
    *,
    status: int,
    fault: int = 0,
    alarm: int = 0,
    version: int = 1,
    machine: int = 1,
    left_count: int = 0,
    right_count: int = 0,
    voltage: int = 0x0C,
    ir: int = 0,
    exec_status: int = 0,
) -> bytes:
    """Board → host frame (for emulators and tests); bytes 15–16 are zero."""
    for name, count in (("left_count", left_count), ("right_count", right_count)):
        if not 0 <= count <= COUNT_MAX:
            raise Rs485Error(f"{name} {count} does not fit 24 bits")
    body = bytes(
        (
            RESPONSE_START,
            _byte("version", version),
            _byte("machine", machine),
            _byte("fault", fault),
            _byte("status", status),
            _byte("alarm", alarm),
            *left_count.to_bytes(3, "big"),
            *right_count.to_bytes(3, "big"),
            _byte("ir", ir),
            _byte("exec_status", exec_status),
            _byte("voltage", voltage),
            0x00,
            0x00,
        )
    )
    return body + bytes((_checksum(body),))


@attrs.frozen
class BoardResponse:
    """One valid 18-byte response; `raw` keeps the wire bytes (analysis log `payload_raw`)."""

    version: int
    machine: int
    fault: int
    status_byte: int
    alarm: int
    left_count: int
    right_count: int
    ir: int
    exec_status: int
    voltage: int
    raw: bytes = attrs.field(default=b"", eq=False, repr=False)

    @property
    def door_status(self) -> DoorStatus:
        return _STATUS_BY_BYTE.get(self.status_byte, "unknown")


def response_checksum_ok(frame: bytes | bytearray) -> bool:
    """Receiver check of §3.3: (sum of all 18 bytes + 1) mod 256 == 0."""
    return len(frame) == RESPONSE_LEN and (sum(frame) + 1) & 0xFF == 0


def _decode_unchecked(frame: bytes) -> BoardResponse:
    return BoardResponse(
        version=frame[1],
        machine=frame[2],
        fault=frame[3],
        status_byte=frame[4],
        alarm=frame[5],
        left_count=int.from_bytes(frame[6:9], "big"),
        right_count=int.from_bytes(frame[9:12], "big"),
        ir=frame[12],
        exec_status=frame[13],
        voltage=frame[14],
        raw=frame,
    )


def decode_response(frame: bytes) -> BoardResponse:
    """Decode exactly one whole frame (e.g. a replayed `payload_raw`); raise `Rs485Error` if bad."""
    if len(frame) != RESPONSE_LEN or frame[0] != RESPONSE_START:
        raise Rs485Error(f"not an {RESPONSE_LEN}-byte frame starting with 7F: {frame.hex(' ')}")
    if not response_checksum_ok(frame):
        raise Rs485Error(f"bad checksum: {frame.hex(' ')}")
    return _decode_unchecked(bytes(frame))


def _cap(buf: bytearray) -> int:
    """Trim `buf` to its newest `MAX_BUFFERED_BYTES`; return how many bytes were dropped."""
    excess = len(buf) - MAX_BUFFERED_BYTES
    if excess > 0:
        del buf[:excess]
        return excess
    return 0


@attrs.define
class ResponseParser:
    """Host side: a persistent buffer across polls with one-byte resync (§3.4 "Resync", D*)."""

    bad_frames: int = 0  # checksum failures (each drops one byte)
    dropped_bytes: int = 0  # noise before a 7F, plus bytes cut by the buffer cap
    _buf: bytearray = attrs.field(factory=bytearray)

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data
        self.dropped_bytes += _cap(self._buf)

    def clear(self) -> None:
        """Forget buffered bytes (the port was closed; its partial frame is meaningless)."""
        self._buf.clear()

    def next_response(self) -> BoardResponse | None:
        """The next valid frame in the buffer, or None until more bytes arrive."""
        buf = self._buf
        while True:
            start = buf.find(RESPONSE_START)
            if start < 0:
                self.dropped_bytes += len(buf)
                buf.clear()
                return None
            if start:
                self.dropped_bytes += start
                del buf[:start]
            if len(buf) < RESPONSE_LEN:
                return None
            frame = bytes(buf[:RESPONSE_LEN])
            if response_checksum_ok(frame):
                del buf[:RESPONSE_LEN]
                return _decode_unchecked(frame)
            # Drop only the false start byte: a real frame may begin inside these 18 bytes
            # (S135; the reference dropped all 18 and could stay misaligned).
            self.bad_frames += 1
            self.dropped_bytes += 1
            del buf[0]


@attrs.frozen
class BoardCommand:
    machine: int
    command: int
    data0: int
    data1: int
    data2: int


def _command_checksum_ok(frame: bytes | bytearray) -> bool:
    return len(frame) == COMMAND_LEN and _checksum(frame[:-1]) == frame[-1]


@attrs.define
class CommandParser:
    """Board side (emulators): feed host bytes, get every valid 8-byte command, same resync."""

    bad_frames: int = 0
    _buf: bytearray = attrs.field(factory=bytearray)

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[BoardCommand]:
        buf = self._buf
        buf += data
        _cap(buf)
        out: list[BoardCommand] = []
        while True:
            start = buf.find(COMMAND_START)
            if start < 0:
                buf.clear()
                return out
            del buf[:start]
            if len(buf) < COMMAND_LEN:
                return out
            if _command_checksum_ok(buf[:COMMAND_LEN]):
                out.append(BoardCommand(buf[2], buf[3], buf[4], buf[5], buf[6]))
                del buf[:COMMAND_LEN]
            else:
                self.bad_frames += 1
                del buf[0]
