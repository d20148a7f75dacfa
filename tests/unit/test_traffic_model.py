"""Geometry and scene mechanics of the synthetic traffic (simulation.md §2), no I/O."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import attrs
import pytest

from gateway.codecs.xovis import GROUP_BIT, parse_time_ms
from gateway.config.loader import load_config
from gateway.config.model import AccConfig, ZonesConfig
from gateway.tools.traffic_model import (
    END,
    EXIT_POINT,
    GATE_CENTRE,
    DemoGeometry,
    Line,
    Move,
    Rect,
    Scene,
    SceneParams,
    Wait,
    rfc3339_ms,
)

DEMO_TOML = Path(__file__).resolve().parents[1] / "data" / "demo.toml"
QUIET = SceneParams(noise_sd_m=0.0, truncate_share=0.0, missed_crossing_share=0.0, loss_share=0.0)
W0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def demo_site() -> DemoGeometry:
    cfg = load_config(DEMO_TOML)
    return DemoGeometry.from_config(cfg.zones, cfg.acc)


def frame_of(payload: bytes) -> dict[str, Any]:
    doc = json.loads(payload)
    frames = doc["live_data"]["frames"]
    assert len(frames) == 1
    frame: dict[str, Any] = frames[0]
    return frame


def norm(event: dict[str, Any]) -> tuple[Any, ...]:
    """(type, track, geometry, direction) with both line-crossing spellings folded together."""
    a = event["attributes"]
    etype = event["type"]
    if etype.startswith("LINE_CROSS_"):
        return ("LINE_CROSS", a["track_id"], a["geometry_id"], etype[11:].lower())
    return (etype, a["track_id"], a.get("geometry_id"), a.get("direction"))


# -- geometry ----------------------------------------------------------------------------------


def test_demo_geometry_takes_ids_from_the_config_and_places_the_table() -> None:
    site = demo_site()
    assert site.gate == Rect(1007, 1.5, 3.0, 1.0, 2.1)
    assert site.store == Rect(1011, 0.0, 6.0, -5.5, 1.0)
    assert site.dwell == Rect(1010, 5.0, 6.0, -1.0, 0.0)
    assert site.exit_line == Line(1006, (1.5, 2.1), (3.0, 2.1))
    assert site.entry_line == Line(1008, (4.5, -5.5), (6.0, -5.5))
    assert site.approach_line == Line(1009, (1.5, 0.5), (3.0, 0.5))
    assert [z.geometry_id for z in site.pos] == [1001, 1002, 1003, 1004, 1005]
    for k, z in enumerate(site.pos, start=1):
        assert z.centre == pytest.approx((0.6 + 1.1 * (k - 1), -1.5))
        assert (z.x1 - z.x0, z.y1 - z.y0) == pytest.approx((0.8, 1.0))
    assert site.pos_ips == {1000 + k: f"127.0.0.{k}" for k in range(1, 6)}


def test_other_site_ids_and_missing_roles() -> None:
    zones = ZonesConfig(
        pos_zones=(7, 8),
        gate_zone=9,
        exit_line=10,
        names={7: "Kasse A", 8: "Kasse B", 11: "STORE"},
    )
    site = DemoGeometry.from_config(zones, AccConfig(ip_to_pos={"10.0.0.9": "Kasse B"}))
    assert [z.geometry_id for z in site.pos] == [7, 8]
    assert site.store is not None
    assert site.store.geometry_id == 11
    assert site.dwell is None
    assert site.entry_line is None
    assert site.approach_line is None
    assert site.pos_ips == {8: "10.0.0.9"}
    assert [z.geometry_id for z in site.paying_pos()] == [8]
    assert [x.geometry_id for x in site.lines] == [10]


def test_rect_clip_is_the_inside_interval() -> None:
    r = Rect(1, 0.0, 1.0, 0.0, 1.0)
    assert r.clip((-1.0, 0.5), (2.0, 0.5)) == pytest.approx((1 / 3, 2 / 3))
    assert r.clip((0.5, 0.5), (0.6, 0.6)) == (0.0, 1.0)
    assert r.clip((-1.0, 2.0), (2.0, 2.0)) is None
    assert r.contains((1.0, 1.0))
    assert not r.contains((1.0001, 0.5))


@pytest.mark.parametrize(
    ("p0", "p1", "expected"),
    [
        ((2.0, 2.0), (2.0, 2.2), (0.5, "forward")),
        ((2.0, 2.2), (2.0, 2.0), (0.5, "backward")),
        ((2.0, 2.0), (2.0, 2.1), (1.0, "forward")),  # landing on the line counts…
        ((2.0, 2.1), (2.0, 2.3), None),  # …once
        ((1.0, 2.0), (1.0, 2.2), None),  # beside the segment
        ((2.0, 2.2), (2.0, 2.3), None),
    ],
)
def test_line_crossing(
    p0: tuple[float, float], p1: tuple[float, float], expected: tuple[float, str] | None
) -> None:
    got = Line(1006, (1.5, 2.1), (3.0, 2.1)).crossing(p0, p1)
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert got[0] == pytest.approx(expected[0])
        assert got[1] == expected[1]


def test_rfc3339_ms_round_trips_through_the_decoder() -> None:
    assert rfc3339_ms(W0 + 48) == "2026-01-01T00:00:00.048+00:00"
    assert parse_time_ms(rfc3339_ms(W0 + 123_456)) == W0 + 123_456


# -- scene -------------------------------------------------------------------------------------


def run_scene(scene: Scene, until_ms: int, step_ms: int = 80) -> list[dict[str, Any]]:
    frames = []
    for now in range(0, until_ms + 1, step_ms):
        scene.advance(now)
        frames.append(frame_of(scene.frame(W0 + now).payload) | {"now": now})
    return frames


def test_walker_through_the_gate_reports_events_in_path_order() -> None:
    site = demo_site()
    scene = Scene(site, random.Random(1), QUIET, "xovis/sensor-1")
    scene.spawn((2.25, 0.0), 1.8, 1.0, [Move(GATE_CENTRE), Move(EXIT_POINT, END)])
    events = [norm(e) for f in run_scene(scene, 4000) for e in f["events"]]
    assert events == [
        ("TRACK_CREATE", 1, None, None),
        ("ZONE_ENTRY", 1, 1011, None),
        ("LINE_CROSS", 1, 1009, "forward"),
        ("ZONE_EXIT", 1, 1011, None),  # store exit and gate entry share y = 1.0: exit first
        ("ZONE_ENTRY", 1, 1007, None),
        ("ZONE_EXIT", 1, 1007, None),  # gate exit and exit line share y = 2.1: zone first
        ("LINE_CROSS", 1, 1006, "forward"),
        ("TRACK_DELETE", 1, None, None),
    ]


def test_objects_carry_noisy_positions_and_the_exact_height() -> None:
    site = demo_site()
    params = SceneParams(truncate_share=0.0, loss_share=0.0)
    scene = Scene(site, random.Random(3), params, "t")
    scene.spawn((3.0, -3.0), 1.777, 1.0, [Wait(10_000)])
    offsets = []
    for f in run_scene(scene, 8000):
        (obj,) = f["tracked_objects"]
        x, y, h = obj["position"]
        assert h == 1.777
        assert obj["type"] == "PERSON"
        offsets += [x - 3.0, y + 3.0]
    assert max(abs(o) for o in offsets) <= params.noise_clip_m + 1e-9
    mean = sum(offsets) / len(offsets)
    sd = (sum((o - mean) ** 2 for o in offsets) / len(offsets)) ** 0.5
    assert abs(mean) < 0.005
    assert 0.015 < sd < 0.025


def test_frame_time_lags_wall_time_by_1_2_to_1_8_s() -> None:
    scene = Scene(demo_site(), random.Random(5), QUIET, "t")
    lags = [W0 + f["now"] - parse_time_ms(f["time"]) for f in run_scene(scene, 40_000)]
    assert min(lags) >= 1200
    assert max(lags) <= 1800
    assert min(lags) < 1300
    assert max(lags) > 1700


def test_group_objects_have_the_group_bit_and_type() -> None:
    scene = Scene(demo_site(), random.Random(1), QUIET, "t")
    scene.spawn((3.0, -3.0), 1.7, 1.0, [Wait(1000)])
    g = scene.spawn((3.15, -3.0), 1.7, 1.0, [Wait(1000)], group=True)
    assert g.track_id & GROUP_BIT
    assert g.track_id & ~GROUP_BIT == 2
    (frame,) = run_scene(scene, 0)
    assert [o["type"] for o in frame["tracked_objects"]] == ["PERSON", "GROUP"]
    assert [e["attributes"]["track_id"] for e in frame["events"]][-2:] == [g.track_id] * 2


def test_missed_crossing_drops_only_the_forward_exit_crossing() -> None:
    params = attrs.evolve(QUIET, missed_crossing_share=1.0)
    scene = Scene(demo_site(), random.Random(1), params, "t")
    scene.spawn((2.25, 0.0), 1.8, 1.0, [Move(GATE_CENTRE), Move(EXIT_POINT, END)])
    events = [norm(e) for f in run_scene(scene, 4000) for e in f["events"]]
    assert ("LINE_CROSS", 1, 1009, "forward") in events
    assert not [e for e in events if e[2] == 1006]
    assert scene.stats.missed_crossings == 1


def test_truncated_messages_are_invalid_json() -> None:
    params = SceneParams(truncate_share=1.0, loss_share=0.0)
    scene = Scene(demo_site(), random.Random(2), params, "t")
    scene.spawn((3.0, -3.0), 1.7, 1.0, [Wait(10_000)])
    for now in range(0, 4000, 80):
        scene.advance(now)
        payload = scene.frame(W0 + now).payload
        assert payload.startswith(b"{")
        assert len(payload) > 0
        with pytest.raises(json.JSONDecodeError):
            json.loads(payload)
    assert scene.stats.truncated == scene.stats.messages == 50
