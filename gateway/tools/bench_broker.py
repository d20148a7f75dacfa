"""The bench's MQTT broker (simulation.md §6 "Layout"): Mosquitto, `--broker H:P`, or embedded.

Mosquitto from PATH (or /usr/sbin) is preferred and runs with `set_tcp_nodelay true` and
`sys_interval 1`, so `$SYS/broker/publish/messages/dropped` shows its own QoS-0 drops
(measured-mqtt-floor.md). Without it the embedded broker runs in its **own process**
(`python -m gateway.tools.bench_broker --port P`), never inside the bench or the gateway.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Final

import attrs
import trio

from gateway.tools.bench_host import free_port, package_version

START_TIMEOUT_S: Final = 15.0  # mosquitto listens in ~50 ms; amqtt imports plugins first
STOP_TIMEOUT_S: Final = 5.0
PROBE_EVERY_S: Final = 0.05
SYS_INTERVAL_S: Final = 1  # $SYS topics every second instead of mosquitto's default 10 s
DROPPED_TOPIC: Final = "$SYS/broker/publish/messages/dropped"


class BenchBrokerError(Exception):
    """No broker could be started or reached."""


@attrs.frozen
class BrokerInfo:
    host: str
    port: int
    name: str  # "mosquitto 2.0.11", "embedded amqtt 0.11.0 (own process)", "external"
    nodelay: str  # what we know about Nagle on the broker's legs
    sys_topics: bool  # publishes $SYS counters (mosquitto only)

    def describe(self) -> str:
        return f"{self.name} at {self.host}:{self.port} nodelay={self.nodelay}"


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def mosquitto_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "-h"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "mosquitto (version unknown)"
    first = out.splitlines()[0] if out else ""
    return first.replace(" version", "") if first.startswith("mosquitto") else "mosquitto"


def mosquitto_conf(port: int) -> str:
    return (
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "set_tcp_nodelay true\n"  # simulation.md §6: Nagle off on the broker's legs
        f"sys_interval {SYS_INTERVAL_S}\n"
        "persistence false\n"
        "log_dest stderr\n"
        "log_type error\n"
        "log_type warning\n"
    )


async def _wait_listening(host: str, port: int, proc: trio.Process | None) -> None:
    with trio.move_on_after(START_TIMEOUT_S):
        while True:
            if proc is not None and proc.returncode is not None:
                raise BenchBrokerError(f"broker exited at start (code {proc.returncode})")
            try:
                stream = await trio.open_tcp_stream(host, port)
            except OSError:
                await trio.sleep(PROBE_EVERY_S)
                continue
            await stream.aclose()
            return
    raise BenchBrokerError(f"broker not listening on {host}:{port} after {START_TIMEOUT_S} s")


async def _stop(proc: trio.Process) -> None:
    with trio.CancelScope(shield=True):
        if proc.returncode is None:
            proc.terminate()
            with trio.move_on_after(STOP_TIMEOUT_S):
                await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def open_broker(external: str | None, workdir: Path) -> AsyncIterator[BrokerInfo]:
    """Yield a reachable broker; a broker started here is stopped on exit."""
    if external is not None:
        host, _, port_text = external.rpartition(":")
        info = BrokerInfo(host or "127.0.0.1", int(port_text), "external", "unknown", False)
        await _wait_listening(info.host, info.port, None)
        yield info
        return
    port = free_port()
    binary = find_mosquitto()
    if binary is not None:
        conf = workdir / "mosquitto.conf"
        conf.write_text(mosquitto_conf(port))
        args: list[str] = [binary, "-c", str(conf)]
        info = BrokerInfo(
            "127.0.0.1", port, mosquitto_version(binary), "on (set_tcp_nodelay)", True
        )
    else:
        args = [sys.executable, "-m", "gateway.tools.bench_broker", "--port", str(port)]
        name = f"embedded amqtt {package_version('amqtt')} (own process)"
        info = BrokerInfo("127.0.0.1", port, name, "on (accept sets TCP_NODELAY)", False)
    with (workdir / "broker.log").open("ab") as log:
        proc = await trio.lowlevel.open_process(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        await _wait_listening(info.host, info.port, proc)
        yield info
    finally:
        await _stop(proc)


# -- embedded broker child process ------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the embedded broker on 127.0.0.1:PORT until SIGTERM/SIGINT."""
    from gateway.config.model import BrokerConfig
    from gateway.io.broker import BrokerError, BrokerStats, EmbeddedBroker

    parser = argparse.ArgumentParser(prog="bench_broker")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    broker = EmbeddedBroker(BrokerConfig(bind_address="127.0.0.1", port=args.port), BrokerStats())
    try:
        broker.start()
    except BrokerError as exc:
        print(f"bench_broker: {exc}", file=sys.stderr)
        return 1
    stop.wait()
    broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
