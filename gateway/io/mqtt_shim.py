"""Trio driver for paho-mqtt 2.x with the aiomqtt shape (README rule 6, interfaces.md §1.1).

paho speaks MQTT 3.1.1; this module only moves its bytes. The blocking `connect()` runs in a worker
thread, then the socket is serviced on the Trio thread (`wait_readable` → `loop_read`,
`wait_writable` → `loop_write`, a ticker → `loop_misc`). paho callbacks only append to deques that
the shim drains after each paho call; nothing touches Trio from a foreign thread. docs/mqtt-shim.md.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Self

import attrs
import paho.mqtt.client as paho
import trio
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.app.logs import RateLimiter

log = logging.getLogger("gateway.mqtt")

KEEPALIVE_S: Final = 30  # interfaces.md §1.1
CONNECT_TIMEOUT_S: Final = 10.0  # README rule 4: TCP connect + CONNACK
MAX_INFLIGHT: Final = 20  # interfaces.md §7: unacknowledged QoS 1 publishes
INBOUND_CAPACITY: Final = 1000  # socket → consumer hand-off; full → dropped and counted
MAX_PACKETS_PER_WAKE: Final = 256  # loop_read calls per readiness wake-up, then yield
MISC_INTERVAL_S: Final = 1.0  # loop_misc cadence (keep-alive); at most keepalive / 4
CLOSE_TIMEOUT_S: Final = 1.0  # bound on writing DISCONNECT when leaving `async with`
FAST_PATH_BUDGET: Final = 4 * MAX_PACKETS_PER_WAKE  # > one read burst, so the consumer keeps up
_OK: Final = MQTTErrorCode.MQTT_ERR_SUCCESS


class MqttError(Exception):
    """Root of every error the shim raises."""


class MqttCodeError(MqttError):
    """A paho error code, CONNACK or SUBACK failure; `rc` holds the code."""

    def __init__(self, rc: int, detail: str | None = None) -> None:
        self.rc = rc
        super().__init__(f"[code:{rc}] {detail or paho.error_string(rc)}")


class MqttReentrantError(MqttError):
    """`async with client:` entered while the client is already in use."""


@attrs.frozen
class Message:
    """One inbound PUBLISH; `recv_ns` = monotonic ns right after the socket became readable."""

    topic: str
    payload: bytes
    qos: int
    recv_ns: int


@attrs.frozen
class Connack:
    session_present: bool
    code: int


@attrs.define(slots=True, eq=False)
class Delivery:
    """Completion of one publish: QoS 1 completes on PUBACK, QoS 0 at once."""

    mid: int
    done: bool = False
    error: MqttError | None = None
    _event: trio.Event | None = None

    def _resolve(self, error: MqttError | None = None) -> None:
        self.done, self.error = True, error
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        """Return once acknowledged; raise `MqttError` if the connection was lost first."""
        if not self.done:
            if self._event is None:
                self._event = trio.Event()
            await self._event.wait()
        else:
            await trio.lowlevel.checkpoint()
        if self.error is not None:
            raise self.error


def _has_pending_bytes(sock: socket.socket) -> bool:
    """True when another `loop_read()` has something to read (EOF and errors included)."""
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


class MqttClient:
    """`async with MqttClient(...) as c:` = one connection, exactly one CONNACK.

    Reusable, not reentrant; reconnecting is the caller's loop around `async with` (aiomqtt
    style), so "re-subscribe after every CONNACK" means "subscribe inside the `async with`".
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = KEEPALIVE_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        max_inflight: int = MAX_INFLIGHT,
        inbound_capacity: int = INBOUND_CAPACITY,
        on_connack: Callable[[Connack], None] | None = None,
    ) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self._credentials = (username, password) if username and password is not None else None
        self._keepalive = keepalive
        self._connect_timeout_s = connect_timeout_s
        self._max_inflight = max_inflight
        self._inbound_capacity = inbound_capacity
        self._on_connack = on_connack
        self._limiter = RateLimiter()
        self._active = False
        self.messages_received = 0  # cumulative over connections
        self.inbound_dropped = 0  # inbound channel full
        # per-connection state, reset by _reset()
        self._paho: paho.Client | None = None
        self._sock: socket.socket | None = None
        self._trio_thread = 0
        self._connack: Connack | None = None
        self._lost: MqttCodeError | None = None
        self._inbox: collections.deque[paho.MQTTMessage] = collections.deque()
        self._acks: collections.deque[int] = collections.deque()
        self._subacks: collections.deque[tuple[int, list[ReasonCode]]] = collections.deque()
        self._connacks: collections.deque[tuple[bool, ReasonCode]] = collections.deque()
        self._disconnects: collections.deque[int] = collections.deque()
        self._deliveries: dict[int, Delivery] = {}
        self._recv_ns = 0
        self._reset()

    def _reset(self) -> None:
        self._paho, self._sock, self._connack, self._lost = None, None, None, None
        self._created: paho.Client | None = None
        self._closing = False
        for queue in (self._inbox, self._acks, self._subacks, self._connacks, self._disconnects):
            queue.clear()
        self._deliveries = {}
        self._settled = trio.Event()  # CONNACK handled or connection lost
        self._disconnected = trio.Event()
        self._write_wanted = trio.Event()
        self._flushed = trio.Event()
        self._flushed.set()
        self._service_scope = trio.CancelScope()
        self._stack = contextlib.AsyncExitStack()
        send, recv = trio.open_memory_channel[Message](self._inbound_capacity)
        self._inbound_send, self._inbound_recv = send, recv

    # ---- public API -------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connack is not None and self._lost is None and self._paho is not None

    @property
    def messages(self) -> _MessageIterator:
        """Inbound messages of the current connection; ends with `MqttError` when it is lost."""
        if not self._active:
            raise MqttError("client is not connected")
        return _MessageIterator(self, self._inbound_recv)

    async def wait_disconnected(self) -> None:
        """Return once the current connection is lost (or closed)."""
        await self._disconnected.wait()

    async def subscribe(self, topic: str, qos: int = 0) -> None:
        """Send SUBSCRIBE and wait for the SUBACK; a refused subscription raises."""
        client = self._require_connected()
        rc, mid = client.subscribe(topic, qos)
        if rc != _OK or mid is None:
            self._drain()
            raise MqttCodeError(rc)
        waiter = Delivery(mid)
        self._deliveries[-mid] = waiter  # negative keys: SUBACK waiters share the map
        self._drain()
        await waiter.wait()

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0) -> Delivery:
        """Queue a PUBLISH without waiting.

        QoS 0 raises `trio.WouldBlock` while earlier bytes still wait for the socket (the
        caller decides whether to drop); QoS 1 returns a `Delivery` that completes on PUBACK.
        """
        client = self._require_connected()
        if qos == 0 and client.want_write():
            raise trio.WouldBlock
        if qos and client.on_publish is None:
            # paho builds ReasonCode + Properties objects for every QoS 0 write when on_publish
            # is set (~13 µs a message, measured by the bench), so it is installed only while a
            # QoS 1 PUBACK is awaited; `_drain` removes it again
            client.on_publish = self._on_publish
        info = client.publish(topic, payload, qos)
        delivery = Delivery(info.mid, done=qos == 0)
        if qos and info.rc == _OK:
            self._deliveries[info.mid] = delivery
        self._drain()
        if info.rc != _OK:
            raise MqttCodeError(info.rc)
        return delivery

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        """Publish; QoS 0 waits for socket room, QoS 1 waits for the PUBACK."""
        while True:
            try:
                delivery = self.publish_nowait(topic, payload, qos)
            except trio.WouldBlock:
                if self._flushed.is_set():
                    self._flushed = trio.Event()
                    self._write_wanted.set()
                await self._flushed.wait()
            else:
                break
        await delivery.wait()

    # ---- context manager ----------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if self._active:
            raise MqttReentrantError("MqttClient is already connected")
        self._active = True
        self._reset()
        try:
            await self._open()
        except BaseException:
            self._active = False
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._close()
        finally:
            self._active = False

    async def _open(self) -> None:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        if self._credentials is not None:
            client.username_pw_set(*self._credentials)
        client.max_inflight_messages_set(self._max_inflight)
        client.connect_timeout = self._connect_timeout_s
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = None  # installed by publish_nowait only while QoS 1 is in flight
        client.on_subscribe = self._on_subscribe
        self._created = client
        self._trio_thread = threading.get_ident()
        nursery = await self._stack.enter_async_context(trio.open_nursery())
        try:
            with trio.fail_after(self._connect_timeout_s):
                try:
                    rc = await trio.to_thread.run_sync(
                        client.connect, self.host, self.port, self._keepalive,
                        abandon_on_cancel=True,
                    )  # fmt: skip
                except (OSError, ValueError) as exc:
                    raise MqttError(f"connect to {self.host}:{self.port} failed: {exc}") from exc
                if rc != _OK:
                    raise MqttCodeError(rc)
                sock = client.socket()
                if not isinstance(sock, socket.socket):
                    raise MqttError("paho returned no TCP socket")
                self._paho, self._sock = client, sock
                await nursery.start(self._serve, client, sock)
                await self._settled.wait()
        except trio.TooSlowError as exc:
            await self._close()
            raise MqttError(f"connect to {self.host}:{self.port} timed out") from exc
        except BaseException:
            await self._close()
            raise
        if self._lost is not None:
            await self._close()
            raise self._lost
        if self._on_connack is not None and self._connack is not None:
            self._on_connack(self._connack)

    async def _close(self) -> None:
        """Stop the service tasks, send DISCONNECT (bounded), close the socket."""
        self._closing = True
        self._service_scope.cancel()
        client, sock = self._paho, self._sock
        try:
            # the nursery exit cannot sit inside a new (shielded) scope: it was entered first
            await self._stack.__aexit__(None, None, None)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                if client is not None and sock is not None and self.connected:
                    client.disconnect()
                    while client.want_write() and client.socket() is not None:
                        await trio.lowlevel.wait_writable(sock)
                        client.loop_write()
            if sock is not None and sock.fileno() >= 0:
                sock.close()
            self._connection_lost(MQTTErrorCode.MQTT_ERR_NO_CONN)
            self._paho = None
            if self._created is not None:  # its __del__ may close a socket after trio.run ends
                self._created.on_socket_close = None
                self._created.on_socket_open = None

    # ---- service tasks (Trio thread) ------------------------------------------------------------
    async def _serve(
        self,
        client: paho.Client,
        sock: socket.socket,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with self._service_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_loop, client, sock)
                nursery.start_soon(self._write_loop, client, sock)
                nursery.start_soon(self._misc_loop, client)
                task_status.started()

    async def _read_loop(self, client: paho.Client, sock: socket.socket) -> None:
        while self._lost is None:
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:  # paho closed it in another task (notify_closing)
                self._connection_lost(MQTTErrorCode.MQTT_ERR_CONN_LOST)
                return
            self._recv_ns = time.monotonic_ns()
            for _ in range(MAX_PACKETS_PER_WAKE):
                if client.loop_read() != _OK or not _has_pending_bytes(sock):
                    break
            self._drain()

    async def _write_loop(self, client: paho.Client, sock: socket.socket) -> None:
        while self._lost is None:
            await self._write_wanted.wait()
            self._write_wanted = trio.Event()
            while client.want_write() and self._lost is None:
                try:
                    await trio.lowlevel.wait_writable(sock)
                except trio.ClosedResourceError:
                    self._connection_lost(MQTTErrorCode.MQTT_ERR_CONN_LOST)
                    return
                client.loop_write()
                self._drain()
            self._flushed.set()

    async def _misc_loop(self, client: paho.Client) -> None:
        interval = min(MISC_INTERVAL_S, self._keepalive / 4)
        while self._lost is None:
            await trio.sleep(interval)
            client.loop_misc()
            self._drain()

    def _drain(self) -> None:
        """Move what paho's callbacks appended into Trio objects; called after every paho call."""
        if self._inbox:
            self._deliver()
        acks, deliveries = self._acks, self._deliveries
        if acks:
            while acks:
                delivery = deliveries.pop(acks.popleft(), None)
                if delivery is not None:
                    delivery._resolve()
            client = self._paho
            if client is not None and not any(mid > 0 for mid in deliveries):
                client.on_publish = None
        while self._subacks:
            mid, codes = self._subacks.popleft()
            waiter = deliveries.pop(-mid, None)
            failed = [c.value for c in codes if c.is_failure]
            if waiter is not None:
                waiter._resolve(
                    MqttCodeError(failed[0], "subscription refused") if failed else None
                )
        if self._connacks:
            session_present, reason = self._connacks.popleft()
            if reason.is_failure:
                self._connection_lost(reason.value, f"CONNACK refused: {reason}")
            else:
                self._connack = Connack(session_present, reason.value)
                self._settled.set()
        if self._disconnects or (self._paho is not None and self._paho.socket() is None):
            code = self._disconnects[0] if self._disconnects else MQTTErrorCode.MQTT_ERR_CONN_LOST
            self._connection_lost(code)
        elif self._paho is not None and self._paho.want_write():
            self._write_wanted.set()
            if self._flushed.is_set():
                self._flushed = trio.Event()

    def _deliver(self) -> None:
        recv_ns, send, inbox = self._recv_ns, self._inbound_send, self._inbox
        while inbox:
            raw = inbox.popleft()
            try:
                topic = raw.topic
            except UnicodeDecodeError:
                continue  # [MQTT-4.7.3-2] topics are UTF-8; paho already logged it
            self.messages_received += 1
            payload = raw.payload if isinstance(raw.payload, bytes) else bytes(raw.payload)
            try:
                send.send_nowait(Message(topic, payload, raw.qos, recv_ns))
            except trio.WouldBlock:
                self.inbound_dropped += 1
                self._limiter.log(
                    log, logging.WARNING, "inbound_full", "mqtt_inbound_full",
                    client_id=self.client_id, dropped_total=self.inbound_dropped,
                )  # fmt: skip
            except trio.ClosedResourceError:
                return  # connection already torn down

    def _connection_lost(self, rc: int, detail: str | None = None) -> None:
        if self._lost is not None:
            return
        self._lost = MqttCodeError(rc, detail)
        for waiter in self._deliveries.values():
            waiter._resolve(self._lost)
        self._deliveries.clear()
        self._inbound_send.close()
        self._settled.set()
        self._disconnected.set()
        self._flushed.set()
        self._write_wanted.set()
        self._service_scope.cancel()

    def _require_connected(self) -> paho.Client:
        if self._lost is not None:
            raise MqttCodeError(self._lost.rc, "connection lost")
        if self._paho is None or self._connack is None:
            raise MqttError("client is not connected")
        return self._paho

    # ---- paho callbacks: append only (socket open/close run plain socket calls) ----------------
    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # interfaces.md §1.1: Nagle off right after connect (runs in the connect thread)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho is about to close the fd: wake Trio waiters first (only on the Trio thread)
        if threading.get_ident() == self._trio_thread and sock.fileno() >= 0:
            trio.lowlevel.notify_closing(sock)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connacks.append((flags.session_present, reason))

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._disconnects.append(reason.value)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._inbox.append(message)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties,
    ) -> None:
        self._acks.append(mid)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._subacks.append((mid, reasons))


class _MessageIterator:
    """`async for msg in client.messages`: drains without a checkpoint while messages wait."""

    __slots__ = ("_client", "_fast", "_recv")

    def __init__(self, client: MqttClient, recv: trio.MemoryReceiveChannel[Message]) -> None:
        self._client, self._recv, self._fast = client, recv, 0

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        self._fast += 1
        try:
            if self._fast < FAST_PATH_BUDGET:
                try:
                    return self._recv.receive_nowait()
                except trio.WouldBlock:
                    pass
            self._fast = 0
            return await self._recv.receive()
        except trio.EndOfChannel:
            lost = self._client._lost
            if lost is not None and not self._client._closing:
                raise MqttCodeError(lost.rc, "connection lost") from None
            raise StopAsyncIteration from None
