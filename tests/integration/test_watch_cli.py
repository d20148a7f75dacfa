"""`gateway watch` as a real subprocess against a real feed server (interfaces.md §10).

One line per message, `--kinds` filters, `--json` prints the frames as sent, exit 1 when it cannot
connect (or is refused with 1013) without `--retry`, `--retry` waits for the server, exit 0 on
Ctrl-C. The server is `serve_feed` from test_ws_feed.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
from runtime_harness import free_port, wait_until
from test_ws_feed import SITE, STEP_S, FeedServer, feed_client, make_config, serve_feed

from gateway.tools.watch import format_line

pytestmark = pytest.mark.integration

JOURNEY = (
    b'{"site":"ws-test","jid":"0194-j1","pid":"0194-p1","tids":[100],"parent":null,'
    b'"out":"exit","auth":true,"acc":true,"gate_was_open":false,"dwell":7500,'
    b'"t0":1736012330000,"t1":1736012349000,"ev":[{"t":"entry_cross","ts":1736012330100}]}'
)
GATE = b'{"site":"ws-test","ts":1736012345678,"state":"cmd_sent","tid":100,"src":"gate_worker"}'
ZONE = b'{"site":"ws-test","tid":100,"t":"zone_entry","z":"POS_1","ts":1,"auth":false,"total_dwell_ms":0,"event_time":0}'  # noqa: E501
TRACK = b'{"site":"ws-test","ts":1,"t":"create","tid":100,"auth":false,"dwell_ms":0}'


@attrs.define
class Watch:
    """A running `gateway watch` with line readers on stdout and stderr."""

    process: trio.Process
    out: list[str] = attrs.field(factory=list)
    err: list[str] = attrs.field(factory=list)
    changed: trio.Event = attrs.field(factory=trio.Event)

    async def pump(self, stream: trio.abc.ReceiveStream, lines: list[str]) -> None:
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            lines.extend(line.decode() for line in done)
            self.changed.set()
            self.changed = trio.Event()

    async def wait_for(self, lines: list[str], predicate: str | int) -> None:
        """Until a line contains `predicate` (str) or there are `predicate` lines (int)."""
        with trio.fail_after(STEP_S):
            while not (
                len(lines) >= predicate
                if isinstance(predicate, int)
                else any(predicate in line for line in lines)
            ):
                await self.changed.wait()

    async def interrupt(self) -> int:
        """Ctrl-C, then the exit code."""
        self.process.send_signal(signal.SIGINT)
        return await self.exit_code()

    async def exit_code(self) -> int:
        with trio.fail_after(STEP_S):
            return await self.process.wait()


@asynccontextmanager
async def gateway_watch(*args: str) -> AsyncIterator[Watch]:
    command = [sys.executable, "-m", "gateway.app.cli", "watch", *args]
    async with trio.open_nursery() as nursery:
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        watch = Watch(process)
        assert process.stdout is not None
        assert process.stderr is not None
        nursery.start_soon(watch.pump, process.stdout, watch.out)
        nursery.start_soon(watch.pump, process.stderr, watch.err)
        try:
            yield watch
        finally:
            if process.returncode is None:
                process.kill()
            with trio.fail_after(STEP_S):
                await process.wait()
    # the pumps read both pipes to EOF; close our ends
    await process.stdout.aclose()
    await process.stderr.aclose()


def publish_sample(server: FeedServer) -> None:
    for kind, data in (("zone", ZONE), ("track", TRACK), ("gate", GATE), ("journey", JOURNEY)):
        server.hub.publish(kind, data)


async def test_watch_prints_one_line_per_message_and_exits_0_on_ctrl_c() -> None:
    async with serve_feed() as server, gateway_watch("--url", server.url) as watch:
        await watch.wait_for(watch.out, "hello")
        publish_sample(server)
        await watch.wait_for(watch.out, 5)
        code = await watch.interrupt()
    assert code == 0
    hello, zone, track, gate, journey = watch.out
    assert " hello " in hello
    assert f"site={SITE}" in hello
    assert "zones=8" in hello
    assert "door=closed" in hello
    assert " zone " in zone
    assert "t=zone_entry tid=100 z=POS_1" in zone
    assert " track " in track
    assert "t=create tid=100" in track
    assert " gate " in gate
    assert "state=cmd_sent tid=100 src=gate_worker" in gate
    assert " journey " in journey
    assert "out=exit tids=[100] auth=true acc=true dwell=7500" in journey
    assert any("connected to" in line for line in watch.err)


async def test_watch_kinds_keeps_only_the_listed_kinds() -> None:
    async with (
        serve_feed() as server,
        gateway_watch("--url", server.url, "--kinds", "journey,gate") as watch,
    ):
        await wait_until(lambda: server.hub.stats.clients == 1, "watch subscribed")
        publish_sample(server)
        publish_sample(server)
        await watch.wait_for(watch.out, 4)
        server.hub.publish("journey", JOURNEY)  # a marker: nothing else slipped in before it
        await watch.wait_for(watch.out, 5)
        assert await watch.interrupt() == 0
    kinds = [line.split()[1] for line in watch.out]
    assert kinds == ["gate", "journey", "gate", "journey", "journey"]


async def test_watch_json_prints_the_frames_as_sent() -> None:
    async with serve_feed() as server, gateway_watch("--url", server.url, "--json") as watch:
        await watch.wait_for(watch.out, 1)
        publish_sample(server)
        await watch.wait_for(watch.out, 5)
        assert await watch.interrupt() == 0
    frames = [json.loads(line) for line in watch.out]
    assert frames[0]["kind"] == "hello"
    assert frames[0]["data"]["site"] == SITE
    assert [f["kind"] for f in frames[1:]] == ["zone", "track", "gate", "journey"]
    assert [f["data"] for f in frames[1:]] == [json.loads(x) for x in (ZONE, TRACK, GATE, JOURNEY)]
    assert all(isinstance(f["ts"], int) for f in frames)


async def test_watch_exits_1_when_it_cannot_connect() -> None:
    port = free_port()  # nobody listens here
    async with gateway_watch("--url", f"ws://127.0.0.1:{port}/ws") as watch:
        assert await watch.exit_code() == 1
    assert watch.out == []
    assert any("cannot connect" in line for line in watch.err)


async def test_watch_exits_1_when_refused_with_1013() -> None:
    async with serve_feed(make_config(max_clients=1)) as server, feed_client(server.port) as ws:
        await ws.get_message()  # the only slot is taken
        async with gateway_watch("--url", server.url) as watch:
            assert await watch.exit_code() == 1
    assert watch.out == []
    assert any("1013" in line for line in watch.err)


async def test_watch_retry_waits_for_the_server_and_reconnects() -> None:
    port = free_port()
    async with gateway_watch("--url", f"ws://127.0.0.1:{port}/ws", "--retry") as watch:
        await watch.wait_for(watch.err, "retrying")
        async with serve_feed(port=port) as server:
            await watch.wait_for(watch.out, "hello")
            server.hub.publish("gate", GATE)
            await watch.wait_for(watch.out, "state=cmd_sent")
        # the server went away: with --retry the watch keeps going
        await watch.wait_for(watch.err, "closed by the server")
        async with serve_feed(port=port):
            await watch.wait_for(watch.out, 3)
        assert await watch.interrupt() == 0
    assert [line.split()[1] for line in watch.out] == ["hello", "gate", "hello"]


def test_format_line_health_unknown_kinds_and_garbage() -> None:
    health = {
        "kind": "health",
        "ts": 1736012345678,
        "data": {
            "status": "degraded",
            "components": {
                "tracker": {"state": "ok"},
                "gate": {"state": "degraded"},
                "rs485": {"state": "disabled"},
            },
        },
    }
    assert format_line(json.dumps(health)).endswith(" health    status=degraded gate=degraded")
    future = {"kind": "novel", "ts": 0, "data": {"site": "s", "ts": 1, "a": [1, 2, 3, 4, 5, 6]}}
    assert format_line(json.dumps(future)).endswith(" novel     a=[1,2,3,4,…+2]")
    assert format_line("not json") == "?? not json"
