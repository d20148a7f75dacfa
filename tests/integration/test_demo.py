"""`gateway demo` end to end in a subprocess (simulation.md §1, issue 7): a 20 s store run.

Everything is real: the embedded broker, the gateway (`run_gateway`, as `gateway run`), the mock
controller over TCP with its RS485 board on a pty, ACC over TCP from 127.0.0.k, the journal file
and the HTTP server. Every listener gets a free port; the pty link and the journal live in tmp_path.

Seed and rate: the §2 paths are long (walk ≈ 8–12 s plus a POS dwell of 8–30 s), so in 20 s only
a few customers can reach the gate. At 120/min seed 186 the model (deterministic in model time)
brings a DWELL user and a payer through the gate at ≈ 15.9 s and 17.6 s, a walk-back to the closed
gate at 14.4 s and two browsers out of the store — opens, blocked and exit/returned/in_progress.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 40.0  # interpreter start + every link up (the demo itself gives up at 20 s)
RUN_TIMEOUT_S = 60.0  # 20 s of traffic + a graceful stop, with room for a slow CI box
JOURNEY_KEYS = {"jid", "pid", "tids", "parent", "out", "auth", "acc", "gate_was_open", "dwell"}


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class Demo:
    """A `gateway demo` subprocess whose stdout lines are collected by a reader thread."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        broker, http, acc, gate = free_ports(4)
        self.http_port = http
        self.data_dir = tmp_path / "data"
        argv = [
            sys.executable, "-m", "gateway.app.cli", "demo",
            "--broker-port", str(broker), "--http-port", str(http),
            "--acc-port", str(acc), "--gate-port", str(gate),
            "--data-dir", str(self.data_dir), "--rs485-pty", str(tmp_path / "rs485"),
            *args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("GATEWAY_LOG_LEVEL", None)
        self.stderr_path = tmp_path / "stderr.txt"
        with self.stderr_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_line(self, prefix: str, timeout_s: float) -> str:
        """The first stdout line starting with `prefix` (fails at EOF or after timeout_s)."""
        while True:
            line = self.lines.get(timeout=timeout_s)
            if line is None:
                pytest.fail(f"demo ended before printing {prefix!r}: {self.finish()}")
            self.stdout.append(line)
            if line.startswith(prefix):
                return line

    def finish(self) -> tuple[int, str]:
        """Wait for the exit; returns (exit code, stderr). Remaining stdout goes to self.stdout."""
        try:
            self.proc.wait(timeout=RUN_TIMEOUT_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.stdout.append(line)
        return self.proc.returncode, self.stderr_path.read_text()

    def summary(self) -> dict[str, Any]:
        last: dict[str, Any] = json.loads(self.stdout[-1])
        return last


def read_journal(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_demo_20s_opens_blocks_and_journals(tmp_path: Path) -> None:
    demo = Demo(tmp_path, "--duration", "20", "--rate", "120", "--seed", "186", "--json")
    try:
        line = demo.wait_line("dashboard ", READY_TIMEOUT_S)
        url = f"http://127.0.0.1:{demo.http_port}/"
        assert url in line
        health = httpx.get(url + "health", timeout=5)
        assert health.status_code == 200
        assert health.json()["site"] == "demo"
        assert httpx.get(url, timeout=5).status_code == 200  # the (minimal) dashboard page
        journal_line = demo.wait_line("journal ", READY_TIMEOUT_S)
        assert str(demo.data_dir / "journeys.jsonl") in journal_line
    finally:
        code, err = demo.finish()
    assert code == 0, err
    s = demo.summary()
    print(json.dumps(s, indent=1))
    assert s["exit_code"] == 0
    assert not s["interrupted"]
    assert s["customers"]["total"] >= 20
    assert s["gate"]["opens"] >= 1
    assert s["gate"]["sent"] == s["gate"]["opens"]  # every command reached the controller
    assert s["gate"]["door_cycles"] >= 1  # the door opened, read back over RS485
    assert s["gate"]["blocked"] >= 1
    outcomes = {k for k, v in s["journeys"].items() if k != "total" and v > 0}
    assert len(outcomes) >= 3, s["journeys"]
    assert s["drops"]["total"] == 0, s["drops"]
    assert s["acc"]["matched"] >= 1
    assert s["health"].get("down", 0) == 0

    journeys = read_journal(demo.data_dir / "journeys.jsonl")
    assert len(journeys) == s["journal"]["lines"] == s["journeys"]["total"]
    assert all(j.keys() >= JOURNEY_KEYS for j in journeys)
    by_outcome = Counter(j["out"] for j in journeys)
    assert by_outcome == Counter({k: v for k, v in s["journeys"].items() if k != "total" and v})
    assert sum(1 for j in journeys if "gate_cmd" in j) >= 1
