"""The `gateway sim` harness: sensor, egress observer, controller, POS bookings, and `Stage`.

simulation.md §3: scripts (`sim_scenarios`) publish real Xovis messages — one sensor frame every
100 ms — and watch what the gateway does through its MQTT egress and the frames the mock
controller reads. Concurrent scenarios must not disturb each other: a POS zone is booked by one
customer at a time (an ACC matches everyone qualified in its zone, behaviour.md §7.2), and gate
entries that expect an open take turns at the door (a door open is correlated with the newest
command, §10.2). The run itself (endpoints, gateway, report) is `gateway.app.cmd_sim`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, Protocol, TypeVar

import attrs
import trio

from gateway.codecs.cloudplus import CMD_OPEN
from gateway.core.model import DOOR_STATUSES
from gateway.io.mqtt_shim import Message, MqttClient, MqttError
from gateway.tools.board_emulator import BoardEmulator
from gateway.tools.mock_cloudplus import MockCloudPlus, MockOptions
from gateway.tools.sim_scenarios import (
    FRAME_S,
    Action,
    Create,
    Cross,
    Delete,
    Enter,
    Leave,
    Move,
    Scenario,
    ScenarioFailed,
    SitePlan,
)
from gateway.tools.traffic_model import LINE_CROSS, PERSON, rfc3339_ms

NET_TIMEOUT_S: Final = 5.0  # one publish, subscribe, ACC line or HTTP request
ZONE_MARGIN_S: Final = 1.0  # on top of the grace / ACC-buffer windows when a zone changes hands

Log = Callable[[str, str], None]
T = TypeVar("T")


class SimError(Exception):
    """The harness itself could not run (broker, gateway start-up, lost MQTT): exit 1."""


class Harness(Protocol):
    """What a `Stage` needs from the run (`gateway.app.cmd_sim.SimRun`)."""

    plan: SitePlan
    observer: Observer
    sensor: Sensor
    controller: Controller
    book: PosBook
    gate_lock: trio.Lock

    async def send_acc_tcp(self, source_ip: str, line: bytes) -> None: ...

    async def send_acc_http(self, pos: str, receipt: str) -> None: ...

    async def link_connected(self) -> bool: ...

    def log(self, source: str, text: str) -> None: ...


def unique_client_id(role: str) -> str:
    return f"gateway-sim-{role}-{os.getpid()}-{secrets.token_hex(3)}"


# -- watching the gateway ----------------------------------------------------------------------


@attrs.frozen
class Seen:
    at: float  # trio time of receipt
    kind: str  # egress kind: journey, gate, acc, track, zone, metrics, position
    payload: dict[str, Any]


class Observer:
    """Subscribes to every egress topic; keeps what it saw and wakes `wait_until` callers on each
    message (and on each controller frame, see `notify`)."""

    def __init__(self, log: Log) -> None:
        self.kinds: dict[str, str] = {}  # topic → egress kind, see `watch`
        self.client_id = unique_client_id("observer")
        self.seen: list[Seen] = []
        self.sent_tids: list[int] = []  # `cmd_sent` in arrival order (the gate worker is serial)
        self.door_state = "unknown"  # the gateway's last published door state
        self._log = log
        self._changed = trio.Event()

    def watch(self, topic_by_kind: dict[str, str]) -> None:
        """The egress topics to subscribe to (`gateway.io.egress.topic_map`)."""
        self.kinds = {topic: kind for kind, topic in topic_by_kind.items()}

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, probe: Callable[[], T | None]) -> T:
        """Return the first non-None `probe()`, re-evaluated after every message and frame."""
        await trio.lowlevel.checkpoint()
        while True:
            found = probe()
            if found is not None:
                return found
            await self._changed.wait()

    async def run(
        self, client: MqttClient, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            with trio.fail_after(NET_TIMEOUT_S * len(self.kinds)):
                for topic, kind in self.kinds.items():
                    await client.subscribe(topic, qos=1 if kind == "journey" else 0)
            task_status.started()
            async for msg in client.messages:
                self._handle(msg)
        except (MqttError, trio.TooSlowError) as exc:
            raise SimError(f"MQTT observer: {exc!r}") from exc

    def _handle(self, msg: Message) -> None:
        kind = self.kinds.get(msg.topic)
        if kind is None:
            return
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            self._log("mqtt", f"{msg.topic} undecodable {msg.payload[:80]!r}")
            return
        if kind == "gate":
            state = payload.get("state")
            if state == "cmd_sent":
                self.sent_tids.append(int(payload.get("tid", 0)))
            elif state in DOOR_STATUSES:
                self.door_state = state
        self.seen.append(Seen(trio.current_time(), kind, payload))
        self._log("mqtt", f"{msg.topic} {msg.payload.decode(errors='replace')}")
        self.notify()


# -- the sensor --------------------------------------------------------------------------------


class Sensor:
    """One simulated Xovis sensor: a message per 100 ms frame with every live object (position)
    and the events of the actions queued since the previous frame (interfaces.md §1.2)."""

    def __init__(self, topic: str, log: Log) -> None:
        self.topic = topic
        self.client_id = unique_client_id("sensor")
        self.frames = 0
        self._log = log
        self._objects: dict[int, list[float]] = {}  # tid → [x, y, h]
        self._pending: list[Action] = []
        self._sent = trio.Event()

    def visible(self, tid: int) -> bool:
        return tid in self._objects

    async def step(self, *actions: Action) -> None:
        """Queue `actions` for the next frame and return once it was published."""
        self._pending.extend(actions)
        await self._sent.wait()

    async def run(
        self, client: MqttClient, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        deadline = trio.current_time()
        while True:
            deadline = max(deadline + FRAME_S, trio.current_time())  # late: skip, never burst
            await trio.sleep_until(deadline)
            actions, self._pending = self._pending, []
            done, self._sent = self._sent, trio.Event()
            payload = self._message(actions)
            if payload is not None:
                try:
                    with trio.fail_after(NET_TIMEOUT_S):
                        await client.publish(self.topic, payload)
                except (MqttError, trio.TooSlowError) as exc:
                    raise SimError(f"Xovis publish on {self.topic}: {exc!r}") from exc
            done.set()

    def _message(self, actions: list[Action]) -> bytes | None:
        events: list[dict[str, Any]] = []
        gone: list[int] = []
        for a in actions:
            if isinstance(a, Create):
                self._objects[a.tid] = [a.at[0], a.at[1], a.height]
                events.append(_event("TRACK_CREATE", a.tid))
            elif isinstance(a, Move):
                self._objects[a.tid][:2] = a.to
            elif isinstance(a, Enter | Leave):
                name = "ZONE_ENTRY" if isinstance(a, Enter) else "ZONE_EXIT"
                events.append(_event(name, a.tid, geometry_id=a.zone))
            elif isinstance(a, Cross):
                events.append(_event(LINE_CROSS, a.tid, geometry_id=a.line, direction=a.direction))
            else:
                events.append(_event("TRACK_DELETE", a.tid))
                gone.append(a.tid)
        if not events and not self._objects:
            return None
        objects = [
            {"track_id": tid, "type": PERSON, "position": [round(v, 3) for v in xyh]}
            for tid, xyh in self._objects.items()
        ]
        for tid in gone:  # a deleted object is still in its last frame: the delete's position
            self._objects.pop(tid, None)
        frame = {"time": rfc3339_ms(_wall_ms()), "tracked_objects": objects, "events": events}
        self.frames += 1
        if events:
            self._log("xovis", " ".join(_describe(e) for e in events))
        return json.dumps({"live_data": {"frames": [frame]}}, separators=(",", ":")).encode()


def _event(kind: str, tid: int, **attributes: object) -> dict[str, Any]:
    return {"type": kind, "attributes": {"track_id": tid, **attributes}}


def _describe(event: dict[str, Any]) -> str:
    attrs_ = event["attributes"]
    extra = "".join(f":{attrs_[k]}" for k in ("geometry_id", "direction") if k in attrs_)
    return f"{event['type']}({attrs_['track_id']}{extra})"


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


# -- the controller ----------------------------------------------------------------------------


class Controller:
    """The mock CloudPlus controller on one port, stoppable and restartable (S166); counts the
    open frames every instance read. The door sequence drives the shared pty board, or posts
    to `/door/simulate` when the site has no RS485."""

    def __init__(
        self,
        nursery: trio.Nursery,
        board: BoardEmulator | None,
        door_url: str | None,
        token: str | None,
        log: Log,
        notify: Callable[[], None],
    ) -> None:
        self.port = 0
        self.open_frames = 0
        self._nursery, self._board, self._door_url, self._token = nursery, board, door_url, token
        self._log, self._notify = log, notify
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()
        self._connections_before = 0
        self._mock: MockCloudPlus | None = None

    @property
    def running(self) -> bool:
        return self._scope is not None

    @property
    def connections(self) -> int:
        """Accepted gateway connections over every instance."""
        return self._connections_before + (self._mock.connections if self._mock else 0)

    async def start(self) -> int:
        options = MockOptions(
            bind="127.0.0.1", port=self.port, gateway_url=self._door_url, token=self._token
        )
        mock = MockCloudPlus(options, out=lambda line: self._log("controller", line))
        try:
            self.port = await mock.bind()
        except OSError as exc:
            raise SimError(f"mock controller: {exc}") from exc
        if self._mock is not None:
            self._connections_before += self._mock.connections
        self._mock, self._scope, self._done = mock, trio.CancelScope(), trio.Event()
        await self._nursery.start(self._serve, mock, self._scope, self._done)
        return self.port

    async def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
            await self._done.wait()

    async def _serve(
        self,
        mock: MockCloudPlus,
        scope: trio.CancelScope,
        done: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(mock.serve)
                    mock.board = self._board  # shared across restarts, run by the sim
                    nursery.start_soon(self._count, mock)
                    task_status.started()
        finally:
            done.set()

    async def _count(self, mock: MockCloudPlus) -> None:
        seen = 0
        while True:
            await mock.wait_frames(seen + 1)
            new = mock.frames_total - seen
            seen = mock.frames_total
            frames = list(mock.received_frames)[-new:]
            self.open_frames += sum(1 for f in frames if f.frame.command == CMD_OPEN)
            self._notify()


# -- POS zone bookings -------------------------------------------------------------------------


@attrs.define
class _Zone:
    holder: str | None = None
    queue: list[str] = attrs.Factory(list)
    acc_free_at: float = -math.inf  # earlier, a new ACC could still match the last occupant
    qualify_free_at: float = -math.inf  # earlier, an ACC in the buffer could match a new payer


class PosBook:
    """One customer per POS zone at a time (ACCs match everyone qualified in the zone, §7.2),
    plus the windows in which the previous occupant could still be matched (grace, buffer)."""

    def __init__(self, grace_s: float) -> None:
        self._grace_s = grace_s
        self._zones: dict[int, _Zone] = {}
        self._changed = trio.Event()

    async def claim(
        self, zone: int, who: str, *, acc_after_s: float | None, qualifies_after_s: float | None
    ) -> None:
        """Wait for the zone (FIFO); then wait until this customer's first ACC and its own
        qualification come after the previous occupant's windows."""
        z = self._zones.setdefault(zone, _Zone())
        z.queue.append(who)
        try:
            while z.holder is not None or z.queue[0] != who:
                await self._changed.wait()
        finally:
            z.queue.remove(who)
        z.holder = who
        start = trio.current_time()
        if acc_after_s is not None:
            start = max(start, z.acc_free_at - acc_after_s)
        if qualifies_after_s is not None:
            start = max(start, z.qualify_free_at - qualifies_after_s)
        try:
            await trio.sleep_until(start)
        except BaseException:  # cancelled before the customer ever entered: free the zone
            z.holder = None
            self._wake()
            raise

    def release(self, zone: int, who: str, *, qualified: bool, acc_until: float) -> None:
        z = self._zones.get(zone)
        if z is None or z.holder != who:
            return
        z.holder = None
        now = trio.current_time()
        if qualified:
            z.acc_free_at = now + self._grace_s + ZONE_MARGIN_S
        z.qualify_free_at = max(z.qualify_free_at, acc_until + ZONE_MARGIN_S)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


