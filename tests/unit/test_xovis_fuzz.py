"""Property tests: the Xovis decoder never raises, isolates bad elements, fast path == slow path."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs.xovis import DecodeResult, XovisDecoder, XovisStats
from gateway.core.model import EventKind, XovisBatch

KEYS = [
    "live_data",
    "frames",
    "time",
    "tracked_objects",
    "events",
    "type",
    "attributes",
    "track_id",
    "geometry_id",
    "direction",
    "position",
]
KINDS = [
    "TRACK_CREATE",
    "TRACK_DELETE",
    "ZONE_ENTRY",
    "ZONE_EXIT",
    "LINE_CROSS",
    "LINE_CROSS_FORWARD",
    "LINE_CROSS_BACKWARD",
    "PERSON_COUNT",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from([*KINDS, "forward", " Backward ", "2026-01-05T16:41:30.048Z"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=5)
    ),
    max_leaves=25,
)


def run(payload: bytes, mode: str = "ignore") -> tuple[DecodeResult, XovisStats]:
    stats = XovisStats()
    decoder = XovisDecoder("track" if mode == "track" else "ignore", stats)
    return decoder.decode(payload, recv_ns=5, topic="t"), stats


def check_well_formed(result: DecodeResult, stats: XovisStats) -> None:
    assert stats.messages == 1
    if result.error is not None:
        assert result.batch is None
        assert result.excerpt is not None
        assert stats.malformed == 1
    if result.batch is not None:
        assert isinstance(result.batch, XovisBatch)
        assert result.event_count == sum(len(f.events) for f in result.batch.frames) > -1
        assert all(f.events or f.objects for f in result.batch.frames)
        for f in result.batch.frames:
            assert isinstance(f.event_time_ms, int)
            assert f.event_time_ms >= 0
            for e in f.events:
                assert isinstance(e.kind, EventKind)
                assert (e.direction is not None) == (e.kind is EventKind.LINE_CROSS)
            for o in f.objects:
                assert o.position is None or len(o.position) == 3
        msgspec.json.encode([[o.obj_type for o in f.objects] for f in result.batch.frames])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(payload: bytes) -> None:
    result, stats = run(payload)
    check_well_formed(result, stats)


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from(["payload", "live_data", "frames", "frame", "event", "obj"]))
def test_arbitrary_json_anywhere_never_raises(value: Any, where: str) -> None:
    doc: Any
    if where == "payload":
        doc = value
    elif where == "live_data":
        doc = {"live_data": value}
    elif where == "frames":
        doc = {"live_data": {"frames": value}}
    elif where == "frame":
        doc = {"live_data": {"frames": [value]}}
    elif where == "event":
        doc = {"live_data": {"frames": [{"events": [value]}]}}
    else:
        doc = {"live_data": {"frames": [{"tracked_objects": [value]}]}}
    for mode in ("ignore", "track"):
        result, stats = run(msgspec.json.encode(doc), mode)
        check_well_formed(result, stats)


valid_events = st.lists(
    st.tuples(
        st.sampled_from(["TRACK_CREATE", "ZONE_ENTRY", "LINE_CROSS_FORWARD"]),
        st.integers(1, 2**31 - 1),
        st.integers(0, 2**31 - 1),
    ),
    max_size=6,
)


@settings(max_examples=120, deadline=None)
@given(valid_events, st.lists(json_values, max_size=6), st.randoms(use_true_random=False))
def test_valid_events_survive_bad_siblings(
    good: list[tuple[str, int, int]], junk: list[Any], rnd: Any
) -> None:
    items: list[Any] = [
        {"type": k, "attributes": {"track_id": t, "geometry_id": g}} for k, t, g in good
    ]
    for value in junk:
        items.insert(rnd.randint(0, len(items)), value)
    frames: list[Any] = [{"events": items}, *junk[:2]]
    result, stats = run(msgspec.json.encode({"live_data": {"frames": frames}}), "track")
    check_well_formed(result, stats)
    delivered = [] if result.batch is None else [e for f in result.batch.frames for e in f.events]
    expected = [(t, g) for _, t, g in good]
    got = iter([(e.track_id, e.geometry_id) for e in delivered])
    assert all(any(x == want for x in got) for want in expected)  # in-order subsequence


valid_objects = st.fixed_dictionaries(
    {"track_id": st.integers(-(2**63), 2**63 - 1)},
    optional={
        "type": st.none() | st.sampled_from(["PERSON", "GROUP"]),
        "position": st.none()
        | st.lists(
            st.floats(allow_nan=False, allow_infinity=False) | st.integers(-5, 5), max_size=5
        ),
        "extra": st.integers(),
    },
)
valid_event_dicts = st.fixed_dictionaries(
    {
        "type": st.sampled_from(KINDS),
        "attributes": st.fixed_dictionaries(
            {"track_id": st.integers(-(2**63), 2**64)},
            optional={
                "geometry_id": st.none() | st.integers(-(2**32), 2**32),
                "direction": scalars,
            },
        ),
    }
)
valid_frames = st.fixed_dictionaries(
    {},
    optional={
        "time": scalars,
        "tracked_objects": st.none() | st.lists(valid_objects, max_size=4),
        "events": st.none() | st.lists(valid_event_dicts, max_size=4),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(valid_frames, max_size=3), st.sampled_from(["ignore", "track"]))
def test_typed_fast_path_matches_generic_path(frames: list[Any], mode: str) -> None:
    payload = msgspec.json.encode({"live_data": {"frames": frames}})
    fast_stats, slow_stats = XovisStats(), XovisStats()
    policy = "track" if mode == "track" else "ignore"
    fast = XovisDecoder(policy, fast_stats).decode(payload, recv_ns=1, topic="t")
    slow = XovisDecoder(policy, slow_stats)._decode_generic(payload, 1, "t")
    slow_stats.messages += 1  # counted by decode() before it chooses a path
    assert fast == slow
    assert fast_stats == slow_stats
