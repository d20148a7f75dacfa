"""The real `gateway check-config` process: exit codes and output streams (interfaces.md §10)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
RUN_TIMEOUT_S = 60  # a cold interpreter start on a slow CI box, not a performance bound


def gateway(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GATEWAY_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-m", "gateway.app.cli", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


@pytest.mark.parametrize("site", ["netto", "avero", "dev", "sim", "grandi", "demo", "dts"])
def test_s139_fixture_is_valid(site: str) -> None:
    path = str(DATA / f"{site}.toml")
    done = gateway("check-config", path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"config: {path}\n")
    assert "zones:\n" in done.stdout
    assert "\nenabled: " in done.stdout
    assert done.stdout.endswith(")\n")
    assert all(line.startswith(f"config warning: {path}: ") for line in done.stderr.splitlines())
    expect_no_broker = site not in ("sim", "demo")
    no_broker = "no embedded broker; a broker must listen on localhost:1883" in done.stderr
    assert no_broker == expect_no_broker


def test_s139_quiet_prints_only_warnings() -> None:
    done = gateway("check-config", "--quiet", str(DATA / "grandi.toml"))
    assert done.returncode == 0
    assert done.stdout == ""
    assert "HTTP port is 9090 (reference default 80)" in done.stderr


def test_s140_missing_file() -> None:
    done = gateway("check-config", "/nope.toml")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "config error: /nope.toml: cannot read file (No such file or directory)\n"


def test_directory_and_non_utf8(tmp_path: Path) -> None:
    done = gateway("check-config", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr == f"config error: {tmp_path}: cannot read file (Is a directory)\n"
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[site]\nid = "\xff"\n')
    done = gateway("check-config", str(bad))
    assert done.returncode == 2
    assert done.stderr == (
        f"config error: {bad}: cannot read file (not valid UTF-8: byte 0xff on line 2)\n"
    )


def test_s142_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "syntax.toml"
    bad.write_text('[mqtt]\nhost = "127.0.0.1"\nport = 18 83\n', "utf-8")
    done = gateway("check-config", str(bad))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"config error: {bad}: line 3, column 11: TOML syntax error: ")


def test_s141_unknown_key_and_all_errors_on_stderr(tmp_path: Path) -> None:
    text = (DATA / "dts.toml").read_text("utf-8")
    text = text.replace('mode = "tcp"', 'moed = "tcp"')
    text = text.replace("unknown_after_failures = 8", 'baud = "19200"')
    bad = tmp_path / "gateway.toml"
    bad.write_text(text, "utf-8")
    done = gateway("check-config", str(bad))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"config error: {bad}: [gate].mode: missing required key",
        f"config error: {bad}: [gate].moed: unknown key (did you mean 'mode'?)",
        f'config error: {bad}: [rs485].baud: expected integer, got string "19200"',
    ]


def test_usage_errors_exit_2() -> None:
    done = gateway("check-config")
    assert done.returncode == 2
    assert "PATH" in done.stderr
    done = gateway("check-config", "--bogus", str(DATA / "dts.toml"))
    assert done.returncode == 2


def test_version() -> None:
    done = gateway("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("gateway ")
