"""ACC payment-terminal line protocol (interfaces.md §2): `ACC <receipt>` lines over TCP.

Sans-I/O: one `AccLineDecoder` per connection; `feed` takes any split of the stream, `eof` ends
it. `Oversized` and `BadUtf8` are fatal: the decoder closes and the listener must close the
connection. The buffer never holds more than one line's limit (+1 byte for a CR).
"""

from __future__ import annotations

from typing import Final

import attrs

LF: Final = 0x0A
CR: Final = 0x0D
PREFIX: Final = "ACC "  # exactly: uppercase, one space [ref]


@attrs.frozen
class Receipt:
    """A valid line; `receipt` is the trimmed text after `ACC `."""

    receipt: str


@attrs.frozen
class Malformed:
    """A non-empty line that is not `ACC <receipt>`; counted, connection kept."""

    reason: str  # "empty_receipt" | "no_prefix"


@attrs.frozen
class Oversized:
    """A line longer than `max_line_bytes`: dropped; the connection must close (D10)."""


@attrs.frozen
class BadUtf8:
    """A line that is not UTF-8: counts as malformed; the connection must close [ref]."""


AccLineEvent = Receipt | Malformed | Oversized | BadUtf8


class AccLineError(RuntimeError):
    """The decoder was used after it closed (a bug in the caller)."""


def classify_line(text: str) -> Receipt | Malformed | None:
    """Decode one trimmed-or-not line of text; None for an empty (ignored) line."""
    line = text.strip()
    if not line:
        return None
    if line.startswith(PREFIX):
        receipt = line[len(PREFIX) :].strip()
        return Receipt(receipt) if receipt else Malformed("empty_receipt")
    # "ACC " is trimmed to "ACC" before we get here: still an empty receipt, not a bad prefix
    return Malformed("empty_receipt" if line == PREFIX.strip() else "no_prefix")


@attrs.define
class AccLineDecoder:
    """LF framing, CR-before-LF removal, trimming and the line limit (excluding LF and CR)."""

    max_line_bytes: int
    _buf: bytearray = attrs.field(factory=bytearray)
    _closed: bool = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[AccLineEvent]:
        """Events for every whole line in `data` (plus what was buffered)."""
        if self._closed:
            raise AccLineError("feed() after the decoder closed")
        out: list[AccLineEvent] = []
        buf = self._buf
        start = len(buf)  # bytes already buffered hold no LF
        buf += data
        pos = 0
        while True:
            nl = buf.find(LF, start)
            if nl < 0:
                break
            event = self._line(bytes(buf[pos:nl]))
            if event is not None:
                out.append(event)
                if self._closed:
                    buf.clear()
                    return out
            pos = start = nl + 1
        del buf[:pos]
        if self._too_long_unterminated():
            out.append(self._close(Oversized()))
        return out

    def eof(self) -> list[AccLineEvent]:
        """The peer closed: a final unterminated line is processed [ref]."""
        if self._closed:
            return []
        rest = bytes(self._buf)
        self._buf.clear()
        self._closed = True
        event = self._line(rest) if rest else None
        return [] if event is None else [event]

    def _too_long_unterminated(self) -> bool:
        # Detect an oversized line before its LF: more than limit + 1 bytes can never fit, and
        # exactly limit + 1 fits only if the last one is the CR of a coming CRLF.
        n = len(self._buf)
        limit = self.max_line_bytes
        return n > limit + 1 or (n == limit + 1 and self._buf[-1] != CR)

    def _close(self, event: AccLineEvent) -> AccLineEvent:
        self._closed = True
        self._buf.clear()
        return event

    def _line(self, raw: bytes) -> AccLineEvent | None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > self.max_line_bytes:
            return self._close(Oversized())
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._close(BadUtf8())
        return classify_line(text)
