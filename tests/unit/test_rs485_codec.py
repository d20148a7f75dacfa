"""RS485 frame codec (interfaces.md §3.2–3.3, S131–S135): whole, byte by byte, trailing data."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codecs.rs485 import (
    CMD_CLOSE,
    CMD_REBOOT,
    MAX_BUFFERED_BYTES,
    RESPONSE_LEN,
    STATUS_BYTE,
    BoardCommand,
    BoardResponse,
    CommandParser,
    ResponseParser,
    Rs485Error,
    decode_response,
    encode_command,
    encode_query,
    encode_response,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# interfaces.md §3.3 examples: version 01, machine 01, left count 5, right count 3, voltage 0C
CLOSED = h("7F 01 01 00 00 00 00 00 05 00 00 03 00 00 0C 00 00 6A")
LEFT_OPEN = h("7F 01 01 00 01 00 00 00 05 00 00 03 00 00 0C 00 00 69")
RIGHT_OPEN = h("7F 01 01 00 02 00 00 00 05 00 00 03 00 00 0C 00 00 68")
MOVING = h("7F 01 01 00 03 00 00 00 05 00 00 03 00 00 0C 00 00 67")
FIRE = h("7F 01 01 00 04 00 00 00 05 00 00 03 00 00 0C 00 00 66")
STATUS05 = h("7F 01 01 00 05 00 00 00 05 00 00 03 00 00 0C 00 00 65")
FAULT_ALARM = h("7F 01 01 08 00 06 00 00 05 00 00 03 00 00 0C 00 00 5C")

EXAMPLES = [
    # (frame, status byte, fault, alarm, door status)  — S132, S094
    (CLOSED, 0x00, 0, 0, "closed"),
    (LEFT_OPEN, 0x01, 0, 0, "open"),
    (RIGHT_OPEN, 0x02, 0, 0, "closed"),
    (MOVING, 0x03, 0, 0, "moving"),
    (FIRE, 0x04, 0, 0, "open"),
    (STATUS05, 0x05, 0, 0, "unknown"),
    (FAULT_ALARM, 0x00, 8, 6, "closed"),
]


def split_whole(data: bytes) -> list[bytes]:
    return [data]


def split_bytes(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


SPLITS: list[Callable[[bytes], list[bytes]]] = [split_whole, split_bytes]


def parse_all(chunks: list[bytes], parser: ResponseParser | None = None) -> list[BoardResponse]:
    """Feed chunk by chunk and drain after each, as the poller does."""
    p = parser if parser is not None else ResponseParser()
    out: list[BoardResponse] = []
    for chunk in chunks:
        p.feed(chunk)
        while (r := p.next_response()) is not None:
            out.append(r)
    return out


# ---- host → board ------------------------------------------------------------------------------


def test_s131_query_bytes() -> None:
    assert encode_query() == h("7E 00 01 10 00 00 00 70")
    assert encode_query(1) == h("7E 00 01 10 00 00 00 70")
    assert encode_query(2) == h("7E 00 02 10 00 00 00 6F")


def test_documented_commands_encode() -> None:
    assert encode_command(1, CMD_REBOOT, 0x60) == h("7E 00 01 35 60 00 00 EB")
    assert encode_command(1, CMD_CLOSE) == h("7E 00 01 84 00 00 00 FC")


@pytest.mark.parametrize("bad", [-1, 256])
def test_command_rejects_non_bytes(bad: int) -> None:
    with pytest.raises(Rs485Error):
        encode_command(bad, CMD_CLOSE)
    with pytest.raises(Rs485Error):
        encode_command(1, CMD_CLOSE, data0=bad)


# ---- board → host: encoding ------------------------------------------------------------------


@pytest.mark.parametrize(("frame", "status", "fault", "alarm", "door"), EXAMPLES)
def test_encode_response_reproduces_spec_examples(
    frame: bytes, status: int, fault: int, alarm: int, door: str
) -> None:
    encoded = encode_response(status=status, fault=fault, alarm=alarm, left_count=5, right_count=3)
    assert encoded == frame
    assert len(encoded) == RESPONSE_LEN


def test_status_byte_table_for_emulators() -> None:
    for name, byte in STATUS_BYTE.items():
        frame = encode_response(status=byte)
        assert decode_response(frame).door_status == name


def test_encode_response_rejects_wide_counts() -> None:
    with pytest.raises(Rs485Error):
        encode_response(status=0, left_count=1 << 24)
    with pytest.raises(Rs485Error):
        encode_response(status=0x100)


# ---- board → host: parsing -------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize(("frame", "status", "fault", "alarm", "door"), EXAMPLES)
def test_s132_example_frames_map_status(
    split: Callable[[bytes], list[bytes]],
    frame: bytes,
    status: int,
    fault: int,
    alarm: int,
    door: str,
) -> None:
    (r,) = parse_all(split(frame))
    assert (r.status_byte, r.fault, r.alarm, r.door_status) == (status, fault, alarm, door)
    assert (r.version, r.machine, r.left_count, r.right_count, r.voltage) == (1, 1, 5, 3, 0x0C)
    assert (r.ir, r.exec_status) == (0, 0)
    assert r.raw == frame


@pytest.mark.parametrize("split", SPLITS)
def test_trailing_bytes_stay_for_the_next_poll(split: Callable[[bytes], list[bytes]]) -> None:
    # S138 second half at codec level: a frame plus 5 bytes of the next one
    p = ResponseParser()
    assert [r.door_status for r in parse_all(split(CLOSED + LEFT_OPEN[:5]), p)] == ["closed"]
    assert p.buffered == 5
    assert [r.door_status for r in parse_all(split(LEFT_OPEN[5:]), p)] == ["open"]
    assert p.buffered == 0
    assert p.bad_frames == 0


def test_partial_frame_waits_for_more() -> None:
    p = ResponseParser()
    p.feed(CLOSED[:17])
    assert p.next_response() is None
    assert p.buffered == 17
    p.feed(CLOSED[17:])
    r = p.next_response()
    assert r is not None
    assert r.door_status == "closed"


@pytest.mark.parametrize("split", SPLITS)
def test_s133_bad_checksum_is_a_bad_frame(split: Callable[[bytes], list[bytes]]) -> None:
    p = ResponseParser()
    assert parse_all(split(CLOSED[:-1] + b"\x6b"), p) == []
    assert p.bad_frames == 1
    assert p.buffered == 0  # no other 7F in the rest: all dropped


@pytest.mark.parametrize("split", SPLITS)
def test_s135_noise_before_start_is_dropped(split: Callable[[bytes], list[bytes]]) -> None:
    p = ResponseParser()
    (r,) = parse_all(split(h("00 13") + CLOSED), p)
    assert r.door_status == "closed"
    assert p.bad_frames == 0


@pytest.mark.parametrize("split", SPLITS)
def test_s135_false_start_drops_one_byte_and_finds_the_frame(
    split: Callable[[bytes], list[bytes]],
) -> None:
    p = ResponseParser()
    (r,) = parse_all(split(b"\x7f" + LEFT_OPEN), p)
    assert r.door_status == "open"
    assert p.bad_frames == 1
    assert p.buffered == 0


def test_many_frames_with_noise_between() -> None:
    stream = b"\x00" + CLOSED + b"\x7f\x7f" + MOVING + FAULT_ALARM + b"\x01\x02"
    for split in SPLITS:
        got = parse_all(split(stream))
        assert [(r.door_status, r.fault) for r in got] == [
            ("closed", 0),
            ("moving", 0),
            ("closed", 8),
        ]


def test_buffer_is_capped_keeping_the_newest_bytes() -> None:
    p = ResponseParser()
    p.feed(MOVING * 40 + CLOSED)  # e.g. stale answers piled up while nobody read
    assert p.buffered == MAX_BUFFERED_BYTES
    assert p.dropped_bytes == 41 * RESPONSE_LEN - MAX_BUFFERED_BYTES
    got = parse_all([b""], p)
    assert got[-1].door_status == "closed"
    assert p.buffered == 0


def test_clear_forgets_partial_frames() -> None:
    p = ResponseParser()
    p.feed(CLOSED[:10])
    p.clear()
    p.feed(MOVING)
    r = p.next_response()
    assert r is not None
    assert r.door_status == "moving"


def test_decode_response_rejects_bad_frames() -> None:
    assert decode_response(FIRE).door_status == "open"
    for bad in (CLOSED[:-1] + b"\x00", CLOSED[:-1], b"\x00" + CLOSED[1:]):
        with pytest.raises(Rs485Error):
            decode_response(bad)


# ---- board side ------------------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_command_parser_finds_queries_in_noise(split: Callable[[bytes], list[bytes]]) -> None:
    q1, q2 = encode_query(1), encode_query(2)
    stream = b"\x00\x7e" + q1 + q2[:3] + b"" + q2[3:] + b"\x7e\x00"
    p = CommandParser()
    got: list[BoardCommand] = []
    for chunk in split(stream):
        got += p.feed(chunk)
    assert got == [BoardCommand(1, 0x10, 0, 0, 0), BoardCommand(2, 0x10, 0, 0, 0)]
    assert p.bad_frames == 1  # the stray 7E
    assert p.buffered == 2  # `7E 00` may be the start of a command


# ---- properties ------------------------------------------------------------------------------

frames = st.builds(
    encode_response,
    status=st.integers(0, 255),
    fault=st.integers(0, 255),
    alarm=st.integers(0, 255),
    version=st.integers(0, 255),
    machine=st.integers(0, 255),
    left_count=st.integers(0, 0xFFFFFF),
    right_count=st.integers(0, 0xFFFFFF),
    voltage=st.integers(0, 255),
    ir=st.integers(0, 255),
    exec_status=st.integers(0, 255),
)


@given(frames)
def test_decode_encode_round_trip(frame: bytes) -> None:
    r = decode_response(frame)
    again = encode_response(
        status=r.status_byte,
        fault=r.fault,
        alarm=r.alarm,
        version=r.version,
        machine=r.machine,
        left_count=r.left_count,
        right_count=r.right_count,
        voltage=r.voltage,
        ir=r.ir,
        exec_status=r.exec_status,
    )
    assert again == frame


@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=20))
def test_random_bytes_at_random_splits_never_raise(data: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    p = ResponseParser()
    for r in parse_all(chunks, p):
        assert isinstance(r, BoardResponse)
        assert r.raw[0] == 0x7F
        assert (sum(r.raw) + 1) % 256 == 0
    assert p.buffered <= MAX_BUFFERED_BYTES


@given(
    st.lists(st.tuples(st.binary(max_size=8), frames), min_size=1, max_size=6),
    st.integers(1, 40),
)
def test_valid_frames_survive_noise_without_7f(
    items: list[tuple[bytes, bytes]], chunk: int
) -> None:
    # Noise without a start byte in front of each frame never hides a frame, whatever the split.
    stream = b"".join(n.replace(b"\x7f", b"") + f for n, f in items)
    chunks = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    got = parse_all(chunks)
    assert [r.raw for r in got] == [f for _, f in items]


@given(st.binary(max_size=MAX_BUFFERED_BYTES))
def test_split_does_not_change_the_result(data: bytes) -> None:
    whole = parse_all([data])
    assert [r.raw for r in parse_all(split_bytes(data))] == [r.raw for r in whole]


@given(st.binary(max_size=300), st.integers(1, 30))
def test_command_parser_random_bytes(data: bytes, chunk: int) -> None:
    p = CommandParser()
    for i in range(0, len(data), chunk):
        for cmd in p.feed(data[i : i + chunk]):
            frame = encode_command(cmd.machine, cmd.command, cmd.data0, cmd.data1, cmd.data2)
            assert frame in data
    assert p.buffered <= MAX_BUFFERED_BYTES
