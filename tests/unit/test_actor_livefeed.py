"""S148 at the live-feed hub: a client that never reads costs the others nothing.

The `/ws` route arrives with the dashboard issue; until then S148's property is pinned where it
lives: `LiveFeedHub.publish` is synchronous (it cannot block the egress router, hence never the
tracker), frames each message once, and drops per client when that client's queue is full.
"""

from __future__ import annotations

import inspect
import json

import pytest
import trio

from gateway.app.livefeed import LiveFeedHub, LiveFeedStats, TooManyClients

MESSAGES = 1000
QUEUE = 256  # [queues].ws_client default (interfaces.md §8)


def test_publish_is_synchronous_so_it_can_never_wait() -> None:
    assert not inspect.iscoroutinefunction(LiveFeedHub.publish)


async def test_s148_client_a_never_reads_client_b_gets_all_1000_in_order() -> None:
    stats = LiveFeedStats()
    hub = LiveFeedHub(QUEUE, 16, stats)
    got: list[bytes] = []
    with hub.subscribe() as a, hub.subscribe() as b:
        assert stats.clients == 2

        async def reader() -> None:
            async for message in b.receive:
                got.append(message)
                if len(got) == MESSAGES:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            for i in range(MESSAGES):
                hub.publish("zone", b'{"i":%d}' % i)
                # the egress router's `async for` gives the other tasks a turn per item
                await trio.lowlevel.checkpoint()
        assert a.receive.statistics().current_buffer_used == QUEUE
        assert a.pending_drops == MESSAGES - QUEUE
        assert b.pending_drops == 0
    assert stats.dropped == MESSAGES - QUEUE  # gateway_ws_dropped_total
    assert stats.clients == 0
    decoded = [json.loads(m) for m in got]
    assert [d["data"]["i"] for d in decoded] == list(range(MESSAGES))
    assert {d["kind"] for d in decoded} == {"zone"}
    assert all(isinstance(d["ts"], int) for d in decoded)


async def test_each_message_is_framed_once_and_shared() -> None:
    hub = LiveFeedHub(4, 16)
    with hub.subscribe() as a, hub.subscribe() as b:
        hub.publish("gate", b'{"state":"cmd_sent"}')
        one, two = a.receive.receive_nowait(), b.receive.receive_nowait()
    assert one is two
    assert json.loads(one)["data"] == {"state": "cmd_sent"}


def test_client_cap_and_unsubscribe() -> None:
    stats = LiveFeedStats()
    hub = LiveFeedHub(4, 2, stats)
    with hub.subscribe(), hub.subscribe():
        with pytest.raises(TooManyClients), hub.subscribe():
            pass
        assert stats.clients == 2
    assert stats.clients == 0
    hub.publish("zone", b"{}")  # no clients: nothing to do, nothing counted
    assert stats.dropped == 0
