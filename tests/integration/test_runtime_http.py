"""HTTP surface of a running gateway over real sockets (interfaces.md §8): S155, S156, bad input.

In-process gateways (`run_gateway`, the code path of `gateway run`) with an unreachable MQTT
broker and no controller: these routes must work whatever the rest of the site is doing.
`gateway demo` does not exist yet; its "control without a token" is the RunOptions flag it sets.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from runtime_harness import SiteSpec, free_port, running_gateway, wait_until

from gateway.app.runtime import RunOptions

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-1234"
CORS_ORIGIN = "access-control-allow-origin"
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def spec(tmp_path: Path, **kw: object) -> SiteSpec:
    return SiteSpec(tmp_path, mqtt_port=free_port(), **kw)  # type: ignore[arg-type]


async def test_s155_no_token_configured_post_routes_answer_403(tmp_path: Path) -> None:
    async with running_gateway(spec(tmp_path).load()) as gw:
        for path, params in (
            ("/door/simulate", {"status": "open"}),
            ("/acc/simulate", {"pos": "POS_1"}),
            ("/gate/open", {}),
        ):
            r = await gw.http.post(path, **params)
            assert r.status_code == 403, path
            assert r.json() == {"ok": False, "error": "control_disabled"}
            assert r.headers[CORS_ORIGIN] == "*"
        assert gw.comp.door_reading().status == "unknown"  # nothing was applied
        assert gw.comp.manual_stats.accepted == 0
        assert gw.comp.acc_stats.events_received == 0


async def test_s155_token_missing_or_wrong_is_401_correct_is_200(tmp_path: Path) -> None:
    async with running_gateway(spec(tmp_path, token=TOKEN).load()) as gw:
        for token, headers in (
            ("", {}),
            ("wrong-token-1234", {}),
            (TOKEN[:-1], {}),
            ("", {"Authorization": f"Basic {TOKEN}"}),
            ("", {"Authorization": TOKEN}),
        ):
            r = await gw.http.request(
                "POST", "/door/simulate", token=token, headers=headers, status="open"
            )
            assert r.status_code == 401, (token, headers)
            assert r.json() == {"ok": False, "error": "unauthorized"}
            assert r.headers["www-authenticate"] == "Bearer"
        assert gw.comp.door_reading().status == "unknown"
        r = await gw.http.post("/door/simulate", status="open")
        assert r.status_code == 200
        assert r.json() == {"ok": True, "status": "open"}
        assert r.headers[CORS_ORIGIN] == "*"
        assert gw.comp.door_reading().status == "open"
        assert gw.comp.door_reading().source == "simulate"
        # GET routes never need the token
        assert (await gw.http.get("/health")).status_code == 200


async def test_s155_demo_and_sim_allow_control_without_a_token(tmp_path: Path) -> None:
    options = RunOptions(allow_control_without_token=True)  # what `gateway demo`/`sim` set
    async with running_gateway(spec(tmp_path).load(), options) as gw:
        r = await gw.http.post("/door/simulate", status="open")
        assert r.status_code == 200
        assert r.json() == {"ok": True, "status": "open"}


async def test_s156_invalid_query_values_are_400_with_the_valid_list(tmp_path: Path) -> None:
    async with running_gateway(spec(tmp_path, token=TOKEN).load()) as gw:
        for params in ({"status": "bogus"}, {}, {"status": "OPEN"}):
            r = await gw.http.post("/door/simulate", **params)
            assert r.status_code == 400, params
            assert r.json() == {
                "ok": False,
                "error": "invalid_status",
                "valid": ["moving", "open", "closed", "unknown"],
            }
        for pos in ("POS_9", "", "GATE_1"):
            r = await gw.http.post("/acc/simulate", pos=pos)
            assert r.status_code == 400, pos
            assert r.json() == {"ok": False, "error": "unknown_pos", "valid": ["POS_1", "POS_2"]}
        assert gw.comp.acc_stats.events_received == 0
        # pos defaults to POS_1
        r = await gw.http.post("/acc/simulate")
        assert r.status_code == 200
        assert r.json() == {"ok": True, "pos": "POS_1", "message": "ACC event sent to tracker"}
        r = await gw.http.post("/door/simulate", status="unknown")
        assert r.json() == {"ok": True, "status": "unknown"}


async def test_unknown_route_404_wrong_method_405_as_json(tmp_path: Path) -> None:
    async with running_gateway(spec(tmp_path, token=TOKEN).load()) as gw:
        for method, path in (("GET", "/nope"), ("POST", "/gate"), ("GET", "/ws/x")):
            r = await gw.http.request(method, path)
            assert r.status_code == 404, path
            assert r.json() == {"ok": False, "error": "Not Found"}
        for method, path, allow in (
            ("GET", "/gate/open", "OPTIONS, POST"),
            ("POST", "/health", "GET, HEAD"),
            ("DELETE", "/acc/simulate", "OPTIONS, POST"),
            ("PUT", "/metrics", "GET, HEAD"),
        ):
            r = await gw.http.request(method, path)
            assert r.status_code == 405, (method, path)
            assert r.json() == {"ok": False, "error": "Method Not Allowed"}
            assert sorted(r.headers["allow"].split(", ")) == sorted(allow.split(", "))


async def test_cors_preflight_and_metrics_content_type(tmp_path: Path) -> None:
    async with running_gateway(spec(tmp_path, token=TOKEN).load()) as gw:
        for path in ("/gate/open", "/acc/simulate", "/door/simulate"):
            r = await gw.http.request("OPTIONS", path, token="")
            assert r.status_code == 200, path
            assert r.headers[CORS_ORIGIN] == "*"
            assert "Authorization" in r.headers["access-control-allow-headers"]
            assert "Content-Type" in r.headers["access-control-allow-headers"]
        r = await gw.http.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"] == METRICS_CONTENT_TYPE
        assert 'gateway_build_info{site="rt",version=' in r.text


async def test_acc_simulate_full_channel_is_503_channel_full_and_counted(tmp_path: Path) -> None:
    release = trio.Event()
    options = RunOptions(hold_events_after=0, release_events=release)
    async with running_gateway(spec(tmp_path, token=TOKEN, events_queue=1).load(), options) as gw:
        assert (await gw.http.post("/acc/simulate", receipt="a")).status_code == 200
        r = await gw.http.post("/acc/simulate", receipt="b")
        assert r.status_code == 503
        assert r.json() == {"ok": False, "error": "channel_full"}
        m = await gw.http.metrics()
        assert m.value("gateway_acc_events_received_total") == 2
        assert m.value("gateway_acc_events_dropped_total") == 1
        assert m.value("gateway_acc_drop_ratio") == 0.5
        assert m.value("gateway_events_total") == 0
        release.set()
        await wait_until(
            lambda: gw.comp.tracker.counters.events_total == 1, "the queued ACC is handled"
        )
