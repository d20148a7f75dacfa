"""`gateway run` as a real process without a broker: HTTP control, /health, /metrics, SIGTERM.

The MQTT broker is unreachable (ingress and egress), the gate is a mock CloudPlus controller on
a local TCP port, ACC and door input come through the HTTP routes. Also S152 (tracker crash via
the `tracker_crash_receipt` hook).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio
from runtime_harness import SiteSpec, free_port, gateway_process, read_journal, wait_until

from gateway.codecs.cloudplus import CMD_OPEN, encode_open
from gateway.tools.mock_cloudplus import MockCloudPlus, MockOptions

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-1234"
OPEN_FRAME = bytes.fromhex("02 00 2C FF 01 00 00 D0 03")  # S158
SHUTDOWN_TARGET_S = 2.0  # D15 target; nothing here waits for the egress broker


def open_frames(mock: MockCloudPlus) -> list[bytes]:
    """Raw open frames the controller received (heartbeat acks are frames too)."""
    return [f.frame.raw for f in mock.received_frames if f.frame.command == CMD_OPEN]


async def test_s158_run_without_broker_http_control_health_metrics_and_sigterm(
    tmp_path: Path,
) -> None:
    assert encode_open(1) == OPEN_FRAME
    spec = SiteSpec(tmp_path, mqtt_port=free_port(), token=TOKEN)
    async with gateway_process(spec) as gw, trio.open_nursery() as nursery:
        # controller down: the manual open fails at once, nothing is queued for later (S158)
        r = await gw.http.post("/gate/open")
        assert r.status_code == 503
        assert r.json() == {"ok": False, "error": "not_connected"}
        status, body = await gw.http.health()
        assert status == 200
        assert body["status"] == "degraded"
        assert body["components"]["gate"]["state"] == "degraded"
        assert body["components"]["gate"]["connected"] is False

        mock = MockCloudPlus(MockOptions(port=spec.gate_port, heartbeat_interval_s=60))
        await nursery.start(mock.serve)

        async def gate_up() -> bool:
            return (await gw.http.health())[1]["components"]["gate"]["connected"] is True

        await wait_until(gate_up, "the gate link connects to the mock controller")
        r = await gw.http.post("/gate/open")
        assert r.status_code == 200
        body = r.json()
        assert body["ok"] is True
        assert body.keys() == {"ok", "latency_us"}
        assert isinstance(body["latency_us"], int)
        assert body["latency_us"] > 0
        await wait_until(lambda: bool(open_frames(mock)), "the open frame reaches the controller")
        assert open_frames(mock) == [OPEN_FRAME]

        # /health: broker unreachable → ingress/egress degraded; the rest is up
        status, body = await gw.http.health()
        assert status == 200
        assert body["status"] == "degraded"
        assert body["site"] == "rt"
        assert body["shutting_down"] is False
        c = body["components"]
        assert c["tracker"]["state"] == "ok"
        assert c["mqtt_ingress"]["state"] == "degraded"
        assert c["mqtt_ingress"]["connected"] is False
        assert c["mqtt_egress"] == {"state": "degraded", "connected": False, "backlog": 0}
        assert c["gate"]["state"] == "ok"
        assert c["gate"]["mode"] == "tcp"
        assert c["acc"] == {"state": "ok", "listening": True, "connections": 0}
        assert c["rs485"]["state"] == "disabled"
        assert c["broker"] == {"state": "disabled"}
        assert c["journal"]["state"] == "ok"
        assert c["journal"]["path"] == str(spec.journal_path)

        # door and ACC through the HTTP routes reach the tracker
        r = await gw.http.post("/door/simulate", status="open")
        assert (r.status_code, r.json()) == (200, {"ok": True, "status": "open"})
        r = await gw.http.post("/acc/simulate", pos="POS_2", receipt="R-1")
        assert r.status_code == 200
        assert r.json() == {"ok": True, "pos": "POS_2", "message": "ACC event sent to tracker"}

        async def handled() -> bool:
            m = await gw.http.metrics()
            return m.value("gateway_events_total") == 1 and m.value("gateway_gate_state") == 2

        await wait_until(handled, "ACC handled and door open in /metrics")
        m = await gw.http.metrics()
        assert m.value("gateway_acc_events_received_total") == 1
        assert m.value("gateway_acc_events_dropped_total") == 0
        assert m.value("gateway_acc_events_total") == 1
        assert m.value("gateway_acc_buffered_total") == 1  # nobody at POS_2: buffered (D10)
        assert m.value("gateway_gate_commands_total") == 2  # both manual opens accepted
        assert m.value("gateway_gate_cmds_failed_total", reason="not_connected") == 1
        assert m.value("gateway_gate_cmds_dropped_total") == 1
        assert m.value("gateway_gate_link_connected") == 1
        assert m.value("gateway_gate_connects_total", result="ok") == 1
        assert m.value("gateway_gate_send_latency_us_count") == 1
        assert m.value("gateway_mqtt_connected", client="ingress") == 0
        assert m.value("gateway_task_restarts_total", task="mqtt_ingress") == 0
        assert m.value("gateway_build_info", version="1.0.0") == 1

        # SIGTERM: graceful, exit 0, the buffered ACC is released as `unmatched` (shutdown)
        gw.signal(signal.SIGTERM)
        code, took = await gw.wait_exit()
        nursery.cancel_scope.cancel()
    assert code == 0, gw.log_text()
    assert took < SHUTDOWN_TARGET_S, took
    [done] = gw.records("shutdown_complete")
    assert done["exit_code"] == 0
    [unmatched] = gw.records("acc_unmatched")
    assert unmatched["reason"] == "shutdown"
    assert gw.records("shutdown_journal_flushed")[0]["lines"] == 0
    assert read_journal(spec.journal_path) == []  # no Xovis input: no journey


async def test_s152_tracker_crash_exits_1_after_the_journal_flush(tmp_path: Path) -> None:
    spec = SiteSpec(tmp_path, mqtt_port=free_port(), token=TOKEN)
    async with gateway_process(spec, hooks=["tracker_crash_receipt=BOOM"]) as gw:
        assert (await gw.http.post("/acc/simulate", receipt="fine")).status_code == 200
        r = await gw.http.post("/acc/simulate", receipt="BOOM")
        assert r.status_code == 200  # accepted into the channel; the tracker raises on it
        code, _ = await gw.wait_exit()
    assert code == 1, gw.log_text()
    [crash] = gw.records("tracker_crashed")
    assert crash["level"] == "CRITICAL"
    assert "test hook: tracker crash on receipt BOOM" in crash["exc"]
    flushed = gw.records("shutdown_journal_flushed")
    assert len(flushed) == 1
    [done] = gw.records("shutdown_complete")
    assert done["exit_code"] == 1
    # no finalization after a crash: the buffered ACC is not released
    assert gw.records("acc_unmatched") == []
