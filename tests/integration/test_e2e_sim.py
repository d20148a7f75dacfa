"""S159–S166 end to end: the `gateway sim` harness in-process against the real mosquitto.

One run of all eight scenarios (they run concurrently where independent, link_down alone at the
end) against a gateway built from the DTS site config, with the broker given as `--broker` would
(the mosquitto fixture) and a private topic prefix. Each test then checks its scenario: the PASS
row, the open frames the mock controller read (frame k belongs to the k-th `cmd_sent`), what the
gateway published, and the journey written to the journal file (read after the gateway stopped,
so journeys still inside their 10 s egress hold are there too, D15).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

from gateway.app.cmd_sim import SimOptions, SimReport, run_sim
from gateway.config.loader import load_config

if TYPE_CHECKING:
    from conftest import MosquittoServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE = Path(__file__).parents[1] / "data" / "dts.toml"


@pytest.fixture(scope="module")
def report(
    mosquitto_session: MosquittoServer, tmp_path_factory: pytest.TempPathFactory
) -> SimReport:
    config = load_config(SITE)
    lines: list[str] = []
    options = SimOptions(
        broker=(mosquitto_session.host, mosquitto_session.port),
        workdir=str(tmp_path_factory.mktemp("sim")),
        topic_prefix=f"t/e2e-{uuid.uuid4().hex[:8]}",
        out=lines.append,
    )
    report = trio.run(run_sim, config, options)
    print("\n".join(lines))
    return report


def _passed(report: SimReport, name: str) -> tuple[int, ...]:
    result = report.result(name)
    assert result.status == "PASS", f"{name}: {result.detail}"
    assert result.duration_s <= result.timeout_s
    return result.tids


def _journey(report: SimReport, tid: int) -> dict[str, Any]:
    found = report.journeys_of(tid)
    assert len(found) == 1, f"journeys of tid {tid}: {found}"
    return found[0]


def _published(report: SimReport, kind: str, **fields: object) -> list[dict[str, Any]]:
    return [
        p
        for k, p in report.messages
        if k == kind and all(p.get(key) == value for key, value in fields.items())
    ]


def _events(journey: dict[str, Any], t: str) -> list[dict[str, Any]]:
    return [e for e in journey["ev"] if e["t"] == t]


def test_sim_run_is_consistent(report: SimReport) -> None:
    assert report.problems == ()
    assert report.gateway_exit_code == 0
    assert report.open_frames == len(report.sent_tids) == 5  # five scenarios open the gate
    assert [r.name for r in report.results] == [
        "happy_path", "no_payment", "fast_exit", "gate_zone_exit",
        "multiple_pos_zones", "acc_before_dwell", "stitch", "link_down",
    ]  # fmt: skip


def test_s159_happy_path(report: SimReport) -> None:
    (tid,) = _passed(report, "happy_path")
    assert report.frames_for(tid) == 1
    j = _journey(report, tid)
    assert j["out"] == "exit"
    assert "exit_inferred" not in j  # decided by the LINE_CROSS forward (D2)
    assert [e["x"] for e in _events(j, "exit_cross")] == ["dir=forward"]
    assert j["auth"] is True
    assert j["acc"] is True
    assert j["tids"] == [tid]
    assert j["parent"] is None
    assert j["gate_open"] >= j["gate_cmd"]  # from the mock's door sequence via the pty board
    (door,) = _events(j, "gate_open")
    assert re.fullmatch(r"delta_ms=\d+", door["x"])
    assert j["gate_was_open"] is False


def test_s160_no_payment(report: SimReport) -> None:
    (tid,) = _passed(report, "no_payment")
    assert report.frames_for(tid) == 0
    assert _published(report, "gate", tid=tid, state="blocked")
    assert not _published(report, "gate", tid=tid, state="cmd_enqueued")
    j = _journey(report, tid)
    assert j["auth"] is False
    assert j["acc"] is False
    assert "gate_cmd" not in j
    assert j["dwell"] >= 7000  # it dwelled, it did not pay


def test_s161_fast_exit(report: SimReport) -> None:
    (tid,) = _passed(report, "fast_exit")
    assert report.frames_for(tid) == 0
    assert _published(report, "gate", tid=tid, state="blocked")
    expired = _published(report, "acc", t="unmatched", reason="expired")
    assert [a["receipt"] for a in expired] == [f"SIM-{tid}-1"]
    j = _journey(report, tid)
    assert j["acc"] is False
    assert j["auth"] is False
    assert 1900 <= j["dwell"] < 7000


def test_s162_gate_zone_exit(report: SimReport) -> None:
    (tid,) = _passed(report, "gate_zone_exit")
    assert report.frames_for(tid) == 1
    j = _journey(report, tid)
    assert _events(j, "exit_cross") == []  # the exit line is never crossed …
    assert j["out"] == "exit"  # … the deletion beyond the gate infers the exit
    assert j["exit_inferred"] is True
    assert "gate_cmd" in j


def test_s163_multiple_pos_zones(report: SimReport) -> None:
    result = report.result("multiple_pos_zones")
    (tid,) = _passed(report, "multiple_pos_zones")
    first, second = result.zones
    assert report.frames_for(tid) == 1
    j = _journey(report, tid)
    entries = [e["z"] for e in _events(j, "zone_entry") if e["z"] in (first, second)]
    assert entries == [first, second]
    (acc,) = _events(j, "acc")
    assert acc["z"] == second
    assert j["out"] == "exit"
    assert j["auth"] is True


def test_s164_acc_before_dwell(report: SimReport) -> None:
    (tid,) = _passed(report, "acc_before_dwell")
    assert report.frames_for(tid) == 1
    (matched,) = _published(report, "acc", t="matched", tid=tid)
    assert 0 < matched["buffered_ms"] <= 2000
    j = _journey(report, tid)
    (acc,) = _events(j, "acc")
    assert "buffered_ms=" in acc["x"]
    assert j["out"] == "exit"


def test_s165_stitch(report: SimReport) -> None:
    old, new = _passed(report, "stitch")
    assert report.frames_for(new) == 1  # the gate opens for the new id
    assert report.frames_for(old) == 0
    (track,) = _published(report, "track", t="stitch", tid=new)
    assert track["prev_tid"] == old
    assert track["stitch_dist_cm"] == 20
    j = _journey(report, new)
    assert j["tids"] == [old, new]  # one journey with two tids
    (stitch,) = _events(j, "stitch")
    assert stitch["x"].startswith(f"from={old},")
    assert j["out"] == "exit"
    assert j["acc"] is True


def test_s166_link_down(report: SimReport) -> None:
    (tid,) = _passed(report, "link_down")
    assert report.frames_for(tid) == 0
    (failed,) = _published(report, "gate", tid=tid, state="cmd_failed")
    assert failed["reason"] == "not_connected"
    assert not _published(report, "gate", tid=tid, state="cmd_sent")
    j = _journey(report, tid)
    assert "gate_cmd" in j
    assert "gate_open" not in j
