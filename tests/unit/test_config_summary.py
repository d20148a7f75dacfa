"""`gateway check-config` in-process: summary content, warnings, exit codes (interfaces.md §10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app.cli import build_parser
from gateway.config.loader import load_config, parse_config
from gateway.config.summary import components, summary_lines, zone_rows

DATA = Path(__file__).resolve().parent.parent / "data"


def check_config(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Parse like the real CLI and run the command (without re-configuring logging)."""
    args = build_parser().parse_args(["check-config", *argv])
    code: int = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("site", ["netto", "avero", "dev", "sim", "grandi", "demo", "dts"])
def test_s139_every_fixture_passes_check_config(
    capsys: pytest.CaptureFixture[str], site: str
) -> None:
    path = str(DATA / f"{site}.toml")
    code, out, err = check_config(capsys, path)
    assert code == 0
    assert out.splitlines()[0] == f"config: {path}"
    assert out.splitlines()[-1].startswith("config OK (")
    warnings = load_config(path).warnings
    assert err.splitlines() == [f"config warning: {path}: {w}" for w in warnings]


def test_s139_netto_summary_shows_roles_mapping_and_targets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = check_config(capsys, str(DATA / "netto.toml"))
    assert code == 0
    lines = out.splitlines()
    assert "site: netto" in lines
    assert "    1000  GATE_1           gate" in lines
    assert "    1001  POS_3            pos" in lines
    assert "    1009  STORE            store" in lines
    assert "  10.120.48.211 -> POS_1 (zone 1004)" in lines
    assert "broker: none (no [broker] section; an external broker is required)" in lines
    assert any(line.startswith("gate: tcp 10.120.48.20:8000 ") for line in lines)
    assert any(
        line.startswith("  mqtt command.example.net:1883 (credentials set)") for line in lines
    )
    assert (
        "enabled: mqtt_ingress, gate (tcp), rs485, acc_listener, journal, mqtt_egress, "
        "http, analysis_log" in lines
    )
    assert "disabled: broker" in lines
    # secrets never reach the terminal
    assert "gate-pass" not in out
    assert "xovis-site-pass" not in out
    assert "egress-pass" not in out
    assert "no embedded broker; a broker must listen on localhost:1883" in err


def test_s139_grandi_reports_the_http_port_difference(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(DATA / "grandi.toml")
    code, _, err = check_config(capsys, path)
    assert code == 0
    assert (
        f"config warning: {path}: [metrics].prometheus_port: not set; "
        "HTTP port is 9090 (reference default 80)"
    ) in err.splitlines()


def test_quiet_prints_only_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = check_config(capsys, "--quiet", str(DATA / "dev.toml"))
    assert code == 0
    assert out == ""
    assert "deprecated" in err
    code, out, err = check_config(capsys, "--quiet", str(DATA / "demo.toml"))
    assert (code, out, err) == (0, "", "")


def test_s140_invalid_file_exits_2_with_errors_on_stderr(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = check_config(capsys, "/nope.toml")
    assert (code, out) == (2, "")
    assert err == "config error: /nope.toml: cannot read file (No such file or directory)\n"
    bad = tmp_path / "bad.toml"
    bad.write_text((DATA / "dts.toml").read_text("utf-8").replace("mode =", "moed ="), "utf-8")
    code, out, err = check_config(capsys, str(bad))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"config error: {bad}: [gate].mode: missing required key",
        f"config error: {bad}: [gate].moed: unknown key (did you mean 'mode'?)",
    ]


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["check-config"])
    assert info.value.code == 2
    assert "PATH" in capsys.readouterr().err


def test_zone_rows_and_components_of_the_demo_site() -> None:
    cfg = load_config(DATA / "demo.toml")
    assert zone_rows(cfg) == [
        (1001, "POS_1", "pos"),
        (1002, "POS_2", "pos"),
        (1003, "POS_3", "pos"),
        (1004, "POS_4", "pos"),
        (1005, "POS_5", "pos"),
        (1006, "EXIT_1", "exit_line"),
        (1007, "GATE_1", "gate"),
        (1008, "ENTRY_1", "entry_line"),
        (1009, "APPROACH_1", "approach_line"),
        (1010, "DWELL_1", "dwell"),
        (1011, "STORE", "store"),
    ]
    assert [k for k, on in components(cfg).items() if not on] == ["analysis_log"]
    lines = summary_lines(cfg)
    assert "broker: embedded on 127.0.0.1:1883" in lines
    assert "egress: journal demo-data/journeys.jsonl (rotate daily)" in lines


def test_http_gate_url_credentials_are_masked() -> None:
    text = (
        (DATA / "dts.toml")
        .read_text("utf-8")
        .replace(
            'mode = "tcp"', 'mode = "http"\nhttp_url = "https://op:secret@gate.lan/cgi-bin/open"'
        )
    )
    lines = summary_lines(parse_config(text, "/etc/gateway/gateway.toml"))
    gate = next(line for line in lines if line.startswith("gate: "))
    assert gate.startswith("gate: http https://***@gate.lan/cgi-bin/open (timeout 2000 ms)")
    assert "secret" not in "\n".join(lines)
