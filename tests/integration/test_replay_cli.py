"""The real `gateway replay` process against mosquitto: online, --journeys, exit codes (§10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from gateway.io.analysis_log import AnalysisRecord, encode_record, rfc3339_ns
from gateway.io.mqtt_shim import Message, MqttClient

if TYPE_CHECKING:
    from conftest import MosquittoServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DTS_TOML = ROOT / "tests" / "data" / "dts.toml"
RUN_TIMEOUT_S = 60  # a cold interpreter start on a slow CI box, not a performance bound
STEP_S = 10.0  # bound on waiting for messages the process already sent
W_NS = 1_767_225_600_000 * 1_000_000  # 2026-01-01T00:00:00Z


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GATEWAY_LOG_LEVEL", None)
    return env


def gateway(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.app.cli", "replay", *argv],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


async def gateway_async(*argv: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(RUN_TIMEOUT_S):
        return await trio.run_process(
            [sys.executable, "-m", "gateway.app.cli", "replay", *argv],
            cwd=ROOT,
            env=_env(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def collect(client: MqttClient, n: int) -> list[Message]:
    got: list[Message] = []
    with trio.fail_after(STEP_S):
        async for msg in client.messages:
            got.append(msg)
            if len(got) == n:
                break
    return got


def xovis_payload(seq: int) -> bytes:
    frame = {"time": seq, "events": [{"type": "TRACK_CREATE", "attributes": {"track_id": seq}}]}
    return json.dumps({"live_data": {"frames": [frame]}, "seq": seq}).encode()


async def test_online_speed_0_capture_of_50_records_arrives_in_order(
    mosquitto: MosquittoServer, mqtt_topic_prefix: str, tmp_path: Path
) -> None:
    topics = [f"{mqtt_topic_prefix}/sensor-{1 + i % 2}" for i in range(50)]
    lines = [
        encode_record(AnalysisRecord(W_NS + i * 80_000_000, topic, xovis_payload(i)), "s")
        for i, topic in enumerate(topics)
    ]
    door = {"ts_recv": rfc3339_ns(W_NS), "src": "rs485", "payload_raw": "HEX:00", "fields": {}}
    lines.insert(10, json.dumps(door).encode() + b"\n")  # no online target: skipped
    lines.insert(20, b"corrupt\n")
    capture = tmp_path / "capture.jsonl"
    capture.write_bytes(b"".join(lines))
    async with MqttClient(mosquitto.host, mosquitto.port, client_id="replay-sub") as sub:
        await sub.subscribe(f"{mqtt_topic_prefix}/#")
        done = await gateway_async(
            str(capture), "--host", mosquitto.host, "--port", str(mosquitto.port), "--speed", "0"
        )
        got = await collect(sub, 50)
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert [(m.topic, m.payload) for m in got] == [
        (topic, xovis_payload(i)) for i, topic in enumerate(topics)
    ]
    assert "replay: corrupt line 21: not JSON" in err
    assert "replay: lines 52: replayed 51 (mqtt 50, raw 0, acc 0, rs485 1), corrupt 1" in err
    assert "replay: mqtt published 50\n" in err
    assert "replay: rs485 skipped 1\n" in err
    assert done.stdout == b""


async def test_journeys_republishes_journal_lines_at_qos_1(
    mosquitto: MosquittoServer, mqtt_topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{mqtt_topic_prefix}/journeys"
    config = tmp_path / "site.toml"
    config.write_text(
        DTS_TOML.read_text("utf-8") + f'\n[mqtt_egress]\njourneys_topic = "{topic}"\n', "utf-8"
    )
    bodies = [f'"jid":"j{i}","tids":[{i}],"out":"exit","ev":[]' for i in range(30)]
    journal = [f"{{{b}}}\n".encode() for b in bodies]
    journal[5] = b'{"site":"elsewhere",' + bodies[5].encode() + b"}\n"
    journal.insert(7, b"{truncated\n")
    path = tmp_path / "journeys.jsonl"
    path.write_bytes(b"".join(journal))
    async with MqttClient(mosquitto.host, mosquitto.port, client_id="journey-sub") as sub:
        await sub.subscribe(topic, qos=1)
        done = await gateway_async(
            str(path), "--journeys", "--config", str(config), "--port", str(mosquitto.port)
        )
        got = await collect(sub, 30)
    err = done.stderr.decode()
    assert done.returncode == 0, err
    expected = [f'{{"site":"test",{b}}}'.encode() for b in bodies]
    expected[5] = b'{"site":"elsewhere",' + bodies[5].encode() + b"}"
    assert [m.payload for m in got] == expected
    assert {(m.topic, m.qos) for m in got} == {(topic, 1)}
    assert f"replay: journal lines 31: published 30 to {topic} (QoS 1), corrupt 1" in err


def test_missing_file_exits_1() -> None:
    done = gateway("/nonexistent/capture.jsonl")
    assert done.returncode == 1
    assert done.stderr == (
        "gateway replay: cannot read /nonexistent/capture.jsonl: No such file or directory\n"
    )


def test_offline_without_config_exits_2() -> None:
    done = gateway("capture.jsonl", "--offline")
    assert done.returncode == 2
    assert done.stderr == "gateway replay: error: --offline needs --config PATH\n"


def test_bad_flag_exits_2() -> None:
    done = gateway("capture.jsonl", "--speed", "fast")
    assert done.returncode == 2
    assert "invalid float value: 'fast'" in done.stderr


def test_unreachable_broker_exits_1(tmp_path: Path) -> None:
    from conftest import free_port

    capture = tmp_path / "capture.jsonl"
    capture.write_bytes(b"")
    port = free_port()
    done = gateway(str(capture), "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.startswith(f"gateway replay: MQTT broker 127.0.0.1:{port}: ")


def test_unreachable_gateway_url_exits_1(mosquitto: MosquittoServer, tmp_path: Path) -> None:
    from conftest import free_port

    record = {
        "ts_recv": rfc3339_ns(W_NS),
        "src": "acc",
        "payload_raw": "ACC R1",
        "fields": {"kiosk_ip": "127.0.0.1", "pos_zone": "POS_1", "receipt_id": "R1"},
    }
    capture = tmp_path / "capture.jsonl"
    capture.write_text(json.dumps(record) + "\n", "utf-8")
    url = f"http://127.0.0.1:{free_port()}"
    done = gateway(str(capture), "--port", str(mosquitto.port), "--gateway-url", url)
    assert done.returncode == 1
    assert f"gateway replay: cannot reach gateway at {url}/acc/simulate" in done.stderr
    assert "replay: acc posted 0, rejected 0, skipped 0" in done.stderr


def test_offline_process_is_deterministic(tmp_path: Path) -> None:
    ms = 1_000_000
    frames = [
        (0, "TRACK_CREATE", None, None),
        (800, "LINE_CROSS", 1008, "forward"),
        (5000, "TRACK_DELETE", None, None),
    ]
    lines = []
    for t, kind, g, direction in frames:
        attributes: dict[str, object] = {"track_id": 42}
        if g is not None:
            attributes |= {"geometry_id": g, "direction": direction}
        payload = {"live_data": {"frames": [{"time": 0, "events": [
            {"type": kind, "attributes": attributes}]}]}}  # fmt: skip
        rec = AnalysisRecord(W_NS + t * ms, "xovis/sensor-1", json.dumps(payload).encode())
        lines.append(encode_record(rec, "test"))
    capture = tmp_path / "capture.jsonl"
    capture.write_bytes(b"".join(lines))
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for out in outs:
        done = gateway(str(capture), "--offline", "--config", str(DTS_TOML), "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert "replay: journeys 1: exit 0, returned 1," in done.stderr
    assert outs[0].read_bytes() == outs[1].read_bytes()
    (journey,) = [json.loads(line) for line in outs[0].read_bytes().splitlines()]
    assert (journey["tids"], journey["out"]) == ([42], "returned")
