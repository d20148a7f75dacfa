"""`gateway bench --quick` as a smoke test (simulation.md §6, interfaces.md §10).

It must complete, report every default phase with a sample count > 0 and write parseable JSON.
No timing is asserted: numbers depend on the machine and its load (measured-mqtt-floor.md);
`--quick` prints its targets without enforcing them, so the exit code is 0 whenever it completed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.tools.bench import DEFAULT_PHASES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUICK_TIMEOUT_S = 120  # the run itself takes ≤ 60 s; headroom for a loaded CI machine


def _bench(*args: str, timeout: float = QUICK_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.app.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_bench_quick_completes_with_samples_in_every_phase(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = _bench("--quick", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(out.read_text())
    assert data["failures"] == []
    assert data["exit_code"] == 0
    assert set(data["phases"]) == set(DEFAULT_PHASES)
    for name, phase in data["phases"].items():
        assert phase["n"] > 0, f"{name}: no samples"
    # every phase printed its line, and the machine came first
    lines = done.stdout.splitlines()
    assert lines[0].startswith("machine  cpu=")
    for name in DEFAULT_PHASES:
        assert any(line.startswith(f"{name} ") for line in lines), name
    # targets are reported but not enforced in --quick
    targets = data["targets"]
    assert {t["phase"] for t in targets} == set(DEFAULT_PHASES)
    assert all(t["enforced"] is False for t in targets)
    # raw samples are in the file: one record per gate trial, warm-up ones flagged
    (gate_repeat,) = data["phases"]["gate"]["repeats"]
    trials = gate_repeat["trials"]
    assert len(trials) == data["options"]["discard"] + data["options"]["trials"]
    assert sum(t["warmup"] for t in trials) == data["options"]["discard"]
    assert data["machine"]["cores"] >= 1


@pytest.mark.parametrize(
    "args",
    [
        ("--phases", "gate,nope"),
        ("--repeats", "0"),
        ("--broker", "no-port"),
        ("--duration", "-1"),
    ],
)
def test_bench_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    done = _bench(*args, timeout=30)
    assert done.returncode == 2
    assert "error:" in done.stderr
