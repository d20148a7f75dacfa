"""Xovis decoder rules (interfaces.md §1.2) and the decoder-level parts of scenarios S103–S115."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from gateway.codecs.xovis import (
    EXCERPT_BYTES,
    DecodeResult,
    XovisDecoder,
    XovisStats,
    parse_time_ms,
)
from gateway.config.model import GroupPolicy
from gateway.core.model import EventKind, Frame, TrackedObject, XovisEvent

T_ISO = "2026-01-05T16:41:30.048+00:00"
T_MS = 1767631290048
GROUP_100 = 100 | 0x80000000  # 2147483748


def ev(kind: str, tid: Any, geo: Any = None, **extra: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {"track_id": tid, **extra}
    if geo is not None:
        attributes["geometry_id"] = geo
    return {"type": kind, "attributes": attributes}


def obj(tid: Any, pos: Any = None, obj_type: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"track_id": tid}
    if pos is not None:
        out["position"] = pos
    if obj_type is not None:
        out["type"] = obj_type
    return out


def frame(events: Any = (), objects: Any = (), time: Any = T_ISO) -> dict[str, Any]:
    return {"time": time, "tracked_objects": list(objects), "events": list(events)}


def msg(*frames: Any) -> bytes:
    return msgspec.json.encode({"live_data": {"frames": list(frames)}})


def decode(payload: bytes, mode: GroupPolicy = "ignore") -> tuple[DecodeResult, XovisStats]:
    stats = XovisStats()
    result = XovisDecoder(mode, stats).decode(payload, recv_ns=123, topic="xovis/s1")
    return result, stats


def events_of(result: DecodeResult) -> list[XovisEvent]:
    assert result.batch is not None
    return [e for f in result.batch.frames for e in f.events]


# -- S103 time formats ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("time", "expected"),
    [
        (T_ISO, T_MS),
        ("2026-01-05T16:41:30.048Z", T_MS),
        (T_MS, T_MS),
        (1767631290048.9, T_MS),
        (-5, 0),
        ("garbage", 0),
    ],
)
def test_s103_zone_entry_time_formats(time: Any, expected: int) -> None:
    payload = msg(frame([ev("ZONE_ENTRY", 42, 1001)], [obj(42, [1.5, 2.0, 1.7])], time=time))
    result, stats = decode(payload)
    assert result.batch is not None
    (f,) = result.batch.frames
    assert f.event_time_ms == expected
    assert f.events == (XovisEvent(EventKind.ZONE_ENTRY, 42, 1001, None, (1.5, 2.0, 1.7)),)
    assert result.event_count == 1
    assert stats.malformed == 0


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        ("2026-01-05T17:41:30.048+01:00", T_MS),
        ("2026-01-05T15:11:30.048-01:30", T_MS),
        ("2026-01-05t16:41:30.048z", T_MS),
        ("2026-01-05 16:41:30.048Z", T_MS),
        ("2026-01-05T16:41:30.048999999Z", T_MS),  # truncated, not rounded
        ("2026-01-05T16:41:30Z", T_MS - 48),
        ("2026-01-05T16:41:30.5Z", T_MS - 48 + 500),
        ("2016-12-31T23:59:60Z", 1483228800000),  # leap second counts into the next second
        ("2026-01-05T16:41:30.048", 0),  # no offset: not RFC 3339
        ("2026-01-05", 0),
        ("2026-13-05T16:41:30Z", 0),
        ("2026-02-30T16:41:30Z", 0),
        ("2026-01-05T24:00:00Z", 0),
        ("2026-01-05T16:41:30+24:00", 0),
        ("1969-12-31T23:59:59Z", 0),  # before the epoch, like a negative integer
        ("0000-01-01T00:00:00Z", 0),
        ("２０２６-01-05T16:41:30Z", 0),  # non-ASCII digits
        (True, 0),
        (None, 0),
        ([1], 0),
        ({"a": 1}, 0),
        (2**63, 0),
        (float("inf"), 0),
        (float("nan"), 0),
        (-0.5, 0),
        (0, 0),
    ],
)
def test_time_rules(time: object, expected: int) -> None:
    assert parse_time_ms(time) == expected


def test_time_of_wrong_type_is_not_malformed() -> None:
    result, stats = decode(msg(frame([ev("TRACK_CREATE", 1)], time=[1, 2])))
    assert result.batch is not None
    assert result.batch.frames[0].event_time_ms == 0
    assert stats.malformed == 0


# -- S104/S105 event types ----------------------------------------------------------------------
def test_s104_track_create_without_geometry_and_line_cross_forward() -> None:
    payload = msg(
        frame(
            [
                ev("TRACK_CREATE", 7),
                ev("LINE_CROSS_FORWARD", 7, 1006, direction="backward"),
                ev("LINE_CROSS_BACKWARD", 7, 1006, direction="forward"),
            ]
        )
    )
    result, _ = decode(payload)
    assert events_of(result) == [
        XovisEvent(EventKind.TRACK_CREATE, 7, None),
        XovisEvent(EventKind.LINE_CROSS, 7, 1006, "forward"),
        XovisEvent(EventKind.LINE_CROSS, 7, 1006, "backward"),
    ]


def test_s105_line_cross_direction_attribute() -> None:
    payload = msg(
        frame(
            [
                ev("LINE_CROSS", 1, 1006, direction="Forward"),
                ev("LINE_CROSS", 2, 1006, direction=" BACKWARD "),
                ev("LINE_CROSS", 3, 1006),
                ev("LINE_CROSS", 4, 1006, direction="sideways"),
                ev("LINE_CROSS", 5, 1006, direction=1),
                ev("ZONE_EXIT", 6, 1001),
            ]
        )
    )
    result, stats = decode(payload)
    assert [(e.kind, e.track_id, e.direction) for e in events_of(result)] == [
        (EventKind.LINE_CROSS, 1, "forward"),
        (EventKind.LINE_CROSS, 2, "backward"),
        (EventKind.ZONE_EXIT, 6, None),
    ]
    assert stats.malformed == 3
    assert stats.events_received == 3 == result.event_count


def test_s106_order_across_frames_and_shared_recv_ns() -> None:
    a, b, c = ev("TRACK_CREATE", 1), ev("ZONE_ENTRY", 1, 1001), ev("ZONE_EXIT", 1, 1001)
    result, stats = decode(msg(frame([a, b]), frame([c])))
    assert result.batch is not None
    assert result.batch.recv_ns == 123
    assert result.batch.topic == "xovis/s1"
    assert [e.kind for e in events_of(result)] == [
        EventKind.TRACK_CREATE,
        EventKind.ZONE_ENTRY,
        EventKind.ZONE_EXIT,
    ]
    assert [len(f.events) for f in result.batch.frames] == [2, 1]
    assert (stats.messages, stats.frames, stats.events_received) == (1, 2, 3)


# -- S107 malformed messages ---------------------------------------------------------------------
def test_s107_truncated_json_is_malformed_with_excerpt() -> None:
    result, stats = decode(b'{"live_data": ')
    assert result.batch is None
    assert stats.malformed == 1
    assert result.error is not None
    assert result.excerpt == '{"live_data": '


def test_s107_non_utf8_is_malformed() -> None:
    result, stats = decode(b'{"live_data": {"frames": [{"time": "\xff\xfe"}]}}')
    assert result.batch is None
    assert stats.malformed == 1
    assert result.error == "not UTF-8"
    assert result.excerpt is not None
    assert "\\xff" in result.excerpt


def test_excerpt_is_cut_to_200_bytes() -> None:
    payload = b'{"live_data": "' + b"x" * 1000
    result, _ = decode(payload)
    assert result.excerpt == payload[:EXCERPT_BYTES].decode()


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"[1, 2]",
        b'"live_data"',
        b"null",
        b'{"live_data": "x"}',
        b'{"live_data": []}',
        b'{"live_data": {}}',
        b'{"live_data": {"frames": null}}',
        b'{"live_data": {"frames": {"a": 1}}}',
        msg(frame([ev("TRACK_CREATE", 1)])) + b" trailing",
        b'{"live_data": {"frames": [{"time": NaN}]}}',
        b"[" * 5000 + b"]" * 5000,
        b"\xef\xbb\xbf" + msg(frame([ev("TRACK_CREATE", 1)])),
    ],
)
def test_message_level_malformed(payload: bytes) -> None:
    result, stats = decode(payload)
    assert result.batch is None
    assert stats.malformed == 1
    assert stats.messages == 1
    assert result.error is not None
    assert result.excerpt is not None


# -- S108 per-element isolation -----------------------------------------------------------------
def test_s108_bad_siblings_do_not_drop_valid_events() -> None:
    payload = msg(
        frame([ev("ZONE_ENTRY", "abc", 1001), ev("ZONE_ENTRY", 7, 1001)]),
        "x",
        frame([ev("TRACK_CREATE", 8)]),
    )
    result, stats = decode(payload)
    assert [(e.kind, e.track_id) for e in events_of(result)] == [
        (EventKind.ZONE_ENTRY, 7),
        (EventKind.TRACK_CREATE, 8),
    ]
    assert stats.malformed == 2
    assert stats.frames == 2  # the string frame is malformed, not a frame


@pytest.mark.parametrize(
    "bad_event",
    [
        "x",
        None,
        {"type": 5, "attributes": {"track_id": 1}},
        {"attributes": {"track_id": 1}},
        {"type": "ZONE_ENTRY"},
        {"type": "ZONE_ENTRY", "attributes": None},
        {"type": "ZONE_ENTRY", "attributes": [1]},
        {"type": "ZONE_ENTRY", "attributes": {}},
        {"type": "ZONE_ENTRY", "attributes": {"track_id": True}},
        {"type": "ZONE_ENTRY", "attributes": {"track_id": 1.0}},
        {"type": "ZONE_ENTRY", "attributes": {"track_id": None}},
        {"type": "ZONE_ENTRY", "attributes": {"track_id": 2**63}},
        {"type": "ZONE_ENTRY", "attributes": {"track_id": 1, "geometry_id": "1001"}},
        {"type": "ZONE_ENTRY", "attributes": {"track_id": 1, "geometry_id": False}},
        {"type": "ZONE_ENTRY", "attributes": {"track_id": 1, "geometry_id": 2**31}},
        {"type": "ZONE_ENTRY", "attributes": {"track_id": 1, "geometry_id": 1.5}},
    ],
)
def test_invalid_event_skipped_and_counted(bad_event: Any) -> None:
    good = ev("ZONE_ENTRY", 9, 1001)
    result, stats = decode(msg(frame([good, bad_event, good])))
    assert [e.track_id for e in events_of(result)] == [9, 9]
    assert stats.malformed == 1
    assert stats.events_received == 2


def test_event_id_limits() -> None:
    payload = msg(
        frame(
            [
                ev("ZONE_ENTRY", 2**63 - 1, 2**31 - 1),
                ev("ZONE_ENTRY", -(2**63), -(2**31)),
                ev("ZONE_ENTRY", 5, None),
            ]
        )
    )
    result, stats = decode(payload, "track")
    assert [(e.track_id, e.geometry_id) for e in events_of(result)] == [
        (2**63 - 1, 2**31 - 1),
        (-(2**63), -(2**31)),
        (5, None),
    ]
    assert stats.malformed == 0


@pytest.mark.parametrize("field", ["tracked_objects", "events"])
@pytest.mark.parametrize("value", ["x", 5, {"a": 1}, True])
def test_non_list_sections_count_malformed_and_keep_the_frame(field: str, value: Any) -> None:
    f = frame([ev("ZONE_ENTRY", 1, 1001)], [obj(1, [1, 2, 3])])
    f[field] = value
    result, stats = decode(msg(f))
    assert result.batch is not None
    assert stats.malformed == 1
    (out,) = result.batch.frames
    assert len(out.events) == (0 if field == "events" else 1)
    assert len(out.objects) == (0 if field == "tracked_objects" else 1)


def test_null_or_missing_sections_are_empty_and_not_malformed() -> None:
    payload = msg(
        {"time": T_ISO, "tracked_objects": None, "events": [ev("TRACK_CREATE", 1)]},
        {"events": None, "tracked_objects": [obj(2, [1, 1, 1])]},
        {},
    )
    result, stats = decode(payload)
    assert result.batch is not None
    assert stats.malformed == 0
    assert stats.frames == 3
    assert len(result.batch.frames) == 2  # the empty frame is not handed off


# -- S109 unknown types -------------------------------------------------------------------------
def test_s109_unknown_event_type_counted_not_forwarded() -> None:
    result, stats = decode(msg(frame([ev("PERSON_COUNT", 1), ev("TRACK_CREATE", 2)])))
    assert [e.track_id for e in events_of(result)] == [2]
    assert stats.unknown_events == {"PERSON_COUNT": 1}
    assert stats.events_received == 1
    assert stats.malformed == 0


def test_unknown_type_counted_even_without_attributes() -> None:
    result, stats = decode(msg(frame([{"type": "HEATMAP"}])))
    assert result.batch is None
    assert stats.unknown_events == {"HEATMAP": 1}
    assert stats.malformed == 0


def test_unknown_labels_cut_to_64_chars_and_capped_at_50() -> None:
    stats = XovisStats()
    decoder = XovisDecoder("ignore", stats)
    long_name = "Y" * 100
    events = [ev(f"T{i}", 1) for i in range(55)] + [ev(long_name, 1), ev("T3", 1)]
    decoder.decode(msg(frame(events)), recv_ns=0, topic="t")
    assert len(stats.unknown_events) == 51
    assert stats.unknown_events["T3"] == 2
    assert stats.unknown_events["other"] == 6  # T50…T54 and the long name
    stats2 = XovisStats()
    XovisDecoder("ignore", stats2).decode(msg(frame([ev(long_name, 1)])), recv_ns=0, topic="t")
    assert stats2.unknown_events == {"Y" * 64: 1}


# -- S110 GROUP ids ------------------------------------------------------------------------------
def test_s110_group_ignored() -> None:
    payload = msg(
        frame(
            [ev("TRACK_CREATE", GROUP_100), ev("TRACK_CREATE", 5)],
            [obj(GROUP_100, [1, 1, 1.7], "GROUP"), obj(5, [2, 2, 1.7])],
        )
    )
    result, stats = decode(payload, "ignore")
    assert result.batch is not None
    (f,) = result.batch.frames
    assert [e.track_id for e in f.events] == [5]
    assert [o.track_id for o in f.objects] == [5]
    assert stats.group_ignored == 2
    assert stats.events_received == 1


def test_s110_group_tracked_like_persons() -> None:
    payload = msg(
        frame([ev("TRACK_CREATE", GROUP_100)], [obj(GROUP_100, [1, 1, 1.7], "GROUP")]),
    )
    result, stats = decode(payload, "track")
    assert result.batch is not None
    (f,) = result.batch.frames
    assert f.events == (XovisEvent(EventKind.TRACK_CREATE, GROUP_100, None, None, (1, 1, 1.7)),)
    assert f.objects == (TrackedObject(GROUP_100, "GROUP", (1.0, 1.0, 1.7)),)
    assert stats.group_ignored == 0


def test_negative_ids_have_bit_31_set() -> None:
    result, stats = decode(msg(frame([ev("TRACK_CREATE", -1)])), "ignore")
    assert result.batch is None
    assert stats.group_ignored == 1


# -- S111 positions, tracked objects ------------------------------------------------------------
def test_s111_event_position_from_first_object_with_position() -> None:
    result, _ = decode(
        msg(frame([ev("ZONE_ENTRY", 5, 1001)], [obj(5, [1, 2]), obj(5, [1, 2, 1.7])]))
    )
    assert events_of(result)[0].position == (1.0, 2.0, 1.7)
    result, _ = decode(msg(frame([ev("ZONE_ENTRY", 5, 1001)], [obj(6, [1, 1, 1.7])])))
    assert events_of(result)[0].position is None


def test_event_position_only_from_the_same_frame() -> None:
    result, _ = decode(
        msg(
            frame([], [obj(5, [1, 2, 1.7])]),
            frame([ev("ZONE_ENTRY", 5, 1001)], [obj(6, [1, 1, 1])]),
        )
    )
    assert events_of(result)[0].position is None


@pytest.mark.parametrize(
    ("pos", "expected"),
    [
        ([1, 2, 3], (1.0, 2.0, 3.0)),
        ([1.5, 2.5, 1.75, 99, "extra"], (1.5, 2.5, 1.75)),
        ([1, 2], None),
        ([], None),
        ("1,2,3", None),
        ({"x": 1}, None),
        ([True, 1, 2], None),
        (["1", 2, 3], None),
        ([1, None, 3], None),
        ([10**400, 1, 2], None),
    ],
)
def test_object_position_rules(pos: Any, expected: Any) -> None:
    result, stats = decode(msg(frame([], [obj(3, pos)])))
    assert result.batch is not None
    assert result.batch.frames[0].objects == (TrackedObject(3, "PERSON", expected),)
    assert stats.malformed == 0


def test_non_finite_coordinate_means_no_position_and_keeps_the_message() -> None:
    # 1e999 is valid JSON but overflows float64: the position is absent, the object stays (D*)
    payload = (
        b'{"live_data":{"frames":[{"time":0,"tracked_objects":['
        b'{"track_id":1,"position":[1e999,1,1.7]},{"track_id":2,"position":[1,-1e999,1]},'
        b'{"track_id":3,"position":[1,2,1.7]}],'
        b'"events":[{"type":"ZONE_ENTRY","attributes":{"track_id":1,"geometry_id":1001}}]}]}}'
    )
    result, stats = decode(payload)
    assert result.batch is not None
    (f,) = result.batch.frames
    assert [(o.track_id, o.position) for o in f.objects] == [
        (1, None),
        (2, None),
        (3, (1.0, 2.0, 1.7)),
    ]
    assert f.events[0].position is None
    assert stats.malformed == 0


def test_lone_surrogate_type_is_malformed_in_the_fallback_path() -> None:
    payload = (
        b'{"live_data":{"frames":[{"tracked_objects":[{"track_id":0,"position":[1e999,0,0]},'
        b'{"track_id":1,"type":"\\ud800"},{"track_id":2,"type":"GROUP"}]}]}}'
    )
    result, stats = decode(payload)
    assert result.batch is not None
    assert result.batch.frames[0].objects == (TrackedObject(0), TrackedObject(2, "GROUP"))
    assert stats.malformed == 1


@pytest.mark.parametrize(
    "bad_obj",
    [
        "x",
        7,
        {"position": [1, 2, 3]},
        {"track_id": True},
        {"track_id": "5"},
        {"track_id": 5.0},
        {"track_id": 5, "type": 1},
        {"track_id": 2**64},
    ],
)
def test_invalid_object_skipped_and_counted(bad_obj: Any) -> None:
    result, stats = decode(msg(frame([], [obj(1, [1, 1, 1]), bad_obj])))
    assert result.batch is not None
    assert [o.track_id for o in result.batch.frames[0].objects] == [1]
    assert stats.malformed == 1


def test_object_type_default_and_null() -> None:
    result, _ = decode(msg(frame([], [obj(1), {"track_id": 2, "type": None}, obj(3, None, "G")])))
    assert result.batch is not None
    assert [o.obj_type for o in result.batch.frames[0].objects] == ["PERSON", "PERSON", "G"]


# -- S112 ignored, S113 size, S114/S115 ---------------------------------------------------------
@pytest.mark.parametrize(
    "payload", [b'{"site":"x","t":"zone_entry"}', b'{"live_data": null}', b"{}"]
)
def test_s112_without_live_data_ignored(payload: bytes) -> None:
    result, stats = decode(payload)
    assert result == DecodeResult(None)
    assert (stats.ignored, stats.malformed, stats.messages) == (1, 0, 1)


def test_s113_200_kib_message_with_1000_objects() -> None:
    objects = [
        {"track_id": i, "type": "PERSON", "position": [i / 100, 2.0, 1.7], "pad": "p" * 150}
        for i in range(1000)
    ]
    payload = msg(frame([ev("ZONE_ENTRY", 999, 1001)], objects))
    assert len(payload) >= 200 * 1024
    result, stats = decode(payload)
    assert result.batch is not None
    (f,) = result.batch.frames
    assert len(f.objects) == 1000
    assert f.events[0].position == (9.99, 2.0, 1.7)
    assert stats.malformed == 0


def test_s114_zone_entry_without_geometry() -> None:
    result, _ = decode(msg(frame([ev("ZONE_ENTRY", 5)])))
    # the tracker maps a missing geometry to zone 0 (`ZONE_0`, behaviour.md §1)
    assert events_of(result) == [XovisEvent(EventKind.ZONE_ENTRY, 5, None)]


def test_s115_objects_without_events_are_handed_off() -> None:
    result, stats = decode(msg(frame([], [obj(7, [1, 1, 1.7]), obj(8, [2, 2, 1.8])])))
    assert result.batch is not None
    assert result.event_count == 0
    assert result.batch.frames == (
        Frame(
            T_MS,
            (),
            (TrackedObject(7, "PERSON", (1.0, 1.0, 1.7)), TrackedObject(8, "PERSON", (2, 2, 1.8))),
        ),
    )
    assert stats.events_received == 0


def test_message_without_events_or_objects_is_not_handed_off() -> None:
    for payload in (msg(), msg(frame(), frame())):
        result, stats = decode(payload)
        assert result == DecodeResult(None)
        assert stats.malformed == 0
        assert stats.ignored == 0


def test_counters_accumulate_over_messages() -> None:
    stats = XovisStats()
    decoder = XovisDecoder("ignore", stats)
    decoder.decode(msg(frame([ev("TRACK_CREATE", 1)]), frame()), recv_ns=1, topic="t")
    decoder.decode(b"nope", recv_ns=2, topic="t")
    decoder.decode(b"{}", recv_ns=3, topic="t")
    assert (stats.messages, stats.frames, stats.events_received) == (3, 2, 1)
    assert (stats.malformed, stats.ignored) == (1, 1)
