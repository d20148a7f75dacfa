"""`gateway replay --offline`: captures through the core on a fake clock (simulation.md §5)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.app.cli import build_parser
from gateway.codecs.uuid7 import uuid7_ms
from gateway.config.loader import load_config
from gateway.config.model import Config
from gateway.io.analysis_log import AnalysisRecord, encode_record
from gateway.tools.replay import ReadStats
from gateway.tools.replay_offline import MAX_GAP_TICKS, OfflineSummary, replay_offline
from gateway.tools.traffic import TrafficModel, demo_geometry
from gateway.tools.traffic_model import SensorMessage
from tests.unit.core_harness import dts_config
from tests.unit.test_replay import (
    PAYING_CUSTOMER,
    W,
    acc_line,
    door_line,
    ev,
    mqtt_line,
    person,
    raw_line,
    record_line,
    track_line,
    xovis,
)

ROOT = Path(__file__).resolve().parents[2]
DTS_TOML = ROOT / "tests" / "data" / "dts.toml"
HOUR_MS = 3_600_000


def offline(
    lines: Sequence[bytes], config: Config | None = None, seed: int = 1
) -> tuple[bytes, OfflineSummary, ReadStats]:
    out: list[bytes] = []
    summary, stats = replay_offline(lines, config or dts_config(), out.append, seed=seed)
    return b"".join(out), summary, stats


def journeys(output: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines()]


def browser(t: int, tid: int) -> list[bytes]:
    """Walks in through ENTRY_1, never pays, is deleted in the store (`returned`)."""
    return [
        track_line(t, tid, "TRACK_CREATE", (5.2, -6.0, 1.7)),
        track_line(t + 800, tid, "LINE_CROSS", (5.2, -5.4, 1.7), 1008, "forward"),
        track_line(t + 5000, tid, "TRACK_DELETE", (5.0, -2.0, 1.7)),
    ]


def test_paying_customer_gives_one_exit_journey() -> None:
    output, summary, stats = offline(PAYING_CUSTOMER)
    (j,) = journeys(output)
    assert output.endswith(b"\n")
    assert {k: j[k] for k in ("tids", "parent", "out", "auth", "acc", "dwell")} == {
        "tids": [100],
        "parent": None,
        "out": "exit",
        "auth": True,
        "acc": True,
        "dwell": 8500,
    }
    assert (j["t0"], j["t1"], j["gate_cmd"], j["gate_open"]) == (
        W,
        W + 12_500,
        W + 11_000,
        W + 11_300,
    )
    assert j["gate_was_open"] is False
    assert uuid7_ms(j["jid"]) == uuid7_ms(j["pid"]) == W
    assert [e["t"] for e in j["ev"]] == [
        "track_create", "zone_entry", "acc", "zone_exit", "zone_entry", "gate_cmd", "gate_open",
        "exit_cross",
    ]  # fmt: skip
    assert j["ev"][2] == {
        "t": "acc",
        "z": "POS_1",
        "ts": W + 8500,
        "x": "kiosk=127.0.0.1,count=1,dwell=8000",
    }
    assert summary.journeys == {
        "exit": 1, "returned": 0, "lost": 0, "pass_through": 0, "in_progress": 0,
    }  # fmt: skip
    assert (summary.opens, summary.acc_matched, summary.acc_unmatched, summary.stitches) == (
        1,
        1,
        0,
        0,
    )
    assert (summary.mqtt_messages, summary.acc_inputs, summary.door_readings) == (6, 1, 1)
    assert (stats.records, stats.corrupt) == (8, 0)
    assert summary.duration_ms >= 13_000 + 10_000  # the drain waited for the egress hold


def test_two_runs_are_byte_identical_and_jid_pid_are_seeded() -> None:
    capture = sorted([*PAYING_CUSTOMER, *browser(2000, 200), *browser(4000, 300)])
    first, _, _ = offline(capture)
    second, _, _ = offline(capture)
    assert first == second
    assert len(journeys(first)) == 3
    other, _, _ = offline(capture, seed=2)
    assert other != first

    def without_ids(output: bytes) -> list[dict[str, Any]]:
        return [{k: v for k, v in j.items() if k not in ("jid", "pid")} for j in journeys(output)]

    assert without_ids(other) == without_ids(first)


def test_corrupt_lines_are_counted_and_the_rest_replayed() -> None:
    clean, clean_summary, _ = offline(PAYING_CUSTOMER)
    dirty = [*PAYING_CUSTOMER[:3], b'{"ts_recv": "2026-01-01T00:00:0', *PAYING_CUSTOMER[3:]]
    dirty[5:5] = [b"\x00\xff garbage\n", b"\n"]
    output, summary, stats = offline(dirty)
    assert output == clean
    assert summary == clean_summary
    assert (stats.lines, stats.corrupt, stats.blank, stats.records) == (11, 2, 1, 8)
    assert stats.examples[0].startswith("line 4: not JSON")


def test_raw_xovis_messages_are_timed_by_their_frames() -> None:
    """A non-payer at the closed gate: blocked (no gate_cmd), leaves through the exit."""
    steps = [
        (0, "TRACK_CREATE", (5.2, -6.0, 1.7), None, None),
        (500, "LINE_CROSS", (5.2, -5.4, 1.7), 1008, "forward"),
        (1000, "ZONE_ENTRY", (2.25, 1.55, 1.7), 1007, None),
        (3000, "LINE_CROSS", (2.25, 2.2, 1.7), 1006, "forward"),
    ]
    lines = [
        xovis(W + t, [ev(kind, 5, g, d)], [person(5, pos)]) + b"\n" for t, kind, pos, g, d in steps
    ]
    output, summary, stats = offline(lines)
    (j,) = journeys(output)
    assert (j["out"], j["auth"], j["t0"], j["t1"]) == ("exit", False, W, W + 3000)
    assert "gate_cmd" not in j
    assert (summary.opens, stats.kinds["raw"]) == (0, 4)


def test_door_record_with_bad_checksum_is_not_a_reading() -> None:
    capture = [line if b'"rs485"' not in line else door_line(11_300, 1, ok=False)
               for line in PAYING_CUSTOMER]  # fmt: skip
    output, summary, _ = offline(capture)
    (j,) = journeys(output)
    assert "gate_open" not in j
    assert (summary.door_readings, summary.door_rejected) == (0, 1)


def test_repeated_door_states_reach_the_core_once() -> None:
    capture = sorted([*PAYING_CUSTOMER, door_line(11_400, 1), door_line(11_500, 1)])
    output, summary, _ = offline(capture)
    (j,) = journeys(output)
    assert j["gate_open"] == W + 11_300
    assert summary.door_readings == 3


def test_own_egress_topic_is_never_parsed() -> None:
    payload = xovis(W, [ev("TRACK_CREATE", 9)], [person(9, (1, 1, 1.7))])
    output, summary, _ = offline([mqtt_line(0, payload, "gateway/journeys")])
    assert (output, summary.skipped_own_topic, summary.mqtt_messages) == (b"", 1, 0)


def test_unmapped_kiosk_is_unmatched_and_simulated_pos_is_used() -> None:
    capture = [acc_line(0, ip="10.9.9.9", pos=None), acc_line(100, ip=None, pos="POS_2")]
    _, summary, _ = offline(capture)
    assert (summary.acc_inputs, summary.acc_matched, summary.acc_unmatched) == (2, 0, 2)


def test_stitch_is_counted_and_continues_the_journey() -> None:
    capture = [
        *browser(0, 100)[:2],
        track_line(1500, 100, "ZONE_ENTRY", (1.0, -1.5, 1.7), 1001),
        track_line(3000, 100, "TRACK_DELETE", (1.0, -1.5, 1.7)),
        track_line(3500, 101, "TRACK_CREATE", (1.2, -1.5, 1.71)),
        track_line(4000, 101, "ZONE_ENTRY", (2.25, 1.55, 1.7), 1007),
        track_line(5000, 101, "LINE_CROSS", (2.25, 2.2, 1.7), 1006, "forward"),
    ]
    output, summary, _ = offline(capture)
    (j,) = journeys(output)
    assert (j["tids"], j["out"], summary.stitches) == ([100, 101], "exit", 1)


def test_live_track_at_the_end_is_shut_down_in_progress() -> None:
    output, summary, _ = offline(browser(0, 100)[:2])
    (j,) = journeys(output)
    assert (j["out"], j["ev"][-1]["t"]) == ("in_progress", "shutdown")
    assert summary.journeys["in_progress"] == 1


def test_a_long_gap_skips_idle_ticks_only() -> None:
    later = 3 * HOUR_MS
    second = [track_line(later + t, 200, *rest) for t, _, *rest in _steps(PAYING_CUSTOMER)]
    capture = [*PAYING_CUSTOMER, *second, acc_line(later + 8500)]
    capture.sort()
    output, summary, _ = offline(capture)
    first_j, second_j = journeys(output)
    assert (first_j["out"], second_j["out"]) == ("exit", "exit")
    assert second_j["t0"] == W + later
    assert summary.skipped_ticks == later // 1000 - MAX_GAP_TICKS - 13


def _steps(lines: Sequence[bytes]) -> list[tuple[Any, ...]]:
    """(t, tid, kind, pos, g, direction) of each track line of a capture."""
    out: list[tuple[Any, ...]] = []
    for line in lines:
        rec = json.loads(line)
        if rec["src"] != "mqtt":
            continue
        frame = json.loads(rec["payload_raw"])["live_data"]["frames"][0]
        (e,) = frame["events"]
        a = e["attributes"]
        pos = tuple(frame["tracked_objects"][0]["position"])
        t = frame["time"] + 1500 - W
        out.append((t, a["track_id"], e["type"], pos, a.get("geometry_id"), a.get("direction")))
    return out


def test_untimed_raw_message_alone_is_replayed() -> None:
    output, summary, stats = offline([raw_line("no time")])
    assert (stats.kinds["raw"], summary.xovis.events_received) == (1, 1)
    assert output == b""  # a create without entry crossing or dwell is not emitted (§11.2)


# -- the CLI in-process (files only) -----------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["replay", *argv])


def test_cli_offline_writes_journeys_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = tmp_path / "capture.jsonl"
    capture.write_bytes(b"".join([*PAYING_CUSTOMER[:4], b"oops\n", *PAYING_CUSTOMER[4:]]))
    out = tmp_path / "journeys.jsonl"
    args = parse(str(capture), "--offline", "--config", str(DTS_TOML), "--out", str(out))
    assert args.func(args) == 0
    expected, _, _ = offline(PAYING_CUSTOMER)
    assert out.read_bytes() == expected
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "replay: corrupt line 5: not JSON" in captured.err
    assert "replay: lines 9: replayed 8 (mqtt 6, raw 0, acc 1, rs485 1), corrupt 1" in captured.err
    assert "replay: journeys 1: exit 1, returned 0" in captured.err
    assert "replay: opens 1, acc matched 1, unmatched 0, stitches 0" in captured.err


def test_cli_offline_defaults_to_stdout(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    capture = tmp_path / "capture.jsonl"
    capture.write_bytes(b"".join(PAYING_CUSTOMER))
    args = parse(str(capture), "--offline", "--config", str(DTS_TOML), "--seed", "7")
    assert args.func(args) == 0
    expected, _, _ = offline(PAYING_CUSTOMER, seed=7)
    assert capsysbinary.readouterr().out == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--offline"], "--offline needs --config PATH"),
        (["--offline", "--journeys", "--config", "c"], "--offline and --journeys exclude"),
        (["--out", "x"], "--out needs --offline"),
        (["--seed", "3"], "--seed needs --offline"),
        (["--config", "c"], "--config needs --offline or --journeys"),
        (["--journeys", "--gateway-url", "http://x"], "--gateway-url is for online replay"),
        (["--token", "t"], "--token needs --gateway-url"),
        (["--speed", "-1"], "--speed must be a number ≥ 0"),
        (["--speed", "nan"], "--speed must be a number ≥ 0"),
        (["--port", "0"], "--port must be 1–65535"),
    ],
)
def test_cli_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse("capture.jsonl", *argv)
    assert args.func(args) == 2
    assert capsys.readouterr().err.startswith(f"gateway replay: error: {message}")


def test_cli_config_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("capture.jsonl", "--offline", "--config", str(tmp_path / "missing.toml"))
    assert args.func(args) == 2
    assert "cannot read file" in capsys.readouterr().err


def test_cli_missing_input_or_unwritable_output_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(str(tmp_path / "nope.jsonl"), "--offline", "--config", str(DTS_TOML))
    assert args.func(args) == 1
    assert "gateway replay: cannot read" in capsys.readouterr().err
    capture = tmp_path / "capture.jsonl"
    capture.write_bytes(b"")
    out = tmp_path / "no-such-dir" / "out.jsonl"
    args = parse(str(capture), "--offline", "--config", str(DTS_TOML), "--out", str(out))
    assert args.func(args) == 1
    assert "gateway replay: cannot write" in capsys.readouterr().err


# -- a synthetic demo capture (simulation.md §2 traffic) ---------------------------------------


def demo_capture(config: Config, minutes: int, seed: int) -> list[bytes]:
    """What the analysis log would hold for the demo traffic, plus its ACC lines as records."""
    model = TrafficModel(demo_geometry(config.zones, config.acc), rate_per_min=8, seed=seed)
    lines: list[bytes] = []
    frame_ms = int(model.frame_period_ms)
    for now_ms in range(0, minutes * 60_000, frame_ms):
        for output in model.step(now_ms, W + now_ms):
            ts_ns = (W + now_ms) * 1_000_000
            if isinstance(output, SensorMessage):
                record = AnalysisRecord(ts_ns, output.topic, output.payload)
                lines.append(encode_record(record, config.site.id))
            else:
                text = output.line.decode().strip()
                pos = config.acc.ip_to_pos.get(output.source_ip)
                receipt = text.removeprefix("ACC ")
                fields = {"kiosk_ip": output.source_ip, "pos_zone": pos, "receipt_id": receipt}
                lines.append(record_line(now_ms, "acc", text, fields))
    return lines


def test_offline_replay_of_a_demo_capture_is_deterministic() -> None:
    config = load_config(ROOT / "tests" / "data" / "demo.toml")
    capture = demo_capture(config, minutes=4, seed=11)
    first, summary, stats = offline(capture, config)
    second, _, _ = offline(capture, config)
    assert first == second
    assert stats.corrupt == 0  # truncated sensor messages are records with a bad payload
    assert stats.kinds["acc"] > 0
    outcomes = summary.journeys
    assert outcomes["exit"] > 0
    assert sum(outcomes.values()) == len(journeys(first))
    assert summary.acc_matched > 0
    assert summary.opens > 0
