"""`gateway replay` input and online publishers (simulation.md §5, interfaces.md §6, §10).

`RecordReader` turns JSONL lines (analysis-log records or raw Xovis messages) into timed records
and counts the lines it cannot use; `replay_online` and `republish_journeys` are the thin async
shell that sends them to a broker and to `POST /acc/simulate`. Offline replay: `replay_offline`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO, Final, Protocol

import attrs
import httpx
import msgspec
import trio

from gateway.codecs.acc_line import Receipt, classify_line
from gateway.codecs.journey_json import JourneyJsonError, decode_journey, encode_journey_mqtt
from gateway.codecs.rs485 import Rs485Error, decode_response, response_checksum_ok
from gateway.codecs.xovis import parse_time_ms
from gateway.core.model import DOOR_STATUSES, DoorStatus

DEFAULT_RAW_TOPIC: Final = "xovis/replay"  # interfaces.md §10: topic of raw messages (D*)
DEFAULT_JOURNEYS_TOPIC: Final = "gateway/journeys"  # interfaces.md §7
JOURNEYS_QOS: Final = 1  # interfaces.md §7: journeys QoS 1, PUBACK awaited
XOVIS_QOS: Final = 0  # interfaces.md §1.1: sensors publish at QoS 0
HEX_PREFIX: Final = "HEX:"  # interfaces.md §6: non-UTF-8 payloads
READ_CHUNK_LINES: Final = 256  # lines read per worker-thread call
MAX_UNTIMED_LEADING: Final = 10_000  # untimed raw messages held until the first timed record
MAX_EXAMPLES: Final = 5  # corrupt lines quoted in the report
ACC_ROUTE: Final = "/acc/simulate"  # interfaces.md §8
HTTP_TIMEOUT_S: Final = 5.0  # one ACC POST, connect included
KINDS: Final = ("mqtt", "raw", "acc", "rs485")  # record kinds counted by `ReadStats`

_DECODER: Final = msgspec.json.Decoder()
_RFC3339: Final = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:[Zz]|([+-])(\d\d):(\d\d))\Z",
    re.ASCII,
)
_EPOCH_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()
_NS: Final = 1_000_000_000


class ReplayLineError(ValueError):
    """A line that is neither a usable analysis-log record nor a raw Xovis message."""


class ReplayIOError(Exception):
    """The replay cannot go on: a file, the broker or the gateway URL failed (exit 1)."""


@attrs.frozen
class MqttRecord:
    """A captured MQTT message; `topic` None = a raw Xovis message (no topic captured)."""

    topic: str | None
    payload: bytes


@attrs.frozen
class AccRecord:
    kiosk_ip: str | None
    pos_zone: str | None
    receipt: str | None


@attrs.frozen
class DoorRecord:
    """An RS485 response; `status` from the frame when it decodes, else from `fields`."""

    frame: bytes
    checksum_ok: bool
    status: DoorStatus | None
    fault: int = 0
    alarm: int = 0


Record = MqttRecord | AccRecord | DoorRecord


@attrs.frozen
class Timed:
    """A record and its receipt time (wall-clock ns: `ts_recv`, or the raw message's frame time)."""

    ts_ns: int
    record: Record


def parse_ts_ns(text: str) -> int | None:
    """RFC 3339 (any offset, up to ns) → epoch ns; None when unparsable or before 1970."""
    m = _RFC3339.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, sign, off_h, off_m = m.groups()
    hh, mm, ss = int(hour), int(minute), int(second)
    if hh > 23 or mm > 59 or ss > 60:
        return None
    try:
        days = dt.date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    seconds = days * 86_400 + hh * 3600 + mm * 60 + ss
    if sign is not None:
        oh, om = int(off_h), int(off_m)
        if oh > 23 or om > 59:
            return None
        seconds -= (oh * 3600 + om * 60) * (1 if sign == "+" else -1)
    ns = seconds * _NS + (int(frac[:9].ljust(9, "0")) if frac else 0)
    return ns if ns >= 0 else None


def _hex_bytes(text: str) -> bytes:
    body = text.removeprefix(HEX_PREFIX)
    try:
        return bytes.fromhex("".join(body.split()))
    except ValueError as exc:
        raise ReplayLineError(f"payload_raw is not hex: {text[:40]!r}") from exc


def _opt_str(fields: dict[str, Any], key: str) -> str | None:
    value = fields.get(key)
    return value if isinstance(value, str) else None


def _mqtt(raw: str, fields: dict[str, Any]) -> MqttRecord:
    payload = _hex_bytes(raw) if raw.startswith(HEX_PREFIX) else raw.encode("utf-8")
    return MqttRecord(_opt_str(fields, "topic"), payload)


def _acc(raw: str, fields: dict[str, Any]) -> AccRecord:
    ip, pos, receipt = (_opt_str(fields, k) for k in ("kiosk_ip", "pos_zone", "receipt_id"))
    if receipt is None and isinstance(found := classify_line(raw), Receipt):
        receipt = found.receipt
    if ip is None and pos is None:
        raise ReplayLineError("acc record without kiosk_ip or pos_zone")
    return AccRecord(ip, pos, receipt)


def _door(raw: str, fields: dict[str, Any]) -> DoorRecord:
    frame = _hex_bytes(raw)
    recorded = fields.get("checksum_ok")
    ok = recorded if isinstance(recorded, bool) else response_checksum_ok(frame)
    try:
        resp = decode_response(frame)
    except Rs485Error:
        named = fields.get("door_status")
        status = next((s for s in DOOR_STATUSES if s == named), None)
        return DoorRecord(frame, ok, status)
    return DoorRecord(frame, ok, resp.door_status, resp.fault, resp.alarm)


_BY_SRC: Final[dict[str, Callable[[str, dict[str, Any]], Record]]] = {
    "mqtt": _mqtt,
    "acc": _acc,
    "rs485": _door,
}


def _raw_message_ts(doc: dict[str, Any]) -> int | None:
    live = doc.get("live_data")
    frames = live.get("frames") if isinstance(live, dict) else None
    first = frames[0] if isinstance(frames, list) and frames else None
    ms = parse_time_ms(first.get("time")) if isinstance(first, dict) else 0
    return ms * 1_000_000 if ms > 0 else None


def parse_line(line: bytes) -> tuple[int | None, Record]:
    """One non-blank line → (receipt ns or None for an untimed raw message, record)."""
    body = line.strip()
    try:
        doc = _DECODER.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ReplayLineError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ReplayLineError("not a JSON object")
    if "src" not in doc:
        if "live_data" not in doc:
            raise ReplayLineError("neither an analysis-log record nor a Xovis message")
        return _raw_message_ts(doc), MqttRecord(None, body)
    src, ts_text, raw = doc.get("src"), doc.get("ts_recv"), doc.get("payload_raw")
    build = _BY_SRC.get(src) if isinstance(src, str) else None
    if build is None:
        raise ReplayLineError(f"unknown src {str(src)[:20]!r}")
    ts = parse_ts_ns(ts_text) if isinstance(ts_text, str) else None
    if ts is None:
        raise ReplayLineError("ts_recv missing or not RFC 3339")
    if not isinstance(raw, str):
        raise ReplayLineError("payload_raw missing or not a string")
    fields = doc.get("fields")
    return ts, build(raw, fields if isinstance(fields, dict) else {})


def record_kind(record: Record) -> str:
    if isinstance(record, MqttRecord):
        return "mqtt" if record.topic is not None else "raw"
    return "acc" if isinstance(record, AccRecord) else "rs485"


@attrs.define(slots=True)
class ReadStats:
    lines: int = 0
    blank: int = 0
    corrupt: int = 0
    out_of_order: int = 0  # records older than the one before (replayed at the previous time)
    kinds: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(KINDS, 0))
    examples: list[str] = attrs.field(factory=list)

    @property
    def records(self) -> int:
        return sum(self.kinds.values())

    def count_corrupt(self, lineno: int, reason: str) -> None:
        self.corrupt += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"line {lineno}: {reason}")


