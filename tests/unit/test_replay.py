"""`gateway replay` input records (interfaces.md §6) and the online publishers (simulation.md §5).

Also holds the capture builders the other replay tests import (`mqtt_line`, `acc_line`, …).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs.rs485 import encode_response
from gateway.io.analysis_log import AnalysisRecord, encode_record, rfc3339_ns
from gateway.tools.replay import (
    DEFAULT_RAW_TOPIC,
    KINDS,
    MAX_EXAMPLES,
    AccPoster,
    AccRecord,
    DoorRecord,
    JournalStats,
    LineSource,
    MqttRecord,
    OnlineStats,
    RecordReader,
    ReplayIOError,
    ReplayLineError,
    Timed,
    journey_payload,
    parse_line,
    parse_ts_ns,
    record_kind,
    replay_online,
    republish_journeys,
)

W = 1_767_225_600_000  # 2026-01-01T00:00:00Z, epoch ms: the captures' time origin
MS = 1_000_000  # ns per ms
SENSOR = "xovis/sensor-1"


# -- capture builders ------------------------------------------------------------------------


def ev(kind: str, tid: int, g: int | None = None, direction: str | None = None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"track_id": tid}
    if g is not None:
        attributes["geometry_id"] = g
    if direction is not None:
        attributes["direction"] = direction
    return {"type": kind, "attributes": attributes}


def xovis(
    time: Any, events: Sequence[dict[str, Any]] = (), objects: Sequence[dict[str, Any]] = ()
) -> bytes:
    frame = {"time": time, "tracked_objects": list(objects), "events": list(events)}
    return json.dumps({"live_data": {"frames": [frame]}}).encode()


def person(tid: int, pos: tuple[float, float, float]) -> dict[str, Any]:
    return {"track_id": tid, "type": "PERSON", "position": list(pos)}


def mqtt_line(t_ms: int, payload: bytes, topic: str = SENSOR) -> bytes:
    """An analysis-log record exactly as the gateway's writer produces it."""
    return encode_record(AnalysisRecord((W + t_ms) * MS, topic, payload), "test")


def track_line(
    t_ms: int,
    tid: int,
    kind: str,
    pos: tuple[float, float, float],
    g: int | None = None,
    direction: str | None = None,
) -> bytes:
    """One sensor message at t (frame time 1.5 s earlier, the measured sensor lag)."""
    payload = xovis(W + t_ms - 1500, [ev(kind, tid, g, direction)], [person(tid, pos)])
    return mqtt_line(t_ms, payload)


def record_line(t_ms: int, src: str, payload_raw: str, fields: dict[str, Any]) -> bytes:
    doc = {"ts_recv": rfc3339_ns((W + t_ms) * MS), "src": src, "site": "test"}
    doc |= {"payload_raw": payload_raw, "fields": fields}
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def acc_line(
    t_ms: int, ip: str | None = "127.0.0.1", pos: str | None = "POS_1", receipt: str = "R1"
) -> bytes:
    fields = {"kiosk_ip": ip, "pos_zone": pos, "receipt_id": receipt}
    return record_line(t_ms, "acc", f"ACC {receipt}", fields)


def door_line(t_ms: int, status: int, ok: bool = True, fault: int = 0) -> bytes:
    frame = bytearray(encode_response(status=status, fault=fault))
    if not ok:
        frame[-1] ^= 0xFF
    fields = {"checksum_ok": ok, "door_status": {0: "closed", 1: "open", 3: "moving"}[status]}
    return record_line(t_ms, "rs485", "HEX:" + frame.hex(), fields)


def raw_line(time: Any, tid: int = 7) -> bytes:
    return xovis(time, [ev("TRACK_CREATE", tid)], [person(tid, (1.0, 1.0, 1.7))]) + b"\n"


# POS_1 1001, EXIT_1 1006, GATE_1 1007 as in the default test site (tests/data/dts.toml)
PAYING_CUSTOMER: list[bytes] = [
    track_line(0, 100, "TRACK_CREATE", (5.2, -5.0, 1.7)),
    track_line(500, 100, "ZONE_ENTRY", (0.6, -1.5, 1.7), 1001),
    acc_line(8500),  # 8 s in POS_1 ≥ min_dwell_ms 7000
    track_line(9000, 100, "ZONE_EXIT", (0.6, -1.0, 1.7), 1001),
    track_line(11_000, 100, "ZONE_ENTRY", (2.25, 1.55, 1.7), 1007),
    door_line(11_300, 1),
    track_line(12_500, 100, "LINE_CROSS", (2.25, 2.2, 1.7), 1006, "forward"),
    track_line(13_000, 100, "TRACK_DELETE", (2.25, 3.0, 1.7)),
]


