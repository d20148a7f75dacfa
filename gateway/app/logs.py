"""Logging set-up (interfaces.md §12): one line per record, key=value fields, UTC µs timestamps.

Call sites log an event name as the message and pass fields via `extra={"fields": {...}}`, or use
`log_event(logger, level, event, **fields)`. `RateLimiter` keeps repeated warnings to one per
second per key and reports how many were suppressed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

LEVELS = ("debug", "info", "warning", "error")


def _ts(created: float) -> str:
    stamp = dt.datetime.fromtimestamp(created, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c in text for c in ' ="\n'):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """`2026-01-05T16:41:30.048123Z INFO gate_cmd_sent tid=42 recv_to_wire_us=412`."""

    def format(self, record: logging.LogRecord) -> str:
        fields: Mapping[str, Any] = getattr(record, "fields", None) or {}
        parts = [_ts(record.created), record.levelname, record.getMessage()]
        parts.extend(f"{k}={_fmt_value(v)}" for k, v in fields.items())
        line = " ".join(parts)
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """`{"ts","level","event",…fields}` one object per line."""

    def format(self, record: logging.LogRecord) -> str:
        fields: Mapping[str, Any] = getattr(record, "fields", None) or {}
        obj: dict[str, Any] = {
            "ts": _ts(record.created),
            "level": record.levelname,
            "event": record.getMessage(),
        }
        obj.update(fields)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str, separators=(",", ":"))


def configure(level: str = "info", fmt: str = "text", stream: Any = None) -> None:
    """Install the gateway's single stdout handler on the root logger."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": fields})


@attrs.define(slots=True)
class RateLimiter:
    """At most one record per `interval_s` per key; the next one carries `suppressed=N`."""

    interval_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    _last: dict[str, float] = attrs.field(factory=dict)
    _suppressed: dict[str, int] = attrs.field(factory=dict)

    def allow(self, key: str) -> int | None:
        """Return the suppressed count to report if a record may be written now, else None."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)

    def log(self, logger: logging.Logger, level: int, key: str, event: str, **fields: Any) -> bool:
        suppressed = self.allow(key)
        if suppressed is None:
            return False
        if suppressed:
            fields["suppressed"] = suppressed
        log_event(logger, level, event, **fields)
        return True