@attrs.define(slots=True)
class RecordReader:
    """Lines → `Timed` records in file order (sans-I/O).

    An untimed raw message takes the time of the record before it; leading ones wait (at most
    `MAX_UNTIMED_LEADING`) for the first timed record and take its time.
    """

    stats: ReadStats = attrs.field(factory=ReadStats)
    _last_ts: int | None = None
    _pending: list[Record] = attrs.field(factory=list)

    def feed(self, line: bytes) -> list[Timed]:
        stats = self.stats
        stats.lines += 1
        if not line.strip():
            stats.blank += 1
            return []
        try:
            ts, record = parse_line(line)
        except ReplayLineError as exc:
            stats.count_corrupt(stats.lines, str(exc))
            return []
        if ts is None and self._last_ts is None:
            if len(self._pending) >= MAX_UNTIMED_LEADING:
                stats.count_corrupt(stats.lines, "raw message without frame time")
                return []
            self._pending.append(record)
            stats.kinds[record_kind(record)] += 1
            return []
        stats.kinds[record_kind(record)] += 1
        if ts is None or (self._last_ts is not None and ts < self._last_ts):
            stats.out_of_order += ts is not None
            ts = self._last_ts
        assert ts is not None
        self._last_ts = ts
        out = [Timed(ts, r) for r in self._pending]
        self._pending.clear()
        out.append(Timed(ts, record))
        return out

    def close(self) -> list[Timed]:
        """End of input: untimed leading messages with nothing timed after them get time 0."""
        out = [Timed(self._last_ts or 0, r) for r in self._pending]
        self._pending.clear()
        return out


# -- async shell ------------------------------------------------------------------------------

LineSource = Callable[[], Awaitable[list[bytes]]]  # the next lines; [] at the end of the input


def _read_lines(fh: BinaryIO) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(READ_CHUNK_LINES):
        line = fh.readline()
        if not line:
            break
        out.append(line)
    return out


