"""Analysis log: every ingress MQTT message as one JSONL record (interfaces.md §6).

The ingress hands `AnalysisRecord`s to the `analysis` channel with `send_nowait`; this one consumer
collects them for a short window and formats + writes each batch in a worker thread, so the event
loop never touches the disk per message. Write errors are logged (WARN) and the batch is dropped.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Final

import attrs
import msgspec
import trio

from gateway.app.logs import RateLimiter
from gateway.config.model import AnalysisLogConfig, AnalysisRotateKind

log = logging.getLogger(__name__)

BATCH_WINDOW_S: Final = 0.25  # records collected per write; a capture tool, not a latency path
MAX_BATCH: Final = 1000  # = the default `[queues].analysis` capacity
FINAL_WRITE_S: Final = 5.0  # bound of the shielded last write on cancel / close
MAX_OPEN_FILES: Final = 64  # one handle per topic; a runaway topic space closes them all
MIB: Final = 1_048_576
SUBDIR: Final = "mqtt"  # §6: `<dir>/mqtt/<topic_safe>-YYYYMMDD.jsonl`

_ENCODER: Final = msgspec.json.Encoder()
_SORTED: Final = msgspec.json.Encoder(order="sorted")  # §6 `parsed`: keys sorted, as serde_json
_DECODER: Final = msgspec.json.Decoder()
_NULL: Final = msgspec.Raw(b"null")


@attrs.frozen
class AnalysisRecord:
    """One ingress message: `ts_ns` = wall-clock ns at receipt."""

    ts_ns: int
    topic: str
    payload: bytes


@attrs.define(slots=True)
class AnalysisStats:
    records: int = 0  # lines written
    batches: int = 0
    write_errors: int = 0
    lost: int = 0  # records not written because of an error
    rotations: int = 0


def topic_safe(topic: str) -> str:
    """§6: `/` → `-`, then keep only ASCII alphanumerics, `-` and `_`."""
    return "".join(c for c in topic.replace("/", "-") if (c.isascii() and c.isalnum()) or c in "-_")


def rfc3339_ns(ts_ns: int) -> str:
    """`2026-01-16T14:53:00.123456789+00:00` (UTC, always nine fraction digits)."""
    secs, nanos = divmod(ts_ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}+00:00"


def encode_record(record: AnalysisRecord, site: str) -> bytes:
    """One §6 line including its `\\n`; keys in the order ts_recv, ts_event?, src, site, …"""
    payload = record.payload
    try:
        raw: str = payload.decode("utf-8")
    except UnicodeDecodeError:
        raw = "HEX:" + payload.hex()
    parsed: Any
    try:
        parsed = _DECODER.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        parsed = None
    out: dict[str, Any] = {"ts_recv": rfc3339_ns(record.ts_ns)}
    if isinstance(parsed, dict) and isinstance(parsed.get("timestamp"), str):
        out["ts_event"] = parsed["timestamp"]
    out["src"] = "mqtt"
    out["site"] = site
    out["payload_raw"] = raw
    sorted_json = _NULL if parsed is None else msgspec.Raw(_SORTED.encode(parsed))
    out["fields"] = {"parsed": sorted_json, "topic": record.topic}
    return _ENCODER.encode(out) + b"\n"


@attrs.define(slots=True)
class _OpenFile:
    path: Path
    fh: BinaryIO
    size: int
    date: str
    counter: int


@attrs.define(slots=True)
class AnalysisFiles:
    """Per-topic files under `<dir>/mqtt`; every method blocks and runs in a worker thread."""

    root: Path
    site: str
    rotation: AnalysisRotateKind
    limit_bytes: int
    start_date: str  # YYYYMMDD; names of `size` rotation keep it (§6 "date fixed at start")
    _open: dict[str, _OpenFile] = attrs.field(factory=dict)

    def write(self, records: list[AnalysisRecord]) -> tuple[int, int, list[str]]:
        """→ (written, rotations, error texts); a failing record is skipped, the rest go on."""
        written, rotations, errors = 0, 0, []
        touched: set[str] = set()
        for record in records:
            line = encode_record(record, self.site)
            key = topic_safe(record.topic)
            try:
                current, rotated = self._target(key, record.ts_ns)
                current.fh.write(line)
            except OSError as exc:
                errors.append(f"{key}: {exc}")
                self._drop(key)
                continue
            current.size += len(line)
            rotations += rotated
            written += 1
            touched.add(key)
        for key in touched:
            current_file = self._open.get(key)
            if current_file is None:
                continue
            try:
                current_file.fh.flush()
            except OSError as exc:
                errors.append(f"{key}: {exc}")
                self._drop(key)
        return written, rotations, errors

    def close(self) -> None:
        for key in list(self._open):
            self._drop(key)

    def _target(self, key: str, ts_ns: int) -> tuple[_OpenFile, int]:
        current = self._open.get(key)
        if self.rotation == "daily":
            date = dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, dt.UTC).strftime("%Y%m%d")
            if current is not None and current.date == date:
                return current, 0
            rotated = int(current is not None)
            self._drop(key)
            return self._open_file(key, date, 0), rotated
        if current is None:
            return self._open_file(key, self.start_date, 0), 0
        if current.size < self.limit_bytes:
            return current, 0
        counter = current.counter + 1
        self._drop(key)
        return self._open_file(key, self.start_date, counter), 1

    def _open_file(self, key: str, date: str, counter: int) -> _OpenFile:
        if len(self._open) >= MAX_OPEN_FILES:
            self.close()
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            name = f"{key}-{date}.jsonl" if counter == 0 else f"{key}-{date}-{counter:04d}.jsonl"
            path = self.root / name
            size = path.stat().st_size if path.exists() else 0
            if self.rotation == "daily" or size < self.limit_bytes:
                break
            counter += 1  # a full file from an earlier run: continue after it
        opened = _OpenFile(path, path.open("ab"), size, date, counter)
        self._open[key] = opened
        return opened

    def _drop(self, key: str) -> None:
        current = self._open.pop(key, None)
        if current is None:
            return
        try:
            current.fh.close()
        except OSError as exc:
            log.debug("analysis_log_close_failed", extra={"fields": {"error": str(exc)}})


async def run_analysis_log(
    config: AnalysisLogConfig,
    site: str,
    receive: trio.MemoryReceiveChannel[AnalysisRecord],
    stats: AnalysisStats,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    wall_ns: Callable[[], int] = time.time_ns,
) -> None:
    """Write records until the channel is closed (or the task is cancelled)."""
    start = dt.datetime.fromtimestamp(wall_ns() // 1_000_000_000, dt.UTC).strftime("%Y%m%d")
    files = AnalysisFiles(
        Path(config.dir) / SUBDIR, site, config.rotation, config.rotation_mb * MIB, start
    )
    limiter = RateLimiter()
    batch: list[AnalysisRecord] = []

    async def write(final: bool) -> None:
        records = batch[:]
        batch.clear()
        written, rotations, errors = await trio.to_thread.run_sync(
            _write_batch, files, records, final
        )
        stats.batches += bool(records)
        stats.records += written
        stats.rotations += rotations
        stats.lost += len(records) - written
        stats.write_errors += len(errors)
        if errors:
            limiter.log(
                log, logging.WARNING, "analysis_log", "analysis_log_write_failed",
                error=errors[0], errors=len(errors), lost=len(records) - written,
            )  # fmt: skip

    task_status.started()
    try:
        while True:
            try:
                batch.append(await receive.receive())
            except trio.EndOfChannel:
                return
            closed = False
            with trio.move_on_after(BATCH_WINDOW_S):
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(await receive.receive())
                    except trio.EndOfChannel:
                        closed = True
                        break
            if closed:
                return
            await write(final=False)
    finally:
        with trio.move_on_after(FINAL_WRITE_S, shield=True):
            await write(final=True)


def _write_batch(
    files: AnalysisFiles, records: list[AnalysisRecord], final: bool
) -> tuple[int, int, list[str]]:
    try:
        return files.write(records) if records else (0, 0, [])
    finally:
        if final:
            files.close()
