"""Journal writer: journeys as JSONL, batched and fsynced in a worker thread (interfaces.md §5).

One long-lived consumer of the `journeys` channel. A batch is written when 10 journeys are pending
or 1000 ms after the first pending one; a failed batch is kept (≤ 1000) and retried. When the
channel is closed the last batch is flushed, fsynced and the file closed (D15).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Final

import attrs
import trio

from gateway.app.logs import RateLimiter, log_event
from gateway.codecs.journey_json import encode_journey
from gateway.config.model import EgressConfig, RotateKind

log = logging.getLogger(__name__)

FLUSH_BATCH: Final = 10  # §5: flush when 10 journeys are pending …
FLUSH_AFTER_S: Final = 1.0  # … or 1000 ms after the first pending one
RETRY_AFTER_S: Final = 1.0  # §5: a failed batch is retried at the next flush, one period later
MAX_KEPT: Final = 1000  # §5: at most 1000 journeys kept for retry, older ones dropped
FINAL_FLUSH_S: Final = 5.0  # bound of the shielded flush when the task is cancelled
MIB: Final = 1_048_576


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@attrs.define(slots=True)
class JournalStats:
    """Plain counters for metrics and the `journal` health component (interfaces.md §8, §9)."""

    lines: int = 0
    write_errors: int = 0
    rotations: int = 0
    dropped: int = 0  # counts into gateway_journey_egress_dropped_total
    flushes: int = 0
    last_flush_mono_ns: int | None = None
    last_error_mono_ns: int | None = None
    path: str = ""
    pending: int = 0


@attrs.frozen
class FlushOutcome:
    rotations: int = 0
    rotate_error: str | None = None


def _absolute(path: str) -> str:
    """For health output; costs one getcwd(), never blocks on the journal's disk."""
    return os.path.abspath(path)


def _free_name(base: Path, stem: str, suffix: str) -> Path:
    """`<stem><suffix>`, or with `-1`, `-2`, … appended on a clash (§5)."""
    candidate = base / f"{stem}{suffix}"
    n = 0
    while candidate.exists():
        n += 1
        candidate = base / f"{stem}-{n}{suffix}"
    return candidate


@attrs.define(slots=True)
class JournalFile:
    """The active journal file; every method blocks and runs in a worker thread."""

    path: Path
    rotate: RotateKind = "none"
    rotate_bytes: int = 0
    _fh: BinaryIO | None = None
    _data_date: dt.date | None = None  # UTC date of the data in the active file

    def write_batch(self, data: bytes, now: dt.datetime) -> FlushOutcome:
        """Append `data`, flush and fsync; rotate per §5. Raises OSError if the write failed."""
        rotations, rotate_error = 0, None
        if self.rotate == "daily":
            try:
                rotations += self._rotate_daily(now.date())
            except OSError as exc:  # keep journaling into the active file
                rotate_error = str(exc)
        fh = self._open()
        start = fh.tell()
        try:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        except OSError:
            self._undo(start)
            raise
        if self._data_date is None:
            self._data_date = now.date()
        if self.rotate == "size" and fh.tell() >= self.rotate_bytes:
            try:
                self._rename_active(now.strftime("%Y%m%d-%H%M%S"))
                rotations += 1
            except OSError as exc:
                rotate_error = str(exc)
        return FlushOutcome(rotations, rotate_error)

    def finish(self, data: bytes, now: dt.datetime) -> FlushOutcome:
        """The last batch (may be empty), then close whatever happens."""
        try:
            return self.write_batch(data, now) if data else FlushOutcome()
        finally:
            self.close()

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()

    def _open(self) -> BinaryIO:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = fh = self.path.open("ab")
            st = os.fstat(fh.fileno())
            if st.st_size > 0 and self._data_date is None:
                self._data_date = dt.datetime.fromtimestamp(st.st_mtime, dt.UTC).date()
        return self._fh

    def _undo(self, start: int) -> None:
        """Cut a partial write so the retried batch is not duplicated; then reopen next time."""
        fh, self._fh = self._fh, None
        if fh is None:
            return
        with contextlib.suppress(OSError):  # best effort: else a retry repeats lines (jid dedupe)
            fh.truncate(start)
        with contextlib.suppress(OSError):  # nothing new to flush: the write already failed
            fh.close()

    def _rotate_daily(self, today: dt.date) -> int:
        if self._fh is None and self.path.exists():
            self._open()
        if self._data_date is None or self._data_date == today:
            return 0
        self._rename_active(self._data_date.strftime("%Y%m%d"))
        return 1

    def _rename_active(self, label: str) -> None:
        self.close()
        target = _free_name(self.path.parent, f"{self.path.stem}-{label}", self.path.suffix)
        with contextlib.suppress(FileNotFoundError):  # removed by someone else: nothing to rotate
            self.path.rename(target)
        self._data_date = None


