"""The machine a bench runs on, and what /proc says about a process (simulation.md §6).

Timings compare only within one run on one machine, so every report starts with the machine:
CPU model, cores, load average at start, OS, Python, library versions, broker, pinning, GC.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Final

import attrs

_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the usual bind-to-0 probe; races are possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


@attrs.frozen
class Machine:
    """Printed first and stored in `--json` (simulation.md §6 "print the machine")."""

    cpu: str
    cores: int
    load_avg: tuple[float, float, float]
    os: str
    python: str
    trio: str
    paho: str
    msgspec: str
    broker: str
    pinning: str
    gc_bench: str
    started_utc: str

    def lines(self) -> list[str]:
        la = " ".join(f"{v:.2f}" for v in self.load_avg)
        return [
            f"machine  cpu={self.cpu} cores={self.cores} load_avg(1/5/15 min)={la}",
            f"software os={self.os} python={self.python} trio={self.trio} paho-mqtt={self.paho} "
            f"msgspec={self.msgspec}",
            f"setup    broker={self.broker} pinning={self.pinning} gc(bench)={self.gc_bench} "
            f"started={self.started_utc}",
        ]


def describe(broker: str, pinning: str) -> Machine:
    return Machine(
        cpu=cpu_model(),
        cores=os.cpu_count() or 0,
        load_avg=load_average(),
        os=f"{platform.system()} {platform.release()} ({_os_name()})",
        python=f"{platform.python_implementation()} {sys.version.split()[0]}",
        trio=package_version("trio"),
        paho=package_version("paho-mqtt"),
        msgspec=package_version("msgspec"),
        broker=broker,
        pinning=pinning,
        gc_bench=f"thresholds={gc.get_threshold()} frozen={gc.get_freeze_count()}",
        started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "unknown"


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` (all its threads), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_rss_bytes(pid: int) -> int:
    """Resident set size of `pid`, from /proc/<pid>/statm."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
