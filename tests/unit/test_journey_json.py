"""Journey JSON (interfaces.md §5, §7; scenario S099) and the generic egress payload encoder."""

from __future__ import annotations

import types
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs.journey_json import (
    JourneyJsonError,
    decode_journey,
    encode_journey,
    encode_journey_mqtt,
    encode_payload,
)


def s099_record() -> dict[str, Any]:
    return {
        "jid": "01943265-f410-7a1e-8f3e-2d4b6c8a9e10",
        "pid": "01943265-f410-7b2f-9a01-5e6f7a8b9c0d",
        "tids": [100],
        "parent": None,
        "out": "exit",
        "auth": True,
        "dwell": 7500,
        "acc": True,
        "gate_cmd": 1736012345678,
        "gate_open": 1736012345890,
        "gate_was_open": False,
        "t0": 1736012330000,
        "t1": 1736012349000,
        "ev": [
            {"t": "entry_cross", "ts": 1736012330100, "x": "dir=forward"},
            {"t": "zone_entry", "z": "POS_1", "ts": 1736012333000},
            {"t": "zone_exit", "z": "POS_1", "ts": 1736012340500, "x": "dwell=7500"},
        ],
    }


def test_s099_journal_line_and_mqtt_copy() -> None:
    line = encode_journey(s099_record())
    assert line == (
        b'{"jid":"01943265-f410-7a1e-8f3e-2d4b6c8a9e10","pid":"01943265-f410-7b2f-9a01-5e6f7a8b9c0d",'
        b'"tids":[100],"parent":null,"out":"exit","auth":true,"dwell":7500,"acc":true,'
        b'"gate_cmd":1736012345678,"gate_open":1736012345890,"gate_was_open":false,'
        b'"t0":1736012330000,"t1":1736012349000,"ev":[{"t":"entry_cross","ts":1736012330100,'
        b'"x":"dir=forward"},{"t":"zone_entry","z":"POS_1","ts":1736012333000},{"t":"zone_exit",'
        b'"z":"POS_1","ts":1736012340500,"x":"dwell=7500"}]}'
    )
    decoded = decode_journey(line + b"\n")
    assert decoded["tids"] == [100]
    assert decoded["out"] == "exit"
    assert decoded["parent"] is None
    assert decoded["gate_was_open"] is False
    assert decoded["ev"][0]["t"] == "entry_cross"
    assert decoded["ev"][1]["z"] == "POS_1"
    assert decoded["ev"][2]["x"] == "dwell=7500"
    assert "site" not in decoded
    mqtt = encode_journey_mqtt(s099_record(), "test")
    assert mqtt.startswith(b'{"site":"test","jid":')
    as_obj = msgspec.json.decode(mqtt)
    assert list(as_obj) == ["site", *s099_record()]
    assert as_obj == {"site": "test", **s099_record()}


def test_no_whitespace_and_no_trailing_newline() -> None:
    out = encode_journey({"a": [1, 2], "b": {"c": "d e"}})
    assert out == b'{"a":[1,2],"b":{"c":"d e"}}'


def test_mqtt_copy_of_empty_and_site_bearing_records() -> None:
    assert encode_journey_mqtt({}, "s") == b'{"site":"s"}'
    assert encode_journey_mqtt({"site": "old", "a": 1}, "new") == b'{"site":"new","a":1}'
    assert encode_journey_mqtt({"a": 1}, 'q"x') == b'{"site":"q\\"x","a":1}'


def test_encode_payload_keeps_order_and_accepts_read_only_mappings() -> None:
    payload = types.MappingProxyType({"site": "x", "ts": 1, "z": {"b": 1, "a": 2}, "l": (1, 2)})
    assert encode_payload(payload) == b'{"site":"x","ts":1,"z":{"b":1,"a":2},"l":[1,2]}'


def test_encode_payload_rejects_unknown_types() -> None:
    with pytest.raises(TypeError):
        encode_payload({"x": object()})


@pytest.mark.parametrize("line", [b"", b"[1]", b'{"a":1', b'"x"', b"\xff", b'{"a":1} {}'])
def test_decode_journey_rejects_non_objects(line: bytes) -> None:
    with pytest.raises(JourneyJsonError):
        decode_journey(line)


def test_decode_journey_accepts_crlf() -> None:
    assert decode_journey(b'{"jid":"a"}\r\n') == {"jid": "a"}


json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text()
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=15,
)


@settings(max_examples=120, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=6), st.text())
def test_roundtrip(record: dict[str, Any], site: str) -> None:
    assert decode_journey(encode_journey(record)) == record
    mqtt = msgspec.json.decode(encode_journey_mqtt(record, site))
    assert list(mqtt) == ["site", *(k for k in record if k != "site")]
    assert mqtt["site"] == site
