"""Throttled `gateway/positions` stream from tracked objects (interfaces.md §1.3); pure, no trio.

The ingress calls `on_batch` per decoded message; GROUP objects were already dropped by the decoder
in `ignore` mode, so every object of the batch is eligible.
"""

from __future__ import annotations

import math
from typing import Final

import attrs

from gateway.core.effects import Publish
from gateway.core.model import XovisBatch

MIN_INTERVAL_MS: Final = 100  # §1.3: ≥ 100 ms since the last batch that published anything
MIN_MOVE_CM: Final = 5.0  # §1.3: moved ≥ 0.05 m in the x-y plane
DIST_TOLERANCE_CM: Final = 1e-6  # behaviour.md §1: distance comparisons tolerate 1e-6 cm


@attrs.define(slots=True)
class _TopicState:
    last_publish_ms: int | None = None
    last_xy: dict[int, tuple[float, float]] = attrs.field(factory=dict)


@attrs.define(slots=True)
class PositionStreamer:
    """Per-topic throttle state; `on_batch` returns the `position` publishes for one message."""

    site: str
    _topics: dict[str, _TopicState] = attrs.field(factory=dict, init=False)

    def on_batch(self, batch: XovisBatch, now_ms: int, wall_ms: int) -> list[Publish]:
        state = self._topics.get(batch.topic)
        if state is None:
            state = self._topics[batch.topic] = _TopicState()
        if state.last_publish_ms is not None and now_ms - state.last_publish_ms < MIN_INTERVAL_MS:
            return []
        out: list[Publish] = []
        seen: set[int] = set()
        last_xy = state.last_xy
        for frame in batch.frames:
            for obj in frame.objects:
                seen.add(obj.track_id)
                pos = obj.position
                if pos is None:
                    continue
                x, y, z = pos
                prev = last_xy.get(obj.track_id)
                if prev is not None:
                    dist_cm = math.hypot(x - prev[0], y - prev[1]) * 100.0
                    if dist_cm + DIST_TOLERANCE_CM < MIN_MOVE_CM:
                        continue
                last_xy[obj.track_id] = (x, y)
                payload = {
                    "site": self.site,
                    "ts": wall_ms,
                    "tid": obj.track_id,
                    "obj_type": obj.obj_type,
                    "x": x,
                    "y": y,
                    "z": z,
                    "auth": False,
                    "ctx": "continuous",
                }
                out.append(Publish("position", payload))
        for tid in [t for t in last_xy if t not in seen]:
            del last_xy[tid]
        if out:
            state.last_publish_ms = now_ms
        return out