# -- parsing -----------------------------------------------------------------------------------


def test_ts_recv_keeps_nanoseconds_and_offsets() -> None:
    assert parse_ts_ns("2026-01-16T14:53:00.123456789+00:00") == 1_768_575_180_123_456_789
    assert parse_ts_ns("2026-01-16T15:53:00.123456789+01:00") == 1_768_575_180_123_456_789
    assert parse_ts_ns("2026-01-16T14:53:00Z") == 1_768_575_180_000_000_000
    assert parse_ts_ns("2026-01-16t14:53:00.5z") == 1_768_575_180_500_000_000
    assert parse_ts_ns(rfc3339_ns(W * MS + 7)) == W * MS + 7


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "2026-02-30T00:00:00Z", "2026-01-01T24:00:00Z", "1969-12-31T23:59:59Z"],
)
def test_bad_ts_recv_is_none(text: str) -> None:
    assert parse_ts_ns(text) is None


def test_mqtt_record_text_and_hex_payloads() -> None:
    payload = xovis(W, [ev("TRACK_CREATE", 1)])
    assert parse_line(mqtt_line(5, payload)) == ((W + 5) * MS, MqttRecord(SENSOR, payload))
    binary = b"\xff\x00xovis"
    ts, record = parse_line(mqtt_line(0, binary, "other/topic"))
    assert json.loads(mqtt_line(0, binary))["payload_raw"] == "HEX:ff00786f766973"
    assert (ts, record) == (W * MS, MqttRecord("other/topic", binary))


def test_mqtt_record_without_topic_is_kept() -> None:
    _, record = parse_line(record_line(0, "mqtt", "{}", {"parsed": {}}))
    assert record == MqttRecord(None, b"{}")


def test_raw_message_timed_by_first_frame() -> None:
    line = raw_line("2026-01-01T00:00:01.250+00:00")
    assert parse_line(line) == ((W + 1250) * MS, MqttRecord(None, line.strip()))
    assert parse_line(raw_line(W + 40))[0] == (W + 40) * MS
    assert parse_line(raw_line("garbage"))[0] is None
    assert parse_line(b'{"live_data": {"frames": []}}')[0] is None


def test_acc_record_fields_and_receipt_fallback() -> None:
    assert parse_line(acc_line(1, receipt="R9")) == (
        (W + 1) * MS,
        AccRecord("127.0.0.1", "POS_1", "R9"),
    )
    no_receipt = record_line(0, "acc", "ACC 4711 ", {"kiosk_ip": "10.0.0.5", "pos_zone": None})
    assert parse_line(no_receipt)[1] == AccRecord("10.0.0.5", None, "4711")
    assert parse_line(acc_line(0, ip=None))[1] == AccRecord(None, "POS_1", "R1")


def test_rs485_record_decodes_the_frame() -> None:
    _, record = parse_line(door_line(0, 1, fault=2))
    assert record == DoorRecord(encode_response(status=1, fault=2), True, "open", 2, 0)
    _, bad = parse_line(door_line(0, 3, ok=False))
    assert isinstance(bad, DoorRecord)
    assert (bad.checksum_ok, bad.status) == (False, "moving")  # status from `fields`
    spaced = " ".join(f"{b:02x}" for b in encode_response(status=0))
    _, plain = parse_line(record_line(0, "rs485", spaced, {}))
    assert plain == DoorRecord(encode_response(status=0), True, "closed")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"ts_recv": "2026', "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"\xff\xfe", "not JSON"),
        (b'{"hello": 1}', "neither an analysis-log record nor a Xovis message"),
        (record_line(0, "can", "x", {}), "unknown src 'can'"),
        (b'{"src": "mqtt", "payload_raw": "{}"}', "ts_recv missing"),
        (b'{"src": "mqtt", "ts_recv": "now", "payload_raw": "{}"}', "ts_recv missing"),
        (b'{"src": "mqtt", "ts_recv": "2026-01-01T00:00:00Z"}', "payload_raw missing"),
        (record_line(0, "mqtt", "HEX:zz", {}), "payload_raw is not hex"),
        (record_line(0, "rs485", "7f 0", {}), "payload_raw is not hex"),
        (acc_line(0, ip=None, pos=None), "acc record without kiosk_ip or pos_zone"),
    ],
)
def test_corrupt_lines_raise_the_one_error(line: bytes, reason: str) -> None:
    with pytest.raises(ReplayLineError, match=reason):
        parse_line(line)


