"""`gateway demo` flags in a subprocess (interfaces.md §10): --print-config, busy ports, usage
errors, Ctrl-C, and --traffic-only against a private Mosquitto (compose `simulator` profile)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.app.cli import build_parser
from gateway.config.loader import parse_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEMO_TOML = ROOT / "tests" / "data" / "demo.toml"
RUN_TIMEOUT_S = 60.0  # a cold interpreter start on a slow CI box, not a performance bound
READY_TIMEOUT_S = 40.0


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def env() -> dict[str, str]:
    out = {**os.environ, "PYTHONPATH": str(ROOT)}
    out.pop("GATEWAY_LOG_LEVEL", None)
    return out


def gateway(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.app.cli", *argv],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`gateway demo …` through the real parser in this process, for paths that start nothing
    (subprocess start-up is the slow part of these tests)."""
    try:
        args = build_parser().parse_args(["demo", *argv])
        code = int(args.func(args))
    except SystemExit as exc:
        code = int(str(exc.code))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def port_args(tmp_path: Path, **override: int) -> list[str]:
    ports = dict(zip(("broker", "http", "acc", "gate"), free_ports(4), strict=True))
    ports.update(override)
    return [
        "--broker-port", str(ports["broker"]), "--http-port", str(ports["http"]),
        "--acc-port", str(ports["acc"]), "--gate-port", str(ports["gate"]),
        "--data-dir", str(tmp_path / "data"), "--rs485-pty", str(tmp_path / "rs485"),
    ]  # fmt: skip


# -- --print-config -------------------------------------------------------------------------


def test_print_config_is_the_spec_demo_site() -> None:
    done = gateway("demo", "--print-config")
    assert done.returncode == 0, done.stderr
    assert done.stdout == DEMO_TOML.read_text(encoding="utf-8")  # interfaces.md §11.4 verbatim


def test_print_config_uses_the_chosen_ports_and_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = port_args(tmp_path, broker=11883, http=19090, acc=35803, gate=18000)
    code, out, err = in_process(capsys, "--print-config", *args)
    assert code == 0, err
    config = parse_config(out, "printed")
    assert config.broker is not None
    assert (config.mqtt.port, config.broker.port, config.mqtt_egress.port) == (11883,) * 3
    assert config.metrics.prometheus_port == 19090
    assert config.acc.listener_port == 35803
    assert config.gate.tcp_addr == "127.0.0.1:18000"
    assert config.rs485.device == str(tmp_path / "rs485")
    assert config.egress.file == str(tmp_path / "data" / "journeys.jsonl")


# -- bad input ------------------------------------------------------------------------------


def test_busy_broker_port_exits_1_naming_port_and_flag(tmp_path: Path) -> None:
    with socket.socket() as busy:  # e.g. a Mosquitto already on 1883
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = int(busy.getsockname()[1])
        done = gateway("demo", "--duration", "1", *port_args(tmp_path, broker=port))
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "choose another with --broker-port PORT" in done.stderr
    assert "dashboard" not in done.stdout  # nothing was started
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("which", ["http", "acc", "gate"])
def test_busy_port_exits_1_naming_port_and_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = int(busy.getsockname()[1])
        args = port_args(tmp_path, **{which: port})
        code, out, err = in_process(capsys, "--duration", "1", *args)
    assert code == 1
    assert f"port {port} on " in err  # the ACC listener binds 0.0.0.0 (§11.4 has no [acc].bind)
    assert "already in use" in err
    assert f"choose another with --{which}-port PORT" in err
    assert out == ""
    assert not (tmp_path / "data").exists()


def test_pty_path_that_is_not_a_symlink_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = port_args(tmp_path)
    (tmp_path / "rs485").write_text("a file, not a symlink")
    code, _, err = in_process(capsys, *args)
    assert code == 1
    assert f"{tmp_path / 'rs485'} exists and is not a symlink" in err
    assert "--rs485-pty PATH" in err


