"""Operator dashboard (`GET /`, `/static/*`, interfaces.md §8) over real sockets and in Chromium.

HTTP tests: the page and its assets come from package data, nothing external is referenced,
unknown names are 404. Browser tests: headless Chromium (Debian's `chromium`) driven over the
DevTools protocol with trio-websocket (no extra dependency) loads the page from `serve_feed`,
the hub publishes a small scene, and the DOM must show it; the page must reconnect to a restarted
server by itself. A screenshot is written to the test's tmp dir (and to $DASHBOARD_SCREENSHOT).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio_websocket
from runtime_harness import free_port, wait_until
from test_ws_feed import SITE, STEP_S, FeedServer, make_config, serve_feed

from gateway.app.ws import FeedTiming

pytestmark = pytest.mark.integration

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
# flags that work here as root without network access (shared/notes/browser-testing.md)
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-allow-origins=*",
    "--window-size=1400,1050",
)
DEVTOOLS_MESSAGE_BYTES = 64 * 1024 * 1024  # screenshots arrive as one base64 message


def find_chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


# ---- plain HTTP ---------------------------------------------------------------------------------


async def test_index_is_the_dashboard_html_with_local_assets_only() -> None:
    async with serve_feed() as server, httpx.AsyncClient(base_url=server.http_url) as http:
        page = await http.get("/")
        css = await http.get("/static/style.css")
        js = await http.get("/static/app.js")
        index_copy = await http.get("/static/index.html")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<canvas id="store"' in page.text
    assert 'src="/static/app.js"' in page.text
    assert 'href="/static/style.css"' in page.text
    assert css.status_code == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert js.status_code == 200
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert '"/ws"' in js.text
    assert index_copy.text == page.text
    for body in (page.text, css.text, js.text):  # no CDN, no web fonts, no build artefacts
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", body)
        assert "@import" not in body
        assert not re.search(r"cdn\.|unpkg|jsdelivr|googleapis", body)


async def test_unknown_static_names_are_404_and_paths_cannot_escape() -> None:
    async with serve_feed() as server, httpx.AsyncClient(base_url=server.http_url) as http:
        for path in (
            "/static/nope.js",
            "/static/../pyproject.toml",
            "/static/%2e%2e/pyproject.toml",
            "/static/",
        ):
            r = await http.get(path)
            assert r.status_code == 404, path
        assert (await http.post("/")).status_code == 405


# ---- the browser --------------------------------------------------------------------------------


@attrs.define
class DevTools:
    """Minimal Chrome DevTools protocol client on one page target."""

    ws: Any
    ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))
    errors: list[str] = attrs.field(factory=list)  # uncaught page exceptions, console errors

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        await self.ws.send_message(json.dumps({"id": call_id, "method": method, "params": params}))
        with trio.fail_after(STEP_S):
            while True:
                message = json.loads(await self.ws.get_message())
                if message.get("id") == call_id:
                    if "error" in message:
                        raise AssertionError(f"{method}: {message['error']}")
                    result: dict[str, Any] = message["result"]
                    return result
                self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.errors.append(json.dumps(params["exceptionDetails"])[:500])
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(json.dumps(params.get("args"))[:500])

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str) -> Any:
        """Poll until `expression` is truthy; throwing (page not loaded yet) counts as false."""
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()"
        deadline = trio.current_time() + STEP_S
        while True:
            value = await self.evaluate(guarded)
            if value:
                return value
            if trio.current_time() >= deadline:
                raise AssertionError(f"timed out waiting for {what}: {expression}")
            await trio.sleep(0.05)

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await trio.Path(path).write_bytes(base64.b64decode(shot["data"]))


@asynccontextmanager
async def chromium_page(tmp_path: Path) -> AsyncIterator[DevTools]:
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "chromium is not installed: `apt-get install -y chromium` (make test installs it "
            "as root); see shared/notes/browser-testing.md"
        )
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    port_file = profile / "DevToolsActivePort"
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    process = await trio.lowlevel.open_process(
        [*command, "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group: the renderers go with it at the end
    )
    try:
        await wait_until(port_file.exists, "chromium DevTools port", STEP_S)
        await wait_until(lambda: len(port_file.read_text().split()) >= 2, "port file", STEP_S)
        port = int(port_file.read_text().split()[0])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            targets = (await http.get("/json/list")).json()
        page = next(t for t in targets if t["type"] == "page")
        async with trio_websocket.open_websocket_url(
            page["webSocketDebuggerUrl"], max_message_size=DEVTOOLS_MESSAGE_BYTES
        ) as ws:
            devtools = DevTools(ws)
            await devtools.call("Runtime.enable")
            await devtools.call("Page.enable")
            yield devtools
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        with trio.move_on_after(STEP_S) as stopping:
            await process.wait()
        if stopping.cancelled_caught:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


def frame_data(**data: Any) -> bytes:
    return json.dumps({"site": SITE, **data}).encode()


def publish_scene(server: FeedServer, now_ms: int) -> None:
    """What a few busy seconds in the store look like on the feed."""
    hub = server.hub
    hub.publish("door", b'{"status":"open","fault":0,"alarm":0,"source":"rs485"}')
    for tid in (100, 101, 102, 103):
        hub.publish("track", frame_data(ts=now_ms, t="create", tid=tid, auth=False, dwell_ms=0))
    for tid, zone, auth in ((100, "POS_1", True), (101, "DWELL_1", False), (102, "GATE_1", True)):
        hub.publish(
            "zone",
            frame_data(tid=tid, t="zone_entry", z=zone, ts=now_ms, auth=auth, total_dwell_ms=8000),
        )
    hub.publish(
        "position",
        frame_data(ts=now_ms, tid=103, obj_type="PERSON", x=4.8, y=-4.2, z=1.7, auth=False),
    )
    hub.publish(
        "position",
        frame_data(ts=now_ms, tid=104, obj_type="PERSON", x=0.5, y=1.5, z=1.7, auth=False),
    )
    gate_events = (
        {"state": "cmd_enqueued", "tid": 102, "src": "tracker"},
        {
            "state": "cmd_sent",
            "tid": 102,
            "src": "gate_worker",
            "send_latency_us": 118,
            "recv_to_wire_us": 412,
            "trigger": "tracker",
        },
        {"state": "open", "tid": 102, "src": "rs485"},
        {"state": "cmd_failed", "src": "gate_worker", "reason": "not_connected"},
    )
    for event in gate_events:
        hub.publish("gate", frame_data(ts=now_ms, **event))
    hub.publish(
        "acc",
        frame_data(ts=now_ms, t="matched", ip="10.0.0.21", pos="POS_1", tid=100, receipt="R-77"),
    )
    hub.publish("acc", frame_data(ts=now_ms, t="unmatched", ip="10.0.0.22", pos="POS_2"))
    for i, (out, auth) in enumerate((("exit", True), ("returned", False), ("lost", False))):
        journey = {
            "jid": f"01943265-f410-7a1e-8f3e-2d4b6c8a9e1{i}",
            "pid": f"01943265-f410-7b2f-9a01-5e6f7a8b9c0{i}",
            "tids": [90 + i],
            "parent": None,
            "out": out,
            "auth": auth,
            "acc": auth,
            "gate_was_open": False,
            "dwell": 7500 + 1000 * i,
            "t0": now_ms - 60_000,
            "t1": now_ms - 1000 * (3 - i),
            "ev": [],
        }
        if auth:
            journey |= {"gate_cmd": now_ms - 5000, "gate_open": now_ms - 4800}
        hub.publish("journey", frame_data(**journey))
    hub.publish(
        "metrics",
        frame_data(
            ts=now_ms,
            gate_state="open",
            gate_id=1,
            events_total=123456,
            events_per_sec=12.5,
            avg_latency_us=310,
            max_latency_us=2900,
            lat_buckets=[0] * 11,
            lat_p50_us=400,
            lat_p95_us=800,
            lat_p99_us=1600,
            active_tracks=5,
            authorized_tracks=2,
            gate_cmds=17,
            gate_lat_buckets=[0] * 11,
            gate_lat_avg_us=150,
            gate_lat_max_us=420,
            gate_lat_p99_us=400,
            event_queue_depth=3,
            gate_queue_depth=0,
            cloudplus_queue_depth=0,
            event_queue_utilization_pct=0.3,
            gate_queue_utilization_pct=0.0,
            health="degraded",
        ),
    )


DOM_SNAPSHOT = """(() => {
  const text = (id) => document.getElementById(id).textContent;
  const rows = Array.from(document.querySelectorAll('#journeys tbody tr'));
  return {
    site: text('site'), conn: text('conn'), health: text('health-status'),
    door: text('door-status'), counters: text('counters'), tracks: text('track-count'),
    outcomes: rows.map((r) => r.querySelector('.badge').textContent),
    gate: Array.from(document.querySelectorAll('#gate-events li .what')).map((n) => n.textContent),
    acc: text('acc-events'),
    components: Array.from(document.querySelectorAll('#components li')).length,
    messages: window.gatewayDashboard.state.messages,
  };
})()"""


async def test_dashboard_in_chromium_shows_the_live_scene(tmp_path: Path) -> None:
    timing = FeedTiming(health_interval_s=0.5)
    async with serve_feed(timing=timing) as server, chromium_page(tmp_path) as page:
        await page.call("Page.navigate", url=server.http_url + "/")
        await page.wait_for(
            f"document.getElementById('site').textContent === {json.dumps(SITE)}", "hello"
        )
        await wait_until(lambda: server.hub.stats.clients == 1, "page subscribed")
        publish_scene(server, server.comp.clock.wall_ms())
        await page.wait_for(
            "document.querySelectorAll('#journeys tbody tr').length === 3", "journeys"
        )
        await page.wait_for("window.gatewayDashboard.state.messages >= 21", "all messages")
        await page.wait_for("document.getElementById('door-status').textContent === 'open'", "door")
        dom = await page.evaluate(DOM_SNAPSHOT)
        await page.screenshot(tmp_path / "dashboard.png")
        if os.environ.get("DASHBOARD_SCREENSHOT"):
            shutil.copy(tmp_path / "dashboard.png", os.environ["DASHBOARD_SCREENSHOT"])
        canvas_bytes = await page.evaluate("document.getElementById('store').toDataURL().length")
        errors = list(page.errors)
    assert dom["site"] == SITE
    assert dom["conn"] == "live"
    assert dom["health"] in ("ok", "degraded", "down")
    assert dom["door"] == "open"
    assert dom["outcomes"] == ["lost", "returned", "exit"]  # newest first
    assert dom["gate"] == ["cmd_failed", "open", "cmd_sent", "cmd_enqueued"]
    assert "R-77" in dom["acc"]
    assert "12.5" in dom["counters"]
    assert "123456" in dom["counters"]
    assert dom["tracks"] == "5 live tracks"  # 100–103 created, 104 seen by position
    assert dom["components"] >= 9
    assert canvas_bytes > 10_000  # zones and dots were drawn
    assert errors == []


async def test_dashboard_reconnects_to_a_restarted_gateway(tmp_path: Path) -> None:
    port = free_port()
    async with chromium_page(tmp_path) as page:
        async with serve_feed(port=port) as server:
            await page.call("Page.navigate", url=server.http_url + "/")
            await page.wait_for(f"document.getElementById('site').textContent === '{SITE}'", "hi")
        await page.wait_for(
            "document.getElementById('conn').textContent.startsWith('reconnecting')", "closed"
        )
        async with serve_feed(make_config(site="after-restart"), port=port):
            await page.wait_for(
                "document.getElementById('site').textContent === 'after-restart'", "new hello"
            )
            conn = await page.evaluate("document.getElementById('conn').textContent")
        errors = list(page.errors)
    assert conn == "live"
    assert errors == []
