"""Position streaming throttle (interfaces.md §1.3) and the `positions` payload (§7)."""

from __future__ import annotations

from gateway.core.effects import Publish
from gateway.core.model import Frame, Position, TrackedObject, XovisBatch
from gateway.io.position_stream import PositionStreamer

WALL = 1_767_225_600_000


def batch(*objs: tuple[int, Position | None], topic: str = "xovis/a") -> XovisBatch:
    objects = tuple(TrackedObject(tid, "PERSON", pos) for tid, pos in objs)
    return XovisBatch(recv_ns=0, topic=topic, frames=(Frame(0, (), objects),))


def tids(pubs: list[Publish]) -> list[int]:
    return [p.payload["tid"] for p in pubs]


def test_first_batch_publishes_every_positioned_object_with_exact_payload() -> None:
    s = PositionStreamer("netto")
    pubs = s.on_batch(batch((1, (1.5, 2.0, 1.7)), (2, None)), 0, WALL)
    assert pubs == [
        Publish(
            "position",
            {
                "site": "netto",
                "ts": WALL,
                "tid": 1,
                "obj_type": "PERSON",
                "x": 1.5,
                "y": 2.0,
                "z": 1.7,
                "auth": False,
                "ctx": "continuous",
            },
        )
    ]
    assert list(pubs[0].payload) == [
        "site", "ts", "tid", "obj_type", "x", "y", "z", "auth", "ctx",
    ]  # fmt: skip


def test_group_objects_keep_their_type() -> None:
    s = PositionStreamer("x")
    b = XovisBatch(0, "t", (Frame(0, (), (TrackedObject(2147483748, "GROUP", (1, 1, 1)),)),))
    (pub,) = s.on_batch(b, 0, WALL)
    assert pub.payload["obj_type"] == "GROUP"
    assert pub.payload["tid"] == 2147483748


def test_nothing_within_100_ms_of_the_last_publishing_batch() -> None:
    s = PositionStreamer("x")
    assert tids(s.on_batch(batch((1, (0, 0, 1.7))), 1000, WALL)) == [1]
    assert s.on_batch(batch((1, (5, 5, 1.7)), (2, (1, 1, 1))), 1099, WALL) == []
    assert tids(s.on_batch(batch((1, (5, 5, 1.7)), (2, (1, 1, 1))), 1100, WALL)) == [1, 2]


def test_only_new_or_moved_at_least_5_cm_in_xy() -> None:
    s = PositionStreamer("x")
    s.on_batch(batch((1, (1.1, 1.0, 1.7)), (2, (2.0, 2.0, 1.7)), (3, (3.0, 3.0, 1.7))), 0, WALL)
    pubs = s.on_batch(
        batch(
            (1, (1.15, 1.0, 1.0)),  # 0.05 m, 4.99999 cm in float64: tolerated → published
            (2, (2.03, 2.03, 0.5)),  # 4.24 cm, height change ignored → not published
            (3, (3.0, 3.0, 1.7)),
            (4, (4.0, 4.0, 1.7)),  # new
        ),
        100,
        WALL + 100,
    )
    assert tids(pubs) == [1, 4]
    assert pubs[0].payload["ts"] == WALL + 100
    # 2 is compared with its last *published* position, so small steps add up
    assert tids(s.on_batch(batch((1, (1.15, 1.0, 1)), (2, (2.04, 2.04, 1))), 200, WALL)) == [2]


def test_a_batch_that_publishes_nothing_does_not_restart_the_interval() -> None:
    s = PositionStreamer("x")
    s.on_batch(batch((1, (1.0, 1.0, 1.7))), 0, WALL)
    assert s.on_batch(batch((1, (1.0, 1.0, 1.7))), 150, WALL) == []
    assert tids(s.on_batch(batch((1, (2.0, 1.0, 1.7))), 160, WALL)) == [1]


def test_absent_ids_are_forgotten_and_published_again_when_back() -> None:
    s = PositionStreamer("x")
    s.on_batch(batch((1, (1.0, 1.0, 1.7)), (2, (2.0, 2.0, 1.7))), 0, WALL)
    assert tids(s.on_batch(batch((2, (2.5, 2.0, 1.7))), 100, WALL)) == [2]  # 1 absent → forgotten
    assert tids(s.on_batch(batch((1, (1.0, 1.0, 1.7)), (2, (2.5, 2.0, 1))), 200, WALL)) == [1]


def test_object_present_without_position_is_not_forgotten() -> None:
    s = PositionStreamer("x")
    s.on_batch(batch((1, (1.0, 1.0, 1.7))), 0, WALL)
    s.on_batch(batch((1, None), (9, (0, 0, 0))), 100, WALL)
    assert s.on_batch(batch((1, (1.0, 1.0, 1.7)), (9, (0, 0, 0))), 200, WALL) == []


def test_throttle_and_memory_are_per_topic() -> None:
    s = PositionStreamer("x")
    assert tids(s.on_batch(batch((1, (1, 1, 1)), topic="a"), 0, WALL)) == [1]
    assert tids(s.on_batch(batch((1, (1, 1, 1)), topic="b"), 50, WALL)) == [1]
    assert s.on_batch(batch((1, (3, 3, 1)), topic="a"), 99, WALL) == []


def test_same_id_in_two_frames_of_one_message() -> None:
    s = PositionStreamer("x")
    objs1 = (TrackedObject(1, "PERSON", (1.0, 1.0, 1.7)),)
    objs2 = (TrackedObject(1, "PERSON", (1.01, 1.0, 1.7)),)
    objs3 = (TrackedObject(1, "PERSON", (1.2, 1.0, 1.7)),)
    b = XovisBatch(0, "t", (Frame(0, (), objs1), Frame(0, (), objs2), Frame(0, (), objs3)))
    assert [p.payload["x"] for p in s.on_batch(b, 0, WALL)] == [1.0, 1.2]


def test_no_positions_means_no_publish_and_no_timer() -> None:
    s = PositionStreamer("x")
    assert s.on_batch(batch((1, None)), 0, WALL) == []
    assert tids(s.on_batch(batch((1, (1, 1, 1))), 10, WALL)) == [1]