def file_lines(fh: BinaryIO) -> LineSource:
    """Read `fh` in chunks on a worker thread; a read error raises `ReplayIOError`."""

    async def read() -> list[bytes]:
        try:
            return await trio.to_thread.run_sync(_read_lines, fh)
        except OSError as exc:
            raise ReplayIOError(f"cannot read input: {exc}") from exc

    return read


class Publisher(Protocol):
    """`MqttClient.publish`: QoS 0 waits for socket room, QoS 1 for the PUBACK."""

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None: ...


@attrs.define(slots=True)
class AccPoster:
    """ACC records → `POST <gateway_url>/acc/simulate?pos=…&receipt=…` (interfaces.md §8)."""

    client: httpx.AsyncClient
    gateway_url: str
    token: str | None = None

    async def post(self, pos: str, receipt: str | None) -> int:
        """→ HTTP status; `ReplayIOError` when the gateway cannot be reached."""
        params = {"pos": pos} if receipt is None else {"pos": pos, "receipt": receipt}
        headers = {} if self.token is None else {"Authorization": f"Bearer {self.token}"}
        url = self.gateway_url.rstrip("/") + ACC_ROUTE
        try:
            with trio.fail_after(HTTP_TIMEOUT_S):
                response = await self.client.post(url, params=params, headers=headers)
        except (httpx.HTTPError, trio.TooSlowError) as exc:
            raise ReplayIOError(f"cannot reach gateway at {url}: {exc or 'timed out'}") from exc
        return response.status_code


@attrs.define(slots=True)
class OnlineStats:
    published: int = 0
    acc_posted: int = 0
    acc_rejected: dict[int, int] = attrs.field(factory=dict)  # HTTP status → count
    acc_skipped: int = 0  # no --gateway-url, or a record without pos_zone
    rs485_skipped: int = 0  # door readings have no online target

    def lines(self) -> list[str]:
        rejected = ", ".join(f"{n}×HTTP {s}" for s, n in sorted(self.acc_rejected.items()))
        return [
            f"mqtt published {self.published}",
            f"acc posted {self.acc_posted}, rejected {sum(self.acc_rejected.values())}"
            + (f" ({rejected})" if rejected else "")
            + f", skipped {self.acc_skipped}",
            f"rs485 skipped {self.rs485_skipped}",
        ]


async def replay_online(
    read: LineSource,
    reader: RecordReader,
    publisher: Publisher,
    stats: OnlineStats,
    *,
    speed: float = 1.0,
    topic: str | None = None,
    acc: AccPoster | None = None,
) -> None:
    """Send every record, keeping inter-arrival times / `speed` (0 = as fast as possible)."""
    start: tuple[int, float] | None = None  # (first ts_ns, trio time it was sent)
    while lines := await read():
        for item in [t for line in lines for t in reader.feed(line)]:
            if speed > 0:
                if start is None:
                    start = (item.ts_ns, trio.current_time())
                else:
                    await trio.sleep_until(start[1] + (item.ts_ns - start[0]) / _NS / speed)
            await _send(item.record, publisher, stats, topic, acc)
    for item in reader.close():
        await _send(item.record, publisher, stats, topic, acc)


async def _send(
    record: Record,
    publisher: Publisher,
    stats: OnlineStats,
    topic: str | None,
    acc: AccPoster | None,
) -> None:
    if isinstance(record, MqttRecord):
        target = topic or record.topic or DEFAULT_RAW_TOPIC
        await publisher.publish(target, record.payload, XOVIS_QOS)
        stats.published += 1
    elif isinstance(record, AccRecord):
        if acc is None or record.pos_zone is None:
            stats.acc_skipped += 1
            return
        status = await acc.post(record.pos_zone, record.receipt)
        if status == httpx.codes.OK:
            stats.acc_posted += 1
        else:
            stats.acc_rejected[status] = stats.acc_rejected.get(status, 0) + 1
    else:
        stats.rs485_skipped += 1


@attrs.define(slots=True)
class JournalStats:
    lines: int = 0
    blank: int = 0
    corrupt: int = 0
    published: int = 0
    examples: list[str] = attrs.field(factory=list)


def journey_payload(line: bytes, site: str | None) -> bytes:
    """The MQTT payload of one journal line: as is, or with `site` first when it has none."""
    record = decode_journey(line)  # JourneyJsonError when not one JSON object
    body = line.strip()
    if site is None or "site" in record:
        return body
    return encode_journey_mqtt(record, site)


async def republish_journeys(
    read: LineSource,
    publisher: Publisher,
    stats: JournalStats,
    *,
    topic: str = DEFAULT_JOURNEYS_TOPIC,
    site: str | None = None,
) -> None:
    """Each journal line → `topic` at QoS 1, in file order, each PUBACK awaited (§7)."""
    while lines := await read():
        for line in lines:
            stats.lines += 1
            if not line.strip():
                stats.blank += 1
                continue
            try:
                payload = journey_payload(line, site)
            except JourneyJsonError as exc:
                stats.corrupt += 1
                if len(stats.examples) < MAX_EXAMPLES:
                    stats.examples.append(f"line {stats.lines}: {exc}")
                continue
            await publisher.publish(topic, payload, JOURNEYS_QOS)
            stats.published += 1
