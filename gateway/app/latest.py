"""Latest-value cell (README concurrency rule 3): a writer never waits for its reader.

Used for door state: the RS485 poller and `POST /door/simulate` `set()`, the tracker's door
consumer `wait_changed()`. Intermediate values may be coalesced; readers only need the latest.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import attrs
import trio

T = TypeVar("T")


def _current_token() -> trio.lowlevel.TrioToken | None:
    try:
        return trio.lowlevel.current_trio_token()
    except RuntimeError:  # built outside trio.run (tests, config time)
        return None


@attrs.define(eq=False)
class LatestValue(Generic[T]):
    """`set` is sync and never blocks or fails; `wait_changed(version)` wakes on any newer set."""

    _value: T
    _version: int = 0
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    trio_token: trio.lowlevel.TrioToken | None = attrs.field(factory=_current_token, kw_only=True)

    def set(self, value: T) -> None:
        """Store `value`, bump the version and wake every waiter (one Event per generation)."""
        self._value = value
        self._version += 1
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def get(self) -> tuple[T, int]:
        return self._value, self._version

    @property
    def version(self) -> int:
        return self._version

    async def wait_changed(self, version: int) -> tuple[T, int]:
        """Return `(value, version)` once the version differs from `version` (a checkpoint)."""
        if self._version == version:
            await self._changed.wait()
        else:
            await trio.lowlevel.checkpoint()
        return self._value, self._version

    def set_from_thread(self, value: T) -> None:
        """`set` from a foreign thread, run on the Trio thread (README concurrency rule 3)."""
        trio.from_thread.run_sync(self.set, value, trio_token=self.trio_token)
