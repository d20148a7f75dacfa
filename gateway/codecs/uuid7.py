"""UUIDv7 strings for journey and person ids (behaviour.md §1, RFC 9562 §5.7).

Built from the clock port's wall time and an injected random source so the core stays
deterministic under test; no `os`/`time` imports (style.md §2).
"""

from __future__ import annotations

import random

_VERSION = 0x7  # RFC 9562 §5.7
_VARIANT = 0b10  # RFC 9562 §4.1
_MAX_TS_MS = (1 << 48) - 1


def uuid7(wall_ms: int, rng: random.Random) -> str:
    """Lowercase hyphenated UUIDv7: 48-bit unix ms, version 7, 12+62 random bits, variant 10."""
    ts = min(max(wall_ms, 0), _MAX_TS_MS)
    rand_a = rng.getrandbits(12)
    rand_b = rng.getrandbits(62)
    value = (ts << 80) | (_VERSION << 76) | (rand_a << 64) | (_VARIANT << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def uuid7_ms(value: str) -> int:
    """The unix-ms timestamp field of a UUIDv7 string."""
    return int(value.replace("-", "")[:12], 16)
