"""Effects: what a core handler asks the shell to do, as plain values (style.md §2).

The shell runs them: `Publish` goes to the egress router (MQTT topic + live feed), `EmitJourney`
to the journal writer and the journeys topic, `DoorFeed` to the live feed, `Log` to stdlib logging.
Gate commands are not effects: they go through the synchronous `GatePort.try_send` (D7).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

# Live-feed kinds (interfaces.md §8); the egress maps each to its `[mqtt_egress].<name>_topic`.
PublishKind = Literal["journey", "zone", "track", "gate", "acc", "position", "metrics"]


@attrs.frozen
class Publish:
    """An egress payload; `payload` already starts with `site` (interfaces.md §7)."""

    kind: PublishKind
    payload: Mapping[str, Any]


@attrs.frozen
class EmitJourney:
    """An emitted journey: `record` is the journal object (§5, no `site` key, keys in §5 order)."""

    record: Mapping[str, Any]
    outcome: str


@attrs.frozen
class DoorFeed:
    """Live-feed `door` message (status, fault, alarm, source)."""

    status: str
    fault: int
    alarm: int
    source: str


@attrs.frozen
class Log:
    """A log record the shell writes: `event` is the message, `fields` its key=value pairs."""

    level: int
    event: str
    fields: Mapping[str, Any] = attrs.field(factory=dict)


Effect = Publish | EmitJourney | DoorFeed | Log
