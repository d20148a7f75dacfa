"""ACC line decoder (interfaces.md §2, S116–S118, S121): whole, byte by byte, with trailing data."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codecs.acc_line import (
    AccLineDecoder,
    AccLineError,
    AccLineEvent,
    BadUtf8,
    Malformed,
    Oversized,
    Receipt,
    classify_line,
)

LIMIT = 256


def split_whole(data: bytes) -> list[bytes]:
    return [data]


def split_bytes(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


SPLITS: list[Callable[[bytes], list[bytes]]] = [split_whole, split_bytes]


def decode(
    chunks: list[bytes], *, eof: bool = True, limit: int = LIMIT
) -> tuple[list[AccLineEvent], AccLineDecoder]:
    d = AccLineDecoder(limit)
    out: list[AccLineEvent] = []
    for chunk in chunks:
        if d.closed:
            break
        out += d.feed(chunk)
    if eof:
        out += d.eof()
    return out, d


CASES: list[tuple[bytes, list[AccLineEvent]]] = [
    (b"ACC R123\r\nACC R124\n", [Receipt("R123"), Receipt("R124")]),  # S116
    # S117: three malformed, the empty line ignored
    (b"ACC \nHELLO\nacc R1\n\n", [Malformed("empty_receipt"), *[Malformed("no_prefix")] * 2]),
    (b"ACC 4711-0023\r\n", [Receipt("4711-0023")]),
    (b"  ACC   R7  \t\r\n", [Receipt("R7")]),  # trimmed, then the rest trimmed
    (b"ACC\tR7\n", [Malformed("no_prefix")]),  # exactly one space
    (b"ACCR7\n", [Malformed("no_prefix")]),
    (b"\r\n \n\t\n", []),  # blank lines ignored
    (b"ACC R\xc3\xa9\n", [Receipt("R\u00e9")]),  # UTF-8 receipts are fine
    (b"ACC R9", [Receipt("R9")]),  # S121: final unterminated line processed at EOF
    (b"ACC R9\r", [Receipt("R9")]),
]


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize(("data", "expected"), CASES)
def test_cases(
    split: Callable[[bytes], list[bytes]], data: bytes, expected: list[AccLineEvent]
) -> None:
    events, _ = decode(split(data))
    assert events == expected


@pytest.mark.parametrize(("data", "expected"), [c for c in CASES if c[0].endswith(b"\n")])
def test_cases_with_trailing_partial_line(data: bytes, expected: list[AccLineEvent]) -> None:
    # Without EOF a trailing partial line is held back, and completed by the next feed.
    d = AccLineDecoder(LIMIT)
    assert d.feed(data + b"ACC TA") == expected
    assert d.buffered == len(b"ACC TA")
    assert d.feed(b"IL\n") == [Receipt("TAIL")]


def test_s117_counts_three_malformed() -> None:
    events, _ = decode([b"ACC \n", b"HELLO\n", b"acc R1\n", b"\n"])
    assert len(events) == 3
    assert all(isinstance(e, Malformed) for e in events)


@pytest.mark.parametrize("split", SPLITS)
def test_s118_limit_is_inclusive_and_excludes_crlf(split: Callable[[bytes], list[bytes]]) -> None:
    receipt = "x" * (LIMIT - 4)  # "ACC " + 252 = 256 bytes
    for ending in (b"\n", b"\r\n"):
        events, d = decode(split(f"ACC {receipt}".encode() + ending), eof=False)
        assert events == [Receipt(receipt)]
        assert not d.closed


@pytest.mark.parametrize("split", SPLITS)
def test_s118_257_byte_line_is_oversized_and_closes(split: Callable[[bytes], list[bytes]]) -> None:
    line = b"ACC " + b"x" * (LIMIT - 3) + b"\nACC AFTER\n"
    events, d = decode(split(line), eof=False)
    assert events == [Oversized()]
    assert d.closed
    assert d.buffered == 0


def test_oversized_is_detected_before_the_lf() -> None:
    d = AccLineDecoder(LIMIT)
    assert d.feed(b"A" * LIMIT) == []
    assert d.feed(b"\r") == []  # could still be CRLF
    assert d.feed(b"\r") == [Oversized()]  # limit + 2 bytes without LF: can never fit
    d = AccLineDecoder(LIMIT)
    assert d.feed(b"A" * (LIMIT + 1)) == [Oversized()]  # the last one is not a CR


@pytest.mark.parametrize("split", SPLITS)
def test_only_one_cr_before_the_lf_is_removed(split: Callable[[bytes], list[bytes]]) -> None:
    fits = [Malformed("no_prefix")]  # right length, but not an ACC line
    assert decode(split(b"A" * LIMIT + b"\r\n"), eof=False)[0] == fits
    assert decode(split(b"A" * (LIMIT - 1) + b"\r\r\n"), eof=False)[0] == fits  # 255 + CR
    assert decode(split(b"A" * LIMIT + b"\r\r\n"), eof=False)[0] == [Oversized()]  # 256 + CR


def test_bad_utf8_closes() -> None:
    events, d = decode([b"ACC R1\nACC \xff\xfe\nACC R2\n"], eof=False)
    assert events == [Receipt("R1"), BadUtf8()]
    assert d.closed


def test_bad_utf8_in_final_line_at_eof() -> None:
    events, _ = decode([b"ACC \xc3"])
    assert events == [BadUtf8()]


def test_feed_after_close_is_a_caller_bug() -> None:
    d = AccLineDecoder(16)
    assert d.feed(b"x" * 20) == [Oversized()]
    with pytest.raises(AccLineError):
        d.feed(b"ACC R1\n")
    assert d.eof() == []


def test_eof_twice_and_empty_eof() -> None:
    d = AccLineDecoder(LIMIT)
    assert d.eof() == []
    assert d.closed
    assert d.eof() == []


def test_classify_line() -> None:
    assert classify_line("ACC R1") == Receipt("R1")
    assert classify_line("   ") is None
    assert classify_line("ACC ") == Malformed("empty_receipt")
    assert classify_line("acc R1") == Malformed("no_prefix")


# ---- properties ------------------------------------------------------------------------------

receipts = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
)


@given(st.lists(receipts, max_size=20), st.integers(1, 50), st.booleans())
def test_receipts_round_trip_at_any_split(rs: list[str], chunk: int, crlf: bool) -> None:
    end = "\r\n" if crlf else "\n"
    data = "".join(f"ACC {r}{end}" for r in rs).encode()
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    events, _ = decode(chunks)
    assert events == [Receipt(r) for r in rs]


@given(st.binary(max_size=800), st.lists(st.integers(0, 800), max_size=20), st.integers(16, 64))
def test_random_bytes_only_give_events(data: bytes, cuts: list[int], limit: int) -> None:
    points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    events, d = decode(chunks, limit=limit)
    assert d.closed
    assert d.buffered == 0
    fatal = [e for e in events if isinstance(e, Oversized | BadUtf8)]
    assert len(fatal) <= 1
    if fatal:
        assert events[-1] is fatal[0]
    for e in events:
        if isinstance(e, Receipt):
            assert e.receipt
            assert e.receipt == e.receipt.strip()
            assert len(e.receipt.encode()) <= limit - 4


@given(st.binary(max_size=600), st.integers(16, 64))
def test_split_does_not_change_the_events(data: bytes, limit: int) -> None:
    whole, _ = decode([data], limit=limit)
    bytewise, _ = decode(split_bytes(data), limit=limit)
    assert whole == bytewise


@given(st.binary(max_size=2000), st.integers(16, 64))
def test_buffer_never_exceeds_the_limit(data: bytes, limit: int) -> None:
    d = AccLineDecoder(limit)
    for i in range(0, len(data), 7):
        if d.closed:
            break
        d.feed(data[i : i + 7])
        assert d.buffered <= limit + 1