# -- what a script may do: the harness seen from one scenario ---------------------------------

OUTCOME_STATES: Final = frozenset({"blocked", "cmd_sent", "cmd_failed", "cmd_dropped"})
DOOR_OPEN_WAIT_S: Final = 2.0  # door sequence: moving +100 ms, open +250 ms, plus an RS485 poll
LINK_POLL_S: Final = 0.1
LEDGER_WAIT_S: Final = 1.0
CLEANUP_S: Final = 3.0


class Stage:
    """One scenario's view of the run: its tids, sensor steps, bookings and expectations.

    Every wait is labelled (`waiting`) for the timeout message. Time spent queueing for a POS
    zone or the door is harness scheduling, not gateway latency: it extends the deadline and is
    left out of the reported duration (`paused_s`).
    """

    def __init__(
        self, run: Harness, scenario: Scenario, zones: tuple[int, ...], *, first_tid: int
    ) -> None:
        self.run, self.scenario, self.zones, self.plan = run, scenario, zones, run.plan
        self.scope: trio.CancelScope | None = None
        self.paused_s = 0.0
        self.waiting = "start"
        self.tids: list[int] = []
        self._next_tid = first_tid
        self._held: set[int] = set()
        self._notes: list[str] = []
        self._acc_paths: list[str] = []
        self._frames_at: dict[int, int] = {}
        self._receipts = 0

    # -- bookkeeping ---------------------------------------------------------------------------

    def new_tid(self) -> int:
        tid, self._next_tid = self._next_tid, self._next_tid + 1
        self.tids.append(tid)
        return tid

    def now(self) -> float:
        return trio.current_time()

    def mark(self) -> int:
        """Position in the egress log (and the controller's open-frame count at that moment)."""
        index = len(self.run.observer.seen)
        self._frames_at[index] = self.run.controller.open_frames
        return index

    def note(self, text: str) -> None:
        self._notes.append(text)

    def detail(self, failure: str = "") -> str:
        where = "+".join(self.plan.name(z) for z in self.zones)
        paths = ", ".join(dict.fromkeys(self._acc_paths))
        head = f"[{where}{'; ACC ' + paths if paths else ''}]"
        return " ".join(x for x in (failure, *([] if failure else self._notes), head) if x)

    @contextlib.asynccontextmanager
    async def _paused(self, what: str) -> AsyncIterator[None]:
        """Harness scheduling: the deadline stops while we queue and moves by the time waited."""
        self.waiting = what
        t0, scope = trio.current_time(), self.scope
        saved = math.inf if scope is None else scope.deadline
        if scope is not None:
            scope.deadline = math.inf
        try:
            yield
        finally:
            waited = trio.current_time() - t0
            self.paused_s += waited
            if scope is not None:
                scope.deadline = saved + waited

    # -- the world -----------------------------------------------------------------------------

    async def step(self, *actions: Action) -> None:
        """One sensor frame; frames are 100 ms apart."""
        self.waiting = "a sensor frame"
        await self.run.sensor.step(*actions)

    async def hold(self, seconds: float) -> None:
        """Stand still (the sensor keeps reporting positions)."""
        self.waiting = f"a {seconds:g} s dwell"
        await trio.sleep(seconds)

    async def claim_pos(
        self, zone: int, *, acc_after_s: float | None, qualifies_after_s: float | None
    ) -> None:
        async with self._paused(f"POS zone {self.plan.name(zone)}"):
            await self.run.book.claim(
                zone, self.scenario.name, acc_after_s=acc_after_s,
                qualifies_after_s=qualifies_after_s,
            )  # fmt: skip
        self._held.add(zone)

    def release_pos(self, zone: int, *, qualified: bool, acc_until: float = 0.0) -> None:
        self._held.discard(zone)
        self.run.book.release(zone, self.scenario.name, qualified=qualified, acc_until=acc_until)

    @contextlib.asynccontextmanager
    async def gate_slot(self, *, door_closed: bool) -> AsyncIterator[None]:
        """Take turns at the door: the door open that follows a command is correlated with the
        newest command (behaviour.md §10.2), so opens must not interleave."""
        lock = self.run.gate_lock
        async with self._paused("the gate (another customer's open)"):
            await lock.acquire()
        try:
            if door_closed:
                await self.wait_door_closed()
            yield
        finally:
            lock.release()

    async def wait_door_closed(self) -> None:
        obs = self.run.observer
        async with self._paused("the door to close"):
            await obs.wait_until(lambda: True if obs.door_state == "closed" else None)

    async def send_acc(self, zone: int) -> str:
        """ACC for `zone`: TCP from the 127.0.0.N mapped to it, else `POST /acc/simulate`."""
        self._receipts += 1
        receipt = f"SIM-{self.tids[0] if self.tids else 0}-{self._receipts}"
        self.waiting = f"ACC {receipt}"
        ip = self.plan.acc_source_ip.get(zone)
        if ip is not None:
            await self.run.send_acc_tcp(ip, f"ACC {receipt}\r\n".encode())
            self._acc_paths.append(f"tcp {ip}")
        else:
            await self.run.send_acc_http(self.plan.name(zone), receipt)
            self._acc_paths.append("http")
        return receipt

    async def stop_controller(self) -> None:
        self.waiting = "the controller to stop"
        await self.run.controller.stop()

    async def start_controller(self) -> None:
        self.waiting = "the controller to restart"
        await self.run.controller.start()

    async def wait_link(self, *, up: bool) -> None:
        self.waiting = f"the gateway's controller link to go {'up' if up else 'down'}"
        # /health is the gateway's public view of the link; it has no change event to wait on
        while await self.run.link_connected() is not up:  # noqa: ASYNC110
            await trio.sleep(LINK_POLL_S)

    # -- expectations --------------------------------------------------------------------------

    async def _expect(
        self, label: str, since: int, match: Callable[[Seen], bool]
    ) -> dict[str, Any]:
        self.waiting = label
        seen, cursor = self.run.observer.seen, since

        def probe() -> dict[str, Any] | None:
            nonlocal cursor
            while cursor < len(seen):
                msg = seen[cursor]
                cursor += 1
                if match(msg):
                    return msg.payload
            return None

        return await self.run.observer.wait_until(probe)

    async def expect_gate(self, tid: int, since: int) -> dict[str, Any]:
        """The gate outcome for `tid`: blocked, cmd_sent, cmd_failed or cmd_dropped."""
        return await self._expect(
            f"the gate outcome of tid {tid}", since,
            lambda m: m.kind == "gate" and m.payload.get("tid") == tid
            and m.payload.get("state") in OUTCOME_STATES,
        )  # fmt: skip

    async def expect_acc(self, receipt: str, since: int) -> dict[str, Any]:
        return await self._expect(
            f"the ACC outcome of {receipt}", since,
            lambda m: m.kind == "acc" and m.payload.get("receipt") == receipt,
        )  # fmt: skip

    async def expect_track(self, tid: int, since: int) -> dict[str, Any]:
        return await self._expect(
            f"the track event of tid {tid}", since,
            lambda m: m.kind == "track" and m.payload.get("tid") == tid
            and m.payload.get("t") in ("create", "stitch", "reentry"),
        )  # fmt: skip

    async def expect_journey(self, tid: int) -> dict[str, Any]:
        """The journey on the journeys topic (10–11 s after it ended: egress hold)."""
        return await self._expect(
            f"the journey of tid {tid}", 0,
            lambda m: m.kind == "journey" and tid in m.payload.get("tids", ()),
        )  # fmt: skip

    async def expect_open_frame(self, tid: int) -> None:
        """The controller read the open frame of `tid`'s `cmd_sent` (frame k ↔ k-th cmd_sent)."""
        self.waiting = f"the open frame of tid {tid} at the controller"
        run = self.run

        def probe() -> bool | None:
            for k, sent in enumerate(run.observer.sent_tids):
                if sent == tid and run.controller.open_frames > k:
                    return True
            return None

        await run.observer.wait_until(probe)

    async def wait_door_open(self, since: int) -> None:
        """The door feedback (mock sequence → RS485 → gateway) reports `open` after `since`.

        Any tid: the `open` message names the correlator's flow track computed *before* the
        correlation (behaviour.md §10.1), which is the previous customer while the door was
        still open from an earlier command. Inside the gate slot the next `open` is ours.
        """
        with trio.move_on_after(DOOR_OPEN_WAIT_S):
            await self._expect(
                "the door to open", since,
                lambda m: m.kind == "gate" and m.payload.get("state") == "open",
            )  # fmt: skip
            return
        self.run.log("sim", f"{self.scenario.name}: no door open within {DOOR_OPEN_WAIT_S:g} s")

    async def expect_no_open(self, tid: int, since: int, window_s: float) -> None:
        """For `window_s`: no `cmd_sent` for `tid`, and no open frame that no `cmd_sent` explains
        (none at all while this scenario runs alone)."""
        self.waiting = f"{window_s:g} s without an open for tid {tid}"
        await trio.sleep(window_s)
        run = self.run
        for msg in run.observer.seen[since:]:
            p = msg.payload
            if msg.kind == "gate" and p.get("tid") == tid and p.get("state") == "cmd_sent":
                raise ScenarioFailed(f"unexpected cmd_sent for tid {tid}")
        with trio.move_on_after(LEDGER_WAIT_S):
            await run.observer.wait_until(
                lambda: True if run.controller.open_frames <= len(run.observer.sent_tids) else None
            )
        frames, sent = run.controller.open_frames, len(run.observer.sent_tids)
        if frames > sent:
            raise ScenarioFailed(f"the controller read {frames} open frames, cmd_sent said {sent}")
        before = self._frames_at.get(since, frames)
        if self.scenario.exclusive and frames > before:
            raise ScenarioFailed(f"the controller read {frames - before} open frame(s)")

    async def cleanup(self) -> None:
        """After a failure or timeout: end the tracks, free the zones, restart the controller."""
        with trio.move_on_after(CLEANUP_S, shield=True):
            left = [t for t in self.tids if self.run.sensor.visible(t)]
            if left:
                await self.run.sensor.step(*(Delete(t) for t in left))
            for zone in list(self._held):
                until = trio.current_time() + self.plan.buffer_s + 1.0
                self.release_pos(zone, qualified=True, acc_until=until)
            if not self.run.controller.running:
                await self.run.controller.start()
