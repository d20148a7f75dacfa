"""Live-feed hub: fans encoded messages out to per-client bounded queues (interfaces.md §8).

Each message is framed once (`{"kind":K,"ts":…,"data":…}`) and shared by every client; a full
client queue drops the message for that client only (`gateway_ws_dropped_total`), so a slow
client never delays the tracker or the other clients.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import attrs
import trio


@attrs.define(slots=True)
class LiveFeedStats:
    clients: int = 0
    dropped: int = 0


@attrs.define(slots=True, eq=False)
class FeedClient:
    send: trio.MemorySendChannel[bytes]
    receive: trio.MemoryReceiveChannel[bytes]
    pending_drops: int = 0  # reported to the client as a `dropped` message once it has room


class TooManyClients(Exception):
    """More than `[http].max_ws_clients` subscribers (WS close code 1013)."""


def frame(kind: str, ts_ms: int, data: bytes) -> bytes:
    return b'{"kind":"%s","ts":%d,"data":%s}' % (kind.encode(), ts_ms, data)


@attrs.define(slots=True)
class LiveFeedHub:
    capacity: int
    max_clients: int
    stats: LiveFeedStats = attrs.field(factory=LiveFeedStats)
    _clients: list[FeedClient] = attrs.field(factory=list)

    def publish(self, kind: str, data: bytes) -> None:
        """Frame once, offer to every client without waiting."""
        if not self._clients:
            return
        message = frame(kind, time.time_ns() // 1_000_000, data)
        for client in self._clients:
            try:
                client.send.send_nowait(message)
            except trio.WouldBlock:
                client.pending_drops += 1
                self.stats.dropped += 1

    @contextmanager
    def subscribe(self) -> Iterator[FeedClient]:
        if len(self._clients) >= self.max_clients:
            raise TooManyClients
        send, receive = trio.open_memory_channel[bytes](self.capacity)
        client = FeedClient(send, receive)
        self._clients.append(client)
        self.stats.clients = len(self._clients)
        try:
            yield client
        finally:
            self._clients.remove(client)
            self.stats.clients = len(self._clients)
            send.close()
            receive.close()
