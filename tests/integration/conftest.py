"""Shared fixtures for integration tests: a private Mosquitto broker (style.md "Tests").

Fixtures
- `mosquitto_session` (session): one `MosquittoServer` on a free 127.0.0.1 port, started once
  and stopped in `finally`. Conf: anonymous, `set_tcp_nodelay true` (interfaces.md §1.1),
  `max_packet_size` 1 MiB (≥ the 256 KiB of §1.1), no QoS queue limit (exact drop counts).
- `mosquitto` (function): the same server, guaranteed running when the test starts and restarted
  afterwards if the test stopped it. Fault tests call `.stop()` / `.kill()` / `.start()` and
  `.pause()` / `.resume()` (SIGSTOP/SIGCONT: a hung broker); the port stays the same.
  Use `.host`, `.port`, `.url`, `.log_text()`.
- `mqtt_topic_prefix` (function): a unique topic prefix such as `t/test_name-1a2b3c4d`, so tests
  sharing the broker never see each other's messages.

Mosquitto is looked up on PATH and in /usr/sbin; when missing the fixture fails with an install
hint (`make test` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 10.0  # mosquitto normally listens within ~50 ms
STOP_TIMEOUT_S = 5.0
MAX_PACKET_BYTES = 1024 * 1024  # interfaces.md §1.1 needs ≥ 256 KiB inbound


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MosquittoServer:
    """A private mosquitto process that can be stopped and restarted on the same port."""

    host = "127.0.0.1"

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.workdir = workdir
        self.conf_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.conf_path.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "set_tcp_nodelay true\n"
            f"max_packet_size {MAX_PACKET_BYTES}\n"
            "max_queued_messages 0\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
            "log_type notice\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start:\n{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.url}:\n{self.log_text()}")

    def stop(self) -> None:
        """Graceful stop (SIGTERM); clients see their connection closed."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Hard stop (SIGKILL), as in S153's "mosquitto killed"."""
        self._end(signal.SIGKILL)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is answered."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def _end(self, sig: int) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)  # a paused broker must still see SIGTERM
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture(scope="session")
def mosquitto_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    binary = find_mosquitto()
    if binary is None:
        pytest.fail(
            "mosquitto is not installed (looked on PATH and in /usr/sbin): run `make test` as "
            "root or `sudo apt-get install mosquitto`",
            pytrace=False,
        )
    server = MosquittoServer(binary, tmp_path_factory.mktemp("mosquitto"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def mosquitto(mosquitto_session: MosquittoServer) -> Iterator[MosquittoServer]:
    mosquitto_session.start()
    try:
        yield mosquitto_session
    finally:
        mosquitto_session.resume()  # a fault test may have left it paused or stopped
        mosquitto_session.start()


@pytest.fixture
def mqtt_topic_prefix(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)[:60]
    return f"t/{name}-{uuid.uuid4().hex[:8]}"
