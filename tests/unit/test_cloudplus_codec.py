"""CloudPlus codec (interfaces.md §4.1): S122–S125 codec parts, receive rules, fuzzing.

Every parser case is fed whole, byte by byte and with trailing data (style.md "Tests").
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import operator
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codecs import cloudplus as cp

OPEN_DOOR_1 = bytes.fromhex("02 00 2C FF 01 00 00 D0 03")
OPEN_DOOR_2 = bytes.fromhex("02 00 2C FF 02 00 00 D3 03")
S123_ACK = bytes.fromhex("02 05 56 00 00 02 00 00 01 52 03")


def s123_heartbeat(*, data_len: int = 50, length: bytes | None = None) -> bytes:
    """The S123 heartbeat built by hand from the spec text (not with the encoder)."""
    data = bytearray(data_len)
    if data_len > 26:
        data[19] = 0x01
        data[20] = 0x00
        data[21:27] = b"SIMDEV"
    head = bytes((0x02, 0x05, 0x56, 0x00, 0x00)) + (
        length if length is not None else data_len.to_bytes(2, "big")
    )
    body = head + bytes(data)
    return body + bytes((functools.reduce(operator.xor, body, 0), 0x03))


def feed_whole(parser: cp.FrameParser, data: bytes) -> list[cp.Frame]:
    return parser.feed(data)


def feed_bytewise(parser: cp.FrameParser, data: bytes) -> list[cp.Frame]:
    out: list[cp.Frame] = []
    for i in range(len(data)):
        out += parser.feed(data[i : i + 1])
    return out


FEEDERS: list[Callable[[cp.FrameParser, bytes], list[cp.Frame]]] = [feed_whole, feed_bytewise]
TRAILERS = [b"", b"\x02\x00\x2c", b"\xff\xfe"]  # nothing, a partial next frame, garbage


def parse_all_ways(
    data: bytes, endian: cp.LengthEndian = "big"
) -> list[tuple[list[cp.Frame], cp.FrameParser]]:
    """Parse `data` whole, byte by byte, and with each kind of trailing data; all must agree."""
    results = []
    for feed in FEEDERS:
        for trailer in TRAILERS:
            parser = cp.FrameParser(length_endian=endian)
            frames = feed(parser, data + trailer)
            results.append((frames, parser))
    first = results[0][0]
    for frames, _ in results:
        assert frames == first
    return results


# -- encoders ---------------------------------------------------------------------------------


def test_s122_open_frames_door_1_and_2() -> None:
    assert cp.encode_open(1) == OPEN_DOOR_1
    assert cp.encode_open(2) == OPEN_DOOR_2
    assert cp.encode_open() == OPEN_DOOR_1


def test_s122_open_frame_parses_with_little_endian_device_parser() -> None:
    for frames, parser in parse_all_ways(OPEN_DOOR_1, "little"):
        assert [f.raw for f in frames] == [OPEN_DOOR_1]
        assert frames[0].command == cp.CMD_OPEN
        assert frames[0].address == 0xFF
        assert frames[0].door == 1
        assert frames[0].data == b""
        assert parser.bad_frames == 0


def test_normally_open_and_close_frames() -> None:
    assert cp.encode_normally_open() == bytes.fromhex("02 00 2D FF 01 00 00 D1 03")
    assert cp.encode_close() == bytes.fromhex("02 00 2E FF 01 00 00 D2 03")


def test_time_sync_fields_and_little_endian_length() -> None:
    frame = cp.encode_time_sync(dt.datetime(2026, 1, 5, 16, 41, 30))  # a Monday
    assert frame[:7] == bytes.fromhex("02 00 07 FF 01 07 00")
    assert frame[7:14] == bytes((30, 41, 16, 1, 5, 1, 26))
    assert frame[14] == functools.reduce(operator.xor, frame[:14], 0)
    assert frame[15] == cp.ETX
    sunday = cp.encode_time_sync(dt.datetime(2026, 1, 11, 0, 0, 0))
    assert sunday[7 + 3] == 7


def test_encoder_rejects_out_of_range_values() -> None:
    with pytest.raises(cp.CloudPlusError):
        cp.encode_open(256)
    with pytest.raises(cp.CloudPlusError):
        cp.encode_frame(rand=0, command=1, address=0, door=0, data=bytes(4097), length_endian="big")
    with pytest.raises(cp.CloudPlusError):
        cp.encode_heartbeat(serial=b"SHORT")


def test_s123_encoder_reproduces_the_spec_heartbeat() -> None:
    assert cp.encode_heartbeat(rand=5) == s123_heartbeat()
    assert len(s123_heartbeat()) == 59
    assert s123_heartbeat()[-2:] == bytes.fromhex("62 03")


# -- S123–S125 receive side --------------------------------------------------------------------


def test_s123_heartbeat_decoded_and_ack_bytes() -> None:
    for frames, parser in parse_all_ways(s123_heartbeat()):
        assert len(frames) == 1
        hb = cp.decode_heartbeat(frames[0])
        assert hb == cp.Heartbeat(
            rand=5, door_state=0, relay=0, version=0, oem=0x0001, serial=b"SIMDEV"
        )
        assert cp.build_heartbeat_ack(hb) == S123_ACK
        assert parser.bad_frames == 0


def test_s123_ack_carries_oem_big_endian_and_the_heartbeat_rand() -> None:
    hb = cp.Heartbeat(rand=0x77, door_state=0, relay=0, version=0, oem=0x1234, serial=b"ABCDEF")
    ack = cp.build_heartbeat_ack(hb)
    assert ack[:9] == bytes.fromhex("02 77 56 00 00 02 00 12 34")
    frames = cp.FrameParser(length_endian="little").feed(ack)
    assert frames[0].data == b"\x12\x34"


def test_s124_heartbeat_with_49_data_bytes_parses_but_is_not_a_heartbeat() -> None:
    for frames, _ in parse_all_ways(s123_heartbeat(data_len=49)):
        assert len(frames) == 1
        assert frames[0].command == cp.CMD_HEARTBEAT
        assert len(frames[0].data) == 49
        assert cp.decode_heartbeat(frames[0]) is None


def test_s124_little_endian_heartbeat_length_is_never_a_frame() -> None:
    little = s123_heartbeat(length=b"\x32\x00")  # 12800 > 4096 read big-endian
    for frames, parser in parse_all_ways(little):
        assert frames == []
        assert parser.bad_frames == 0
    assert cp.encode_heartbeat(rand=5, length_endian="little") == little


def test_s125_garbage_then_heartbeat_in_chunks_7_30_24() -> None:
    data = b"\xff\xff" + s123_heartbeat()
    assert len(data) == 61
    parser = cp.FrameParser()
    frames = parser.feed(data[:7]) + parser.feed(data[7:37]) + parser.feed(data[37:])
    assert len(frames) == 1
    assert cp.decode_heartbeat(frames[0]) is not None
    assert parser.buffered == 0
    assert parser.skipped_bytes == 2


@pytest.mark.parametrize(
    ("what", "corrupt"),
    [
        ("checksum", lambda f: f[:-2] + bytes((f[-2] ^ 0x01,)) + f[-1:]),
        ("etx", lambda f: f[:-1] + b"\x04"),
    ],
)
def test_s125_bad_frame_dropped_counted_next_frame_parsed(
    what: str, corrupt: Callable[[bytes], bytes]
) -> None:
    bad = corrupt(s123_heartbeat())
    for frames, parser in parse_all_ways(bad + OPEN_DOOR_1):
        assert [f.raw for f in frames] == [OPEN_DOOR_1], what
        assert parser.bad_frames == 1


def test_bad_frame_drops_its_whole_declared_length() -> None:
    # A bad frame swallows exactly len + 9 bytes, even a valid frame carried inside it [ref].
    inner = cp.encode_frame(
        rand=0, command=0x11, address=0, door=0, data=OPEN_DOOR_1, length_endian="little"
    )
    bad = inner[:-2] + bytes((inner[-2] ^ 0xFF, cp.ETX))
    for frames, parser in parse_all_ways(bad + OPEN_DOOR_2, "little"):
        assert [f.raw for f in frames] == [OPEN_DOOR_2]
        assert parser.bad_frames == 1


def test_declared_length_over_4096_drops_one_byte_and_resyncs() -> None:
    huge = bytes.fromhex("02 00 56 00 00 10 01")  # 4097
    for frames, parser in parse_all_ways(huge + s123_heartbeat()):
        assert len(frames) == 1
        assert cp.decode_heartbeat(frames[0]) is not None
        assert parser.bad_frames == 0


def test_declared_length_4096_is_accepted() -> None:
    frame = cp.encode_frame(
        rand=1, command=0x99, address=2, door=3, data=bytes(range(256)) * 16, length_endian="big"
    )
    assert frame[5:7] == b"\x10\x00"
    for frames, _ in parse_all_ways(frame):
        assert [f.raw for f in frames] == [frame]
        assert len(frames[0].data) == 4096


def test_incomplete_frame_waits_and_stays_buffered() -> None:
    parser = cp.FrameParser()
    hb = s123_heartbeat()
    assert parser.feed(hb[:-1]) == []
    assert parser.buffered == len(hb) - 1
    assert len(parser.feed(hb[-1:])) == 1
    assert parser.buffered == 0


def test_fewer_than_nine_bytes_wait_even_from_stx() -> None:
    parser = cp.FrameParser(length_endian="little")
    assert parser.feed(OPEN_DOOR_1[:8]) == []
    assert parser.buffered == 8


def test_decode_heartbeat_rejects_other_commands() -> None:
    frame = cp.FrameParser(length_endian="little").feed(OPEN_DOOR_1)[0]
    assert cp.decode_heartbeat(frame) is None


# -- property tests ---------------------------------------------------------------------------

endians = st.sampled_from(["big", "little"])


@st.composite
def frames_st(draw: st.DrawFn) -> tuple[bytes, cp.LengthEndian]:
    endian: cp.LengthEndian = draw(endians)
    frame = cp.encode_frame(
        rand=draw(st.integers(0, 255)),
        command=draw(st.integers(0, 255)),
        address=draw(st.integers(0, 255)),
        door=draw(st.integers(0, 255)),
        data=draw(st.binary(max_size=300)),
        length_endian=endian,
    )
    return frame, endian


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=30), endians)
def test_fuzz_random_bytes_any_chunking_never_raises_and_matches_whole(
    data: bytes, cuts: list[int], endian: cp.LengthEndian
) -> None:
    whole = cp.FrameParser(length_endian=endian)
    expected = whole.feed(data)
    parser = cp.FrameParser(length_endian=endian)
    got: list[cp.Frame] = []
    for chunk in chunked(data, cuts):
        got += parser.feed(chunk)
    assert got == expected
    assert parser.bad_frames == whole.bad_frames
    for frame in got:
        assert frame.raw[0] == cp.STX
        assert frame.raw[-1] == cp.ETX
        assert cp.checksum(frame.raw[:-2]) == frame.raw[-2]


@given(frames_st())
def test_roundtrip_encode_then_parse(case: tuple[bytes, cp.LengthEndian]) -> None:
    raw, endian = case
    frames = cp.FrameParser(length_endian=endian).feed(raw)
    assert len(frames) == 1
    f = frames[0]
    again = cp.encode_frame(
        rand=f.rand,
        command=f.command,
        address=f.address,
        door=f.door,
        data=f.data,
        length_endian=endian,
    )
    assert again == raw == f.raw


@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.binary(min_size=6, max_size=6),
    st.integers(50, 120),
    endians,
)
def test_roundtrip_heartbeat(
    rand: int,
    door: int,
    relay: int,
    version: int,
    oem: int,
    serial: bytes,
    data_len: int,
    endian: cp.LengthEndian,
) -> None:
    raw = cp.encode_heartbeat(
        rand=rand,
        door_state=door,
        relay=relay,
        version=version,
        oem=oem,
        serial=serial,
        data_len=data_len,
        length_endian=endian,
    )
    hb = cp.decode_heartbeat(cp.FrameParser(length_endian=endian).feed(raw)[0])
    assert hb == cp.Heartbeat(rand, door, relay, version, oem, serial)


@given(st.binary(max_size=500).map(lambda b: b.replace(b"\x02", b"")), frames_st())
def test_valid_frame_after_stx_free_garbage_is_found(
    garbage: bytes, case: tuple[bytes, cp.LengthEndian]
) -> None:
    raw, endian = case
    for feed in FEEDERS:
        frames = feed(cp.FrameParser(length_endian=endian), garbage + raw)
        assert [f.raw for f in frames] == [raw]


@given(st.binary(max_size=300), frames_st(), st.lists(st.integers(0, 5000), max_size=10))
def test_valid_frame_after_any_garbage_and_a_gap_is_found(
    garbage: bytes, case: tuple[bytes, cp.LengthEndian], cuts: list[int]
) -> None:
    # Garbage may declare a frame of up to 4096 + 9 bytes that swallows what follows [ref];
    # after that many STX-free bytes the parser is resynchronised whatever came before.
    raw, endian = case
    stream = garbage + bytes(cp.MAX_DATA_LEN + cp.FRAME_OVERHEAD) + raw
    parser = cp.FrameParser(length_endian=endian)
    frames: list[cp.Frame] = []
    for chunk in chunked(stream, cuts):
        frames += parser.feed(chunk)
    assert frames[-1].raw == raw
    assert parser.buffered == 0