def test_same_port_for_two_listeners_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_ports(1)[0]
    code, _, err = in_process(capsys, *port_args(tmp_path, http=port, gate=port))
    assert code == 2
    assert f"--http-port and --gate-port are both {port}" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--traffic-only", "--broker", "127.0.0.1:1"], "needs --broker HOST:PORT and --acc"),
        (["--broker", "127.0.0.1:1883"], "--broker and --acc need --traffic-only"),
        (["--traffic-only", "--broker", "nohost", "--acc", "h:1"], "expected HOST:PORT"),
        (["--http-port", "0"], "is not a port"),
        (["--rate", "-1"], "must be a finite number"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = in_process(capsys, *argv)
    assert code == 2
    assert message in err


# -- Ctrl-C ---------------------------------------------------------------------------------


def test_sigint_stops_gracefully_with_a_summary(tmp_path: Path) -> None:
    broker, http_port, acc, gate = free_ports(4)
    ports = port_args(tmp_path, broker=broker, http=http_port, acc=acc, gate=gate)
    argv = [sys.executable, "-m", "gateway.app.cli", "demo", "--json", "--rate", "600"]
    argv += ["--seed", "3", *ports]
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            argv, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        timer = threading.Timer(READY_TIMEOUT_S, proc.kill)  # never hang on a broken start
        timer.start()
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("traffic "):
                break
        timer.cancel()
        # interfaces.md §8: in the demo the control routes need no token
        simulated = httpx.post(f"http://127.0.0.1:{http_port}/acc/simulate?pos=POS_2", timeout=5)
        assert simulated.status_code == 200
        assert simulated.json()["ok"] is True
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
        lines += rest.splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr_path.read_text()
    assert any("shutdown_signal" in line and "SIGINT" in line for line in lines)
    assert any("shutdown_complete exit_code=0" in line for line in lines)
    summary: dict[str, Any] = json.loads(lines[-1])
    assert summary["interrupted"] is True
    assert summary["exit_code"] == 0
    assert summary["drops"]["total"] == 0
    journal = tmp_path / "data" / "journeys.jsonl"
    journeys = [json.loads(x) for x in journal.read_text().splitlines()] if journal.exists() else []
    assert len(journeys) == summary["journal"]["lines"] == summary["journeys"]["total"]
    assert all(j["out"] == "in_progress" for j in journeys if "t1" not in j)


# -- --traffic-only -------------------------------------------------------------------------


class Received:
    """Payloads from a paho subscriber thread; `wait_for(n)` blocks until n arrived."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.changed = threading.Condition()

    def add(self, payload: bytes) -> None:
        with self.changed:
            self.payloads.append(payload)
            self.changed.notify_all()

    def wait_for(self, n: int, timeout_s: float) -> int:
        with self.changed:
            self.changed.wait_for(lambda: len(self.payloads) >= n, timeout_s)
            return len(self.payloads)


@pytest.fixture
def xovis_messages(mosquitto: Any) -> Iterator[Received]:
    """Messages on xovis/# of the session broker."""
    got = Received()
    subscribed = threading.Event()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="demo-test")
    client.on_connect = lambda c, *_: c.subscribe("xovis/#")
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda _c, _u, m: got.add(m.payload)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        assert subscribed.wait(10)
        yield got
    finally:
        client.disconnect()
        client.loop_stop()


def test_traffic_only_publishes_to_an_external_broker(
    mosquitto: Any, xovis_messages: Received, tmp_path: Path
) -> None:
    acc_port = free_ports(1)[0]
    done = gateway(
        "demo", "--traffic-only", "--broker", f"{mosquitto.host}:{mosquitto.port}",
        "--acc", f"127.0.0.1:{acc_port}", "--duration", "2", "--rate", "600", "--seed", "5",
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    sent = summary["sent"]
    assert sent["frames"] >= 10
    assert sent["published"] == sent["frames"]
    assert sent["publish_failed"] == 0
    assert summary["traffic"]["customers"] >= 1
    # QoS 0 on loopback: every frame arrives (the wait only bounds a broken run)
    assert xovis_messages.wait_for(sent["published"], 10) == sent["published"]
    assert b'"tracked_objects"' in xovis_messages.payloads[-1]
    assert not (tmp_path / "demo-data").exists()  # no gateway, no journal


def test_traffic_only_cannot_reach_the_broker_exits_1(tmp_path: Path) -> None:
    dead = free_ports(1)[0]
    done = gateway(
        "demo", "--traffic-only", "--broker", f"127.0.0.1:{dead}", "--acc", "127.0.0.1:1",
        "--duration", "1", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot reach the broker 127.0.0.1:{dead}" in done.stderr