# -- reader ------------------------------------------------------------------------------------


def read_all(lines: Sequence[bytes]) -> tuple[list[Timed], RecordReader]:
    reader = RecordReader()
    out = [t for line in lines for t in reader.feed(line)]
    return out + reader.close(), reader


def test_reader_counts_corrupt_and_blank_lines_and_replays_the_rest() -> None:
    lines = [acc_line(0), b"{broken\n", b"\n", door_line(10, 1), b"[]\n", mqtt_line(20, b"{}")]
    timed, reader = read_all(lines)
    assert [record_kind(t.record) for t in timed] == ["acc", "rs485", "mqtt"]
    stats = reader.stats
    assert (stats.lines, stats.blank, stats.corrupt, stats.records) == (6, 1, 2, 3)
    assert stats.kinds == {"mqtt": 1, "raw": 0, "acc": 1, "rs485": 1}
    assert stats.examples[0].startswith("line 2: not JSON")
    assert stats.examples[1] == "line 5: not a JSON object"


def test_reader_keeps_only_the_first_examples() -> None:
    _, reader = read_all([b"x\n"] * (MAX_EXAMPLES + 3))
    assert reader.stats.corrupt == MAX_EXAMPLES + 3
    assert len(reader.stats.examples) == MAX_EXAMPLES


def test_untimed_raw_messages_borrow_a_neighbours_time() -> None:
    lines = [raw_line("?", 1), raw_line("?", 2), raw_line(W + 500, 3), raw_line(None, 4)]
    timed, reader = read_all(lines)
    assert [t.ts_ns for t in timed] == [(W + 500) * MS] * 4
    assert [t.record for t in timed] == [MqttRecord(None, line.strip()) for line in lines]
    assert reader.stats.kinds["raw"] == 4


def test_untimed_only_capture_is_replayed_at_time_zero() -> None:
    timed, _ = read_all([raw_line("?"), raw_line("?")])
    assert [t.ts_ns for t in timed] == [0, 0]