async def run_journal(
    config: EgressConfig,
    receive: trio.MemoryReceiveChannel[Mapping[str, Any]],
    stats: JournalStats,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    now: Callable[[], dt.datetime] = utc_now,
) -> None:
    """Consume journey records until the channel is closed; `now` gives the UTC rotation time."""
    writer = _Writer(
        JournalFile(Path(config.file), config.rotate, config.rotate_mb * MIB), stats, now
    )
    stats.path = _absolute(config.file)
    task_status.started()
    try:
        await writer.run(receive)
    finally:
        with trio.move_on_after(FINAL_FLUSH_S, shield=True):
            await writer.close()


@attrs.define(slots=True)
class _Writer:
    file: JournalFile
    stats: JournalStats
    now: Callable[[], dt.datetime]
    pending: deque[bytes] = attrs.field(factory=deque)
    deadline: float = math.inf
    retry_at: float = -math.inf  # size-triggered flushes wait for this after a failure
    limiter: RateLimiter = attrs.field(factory=RateLimiter)

    async def run(self, receive: trio.MemoryReceiveChannel[Mapping[str, Any]]) -> None:
        while True:
            with trio.move_on_at(self.deadline) as scope:
                try:
                    record = await receive.receive()
                except trio.EndOfChannel:
                    return
                self._add(record)
                # take what is already queued too, so a burst becomes one write + fsync
                # instead of one per 10 lines (the channel is only 100 deep)
                for _ in range(MAX_KEPT):
                    try:
                        self._add(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
            if scope.cancelled_caught or (
                len(self.pending) >= FLUSH_BATCH and trio.current_time() >= self.retry_at
            ):
                await self.flush()

    def _add(self, record: Mapping[str, Any]) -> None:
        try:
            line = encode_journey(record) + b"\n"
        except (TypeError, ValueError) as exc:  # a bug upstream must not stop the journal
            self.stats.dropped += 1
            self.limiter.log(log, logging.ERROR, "encode", "journal_encode_failed", error=str(exc))
            return
        if not self.pending:
            self.deadline = trio.current_time() + FLUSH_AFTER_S
        self.pending.append(line)
        if len(self.pending) > MAX_KEPT:
            self.pending.popleft()
            self.stats.dropped += 1
        self.stats.pending = len(self.pending)

    async def flush(self) -> None:
        if not self.pending:
            self.deadline = math.inf
            return
        count = len(self.pending)
        try:
            outcome = await trio.to_thread.run_sync(
                self.file.write_batch, b"".join(self.pending), self.now()
            )
        except OSError as exc:
            self._failed("journal_write_failed", str(exc), pending=count)
            self.retry_at = self.deadline = trio.current_time() + RETRY_AFTER_S
            return
        self._written(count, outcome)
        self.retry_at = -math.inf
        self.deadline = math.inf

    async def close(self) -> None:
        """Final flush + fsync + close in one thread call, so a cancel cannot skip the close."""
        count = len(self.pending)
        try:
            outcome = await trio.to_thread.run_sync(
                self.file.finish, b"".join(self.pending), self.now()
            )
        except OSError as exc:
            self._failed("journal_write_failed", str(exc), pending=count)
            self.stats.dropped += count
            log_event(log, logging.ERROR, "journal_lost_on_close", lines=count)
            self.pending.clear()
            self.stats.pending = 0
            return
        self._written(count, outcome)

    def _written(self, count: int, outcome: FlushOutcome) -> None:
        self.pending.clear()  # nothing is added meanwhile: `run` awaits the flush inline
        stats = self.stats
        stats.pending = 0
        if count:
            stats.lines += count
            stats.flushes += 1
            stats.last_flush_mono_ns = time.monotonic_ns()
        stats.rotations += outcome.rotations
        if outcome.rotate_error is not None:
            self._failed("journal_rotate_failed", outcome.rotate_error)

    def _failed(self, event: str, error: str, **fields: Any) -> None:
        self.stats.write_errors += 1
        self.stats.last_error_mono_ns = time.monotonic_ns()
        self.limiter.log(
            log, logging.ERROR, event, event, path=self.stats.path, error=error, **fields
        )
