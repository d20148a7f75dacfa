"""Launcher of the gateway under test: the `gateway run` CLI plus a GC probe (README rule 7).

`python -m gateway.tools.bench_launch REPORT.json run --config PATH` runs exactly the command
line `gateway run --config PATH`; `gc.callbacks` time every collection (monotonic clock, so the
bench can line pauses up with its latency samples) and REPORT.json is written when it returns.

`GATEWAY_BENCH_GC=freeze[:T0,T1,T2]` applies the rule-7 tuning — `gc.collect()`, `gc.freeze()`,
optionally new thresholds — `GATEWAY_BENCH_GC_DELAY_S` (2) seconds after start, for comparison
runs while `gateway run` itself does not tune the collector.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from typing import Final

LONG_PAUSE_NS: Final = 1_000_000  # pauses ≥ 1 ms are listed with their time
LONG_PAUSES_KEPT: Final = 10_000
DEFAULT_TUNE_DELAY_S: Final = 2.0


class GcProbe:
    """Per generation: collections, total and max pause; long pauses with their start time."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.total_ns = [0, 0, 0]
        self.max_ns = [0, 0, 0]
        self.long: list[tuple[int, int, int]] = []  # (monotonic ns at start, generation, ns)
        self._t0 = 0
        self._m0 = 0
        self.tuned: str = "none"
        self.paused = False  # the tuning's own gc.collect() is not a pause of the workload

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if self.paused:
            return
        if phase == "start":
            self._m0 = time.monotonic_ns()
            self._t0 = time.perf_counter_ns()
            return
        pause = time.perf_counter_ns() - self._t0
        gen = info.get("generation", 0)
        self.count[gen] += 1
        self.total_ns[gen] += pause
        self.max_ns[gen] = max(self.max_ns[gen], pause)
        if pause >= LONG_PAUSE_NS and len(self.long) < LONG_PAUSES_KEPT:
            self.long.append((self._m0, gen, pause))

    def report(self) -> dict[str, object]:
        return {
            "count": self.count,
            "total_ns": self.total_ns,
            "max_ns": self.max_ns,
            "long_pauses": self.long,
            "threshold": list(gc.get_threshold()),
            "freeze_count": gc.get_freeze_count(),
            "tuned": self.tuned,
        }


def _tune_later(probe: GcProbe, spec: str, delay_s: float) -> None:
    """Rule-7 tuning from a timer thread (the GIL makes gc.freeze safe from any thread)."""
    _, _, thresholds = spec.partition(":")
    values = tuple(int(v) for v in thresholds.split(",")) if thresholds else ()

    def tune() -> None:
        probe.paused = True
        gc.collect()
        gc.freeze()
        probe.paused = False
        if values:
            gc.set_threshold(*values)
        probe.tuned = f"freeze after {delay_s:g} s, threshold={gc.get_threshold()}"

    timer = threading.Timer(delay_s, tune)
    timer.daemon = True
    timer.start()


def main(argv: list[str]) -> int:
    report_path, cli_args = argv[0], argv[1:]
    probe = GcProbe()
    gc.callbacks.append(probe)
    spec = os.environ.get("GATEWAY_BENCH_GC", "")
    if spec.startswith("freeze"):
        delay = float(os.environ.get("GATEWAY_BENCH_GC_DELAY_S", DEFAULT_TUNE_DELAY_S))
        _tune_later(probe, spec, delay)
    from gateway.app.cli import main as cli_main

    try:
        return cli_main(cli_args)
    finally:
        gc.callbacks.remove(probe)
        with open(report_path, "w", encoding="utf-8") as f:
            json.dump(probe.report(), f)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