def test_out_of_order_records_keep_the_previous_time() -> None:
    timed, reader = read_all([acc_line(1000), acc_line(400), acc_line(1500)])
    assert [t.ts_ns // MS - W for t in timed] == [1000, 1000, 1500]
    assert reader.stats.out_of_order == 1


# -- online (fake publisher, autojump clock) ---------------------------------------------------


class FakeBroker:
    def __init__(self) -> None:
        self.sent: list[tuple[float, str, bytes, int]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append((trio.current_time(), topic, payload, qos))


def lines_source(lines: Sequence[bytes]) -> LineSource:
    chunks = [list(lines), []]

    async def read() -> list[bytes]:
        await trio.lowlevel.checkpoint()
        return chunks.pop(0) if chunks else []

    return read


async def run_online(
    lines: Sequence[bytes], acc: AccPoster | None = None, **kw: Any
) -> tuple[FakeBroker, OnlineStats]:
    broker, stats = FakeBroker(), OnlineStats()
    await replay_online(lines_source(lines), RecordReader(), broker, stats, acc=acc, **kw)
    return broker, stats


async def test_online_keeps_inter_arrival_times_divided_by_speed(autojump_clock: Any) -> None:
    lines = [mqtt_line(0, b"a"), mqtt_line(1000, b"b"), mqtt_line(3000, b"c", "xovis/sensor-2")]
    start = trio.current_time()
    broker, stats = await run_online(lines, speed=2.0)
    assert [(t - start, topic, p, q) for t, topic, p, q in broker.sent] == [
        (0.0, SENSOR, b"a", 0),
        (0.5, SENSOR, b"b", 0),
        (1.5, "xovis/sensor-2", b"c", 0),
    ]
    assert stats.published == 3


async def test_online_speed_zero_sends_at_once_to_the_override_topic(autojump_clock: Any) -> None:
    lines = [mqtt_line(0, b"a"), raw_line(W + 60_000), mqtt_line(120_000, b"c")]
    start = trio.current_time()
    broker, _ = await run_online(lines, speed=0, topic="replay/x")
    assert [(t - start, topic) for t, topic, _, _ in broker.sent] == [(0.0, "replay/x")] * 3


async def test_online_raw_messages_default_topic_and_skipped_records() -> None:
    broker, stats = await run_online([raw_line(W), acc_line(1), door_line(2, 1)], speed=0)
    assert [(topic, payload) for _, topic, payload, _ in broker.sent] == [
        (DEFAULT_RAW_TOPIC, raw_line(W).strip())
    ]
    assert (stats.acc_skipped, stats.rs485_skipped, stats.acc_posted) == (1, 1, 0)


def acc_poster(handler: Any, token: str | None = "s3cret") -> tuple[AccPoster, httpx.AsyncClient]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return AccPoster(client, "http://gw.test:9090/", token), client


async def test_online_acc_records_post_to_acc_simulate() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = 400 if request.url.params["pos"] == "POS_9" else 200
        return httpx.Response(status, json={"ok": status == 200})

    poster, client = acc_poster(handler)
    async with client:
        lines = [acc_line(0, receipt="R1"), acc_line(5, pos="POS_9"), acc_line(9, pos=None)]
        _, stats = await run_online(lines, acc=poster, speed=0)
    assert [str(r.url) for r in seen] == [
        "http://gw.test:9090/acc/simulate?pos=POS_1&receipt=R1",
        "http://gw.test:9090/acc/simulate?pos=POS_9&receipt=R1",
    ]
    assert all(r.method == "POST" for r in seen)
    assert seen[0].headers["authorization"] == "Bearer s3cret"
    assert (stats.acc_posted, stats.acc_rejected, stats.acc_skipped) == (1, {400: 1}, 1)
    assert "acc posted 1, rejected 1 (1×HTTP 400), skipped 1" in stats.lines()


async def test_online_acc_without_token_has_no_authorization_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    poster, client = acc_poster(handler, token=None)
    async with client:
        await run_online([acc_line(0)], acc=poster, speed=0)
    assert "authorization" not in seen[0].headers


async def test_online_unreachable_gateway_is_an_io_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    poster, client = acc_poster(handler)
    async with client:
        with pytest.raises(
            ReplayIOError, match=re.escape("cannot reach gateway at http://gw.test:9090/")
        ):
            await run_online([acc_line(0)], acc=poster, speed=0)


# -- journal republish -------------------------------------------------------------------------

JOURNEY = b'{"jid":"j1","pid":"p1","tids":[1],"out":"exit","ev":[]}'


def test_journey_payload_adds_site_first_only_when_missing() -> None:
    assert journey_payload(JOURNEY + b"\r\n", "netto") == b'{"site":"netto",' + JOURNEY[1:]
    assert journey_payload(JOURNEY + b"\n", None) == JOURNEY
    with_site = b'{"jid":"j1","site":"old"}'
    assert journey_payload(with_site, "netto") == with_site


async def test_republish_counts_corrupt_lines_and_publishes_the_rest_at_qos_1() -> None:
    broker, stats = FakeBroker(), JournalStats()
    lines = [JOURNEY + b"\n", b"not json\n", b"\n", b"[1]\n", b'{"jid":"j2"}\n']
    await republish_journeys(lines_source(lines), broker, stats, topic="j/t", site="s1")
    assert [(topic, payload, qos) for _, topic, payload, qos in broker.sent] == [
        ("j/t", b'{"site":"s1",' + JOURNEY[1:], 1),
        ("j/t", b'{"site":"s1","jid":"j2"}', 1),
    ]
    assert (stats.lines, stats.published, stats.corrupt, stats.blank) == (5, 2, 2, 1)
    assert stats.examples[0].startswith("line 2: not a journey object")


# -- property: a line parses or raises the one error (style.md "Tests") ------------------------

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.sampled_from(["mqtt", "acc", "rs485", "HEX:7f00", "HEX:zz", "2026-01-01T00:00:00Z"])
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["frames", "time", "topic", "kiosk_ip", "pos_zone", "checksum_ok"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=8,
)
_docs = st.dictionaries(
    st.sampled_from(["src", "ts_recv", "payload_raw", "fields", "live_data", "site"]),
    _values,
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | _docs.map(lambda d: json.dumps(d).encode()))
def test_any_line_parses_or_raises_replay_line_error(line: bytes) -> None:
    try:
        ts, record = parse_line(line)
    except ReplayLineError:
        return
    assert ts is None or ts >= 0
    assert record_kind(record) in KINDS
