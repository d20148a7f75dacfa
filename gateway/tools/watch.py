"""`gateway watch`: print a running gateway's live feed, one line per message (interfaces.md §10).

Exit 0 on Ctrl-C (or SIGTERM), 1 when it cannot connect or the feed ends, unless `--retry`, which
reconnects with a growing delay. Lines go to stdout and are flushed one by one, so `watch | grep`
works; connection notes go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any, Final, TextIO

import attrs
import trio
import trio_websocket

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # interfaces.md §10: cannot connect (without --retry)
DEFAULT_URL: Final = "ws://127.0.0.1:9090/ws"
CONNECT_TIMEOUT_S: Final = 5.0  # TCP + WebSocket handshake
CLOSE_TIMEOUT_S: Final = 1.0
RETRY_MIN_S: Final = 0.5
RETRY_MAX_S: Final = 10.0
# the server sends a heartbeat every 15 s (interfaces.md §8): silence this long = a dead feed
SILENCE_S: Final = 45.0
KIND_WIDTH: Final = 9
LIST_PREVIEW: Final = 4  # list items printed before "…+N"
# human summaries: the fields worth a glance per kind, in order (others are left to --json)
SUMMARY_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "journey": ("out", "tids", "auth", "acc", "dwell", "gate_cmd", "gate_open", "jid"),
    "zone": ("t", "tid", "z", "auth", "dwell_ms", "total_dwell_ms"),
    "track": ("t", "tid", "prev_tid", "auth", "dwell_ms", "parent_jid"),
    "gate": ("state", "tid", "src", "reason", "send_latency_us", "recv_to_wire_us", "trigger"),
    "acc": ("t", "ip", "pos", "tid", "receipt", "reason", "delta_ms"),
    "position": ("tid", "x", "y", "obj_type"),
    "metrics": (
        "health",
        "events_per_sec",
        "events_total",
        "active_tracks",
        "authorized_tracks",
        "gate_cmds",
        "lat_p99_us",
        "gate_lat_p99_us",
        "event_queue_depth",
    ),
    "door": ("status", "fault", "alarm", "source"),
    "dropped": ("count",),
}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "watch",
        help="print the live feed of a running gateway",
        description="Print the gateway live feed (WS /ws), one line per message. "
        "Exit 0 on Ctrl-C, 1 when it cannot connect (without --retry).",
    )
    p.add_argument(
        "--url", type=_feed_url, default=DEFAULT_URL, help=f"feed URL (default {DEFAULT_URL})"
    )
    p.add_argument(
        "--kinds",
        type=_kinds,
        metavar="K1,K2",
        help="only these kinds (hello, journey, zone, track, gate, acc, metrics, position, "
        "door, health, heartbeat, dropped)",
    )
    p.add_argument("--json", action="store_true", help="print each message as received (JSON)")
    p.add_argument("--retry", action="store_true", help="keep reconnecting instead of exiting")
    p.set_defaults(func=run)


def _kinds(text: str) -> frozenset[str]:
    kinds = frozenset(k.strip() for k in text.split(",") if k.strip())
    if not kinds:
        raise argparse.ArgumentTypeError("expected a comma-separated list of kinds")
    return kinds


# ---- formatting ---------------------------------------------------------------------------------


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        shown = ",".join(_value(v) for v in value[:LIST_PREVIEW])
        more = f",…+{len(value) - LIST_PREVIEW}" if len(value) > LIST_PREVIEW else ""
        return f"[{shown}{more}]"
    if isinstance(value, dict):
        return "{…}"
    return str(value)


def _pairs(data: dict[str, Any], keys: Iterable[str]) -> str:
    return " ".join(f"{k}={_value(data[k])}" for k in keys if k in data)


def _summary(kind: str, data: dict[str, Any]) -> str:
    if kind == "hello":
        zones = data.get("zones") or {}
        door = (data.get("door") or {}).get("status")
        health = (data.get("health") or {}).get("status")
        head = _pairs(data, ("site", "version"))
        return f"{head} zones={len(zones)} door={door} health={health}"
    if kind == "health":
        components = data.get("components") or {}
        notable = (  # only what needs attention: ok and disabled components are left out
            f"{name}={c.get('state')}"
            for name, c in components.items()
            if c.get("state") not in ("ok", "disabled")
        )
        return " ".join((f"status={data.get('status')}", *notable))
    keys = SUMMARY_FIELDS.get(kind)
    if keys is None:  # a kind this version does not know: everything but the envelope fields
        keys = tuple(k for k in data if k not in ("site", "ts"))
    return _pairs(data, keys)


def format_line(raw: str) -> str:
    """One human line for one feed message: local time, kind, the key fields."""
    try:
        message = json.loads(raw)
        kind = str(message["kind"])
        ts_ms = int(message["ts"])
        data = message["data"]
    except (ValueError, KeyError, TypeError):
        return f"?? {raw}"
    stamp = time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000)) + f".{ts_ms % 1000:03d}"
    body = _summary(kind, data) if isinstance(data, dict) else _value(data)
    return f"{stamp} {kind:<{KIND_WIDTH}} {body}".rstrip()


def message_kind(raw: str) -> str | None:
    try:
        kind = json.loads(raw).get("kind")
    except (ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


# ---- the feed loop ------------------------------------------------------------------------------


@attrs.define(slots=True)
class Printer:
    """Filters by kind and writes one flushed line per message; False once stdout is gone."""

    kinds: frozenset[str] | None
    raw_json: bool
    out: TextIO
    printed: int = 0

    def __call__(self, raw: str) -> bool:
        if self.kinds is not None and message_kind(raw) not in self.kinds:
            return True
        try:
            self.out.write((raw if self.raw_json else format_line(raw)) + "\n")
            self.out.flush()
        except BrokenPipeError:  # `gateway watch | head`: the reader left, a normal end
            _silence_stdout()
            return False
        self.printed += 1
        return True


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _note(text: str) -> None:
    print(f"gateway watch: {text}", file=sys.stderr, flush=True)


@attrs.frozen
class FeedUrl:
    host: str
    port: int
    resource: str  # path and query
    secure: bool
    text: str

    @classmethod
    def parse(cls, text: str) -> FeedUrl:
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"expected ws://HOST[:PORT]/PATH, got {text!r}")
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.hostname, port, resource, secure, text)


def _feed_url(text: str) -> FeedUrl:
    try:
        return FeedUrl.parse(text)
    except ValueError as exc:  # also a port out of range
        raise argparse.ArgumentTypeError(str(exc)) from None


# before the handshake completes: refused, unknown host, TLS, HTTP rejection, timeout
CONNECT_ERRORS: Final = (
    OSError,
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio_websocket.HandshakeError,
)
Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]


@attrs.frozen
class Attempt:
    connected: bool
    problem: str | None  # None: stdout closed, stop quietly


async def _read(
    ws: trio_websocket.WebSocketConnection, on_message: Callable[[str], bool]
) -> str | None:
    """Messages to `on_message` until the feed ends (returns why) or it says stop (None)."""
    while True:
        with trio.move_on_after(SILENCE_S) as silence:
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed as closed:
                reason = closed.reason
                why = "" if reason is None else f" ({reason.code} {reason.name})"
                return f"closed by the server{why}"
        if silence.cancelled_caught:
            return f"no message for {SILENCE_S:.0f} s"
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        if not on_message(message):
            return None


async def _session(
    nursery: trio.Nursery, stream: Stream, url: FeedUrl, on_message: Callable[[str], bool]
) -> Attempt:
    host = url.host if url.port in (80, 443) else f"{url.host}:{url.port}"
    try:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            ws = await trio_websocket.wrap_client_stream(nursery, stream, host, url.resource)
    except CONNECT_ERRORS as exc:
        return Attempt(False, f"cannot connect to {url.text}: {_describe(exc)}")
    _note(f"connected to {url.text}")
    problem = await _read(ws, on_message)
    with trio.move_on_after(CLOSE_TIMEOUT_S):
        await ws.aclose()
    return Attempt(True, problem)


async def follow_feed(url: FeedUrl, on_message: Callable[[str], bool]) -> Attempt:
    """One connection: connect, read until it ends. The socket is ours and always closed
    (trio-websocket 0.12 leaves a client socket open after a close the server started)."""
    try:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            tcp = await trio.open_tcp_stream(url.host, url.port)
    except CONNECT_ERRORS as exc:
        return Attempt(False, f"cannot connect to {url.text}: {_describe(exc)}")
    stream: Stream = tcp
    if url.secure:
        stream = trio.SSLStream(tcp, ssl.create_default_context(), server_hostname=url.host)
    try:
        async with trio.open_nursery() as nursery:
            attempt = await _session(nursery, stream, url, on_message)
            nursery.cancel_scope.cancel()
    finally:
        with trio.move_on_after(CLOSE_TIMEOUT_S) as cleanup:
            cleanup.shield = True
            await stream.aclose()
    return attempt


def _describe(exc: BaseException) -> str:
    """trio-websocket wraps some errors in a bare HandshakeError: show the cause instead."""
    cause = exc.__cause__ or exc.__context__
    return str(exc) or (str(cause) if cause is not None else "") or type(exc).__name__


async def watch(url: FeedUrl, printer: Printer, retry: bool) -> int:
    """Follow the feed; without `retry` return 1 on the first failure, with it reconnect forever."""
    delay = RETRY_MIN_S
    while True:
        attempt = await follow_feed(url, printer)
        if attempt.problem is None:
            return EXIT_OK
        if not retry:
            _note(attempt.problem)
            return EXIT_FAILED
        if attempt.connected:
            delay = RETRY_MIN_S  # it was up: start the back-off again
        _note(f"{attempt.problem}; retrying in {delay:.1f} s")
        await trio.sleep(delay)
        delay = min(RETRY_MAX_S, delay * 2)


async def _main(args: argparse.Namespace) -> int:
    printer = Printer(args.kinds, args.json, sys.stdout)
    code = EXIT_OK  # stays 0 when a signal ends the watch
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            async def follow() -> None:
                nonlocal code
                code = await watch(args.url, printer, args.retry)
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            nursery.start_soon(follow)
    return code


def run(args: argparse.Namespace) -> int:
    return trio.run(_main, args)
