"""ACC payment-terminal TCP listener (interfaces.md §2, D10).

One task per connection in an explicit handler nursery; lines are decoded by
`gateway.codecs.acc_line` and handed to the events channel with `send_nowait` (README
concurrency rule 2). Nothing is ever written back to a terminal.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Final

import attrs
import trio

from gateway.app.logs import RateLimiter, log_event
from gateway.codecs.acc_line import AccLineDecoder, AccLineEvent, Malformed, Oversized, Receipt
from gateway.config.model import AccConfig
from gateway.core.model import AccInput

logger = logging.getLogger(__name__)

RECV_BYTES: Final = 4096  # one receive; a line is at most `max_line_bytes` (≤ 64 KiB)
CLOSE_TIMEOUT_S: Final = 1.0  # a graceful close of a TCP stream never needs longer
REJECT_REASONS: Final = ("not_allowed", "too_many")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.define
class AccStats:
    """Plain counters read by the metrics collector and /health (interfaces.md §9)."""

    events_received: int = 0
    events_dropped: int = 0
    malformed_lines: int = 0
    oversized_lines: int = 0
    connections: int = 0  # gauge: open, accepted connections
    rejected: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(REJECT_REASONS, 0))
    listening: bool = False
    accepted_total: int = 0


def normalise_peer_ip(host: str) -> str:
    """Peer IP text; `::ffff:a.b.c.d` becomes `a.b.c.d` (interfaces.md §2 "Peer IP")."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def parse_allow_list(entries: Iterable[str] | None) -> tuple[IpNetwork, ...] | None:
    """IPs or CIDRs (host bits allowed); None means everyone may connect."""
    if entries is None:
        return None
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries)


def is_allowed(peer: str, allow: tuple[IpNetwork, ...] | None) -> bool:
    if allow is None:
        return True
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(addr in net for net in allow)  # a version mismatch is simply "not in"


@attrs.define(eq=False)
class _Listener:
    config: AccConfig
    events: trio.MemorySendChannel[object]
    stats: AccStats
    mono_ns: Callable[[], int]
    allow: tuple[IpNetwork, ...] | None
    limiter: RateLimiter = attrs.field(factory=RateLimiter)

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            peer = normalise_peer_ip(str(stream.socket.getpeername()[0]))
        except OSError:  # the peer already left
            await _close(stream)
            return
        reason = self._reject_reason(peer)
        if reason is not None:
            self.stats.rejected[reason] += 1
            self.limiter.log(
                logger,
                logging.WARNING,
                f"acc_reject_{reason}",
                "acc_rejected",
                ip=peer,
                reason=reason,
            )
            await _close(stream)
            return
        self.stats.connections += 1
        self.stats.accepted_total += 1
        try:
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            await self._read_lines(stream, peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log_event(logger, logging.DEBUG, "acc_connection_error", ip=peer, error=str(exc))
        finally:
            self.stats.connections -= 1
            await _close(stream)

    def _reject_reason(self, peer: str) -> str | None:
        if not is_allowed(peer, self.allow):
            return "not_allowed"
        if self.stats.connections >= self.config.max_connections:
            return "too_many"
        return None

    async def _read_lines(self, stream: trio.SocketStream, peer: str) -> None:
        decoder = AccLineDecoder(self.config.max_line_bytes)
        # No idle timeout: terminals keep long-lived connections open [ref] (interfaces.md §2).
        while not decoder.closed:
            data = await stream.receive_some(RECV_BYTES)
            for event in decoder.feed(data) if data else decoder.eof():
                self._on_event(event, peer)

    def _on_event(self, event: AccLineEvent, peer: str) -> None:
        if isinstance(event, Receipt):
            self.stats.events_received += 1
            item = AccInput(recv_ns=self.mono_ns(), ip=peer, receipt=event.receipt)
            try:
                self.events.send_nowait(item)
            except trio.WouldBlock:
                self.stats.events_dropped += 1
                self.limiter.log(logger, logging.WARNING, "acc_drop", "acc_event_dropped", ip=peer)
        elif isinstance(event, Malformed):
            self.stats.malformed_lines += 1
            log_event(logger, logging.DEBUG, "acc_malformed_line", ip=peer, reason=event.reason)
        elif isinstance(event, Oversized):
            self.stats.oversized_lines += 1
            self.limiter.log(
                logger,
                logging.WARNING,
                "acc_oversized",
                "acc_line_oversized",
                ip=peer,
                max_line_bytes=self.config.max_line_bytes,
            )
        else:
            self.stats.malformed_lines += 1
            self.limiter.log(logger, logging.WARNING, "acc_bad_utf8", "acc_bad_utf8", ip=peer)


async def _close(stream: trio.SocketStream) -> None:
    with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
        scope.shield = True
        await stream.aclose()


async def serve_acc(
    config: AccConfig,
    events: trio.MemorySendChannel[object],
    stats: AccStats,
    *,
    mono_ns: Callable[[], int] = time.monotonic_ns,
    port_override: int | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen forever; `started(port)` with the bound port. Bind errors propagate (supervised)."""
    listener = _Listener(config, events, stats, mono_ns, parse_allow_list(config.allowed_ips))
    port = config.listener_port if port_override is None else port_override
    listeners = await trio.open_tcp_listeners(port, host=config.bind)
    try:
        bound = int(listeners[0].socket.getsockname()[1])
        stats.listening = True
        log_event(logger, logging.INFO, "acc_listening", bind=config.bind, port=bound)
        async with trio.open_nursery() as handler_nursery:
            await handler_nursery.start(
                functools.partial(
                    trio.serve_listeners,
                    listener.handle,
                    listeners,
                    handler_nursery=handler_nursery,
                )
            )
            task_status.started(bound)
    finally:
        stats.listening = False
