"""Live tracker state for one Xovis track id (behaviour.md §3.1) and the exit-region rule."""

from __future__ import annotations

import attrs

from gateway.config.model import ExitDetectionConfig
from gateway.core.model import Position


@attrs.define(slots=True, eq=False)
class Person:
    """One live (or pooled) track. `zones` is an ordered set: dict keys in entry order (D5)."""

    track_id: int
    last_position: Position | None = None
    max_y: float = 0.0
    authorized: bool = False  # sticky, never revoked (§4.8)
    has_zone_events: bool = False
    last_gate_entry_wall: int | None = None
    zones: dict[int, None] = attrs.field(factory=dict)

    @property
    def last_zone(self) -> int | None:
        """The most recently entered zone still occupied, or None."""
        if not self.zones:
            return None
        return next(reversed(self.zones))

    def enter_zone(self, zone: int) -> None:
        """Add `zone` at the end, moving it there if already present (§3.1)."""
        self.zones.pop(zone, None)
        self.zones[zone] = None

    def exit_zone(self, zone: int) -> None:
        """Remove only `zone`; other memberships stay (D5)."""
        self.zones.pop(zone, None)

    def update_position(self, position: Position) -> None:
        """§4.6: latest position and the running max y (D3)."""
        self.last_position = position
        if position[1] > self.max_y:
            self.max_y = position[1]


def in_exit_region(person: Person, cfg: ExitDetectionConfig) -> bool:
    """§3.1: latest position known, y strictly above the threshold, x inside [x_min, x_max]."""
    pos = person.last_position
    if pos is None:
        return False
    x, y = pos[0], pos[1]
    return (
        y > cfg.position_threshold_y_m
        and cfg.position_threshold_x_min_m <= x <= cfg.position_threshold_x_max_m
    )
