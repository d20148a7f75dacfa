"""Analysis log with real files (interfaces.md §6): record shape, file names, rotation, errors."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.lowlevel
import trio.testing

from gateway.config.model import AnalysisLogConfig, AnalysisRotateKind
from gateway.io.analysis_log import (
    AnalysisRecord,
    AnalysisStats,
    encode_record,
    rfc3339_ns,
    run_analysis_log,
    topic_safe,
)

DAY1_NS = int(dt.datetime(2026, 1, 16, 14, 53, 0, tzinfo=dt.UTC).timestamp()) * 10**9
DAY2_NS = DAY1_NS + 86_400 * 10**9


def lines(path: Path) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def settle(pred: Callable[[], bool]) -> None:
    """Spin on checkpoints (the autojump clock stands still) until the worker thread is done."""
    give_up = time.monotonic() + 10.0
    while not pred():
        assert time.monotonic() < give_up, "analysis log did not settle"
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def analysis_log(
    directory: Path,
    stats: AnalysisStats,
    rotation: AnalysisRotateKind = "daily",
    rotation_mb: int = 0,
    start_ns: int = DAY1_NS,
) -> AsyncIterator[trio.MemorySendChannel[AnalysisRecord]]:
    send, recv = trio.open_memory_channel[AnalysisRecord](5000)
    cfg = AnalysisLogConfig(True, str(directory), rotation, rotation_mb)
    run = partial(run_analysis_log, cfg, "netto", recv, stats, wall_ns=lambda: start_ns)
    async with trio.open_nursery() as nursery:
        await nursery.start(run)
        async with send:
            yield send


# -- record shape --------------------------------------------------------------------------------
def test_record_keys_in_order_with_ns_timestamp_and_sorted_parsed_payload() -> None:
    payload = b'{"timestamp":"2026-01-16T14:52:59.900Z","b":1,"a":{"d":[1,{"z":0,"y":1}],"c":2}}'
    rec = AnalysisRecord(DAY1_NS + 123_456_789, "xovis/s1", payload)
    line = encode_record(rec, "netto")
    assert line.endswith(b"}\n")
    assert line.count(b"\n") == 1
    obj = msgspec.json.decode(line)
    assert list(obj) == ["ts_recv", "ts_event", "src", "site", "payload_raw", "fields"]
    assert obj["ts_recv"] == "2026-01-16T14:53:00.123456789+00:00"
    assert obj["ts_event"] == "2026-01-16T14:52:59.900Z"
    assert obj["src"] == "mqtt"
    assert obj["site"] == "netto"
    assert obj["payload_raw"] == payload.decode()
    assert list(obj["fields"]) == ["parsed", "topic"]
    assert obj["fields"]["topic"] == "xovis/s1"
    assert b'"parsed":{"a":{"c":2,"d":[1,{"y":1,"z":0}]},"b":1,"timestamp":' in line


@pytest.mark.parametrize(
    "payload",
    [b'{"timestamp":5}', b'{"live_data":{}}', b'["timestamp"]', b'"timestamp"', b"nope"],
)
def test_ts_event_only_for_a_top_level_string_timestamp(payload: bytes) -> None:
    obj = msgspec.json.decode(encode_record(AnalysisRecord(DAY1_NS, "t", payload), "s"))
    assert "ts_event" not in obj
    assert list(obj) == ["ts_recv", "src", "site", "payload_raw", "fields"]


def test_non_json_text_and_non_utf8_payloads() -> None:
    text = msgspec.json.decode(encode_record(AnalysisRecord(DAY1_NS, "t", b"hello {"), "s"))
    assert text["payload_raw"] == "hello {"
    assert text["fields"] == {"parsed": None, "topic": "t"}
    binary = msgspec.json.decode(encode_record(AnalysisRecord(DAY1_NS, "t", b"\x00\xff{"), "s"))
    assert binary["payload_raw"] == "HEX:00ff7b"
    assert binary["fields"]["parsed"] is None


def test_timestamp_formatting_and_topic_names() -> None:
    assert rfc3339_ns(0) == "1970-01-01T00:00:00.000000000+00:00"
    assert rfc3339_ns(DAY1_NS + 5) == "2026-01-16T14:53:00.000000005+00:00"
    assert topic_safe("xovis/sensor 1/live#") == "xovis-sensor1-live"
    assert topic_safe("a_b/c-d/é+") == "a_b-c-d-"


# -- files ---------------------------------------------------------------------------------------
async def test_records_go_to_one_file_per_topic_and_utc_day(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    stats = AnalysisStats()
    async with analysis_log(tmp_path / "logs", stats) as send:
        await send.send(AnalysisRecord(DAY1_NS, "xovis/a", b'{"n":1}'))
        await send.send(AnalysisRecord(DAY1_NS + 1, "xovis/b", b'{"n":2}'))
        await send.send(AnalysisRecord(DAY1_NS + 2, "xovis/a", b'{"n":3}'))
        await send.send(AnalysisRecord(DAY2_NS, "xovis/a", b'{"n":4}'))
    mqtt = tmp_path / "logs" / "mqtt"
    assert names(mqtt) == [
        "xovis-a-20260116.jsonl",
        "xovis-a-20260117.jsonl",
        "xovis-b-20260116.jsonl",
    ]
    assert [r["fields"]["parsed"]["n"] for r in lines(mqtt / "xovis-a-20260116.jsonl")] == [1, 3]
    assert [r["fields"]["parsed"]["n"] for r in lines(mqtt / "xovis-a-20260117.jsonl")] == [4]
    assert stats.records == 4
    assert stats.rotations == 1


async def test_messages_are_written_in_batches(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    stats = AnalysisStats()
    async with analysis_log(tmp_path, stats) as send:
        for i in range(500):
            send.send_nowait(AnalysisRecord(DAY1_NS + i, "t", b'{"i":%d}' % i))
        await trio.sleep(1.0)
        await settle(lambda: stats.records == 500)
        assert stats.batches == 1
        for i in range(3):
            await send.send(AnalysisRecord(DAY1_NS + i, "t", b"{}"))
            await trio.sleep(0.01)
        await trio.sleep(1.0)
        await settle(lambda: stats.records == 503)
        assert stats.batches == 2
    got = lines(tmp_path / "mqtt" / "t-20260116.jsonl")
    assert [r["fields"]["parsed"].get("i") for r in got[:500]] == list(range(500))


async def test_size_rotation_numbers_files_with_the_start_date(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    stats = AnalysisStats()
    big = b'{"pad":"' + b"x" * 200_000 + b'"}'  # ≈ 400 kB per line: raw + parsed
    async with analysis_log(tmp_path, stats, "size", 1, start_ns=DAY1_NS) as send:
        for i in range(7):
            await send.send(AnalysisRecord(DAY2_NS + i, "s/1", big))  # the record date is ignored
    mqtt = tmp_path / "mqtt"
    assert names(mqtt) == [
        "s-1-20260116-0001.jsonl",
        "s-1-20260116-0002.jsonl",
        "s-1-20260116.jsonl",
    ]
    assert [len(lines(mqtt / n)) for n in names(mqtt)] == [3, 1, 3]
    assert stats.rotations == 2
    # a restart continues after the full files
    async with analysis_log(tmp_path, stats, "size", 1, start_ns=DAY1_NS) as send:
        await send.send(AnalysisRecord(DAY2_NS, "s/1", b"{}"))
    assert len(lines(mqtt / "s-1-20260116-0002.jsonl")) == 2


async def test_write_error_warns_and_continues(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "mqtt").write_bytes(b"a file where the directory should be")
    stats = AnalysisStats()
    async with analysis_log(tmp_path, stats) as send:
        await send.send(AnalysisRecord(DAY1_NS, "t", b"{}"))
        await trio.sleep(1.0)
        await settle(lambda: stats.write_errors == 1)
        assert stats.lost == 1
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert [r.getMessage() for r in warnings] == ["analysis_log_write_failed"]
        (tmp_path / "mqtt").unlink()
        await send.send(AnalysisRecord(DAY1_NS, "t", b'{"ok":1}'))
    assert [r["fields"]["parsed"] for r in lines(tmp_path / "mqtt" / "t-20260116.jsonl")] == [
        {"ok": 1}
    ]
    assert stats.records == 1


async def test_cancelled_writer_writes_what_it_collected(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    stats = AnalysisStats()
    send, recv = trio.open_memory_channel[AnalysisRecord](10)
    cfg = AnalysisLogConfig(True, str(tmp_path), "daily")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(run_analysis_log, cfg, "s", recv, stats))
        send.send_nowait(AnalysisRecord(DAY1_NS, "t", b"{}"))
        send.send_nowait(AnalysisRecord(DAY1_NS, "t", b"[]"))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert len(lines(tmp_path / "mqtt" / "t-20260116.jsonl")) == 2
    assert stats.records == 2
