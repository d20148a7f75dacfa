"""HTTP gate mode against a real HTTP/1.1 server on 127.0.0.1 (S130, interfaces.md §4.3).

The server is a few lines of trio speaking HTTP/1.1 keep-alive, so the test sees the exact
request line and headers and can answer 200, 500 or nothing at all.
"""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from gateway.config.model import GateConfig
from gateway.core.clock import FakeClock
from gateway.core.effects import Publish
from gateway.core.model import GateCmd
from gateway.io.gate_http import HttpGate
from gateway.io.gate_worker import GateJob, GateStats, GateWorker

pytestmark = pytest.mark.integration


@pytest.fixture
def idle_jump_clock() -> trio.testing.MockClock:
    """Virtual time that jumps only after 50 ms of real idleness, so loopback I/O completes."""
    return trio.testing.MockClock(autojump_threshold=0.05)


@attrs.define
class Request:
    line: str
    headers: dict[str, str]
    conn: int


@attrs.define
class FakeCgi:
    """Answers every request with `status` (None = never answer)."""

    status: int | None = 200
    requests: list[Request] = attrs.field(factory=list)
    connections: int = 0
    port: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(self.port)

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = self.connections
        self.connections += 1
        buf = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        data = await stream.receive_some(4096)
                    except trio.BrokenResourceError:
                        return
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                line, *fields = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)
                }
                self.requests.append(Request(line, headers, conn))
                if self.status is None:
                    await trio.sleep_forever()
                body = b"ok"
                await stream.send_all(
                    f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )


@attrs.define
class Rig:
    cgi: FakeCgi
    worker: GateWorker
    stats: GateStats
    published: list[Publish]
    clock: FakeClock


def cmd(clock: FakeClock, tid: int = 42) -> GateCmd:
    now = clock.mono_ns()
    return GateCmd(track_id=tid, src="tracker", trigger_recv_ns=now, enqueued_ns=now)


async def run_with_gate(
    status: int | None, body: object, *, url_path: str = "/cdor.cgi?door=0&open=1"
) -> None:
    """Start the CGI, build HttpGate + worker and call `body(rig)` inside."""
    cgi = FakeCgi(status=status)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(cgi.serve)
        config = GateConfig(
            mode="http",
            http_url=f"http://admin:88888888@127.0.0.1:{port}{url_path}",
            timeout_ms=2000,
        )
        stats = GateStats()
        clock = FakeClock(now_ms=5000)
        published: list[Publish] = []
        async with HttpGate(config) as gate:
            worker = GateWorker(config, "netto", clock, gate, published.append, stats)
            await body(Rig(cgi, worker, stats, published, clock))  # type: ignore[operator]
        nursery.cancel_scope.cancel()


async def test_s130_request_shape_and_200_is_cmd_sent() -> None:
    async def body(rig: Rig) -> None:
        outcome = await rig.worker.handle(GateJob(cmd(rig.clock)))
        assert outcome.ok
        [req] = rig.cgi.requests
        assert req.line == "GET /cdor.cgi?door=0&open=1 HTTP/1.1"
        assert req.headers["authorization"] == "Basic YWRtaW46ODg4ODg4ODg="
        assert req.headers["user-agent"] == "curl/7.88.1"
        assert req.headers["accept"] == "*/*"
        assert "admin" not in req.line
        assert [p.payload["state"] for p in rig.published] == ["cmd_sent"]
        assert rig.stats.last_http_failed is False

    await run_with_gate(200, body)


async def test_s130_500_is_cmd_failed_http_status() -> None:
    async def body(rig: Rig) -> None:
        outcome = await rig.worker.handle(GateJob(cmd(rig.clock)))
        assert (outcome.ok, outcome.reason, outcome.http_status) == (False, "http_status", 500)
        payload = rig.published[-1].payload
        assert (payload["state"], payload["reason"], payload["http_status"]) == (
            "cmd_failed",
            "http_status",
            500,
        )
        assert rig.stats.cmds_failed == {"http_status": 1}
        assert rig.stats.last_http_failed is True
        assert len(rig.cgi.requests) == 1  # single attempt

    await run_with_gate(500, body)


async def test_s130_no_reply_is_http_error_after_2000_ms(
    idle_jump_clock: trio.testing.MockClock,
) -> None:
    async def body(rig: Rig) -> None:
        start = trio.current_time()
        outcome = await rig.worker.handle(GateJob(cmd(rig.clock)))
        elapsed = trio.current_time() - start
        assert (outcome.ok, outcome.reason) == (False, "http_error")
        assert 1.8 <= elapsed <= 2.2
        payload = rig.published[-1].payload
        assert (payload["state"], payload["reason"]) == ("cmd_failed", "http_error")
        assert "http_status" not in payload
        assert len(rig.cgi.requests) == 1  # no retry

    await run_with_gate(None, body)


async def test_connection_is_reused_between_commands() -> None:
    async def body(rig: Rig) -> None:
        for tid in (1, 2, 3):
            assert (await rig.worker.handle(GateJob(cmd(rig.clock, tid)))).ok
        assert len(rig.cgi.requests) == 3
        assert rig.cgi.connections == 1

    await run_with_gate(200, body)


async def test_connection_refused_is_http_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # nothing listens there now
    config = GateConfig(mode="http", http_url=f"http://127.0.0.1:{port}/open", timeout_ms=2000)
    stats = GateStats()
    clock = FakeClock(now_ms=1)
    published: list[Publish] = []
    async with HttpGate(config) as gate:
        worker = GateWorker(config, "netto", clock, gate, published.append, stats)
        outcome = await worker.handle(GateJob(cmd(clock)))
    assert outcome.reason == "http_error"
    assert stats.cmds_failed == {"http_error": 1}
