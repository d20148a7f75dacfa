"""The real `gateway mock-cloudplus` process: open frame over TCP, door states on the pty board.

Exit codes (interfaces.md §10): 0 on Ctrl-C, 1 when the port cannot be bound.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tty
from pathlib import Path

import pytest
import trio

from gateway.app.clock import SystemClock
from gateway.codecs import rs485
from gateway.config.model import GateConfig
from gateway.core.effects import Publish
from gateway.core.model import GateCmd
from gateway.io.gate_link import GateLink
from gateway.io.gate_worker import GateJob, GateStats, GateWorker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30  # a cold interpreter on a slow CI box, not a performance bound
OPEN_HEX = "02 00 2c ff 01 00 00 d0 03"


def gateway_argv() -> list[str]:
    script = ROOT / ".venv" / "bin" / "gateway"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "gateway.app.cli"]  # not installed: run from the checkout


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Lines:
    """Line reader over a process's stdout."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buf = b""
        self.seen: list[str] = []

    async def wait_for(self, needle: str) -> str:
        while True:
            while b"\n" in self._buf:
                raw, _, self._buf = self._buf.partition(b"\n")
                line = raw.decode()
                self.seen.append(line)
                if needle in line:
                    return line
            data = await self._stream.receive_some(4096)
            assert data, f"stdout closed before {needle!r}; seen {self.seen}"
            self._buf += data


async def query(fd: int) -> rs485.BoardResponse:
    os.write(fd, rs485.encode_query(1))
    parser = rs485.ResponseParser()
    while True:
        await trio.lowlevel.wait_readable(fd)
        parser.feed(os.read(fd, 64))
        response = parser.next_response()
        if response is not None:
            return response


async def test_mock_process_receives_open_frame_and_pty_board_reports_moving_then_open(
    tmp_path: Path,
) -> None:
    port = free_port()
    pty_link = tmp_path / "gateway-rs485"
    argv = [
        *gateway_argv(),
        "mock-cloudplus",
        "--port", str(port),
        "--rs485-pty", str(pty_link),
        "--move-delay-ms", "100",
        "--open-delay-ms", "150",
        "--open-duration-ms", "3000",
    ]  # fmt: skip
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, env=child_env(), cwd=ROOT)
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        with trio.fail_after(START_TIMEOUT_S):
            await lines.wait_for("listening")
        assert pty_link.is_symlink()
        fd = os.open(pty_link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        try:
            first = await query(fd)
            raw = first.raw
            assert len(raw) == 18
            assert (sum(raw) + 1) % 256 == 0
            assert first.door_status == "closed"

            clock = SystemClock()
            stats = GateStats()
            published: list[Publish] = []
            config = GateConfig(mode="tcp", tcp_addr=f"127.0.0.1:{port}")
            link = GateLink(config, stats, clock)
            worker = GateWorker(config, "cli", clock, link, published.append, stats)
            async with trio.open_nursery() as nursery:
                await nursery.start(link.run)
                with trio.fail_after(10):
                    await link.wait_connected()
                now = clock.mono_ns()
                cmd = GateCmd(track_id=1, src="tracker", trigger_recv_ns=now, enqueued_ns=now)
                assert (await worker.handle(GateJob(cmd))).ok
                with trio.fail_after(10):
                    line = await lines.wait_for("rx open")
                assert line.endswith(OPEN_HEX)
                statuses: list[str] = []
                with trio.fail_after(10):
                    while "open" not in statuses:
                        response = await query(fd)
                        assert len(response.raw) == 18
                        if not statuses or statuses[-1] != response.door_status:
                            statuses.append(response.door_status)
                        await trio.sleep(0.02)
                nursery.cancel_scope.cancel()
            assert statuses[-2:] == ["moving", "open"]
            assert set(statuses) <= {"closed", "moving", "open"}
        finally:
            os.close(fd)
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(START_TIMEOUT_S):
            assert await proc.wait() == 0
        assert not pty_link.exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_cannot_bind_exits_1_naming_the_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [*gateway_argv(), "mock-cloudplus", "--port", str(port)],
            env=child_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
        )
    assert done.returncode == 1
    assert str(port) in done.stderr
