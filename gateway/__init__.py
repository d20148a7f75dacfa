"""gateway: the store exit-gate gateway (Xovis + ACC + RS485 + CloudPlus) on Trio."""

from __future__ import annotations

__version__ = "1.0.0"
