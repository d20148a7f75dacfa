"""Logging formats and the warning rate limiter (interfaces.md §12)."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from gateway.app import logs

STAMP = dt.datetime(2026, 1, 5, 16, 41, 30, 48123, tzinfo=dt.UTC).timestamp()


def record(
    event: str, level: int = logging.INFO, fields: dict[str, object] | None = None
) -> logging.LogRecord:
    rec = logging.LogRecord("gateway.test", level, __file__, 1, event, None, None)
    rec.created = STAMP
    if fields is not None:
        rec.fields = fields
    return rec


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """`logs.configure` replaces the root handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield root
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)


def test_text_format_is_the_spec_line() -> None:
    line = logs.TextFormatter().format(
        record("gate_cmd_sent", fields={"tid": 42, "recv_to_wire_us": 412})
    )
    assert line == "2026-01-05T16:41:30.048123Z INFO gate_cmd_sent tid=42 recv_to_wire_us=412"


def test_text_format_quotes_values_that_need_it() -> None:
    fields: dict[str, object] = {
        "detail": "connection refused",
        "empty": "",
        "eq": "a=b",
        "plain": "POS_1",
        "none": None,
        "flag": True,
        "ids": [1, 2],
    }
    line = logs.TextFormatter().format(record("gate_link_down", logging.WARNING, fields))
    assert line == (
        "2026-01-05T16:41:30.048123Z WARNING gate_link_down "
        'detail="connection refused" empty="" eq="a=b" plain=POS_1 none=null flag=true '
        'ids="[1, 2]"'
    )


def test_text_format_without_fields_and_with_exception() -> None:
    assert logs.TextFormatter().format(record("shutdown_done")) == (
        "2026-01-05T16:41:30.048123Z INFO shutdown_done"
    )
    rec = record("task_crashed", logging.ERROR, {"task": "rs485"})
    try:
        raise ValueError("boom")
    except ValueError:
        rec.exc_info = sys.exc_info()
    line = logs.TextFormatter().format(rec)
    head, _, exc = line.partition(" exc=")
    assert head == "2026-01-05T16:41:30.048123Z ERROR task_crashed task=rs485"
    assert "\n" not in line
    assert json.loads(exc).endswith("ValueError: boom")


def test_json_format_is_one_object_per_line() -> None:
    line = logs.JsonFormatter().format(
        record("acc_authorized", fields={"tid": 7, "pos": "POS_1", "dwell_ms": 7512})
    )
    assert "\n" not in line
    assert json.loads(line) == {
        "ts": "2026-01-05T16:41:30.048123Z",
        "level": "INFO",
        "event": "acc_authorized",
        "tid": 7,
        "pos": "POS_1",
        "dwell_ms": 7512,
    }
    assert list(json.loads(line))[:3] == ["ts", "level", "event"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_configure_and_log_event_write_one_line_per_record(
    root_logger: logging.Logger, fmt: str
) -> None:
    out = io.StringIO()
    logs.configure("info", fmt, stream=out)
    assert len(root_logger.handlers) == 1
    log = logging.getLogger("gateway.test")
    logs.log_event(log, logging.DEBUG, "xovis_event", tid=1)  # below the level: nothing
    logs.log_event(log, logging.INFO, "config_loaded", path="/etc/gateway/gateway.toml")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    if fmt == "json":
        obj = json.loads(lines[0])
        assert (obj["level"], obj["event"], obj["path"]) == (
            "INFO",
            "config_loaded",
            "/etc/gateway/gateway.toml",
        )
    else:
        assert lines[0].endswith(" INFO config_loaded path=/etc/gateway/gateway.toml")
        assert lines[0][:27].endswith("Z")


def test_configure_debug_level_lets_debug_through(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    logs.configure("debug", "text", stream=out)
    logs.log_event(logging.getLogger("gateway.test"), logging.DEBUG, "xovis_event", tid=1)
    assert out.getvalue().split(" ", 1)[1] == "DEBUG xovis_event tid=1\n"


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_allows_one_per_second_per_key() -> None:
    clock = FakeTime()
    limiter = logs.RateLimiter(clock=clock)
    assert limiter.allow("mqtt") == 0
    assert limiter.allow("mqtt") is None
    assert limiter.allow("acc") == 0  # keys are independent
    clock.now += 0.5
    assert limiter.allow("mqtt") is None
    clock.now += 0.499
    assert limiter.allow("mqtt") is None
    clock.now = 101.0  # exactly 1 s after the last written record
    assert limiter.allow("mqtt") == 3
    assert limiter.allow("mqtt") is None
    clock.now += 1.0
    assert limiter.allow("mqtt") == 1
    clock.now += 5.0
    assert limiter.allow("mqtt") == 0


def test_rate_limiter_log_reports_suppressed_count(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    logs.configure("info", "text", stream=out)
    clock = FakeTime()
    limiter = logs.RateLimiter(clock=clock)
    log = logging.getLogger("gateway.test")
    written = [
        limiter.log(log, logging.WARNING, "events", "mqtt_events_dropped", source="mqtt")
        for _ in range(5)
    ]
    assert written == [True, False, False, False, False]
    clock.now += 1.0
    assert limiter.log(log, logging.WARNING, "events", "mqtt_events_dropped", source="mqtt")
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [
        "WARNING mqtt_events_dropped source=mqtt",
        "WARNING mqtt_events_dropped source=mqtt suppressed=4",
    ]
