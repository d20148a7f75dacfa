"""One live bench set-up (simulation.md §6 "Layout"): mock controller + pty board in the bench
process, a fresh `gateway run` child wired to them and to the broker, and a raw subscriber.

Everything the bench process stamps uses `time.monotonic_ns()`, as does the mock controller
(`SystemClock`), so both ends of every latency sample share one clock.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Final

import attrs
import trio

from gateway.codecs import cloudplus
from gateway.config.loader import load_config
from gateway.tools.bench_broker import DROPPED_TOPIC, BrokerInfo
from gateway.tools.bench_gateway import GatewayProcess
from gateway.tools.bench_mqtt import RawSubscriber
from gateway.tools.board_emulator import BoardEmulator
from gateway.tools.mock_cloudplus import MockCloudPlus, MockOptions
from gateway.tools.traffic import DEFAULT_TOPIC, demo_geometry
from gateway.tools.traffic_model import DemoGeometry

RS485_LINK: Final = "rs485"  # symlink to the board emulator's pty slave, inside the workdir
_client_ids = itertools.count(1)


@attrs.define(eq=False)
class Rig:
    broker: BrokerInfo
    mock: MockCloudPlus
    gateway: GatewayProcess
    site: DemoGeometry
    subscriber: RawSubscriber | None  # the raw-hop end (only when topics were asked for)
    sys_watch: RawSubscriber | None  # bench-wide `$SYS` subscriber (Mosquitto only)
    topic: str = DEFAULT_TOPIC
    _opens_seen: int = 0  # index into the mock's frames already attributed

    @property
    def board(self) -> BoardEmulator:
        assert self.mock.board is not None
        return self.mock.board

    def broker_dropped(self) -> float | None:
        """Mosquitto's `$SYS/broker/publish/messages/dropped` as last published (≤ 1 s old).

        Mosquitto publishes it on change only, retained with a 60 s expiry, so the watcher
        subscribes once when the broker starts rather than per rig.
        """
        if self.sys_watch is None:
            return None
        raw = self.sys_watch.sys_values.get(DROPPED_TOPIC)
        return float(raw) if raw is not None else None

    def take_opens(self) -> list[int]:
        """Receipt times (monotonic ns) of open frames not taken before."""
        mock = self.mock
        new = mock.frames_total - self._opens_seen
        self._opens_seen = mock.frames_total
        frames = list(mock.received_frames)[-new:] if new else []
        return [f.mono_ns for f in frames if f.frame.command == cloudplus.CMD_OPEN]

    async def wait_open(self) -> int:
        """The receipt time of the next open frame (heartbeat acks are skipped)."""
        while True:
            opens = self.take_opens()
            if opens:
                return opens[0]
            await self.mock.wait_frames(self._opens_seen + 1)


@contextlib.asynccontextmanager
async def open_rig(
    broker: BrokerInfo,
    workdir: Path,
    *,
    pin: int | None,
    topics: Sequence[str] = (),
    sys_watch: RawSubscriber | None = None,
) -> AsyncIterator[Rig]:
    """Start mock + board, the gateway child (ready) and the raw subscriber; stop all on exit."""
    await trio.Path(workdir).mkdir(parents=True, exist_ok=True)
    link = str(workdir / RS485_LINK)
    mock = MockCloudPlus(MockOptions(port=0, rs485_pty=link))
    subs: list[RawSubscriber] = []
    try:
        async with trio.open_nursery() as nursery:
            gate_port = await nursery.start(mock.serve)
            gateway = GatewayProcess(workdir, broker.port, gate_port, link, pin=pin)
            try:
                await gateway.start()
                config = load_config(gateway.config_path)
                sub = None
                if topics:
                    client_id = f"bench-raw-{next(_client_ids)}"
                    sub = await RawSubscriber.connect(broker.host, broker.port, topics, client_id)
                    subs.append(sub)
                    nursery.start_soon(sub.serve)
                site = demo_geometry(config.zones, config.acc)
                rig = Rig(broker, mock, gateway, site, sub, sys_watch)
                rig.take_opens()
                yield rig
            finally:
                await gateway.stop()  # while the mock still answers (graceful shutdown)
                nursery.cancel_scope.cancel()
    finally:
        for sub in subs:
            await sub.aclose()
