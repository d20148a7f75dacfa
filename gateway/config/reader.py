"""Typed reading of a parsed TOML document: one `Table` per section collects every problem.

`Table` reads keys with their type and range, remembers which keys it consumed so unknown keys
can be reported with a did-you-mean, and records every error in the shared `Context` instead of
raising — so the loader can report all problems of a file at once (interfaces.md §11.3, D14).
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Sequence

import attrs

SUGGEST_MAX_DISTANCE = 2  # §11.3: did-you-mean from edit distance ≤ 2
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
INT_KEY = re.compile(r"-?[0-9]+")


@attrs.define
class Context:
    path: str
    errors: list[str] = attrs.field(factory=list)
    warnings: list[str] = attrs.field(factory=list)

    def error(self, key: str, problem: str) -> None:
        self.errors.append(f"config error: {self.path}: {key}: {problem}")


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def describe(v: object) -> str:
    if isinstance(v, bool):
        return "boolean " + ("true" if v else "false")
    if isinstance(v, int):
        return f"integer {v}"
    if isinstance(v, float):
        return f"float {v!r}"
    if isinstance(v, str):
        return "string " + json.dumps(v if len(v) <= 40 else v[:40] + "…", ensure_ascii=False)
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "table"
    return f"date/time {v}"


def fmt_key(k: str) -> str:
    return k if BARE_KEY.fullmatch(k) else json.dumps(k, ensure_ascii=False)


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def suggest(word: str, candidates: Sequence[str]) -> str | None:
    """Closest candidate within the edit distance limit (and shorter than the candidate)."""
    scored = [(edit_distance(word, c), i, c) for i, c in enumerate(candidates)]
    fits = [s for s in scored if s[0] <= SUGGEST_MAX_DISTANCE and s[0] < len(s[2])]
    return min(fits)[2] if fits else None


@attrs.define
class Table:
    """One TOML table being read. Every key asked for is remembered: the rest are unknown."""

    ctx: Context
    name: str  # dotted section name; "" for the document root
    data: dict[str, object]
    present: bool
    broken: bool = False  # present but not a table: read as empty, without follow-up errors
    asked: list[str] = attrs.field(factory=list)
    bad: set[str] = attrs.field(factory=set)

    def key(self, k: str) -> str:
        return f"[{self.name}].{fmt_key(k)}" if self.name else fmt_key(k)

    def get(self, k: str) -> object | None:
        if k not in self.asked:
            self.asked.append(k)
        return self.data.get(k)

    def fail(self, k: str, problem: str) -> None:
        self.bad.add(k)
        self.ctx.error(self.key(k), problem)

    def ok(self, *keys: str) -> bool:
        """True when none of `keys` had a problem (cross-key rules only use good values)."""
        return not self.broken and self.bad.isdisjoint(keys)

    def table(self, k: str) -> Table:
        raw = self.get(k)
        name = f"{self.name}.{k}" if self.name else k
        if raw is None:
            return Table(self.ctx, name, {}, present=False)
        if isinstance(raw, dict):
            return Table(self.ctx, name, raw, present=True)
        self.bad.add(k)
        self.ctx.error(f"[{name}]", f"expected table, got {describe(raw)}")
        return Table(self.ctx, name, {}, present=True, broken=True)

    def finish(self) -> None:
        """Report keys nobody asked for, with a did-you-mean among the known ones."""
        for k, v in self.data.items():
            if k in self.asked:
                continue
            hint = suggest(k, self.asked)
            if isinstance(v, dict):
                prefix = f"{self.name}." if self.name else ""
                more = f" (did you mean '{prefix}{hint}'?)" if hint else ""
                self.ctx.error(f"[{prefix}{fmt_key(k)}]", f"unknown section{more}")
            else:
                self.fail(k, "unknown key" + (f" (did you mean '{hint}'?)" if hint else ""))

    def _typed(self, k: str, check: Callable[[object], bool], expected: str, req: bool) -> object:
        raw = self.get(k)
        if raw is None:
            if req:
                self.bad.add(k)
                if not self.broken:
                    self.fail(k, "missing required key")
        elif not check(raw):
            self.fail(k, f"expected {expected}, got {describe(raw)}")
            return None
        return raw

    def opt_integer(
        self, k: str, lo: int, hi: int | None = None, *, req: bool = False
    ) -> int | None:
        raw = self._typed(k, is_int, "integer", req)
        if not isinstance(raw, int):
            return None
        if raw < lo or (hi is not None and raw > hi):
            self.fail(
                k, f"{raw} is out of range " + (f"{lo}–{hi}" if hi is not None else f"≥ {lo}")
            )
            return None
        return raw

    def integer(
        self, k: str, default: int, lo: int, hi: int | None = None, *, req: bool = False
    ) -> int:
        found = self.opt_integer(k, lo, hi, req=req)
        return default if found is None else found

    def number(self, k: str, default: float) -> float:
        raw = self._typed(k, is_num, "number", False)
        if not isinstance(raw, int | float):
            return default
        if not math.isfinite(raw):
            self.fail(k, f"{raw!r} is not a finite number")
            return default
        return float(raw)

    def boolean(self, k: str, default: bool) -> bool:
        raw = self._typed(k, lambda v: isinstance(v, bool), "boolean", False)
        return raw if isinstance(raw, bool) else default

    def opt_string(
        self, k: str, min_len: int = 0, max_len: int | None = None, *, req: bool = False
    ) -> str | None:
        raw = self._typed(k, lambda v: isinstance(v, str), "string", req)
        if not isinstance(raw, str):
            return None
        if len(raw) < min_len or (max_len is not None and len(raw) > max_len):
            span = f"{min_len}–{max_len} characters" if max_len is not None else "non-empty"
            self.fail(k, f"must be {span}, got {len(raw)} characters")
            return None
        return raw

    def string(
        self,
        k: str,
        default: str,
        min_len: int = 0,
        max_len: int | None = None,
        *,
        req: bool = False,
    ) -> str:
        found = self.opt_string(k, min_len, max_len, req=req)
        return default if found is None else found

    def choice(self, k: str, default: str, choices: Sequence[str], *, req: bool = False) -> str:
        found = self.opt_string(k, req=req)
        if found is None:
            return default
        if found not in choices:
            self.fail(k, f"'{found}' is not one of " + ", ".join(f"'{c}'" for c in choices))
            return default
        return found

    def ip(self, k: str, default: str) -> str:
        found = self.string(k, default)
        if self.ok(k) and parse_ip(found) is None:
            self.fail(k, f"'{found}' is not an IP address")
        return found

    def array(
        self, k: str, check: Callable[[object], bool], expected: str, *, req: bool = False
    ) -> list[object]:
        raw = self._typed(k, lambda v: isinstance(v, list), f"array of {expected}s", req)
        if not isinstance(raw, list):
            return []
        for i, item in enumerate(raw):
            if not check(item):
                self.bad.add(k)
                self.ctx.error(f"{self.key(k)}[{i}]", f"expected {expected}, got {describe(item)}")
        return raw if self.ok(k) else []


def parse_ip(text: str) -> str | None:
    """Canonical text of an IP address (IPv4-mapped IPv6 → IPv4, as the ACC listener does)."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
