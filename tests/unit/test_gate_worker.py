"""Gate worker (behaviour.md §12): stale rule, not connected, write outcomes, payloads, manual.

Fake clock and fake senders only: no sockets, no sleeps (timeouts run on the autojump clock).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import attrs
import pytest
import trio

from gateway.codecs.cloudplus import encode_open
from gateway.config.model import GateConfig
from gateway.core.effects import Publish
from gateway.core.model import GateCmd, GateSource
from gateway.io.gate_http import HttpGateError
from gateway.io.gate_link import GateNotConnected, GateWriteError, GateWriteTimeout
from gateway.io.gate_worker import (
    GateJob,
    GateOutcome,
    GateStats,
    GateWorker,
    open_manually,
)

WALL_BASE_MS = 1_767_225_600_000


@attrs.define
class NsClock:
    """Fake clock with ns resolution; `mono_ns` is what the worker reads."""

    now_ns: int = 0

    def mono_ns(self) -> int:
        return self.now_ns

    def mono_ms(self) -> int:
        return self.now_ns // 1_000_000

    def wall_ms(self) -> int:
        return WALL_BASE_MS + self.mono_ms()


@attrs.define
class FakeLink:
    clock: NsClock
    connected: bool = True
    write_ns: int = 150_000  # the write call takes 150 µs of fake time
    error: Exception | None = None
    written: list[bytes] = attrs.field(factory=list)

    async def write(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.clock.now_ns += self.write_ns
        if self.error is not None:
            raise self.error
        self.written.append(data)


@attrs.define
class FakeHttp:
    clock: NsClock
    status: int = 200
    error: Exception | None = None
    requests: int = 0

    async def request(self) -> int:
        await trio.lowlevel.checkpoint()
        self.requests += 1
        self.clock.now_ns += 2_000_000
        if self.error is not None:
            raise self.error
        return self.status


@attrs.define
class Rig:
    clock: NsClock
    stats: GateStats
    published: list[Publish]
    worker: GateWorker


def make_rig(sender: Callable[[NsClock], FakeLink | FakeHttp] = FakeLink, *, door: int = 1) -> Rig:
    clock = NsClock()
    stats = GateStats()
    published: list[Publish] = []
    fake = sender(clock)
    config = GateConfig(mode="http" if isinstance(fake, FakeHttp) else "tcp", door=door)
    worker = GateWorker(config, "netto", clock, fake, published.append, stats)
    return Rig(clock, stats, published, worker)


def cmd(
    enqueued_ns: int = 0, *, tid: int = 42, src: GateSource = "tracker", recv_ns: int | None = None
) -> GateCmd:
    return GateCmd(
        track_id=tid,
        src=src,
        trigger_recv_ns=enqueued_ns - 400_000 if recv_ns is None else recv_ns,
        enqueued_ns=enqueued_ns,
    )


def link_of(rig: Rig) -> FakeLink:
    sender = rig.worker._sender
    assert isinstance(sender, FakeLink)
    return sender


async def test_s128_age_2000_ms_is_written() -> None:
    rig = make_rig()
    rig.clock.now_ns = 10_000_000_000 + 2_000_999_999  # 2000.999 ms → integer age 2000
    outcome = await rig.worker.handle(GateJob(cmd(10_000_000_000)))
    assert outcome.ok
    assert link_of(rig).written == [encode_open(1)]
    assert rig.published[-1].payload["state"] == "cmd_sent"
    assert rig.stats.cmds_stale == 0
    assert rig.stats.cmds_dropped == 0


async def test_s128_age_2001_ms_is_dropped_stale_nothing_written() -> None:
    rig = make_rig()
    rig.clock.now_ns = 10_000_000_000 + 2_001_000_000
    outcome = await rig.worker.handle(GateJob(cmd(10_000_000_000)))
    assert outcome == GateOutcome(ok=False, reason="stale", latency_us=outcome.latency_us)
    assert link_of(rig).written == []
    assert rig.stats.cmds_stale == 1
    assert rig.stats.cmds_dropped == 1
    assert rig.stats.cmds_failed == {}  # stale has its own counter
    payload = rig.published[-1].payload
    assert payload["state"] == "cmd_failed"
    assert payload["reason"] == "stale"


async def test_cmd_sent_payload_fields_order_and_timings() -> None:
    rig = make_rig()
    rig.clock.now_ns = 5_000_000_000 + 31_000  # picked up 31 µs after enqueue
    job = GateJob(cmd(5_000_000_000, recv_ns=5_000_000_000 - 400_000))
    outcome = await rig.worker.handle(job)
    [pub] = rig.published
    assert pub.kind == "gate"
    assert list(pub.payload) == [
        "site", "ts", "state", "tid", "src", "queue_delay_us", "send_latency_us",
        "enqueue_to_send_us", "recv_to_wire_us", "trigger",
    ]  # fmt: skip
    assert pub.payload == {
        "site": "netto",
        "ts": WALL_BASE_MS + 5_000,
        "state": "cmd_sent",
        "tid": 42,
        "src": "gate_worker",
        "queue_delay_us": 31,
        "send_latency_us": 150,
        "enqueue_to_send_us": 181,
        "recv_to_wire_us": 581,
        "trigger": "tracker",
    }
    assert outcome == GateOutcome(ok=True, reason=None, latency_us=581)
    stats = rig.stats
    assert stats.cmds_sent == 1
    assert (stats.queue_delay_us.count, stats.queue_delay_us.total) == (1, 31)
    assert stats.send_latency_us.total == 150
    assert stats.enqueue_to_send_us.total == 181
    assert stats.recv_to_wire_us.total == 581
    assert stats.recv_to_wire_window.max(5_000) == 581
    assert stats.queue_delay_window.count(5_000) == 1


async def test_door_2_frame_is_written() -> None:
    rig = make_rig(door=2)
    await rig.worker.handle(GateJob(cmd()))
    assert link_of(rig).written == [encode_open(2)]


async def test_s127_not_connected_fails_at_once_nothing_written() -> None:
    rig = make_rig()
    link_of(rig).connected = False
    outcome = await rig.worker.handle(GateJob(cmd()))
    assert (outcome.ok, outcome.reason) == (False, "not_connected")
    assert link_of(rig).written == []
    assert rig.stats.cmds_failed == {"not_connected": 1}
    assert rig.stats.cmds_dropped == 1
    assert list(rig.published[-1].payload) == [
        "site", "ts", "state", "tid", "src", "reason", "trigger",
    ]  # fmt: skip
    assert rig.published[-1].payload["reason"] == "not_connected"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (GateWriteTimeout("slow"), "write_timeout"),
        (GateWriteError("reset"), "write_error"),
        (GateNotConnected("gone"), "not_connected"),
    ],
)
async def test_s129_write_failures_are_cmd_failed_never_cmd_sent(
    error: Exception, reason: str
) -> None:
    rig = make_rig()
    link_of(rig).error = error
    outcome = await rig.worker.handle(GateJob(cmd(src="acc")))
    assert (outcome.ok, outcome.reason) == (False, reason)
    assert [p.payload["state"] for p in rig.published] == ["cmd_failed"]
    assert rig.published[0].payload["reason"] == reason
    assert rig.published[0].payload["trigger"] == "acc"
    assert rig.stats.cmds_failed == {reason: 1}
    assert rig.stats.cmds_dropped == 1
    assert rig.stats.cmds_sent == 0


async def test_manual_open_carries_no_tid() -> None:
    rig = make_rig()
    await rig.worker.handle(GateJob(cmd(tid=0, src="http")))
    payload = rig.published[-1].payload
    assert "tid" not in payload
    assert payload["trigger"] == "http"
    assert payload["src"] == "gate_worker"


async def test_http_mode_2xx_is_sent_and_clears_last_failure() -> None:
    rig = make_rig(FakeHttp)
    rig.stats.last_http_failed = True
    outcome = await rig.worker.handle(GateJob(cmd()))
    assert outcome.ok
    assert rig.published[-1].payload["state"] == "cmd_sent"
    assert rig.published[-1].payload["send_latency_us"] == 2000
    assert rig.stats.last_http_failed is False


async def test_http_mode_500_is_http_status_failure() -> None:
    rig = make_rig(partial(FakeHttp, status=500))
    outcome = await rig.worker.handle(GateJob(cmd()))
    assert (outcome.ok, outcome.reason, outcome.http_status) == (False, "http_status", 500)
    payload = rig.published[-1].payload
    assert list(payload)[-3:] == ["reason", "trigger", "http_status"]
    assert payload["http_status"] == 500
    assert rig.stats.cmds_failed == {"http_status": 1}
    assert rig.stats.last_http_failed is True


async def test_http_mode_transport_error_is_http_error() -> None:
    rig = make_rig(partial(FakeHttp, error=HttpGateError("timeout")))
    outcome = await rig.worker.handle(GateJob(cmd()))
    assert (outcome.ok, outcome.reason) == (False, "http_error")
    assert "http_status" not in rig.published[-1].payload
    assert rig.stats.cmds_failed == {"http_error": 1}
    assert rig.stats.last_http_failed is True


async def test_run_processes_jobs_in_order_and_replies() -> None:
    rig = make_rig()
    send, receive = trio.open_memory_channel[GateJob](4)
    replies: list[GateOutcome] = []
    link_of(rig).connected = True
    for tid in (1, 2, 3):
        send.send_nowait(GateJob(cmd(tid=tid), replies.append))
    send.close()
    await rig.worker.run(receive)
    assert [p.payload["tid"] for p in rig.published] == [1, 2, 3]
    assert [r.ok for r in replies] == [True, True, True]
    assert len(link_of(rig).written) == 3


async def test_open_manually_queue_full_answers_at_once(mock_clock: trio.abc.Clock) -> None:
    send, _receive = trio.open_memory_channel[GateJob](1)
    send.send_nowait(GateJob(cmd()))
    start = trio.current_time()
    outcome = await open_manually(send, NsClock(), wait_s=6.0)
    assert (outcome.ok, outcome.reason) == (False, "queue_full")
    assert trio.current_time() == start


async def test_open_manually_closed_channel_is_shutting_down() -> None:
    send, receive = trio.open_memory_channel[GateJob](1)
    await receive.aclose()
    outcome = await open_manually(send, NsClock(), wait_s=6.0)
    assert outcome.reason == "shutting_down"


async def test_open_manually_times_out_without_outcome(autojump_clock: trio.abc.Clock) -> None:
    send, receive = trio.open_memory_channel[GateJob](1)
    start = trio.current_time()
    outcome = await open_manually(send, NsClock(), wait_s=6.0)
    assert (outcome.ok, outcome.reason) == (False, "timeout")
    assert trio.current_time() - start == pytest.approx(6.0)
    job = receive.receive_nowait()
    assert (job.cmd.track_id, job.cmd.src) == (0, "http")


async def test_open_manually_returns_the_worker_outcome() -> None:
    rig = make_rig()
    send, receive = trio.open_memory_channel[GateJob](4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.worker.run, receive)
        outcome = await open_manually(send, rig.clock, wait_s=6.0)
        nursery.cancel_scope.cancel()
    assert outcome.ok
    assert outcome.latency_us == 150
    assert "tid" not in rig.published[-1].payload


async def test_logs_gate_cmd_sent_and_failed_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.io.gate_worker")
    rig = make_rig()
    await rig.worker.handle(GateJob(cmd(tid=42)))
    link_of(rig).connected = False
    await rig.worker.handle(GateJob(cmd(tid=43)))
    records = [(r.levelno, r.getMessage(), getattr(r, "fields", {})) for r in caplog.records]
    assert records[0][:2] == (logging.INFO, "gate_cmd_sent")
    assert records[0][2]["tid"] == 42
    assert records[0][2]["recv_to_wire_us"] == 550
    assert records[1][:2] == (logging.INFO, "gate_cmd_failed")
    assert records[1][2]["reason"] == "not_connected"


async def test_queue_delay_over_1000_us_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.io.gate_worker")
    rig = make_rig()
    rig.clock.now_ns = 1_001_000
    await rig.worker.handle(GateJob(cmd(0)))
    assert [r.getMessage() for r in caplog.records] == ["gate_queue_delay_high"]
    assert rig.stats.queue_delay_us.total == 1001
