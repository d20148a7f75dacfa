"""RS485 door-board emulator on a pseudo-terminal (simulation.md §4, interfaces.md §3).

The gateway's poller opens the pty slave (symlinked to a stable path) as if it were the real
serial port; the emulator answers every valid status query for its machine at once with an
18-byte frame of the current door state plus the configured fault and alarm bytes.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import tty

import attrs
import trio

from gateway.app.clock import SystemClock
from gateway.codecs import rs485
from gateway.core.model import Clock

logger = logging.getLogger(__name__)

READ_BYTES = 1024
QUERY_TIMES_KEPT = 10_000  # arrival times kept for the bench's inter-arrival statistics


def _replace_symlink(target: str, link_path: str) -> None:
    """Point `link_path` at `target`; refuses to replace anything but a symlink."""
    if os.path.lexists(link_path):
        if not os.path.islink(link_path):
            raise FileExistsError(f"{link_path} exists and is not a symlink")
        os.unlink(link_path)
    os.symlink(target, link_path)


@attrs.define(eq=False)
class BoardEmulator:
    """Door board behind a pty. `set_status` is what the mock controller's door sequence calls."""

    link_path: str | None = None
    machine: int = 1
    fault: int = 0
    alarm: int = 0
    clock: Clock = attrs.field(factory=SystemClock)
    status: str = "closed"  # closed | open | moving (rs485.STATUS_BYTE keys)
    left_count: int = 0  # accumulated left-open count, +1 per transition into open
    queries: int = 0
    responses_dropped: int = 0  # the slave side was not reading: a board does not queue either
    query_times_ns: collections.deque[int] = attrs.field(
        factory=lambda: collections.deque(maxlen=QUERY_TIMES_KEPT)
    )
    slave_path: str | None = None

    def set_status(self, status: str) -> None:
        if status not in rs485.STATUS_BYTE:
            raise ValueError(f"unknown door status {status!r}")
        if status == "open" and self.status != "open":
            self.left_count = (self.left_count + 1) & rs485.COUNT_MAX
        self.status = status

    def response(self) -> bytes:
        return rs485.encode_response(
            status=rs485.STATUS_BYTE[self.status],
            fault=self.fault,
            alarm=self.alarm,
            machine=self.machine,
            left_count=self.left_count,
        )

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the pty, publish its slave path (started value) and answer queries forever."""
        master, slave = os.openpty()
        try:
            tty.setraw(slave)  # binary wire: no echo, no CR/LF translation
            os.set_blocking(master, False)
            self.slave_path = os.ttyname(slave)
            if self.link_path is not None:
                _replace_symlink(self.slave_path, self.link_path)
            task_status.started(self.slave_path)
            await self._serve(master)
        finally:
            # The slave fd stays open until here so that a host closing the port never makes
            # the master read fail with EIO.
            if self.link_path is not None and self.slave_path is not None:
                with contextlib.suppress(OSError):
                    if os.readlink(self.link_path) == self.slave_path:
                        os.unlink(self.link_path)
            os.close(master)
            os.close(slave)

    async def _serve(self, master: int) -> None:
        parser = rs485.CommandParser()
        while True:
            await trio.lowlevel.wait_readable(master)
            try:
                data = os.read(master, READ_BYTES)
            except BlockingIOError:
                continue
            now_ns = self.clock.mono_ns()
            for cmd in parser.feed(data):
                if cmd.command == rs485.CMD_QUERY and cmd.machine == self.machine:
                    self.queries += 1
                    self.query_times_ns.append(now_ns)
                    self._answer(master)

    def _answer(self, master: int) -> None:
        frame = self.response()
        try:
            written = os.write(master, frame)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise
            written = 0
        if written != len(frame):
            self.responses_dropped += 1
            logger.debug("board_response_dropped")
