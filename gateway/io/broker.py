"""Embedded MQTT broker for demos and tiny sites: amqtt in its own thread and asyncio loop.

Only with a `[broker]` section (interfaces.md §11.1, S145); production runs Mosquitto (README
"Deployment"). We bind the listening socket ourselves and hand accepted connections to amqtt
as an *external* listener, so a bind failure is a plain `OSError` raised in the caller's thread,
every accepted socket gets TCP_NODELAY, and oversized packets are refused before buffering.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import attrs
import trio
from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker

from gateway.app.logs import RateLimiter, log_event
from gateway.config.model import BrokerConfig

log = logging.getLogger("gateway.broker")

BrokerState = Literal["starting", "ok", "degraded", "stopped"]

START_TIMEOUT_S = 10.0  # amqtt imports its plugins on first start: ~0.3 s here, slow SD cards more
STOP_TIMEOUT_S = 5.0  # joins the thread; the loop's own shutdown is bounded below that
LOOP_SHUTDOWN_S = 3.0  # amqtt's broadcast-loop shutdown may wait up to 5 s on stuck clients
RUN_STOP_BOUND_S = STOP_TIMEOUT_S + 1.0  # run_broker's shielded stop on cancellation
LISTEN_BACKLOG = 128
# a client that opens TCP and never sends CONNECT would otherwise hold a handler forever
CONNECT_TIMEOUT_S = 10.0
ACCEPT_RETRY_S = 1.0  # pause after accept() fails for lack of descriptors (asyncio uses 1 s)
# README "Dependencies": 256 KiB payloads must pass; 4× headroom, and a cap at all so one client
# cannot make the broker buffer an MQTT maximum packet (256 MiB).
MAX_PACKET_BYTES = 1024 * 1024
_LISTENER = "default"  # amqtt requires a listener of this name; ours is "external"
_QUIET_LOGGERS = ("amqtt", "transitions")  # amqtt logs every connection at INFO


class BrokerError(Exception):
    """The embedded broker could not start or stop (message names the address and the cause)."""


class PacketTooLargeError(Exception):
    """A client announced a packet above `MAX_PACKET_BYTES`; its connection is closed."""


@attrs.define(slots=True)
class BrokerStats:
    """Live state for /health component `broker` (interfaces.md §8)."""

    state: BrokerState = "stopped"
    detail: str = ""
    started_wall_ms: int | None = None
    bind: str = ""
    port: int = 0  # the bound port (differs from the config only for port 0)
    connections: int = 0
    refused_packets: int = 0

    def health(self) -> dict[str, Any]:
        """`ok` while serving, `degraded` otherwise (failed to bind, starting, stopped)."""
        out: dict[str, Any] = {
            "state": "ok" if self.state == "ok" else "degraded",
            "bind": self.bind,
            "port": self.port,
            "connections": self.connections,
        }
        if self.detail:
            out["detail"] = self.detail
        return out


def _amqtt_config() -> dict[str, Any]:
    """Anonymous access, one external listener, no $SYS topics, no packet/event log plugins."""
    return {
        "listeners": {_LISTENER: {"type": "external"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


def quiet_library_logs() -> None:
    """amqtt/transitions to WARNING unless the gateway itself logs at DEBUG (--log-level debug)."""
    level = logging.NOTSET if logging.getLogger().isEnabledFor(logging.DEBUG) else logging.WARNING
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)


def _bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # create_server sets SO_REUSEADDR (TIME_WAIT after a restart is fine, a live listener is not)
    return socket.create_server((address, port), family=family, backlog=LISTEN_BACKLOG)


class _CappedReader(StreamReaderAdapter):  # type: ignore[misc]
    """Replays the byte we peeked, then refuses any read above the packet cap before buffering.

    amqtt reads the fixed header byte by byte and each body field with one `read(n)`.
    """

    def __init__(
        self, reader: asyncio.StreamReader, head: bytes, on_refused: Callable[[int], None]
    ) -> None:
        super().__init__(reader)
        self._head = head
        self._on_refused = on_refused

    async def read(self, n: int = -1) -> bytes:
        if n > MAX_PACKET_BYTES:
            self._on_refused(n)
            raise PacketTooLargeError(f"packet field of {n} bytes > {MAX_PACKET_BYTES}")
        head, self._head = self._head, b""
        if n == len(head):
            return head
        rest: bytes = await super().read(n if n < 0 else n - len(head))
        return head + rest


class EmbeddedBroker:
    """amqtt on a daemon thread with its own loop; `start()`/`stop()` are sync and bounded."""

    def __init__(
        self,
        config: BrokerConfig,
        stats: BrokerStats,
        *,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._stats = stats
        self._on_exit = on_exit  # called from the broker thread if its loop ends unasked
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._stopping = False
        self._serving = False
        self._conn_tasks: set[asyncio.Task[Any]] = set()
        self._limiter = RateLimiter()  # ≤ 1 warning/s per kind (interfaces.md §12)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Bind, start the broker thread and return once it serves; else raise `BrokerError`."""
        if self._thread is not None:
            raise BrokerError("embedded broker already started")
        cfg, stats = self._config, self._stats
        where = f"{cfg.bind_address}:{cfg.port}"
        stats.state, stats.detail = "starting", ""
        stats.bind, stats.port = cfg.bind_address, cfg.port
        quiet_library_logs()
        try:
            sock = _bind(cfg.bind_address, cfg.port)
        except OSError as exc:
            stats.state, stats.detail = "degraded", f"bind {where} failed: {exc}"
            log_event(log, logging.ERROR, "broker_bind_failed", bind=where, error=str(exc))
            raise BrokerError(f"embedded broker cannot bind {where}: {exc}") from exc
        stats.port = sock.getsockname()[1]
        self._ready.clear()
        self._start_error = None
        self._stopping = self._serving = False
        self._thread = threading.Thread(
            target=self._thread_main, args=(sock,), name="gateway-broker", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self._abort(f"not serving after {timeout_s} s")
            raise BrokerError(f"embedded broker on {where} not serving after {timeout_s} s")
        if self._start_error is not None:
            error = self._start_error
            self._abort(f"start failed: {error!r}")
            raise BrokerError(f"embedded broker on {where} failed to start: {error!r}") from error
        stats.state, stats.started_wall_ms = "ok", time.time_ns() // 1_000_000
        log_event(log, logging.INFO, "broker_started", bind=cfg.bind_address, port=stats.port)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Close the listener and every client, end the loop and join the thread (idempotent)."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._request_loop_stop()
        thread.join(timeout_s)
        if thread.is_alive():
            self._stats.detail = f"thread still alive {timeout_s} s after stop"
            raise BrokerError(f"embedded broker thread did not stop within {timeout_s} s")
        self._thread = None
        self._stats.connections = 0
        if self._stats.state != "degraded":  # a crash stays visible until the next start
            self._stats.state = "stopped"
        log_event(log, logging.INFO, "broker_stopped", port=self._stats.port)

    def _abort(self, detail: str) -> None:
        with contextlib.suppress(BrokerError):
            self.stop()
        self._stats.state, self._stats.detail = "degraded", detail

    def _request_loop_stop(self) -> None:
        loop, event = self._loop, self._stop_event
        if loop is None or event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed on its own
            loop.call_soon_threadsafe(event.set)

    def _thread_main(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._serve(sock))
        except Exception as exc:  # thread boundary: report to start() or to the owner, not stderr
            self._start_error = self._start_error or exc
            self._stats.detail = f"broker loop crashed: {exc!r}"
        finally:
            sock.close()  # no-op when _serve already closed it
            self._loop = self._stop_event = None
            self._ready.set()
            if self._serving and not self._stopping:
                self._stats.state = "degraded"
                self._stats.detail = self._stats.detail or "broker loop ended unexpectedly"
                log_event(log, logging.ERROR, "broker_exited", detail=self._stats.detail)
                if self._on_exit is not None:
                    self._on_exit()

    async def _serve(self, sock: socket.socket) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._stop_event = stop_event = asyncio.Event()
        if self._stopping:  # start() gave up before the loop existed
            return
        broker = Broker(_amqtt_config())
        try:
            await broker.start()
        except BaseException as exc:
            self._start_error = exc
            raise
        # Our own accept callback, not asyncio.start_server: in 3.11 a connection accepted just
        # before Server.close() fails transport creation and leaks its socket; here every
        # accepted socket becomes a tracked task synchronously, and removing the reader is final.
        sock.setblocking(False)
        loop.add_reader(sock, self._accept, broker, sock)
        self._serving = True
        self._ready.set()
        try:
            await stop_event.wait()
        finally:
            loop.remove_reader(sock)
            sock.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(broker.shutdown(), LOOP_SHUTDOWN_S)  # closes sessions
            pending = list(self._conn_tasks)  # e.g. connections that never sent CONNECT
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=LOOP_SHUTDOWN_S)

    def _accept(self, broker: Broker, sock: socket.socket) -> None:
        """Reader callback: accept everything queued; one handler task per connection."""
        loop = asyncio.get_running_loop()
        for _ in range(LISTEN_BACKLOG):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE/ENFILE/ENOBUFS: pause like asyncio's own server
                self._limiter.log(
                    log, logging.ERROR, "accept", "broker_accept_failed", error=str(exc)
                )
                loop.remove_reader(sock)
                loop.call_later(ACCEPT_RETRY_S, self._resume_accept, broker, sock)
                return
            # Nagle off on the broker's legs (measured-mqtt-floor.md: ~13 ms per hop with it on)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._handle(broker, conn))
            self._conn_tasks.add(task)
            task.add_done_callback(functools.partial(self._handled, conn))

    def _resume_accept(self, broker: Broker, sock: socket.socket) -> None:
        if not self._stopping:
            asyncio.get_running_loop().add_reader(sock, self._accept, broker, sock)

    def _handled(self, conn: socket.socket, task: asyncio.Task[None]) -> None:
        self._conn_tasks.discard(task)
        conn.close()  # no-op after the transport closed it; covers a task cancelled before it ran
        if not task.cancelled() and (exc := task.exception()) is not None:
            log_event(log, logging.ERROR, "broker_connection_failed", error=repr(exc))

    async def _handle(self, broker: Broker, conn: socket.socket) -> None:
        """One client: peek the first byte (a bare port probe stays silent), then amqtt."""
        self._stats.connections += 1
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
            try:
                head = await asyncio.wait_for(reader.read(1), CONNECT_TIMEOUT_S)
                if head:  # b"": closed without a CONNECT, which amqtt would log as an ERROR
                    adapter = _CappedReader(reader, head, self._refused)
                    await broker.external_connected(adapter, StreamWriterAdapter(writer), _LISTENER)
            finally:
                writer.close()
        except TimeoutError:
            self._limiter.log(log, logging.WARNING, "connect", "broker_connect_timeout")
        except (PacketTooLargeError, OSError):
            pass  # counted and logged by `_refused`; or the client went away (ENOTCONN, reset)
        finally:
            self._stats.connections -= 1

    def _refused(self, size: int) -> None:
        self._stats.refused_packets += 1
        self._limiter.log(
            log, logging.WARNING, "size", "broker_packet_refused", bytes=size, max=MAX_PACKET_BYTES
        )


async def run_broker(
    config: BrokerConfig,
    stats: BrokerStats,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Supervised task: start, report `started()`, serve until cancelled, then stop (bounded).

    A bind failure raises `BrokerError` (health `degraded`, the supervisor retries with backoff);
    so does the broker thread ending on its own.
    """
    token = trio.lowlevel.current_trio_token()
    exited = trio.Event()

    def _on_exit() -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(exited.set)

    broker = EmbeddedBroker(config, stats, on_exit=_on_exit)
    try:
        await trio.to_thread.run_sync(broker.start)
        task_status.started()
        await exited.wait()
        raise BrokerError(f"embedded broker stopped unexpectedly: {stats.detail}")
    finally:
        with trio.move_on_after(RUN_STOP_BOUND_S, shield=True):
            try:
                await trio.to_thread.run_sync(broker.stop)
            except BrokerError as exc:
                log_event(log, logging.WARNING, "broker_stop_failed", error=str(exc))
