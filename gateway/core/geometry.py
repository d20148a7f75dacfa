"""Distance and height comparisons in cm with the spec's tolerance (behaviour.md §1)."""

from __future__ import annotations

import math

from gateway.core.model import Position

TOLERANCE_CM = 1e-6  # "≤ limit" comparisons and reported cm (behaviour.md §1, D*)


def planar_cm(a: Position, b: Position) -> float:
    """Floor distance √(Δx²+Δy²) in cm."""
    return math.hypot(a[0] - b[0], a[1] - b[1]) * 100.0


def height_cm(a: Position, b: Position) -> float:
    return abs(a[2] - b[2]) * 100.0


def within_cm(value_cm: float, limit_cm: float) -> bool:
    return value_cm <= limit_cm + TOLERANCE_CM


def report_cm(value_cm: float) -> int:
    """Truncated integer cm after adding the tolerance (0.20 m reports 20, not 19)."""
    return int(value_cm + TOLERANCE_CM)
