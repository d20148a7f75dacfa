"""Compact JSON for journeys (interfaces.md §5, §7) and every other egress payload.

One msgspec encoder/decoder each, built at import (style.md §2). Key order is the mapping's order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec


class JourneyJsonError(ValueError):
    """A journal line that is not one JSON object."""


def _enc_hook(obj: Any) -> Any:
    """Non-dict mappings (e.g. `MappingProxyType`) are encoded as objects."""
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


_ENCODER: Final = msgspec.json.Encoder(enc_hook=_enc_hook)
_DECODER: Final = msgspec.json.Decoder(dict[str, Any])
_SITE_PREFIX: Final = b'{"site":'


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """Compact JSON, keys in mapping order, no trailing newline; TypeError on unencodable values."""
    return _ENCODER.encode(payload)


def encode_journey(record: Mapping[str, Any]) -> bytes:
    """The journal line body (§5): the record as is (no `site`), without the trailing `\\n`."""
    return _ENCODER.encode(record)


def encode_journey_mqtt(record: Mapping[str, Any], site: str) -> bytes:
    """The `gateway/journeys` payload (§7): the journal object with `site` as the first key."""
    if "site" in record:
        return _ENCODER.encode({"site": site, **{k: v for k, v in record.items() if k != "site"}})
    body = _ENCODER.encode(record)
    head = _SITE_PREFIX + _ENCODER.encode(site)
    return head + b"}" if body == b"{}" else head + b"," + body[1:]


def decode_journey(line: bytes) -> dict[str, Any]:
    """One journal line (a trailing newline is allowed) → the journey object."""
    try:
        return _DECODER.decode(line.rstrip(b"\r\n"))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise JourneyJsonError(f"not a journey object: {exc}") from exc
