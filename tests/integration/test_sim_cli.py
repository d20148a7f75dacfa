"""The real `gateway sim` process on every reference-shaped site fixture (interfaces.md §10).

`gateway sim --config tests/data/<shape>.toml --scenario all` runs with its own embedded broker,
controller, pty board and free ports, so the six shapes run at the same time (started together by
a module fixture); each test then reads its process's table. Exit codes: 0 none failed, 1 any
failed (or the harness could not run), 2 config/usage.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import cmd_sim
from gateway.app.cli import build_parser
from gateway.app.cmd_sim import ScenarioResult, SimOptions, SimReport
from gateway.config.model import Config
from gateway.tools.sim_scenarios import SCENARIO_NAMES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
# avero has one POS zone, so its customers take turns (~70 s); the margin is for a slow CI box
SIM_TIMEOUT_S = 170
CLI_TIMEOUT_S = 60  # a cold interpreter start, not a performance bound
EXPECTED_SKIPS = {
    "netto": set(),
    "avero": {"multiple_pos_zones"},  # one POS zone
    "dev": set(),
    "sim": set(),
    "grandi": set(),  # no ACC mapping: every ACC goes through POST /acc/simulate
    "demo": set(),
}
ROW = re.compile(r"^(\w+)\s+(S\d{3})\s+(PASS|FAIL|SKIP)\s")


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GATEWAY_LOG_LEVEL", None)
    return env


def gateway(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.app.cli", *argv],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
        check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, subprocess.Popen[str]]]:
    """All six shapes at once: each has its own broker, controller and ports."""
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for site in EXPECTED_SKIPS:
            procs[site] = subprocess.Popen(
                [sys.executable, "-m", "gateway.app.cli", "sim", "--scenario", "all",
                 "--config", str(DATA / f"{site}.toml")],
                cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.mark.parametrize("site", list(EXPECTED_SKIPS))
def test_sim_all_scenarios_pass_for_fixture(
    sims: dict[str, subprocess.Popen[str]], site: str
) -> None:
    stdout, stderr = sims[site].communicate(timeout=SIM_TIMEOUT_S)
    assert sims[site].returncode == 0, stdout + stderr
    table = stdout[stdout.index("\nSCENARIO ") :].splitlines()[2:]
    rows = {m[1]: (m[2], m[3]) for m in map(ROW.match, table) if m}
    assert list(rows) == list(SCENARIO_NAMES)
    for name, (spec, status) in rows.items():
        expected = "SKIP" if name in EXPECTED_SKIPS[site] else "PASS"
        assert status == expected, f"{site} {name} ({spec}): {stdout}"
    assert rows["happy_path"][0] == "S159"
    assert rows["link_down"][0] == "S166"
    skips = len(EXPECTED_SKIPS[site])
    assert f"\n{8 - skips} passed, 0 failed, {skips} skipped in " in stdout
    assert stderr == ""


def test_sim_list_names_every_scenario() -> None:
    done = gateway("sim", "--config", str(DATA / "avero.toml"), "--list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(SCENARIO_NAMES)
    assert "SKIP: one POS zone only (POS_1)" in lines[4]
    assert "(timeout 25 s)" in lines[0]


def test_sim_unknown_scenario_is_a_usage_error() -> None:
    done = gateway("sim", "--config", str(DATA / "sim.toml"), "--scenario", "nope")
    assert done.returncode == 2
    assert "invalid choice: 'nope'" in done.stderr


def test_sim_bad_broker_address_is_a_usage_error() -> None:
    done = gateway("sim", "--config", str(DATA / "sim.toml"), "--broker", "localhost")
    assert done.returncode == 2
    assert "expected HOST:PORT" in done.stderr


def test_sim_config_error_exits_2() -> None:
    done = gateway("sim", "--config", "/nope.toml")
    assert done.returncode == 2
    assert done.stderr.startswith("config error: /nope.toml: ")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (("pos_zones = [1001, 1002]", "pos_zones = []"), "[zones].pos_zones is empty"),
        (
            ('mode = "tcp"', 'mode = "http"\nhttp_url = "http://127.0.0.1:9/open"'),
            "only tcp mode can be simulated",
        ),
    ],
)
def test_sim_config_that_cannot_be_simulated_exits_2(
    tmp_path: Path, change: tuple[str, str], reason: str
) -> None:
    text = (DATA / "grandi.toml").read_text()
    text = text.replace('http_url = ""\n', "").replace(*change)
    site = tmp_path / "site.toml"
    site.write_text(text)
    assert gateway("check-config", "--quiet", str(site)).returncode == 0
    done = gateway("sim", "--config", str(site))
    assert done.returncode == 2
    assert done.stderr.startswith(f"gateway sim: cannot simulate {site}: ")
    assert reason in done.stderr


def test_sim_unreachable_broker_exits_1() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = gateway("sim", "--config", str(DATA / "dev.toml"), "--broker", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert f"cannot connect to the broker 127.0.0.1:{port}" in done.stderr


def test_sim_failed_scenario_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def failing_run(config: Config, options: SimOptions) -> SimReport:
        fail = ScenarioResult("no_payment", "S160", "FAIL", 3.2, 15.0, "expected blocked")
        return SimReport(
            site=config.site.id, broker="test", results=(fail,), open_frames=0, sent_tids=(),
            messages=(), journeys=(), problems=(), gateway_exit_code=0, elapsed_s=3.3,
        )  # fmt: skip

    monkeypatch.setattr(cmd_sim, "run_sim", failing_run)
    args: argparse.Namespace = build_parser().parse_args(
        ["sim", "--config", str(DATA / "sim.toml"), "--scenario", "no_payment"]
    )
    assert cmd_sim.run_command(args) == 1
    out = capsys.readouterr().out
    assert re.search(r"^no_payment\s+S160\s+FAIL\s+3\.2 s\s+15 s  expected blocked$", out, re.M)
    assert "\n0 passed, 1 failed, 0 skipped in 3.3 s" in out
