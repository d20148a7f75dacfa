"""Functional core: plain synchronous domain logic with an injected clock (no I/O, no trio)."""
