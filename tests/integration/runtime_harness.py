"""Whole-gateway test helpers: in-process (`running_gateway`) or `gateway run` (`gateway_process`).

Both take a `SiteSpec`: free 127.0.0.1 ports, a per-test topic prefix and a journal path under the
test's tmp dir, rendered to a real TOML file and loaded by the real loader, so in-process and
subprocess gateways run the same configuration. Also here: Xovis message builders, an HTTP probe
(httpx on Trio), a Prometheus text parser, an MQTT collector and `wait_until`.

    spec = SiteSpec(tmp_path, mqtt_port=mosquitto.port, topic_prefix=mqtt_topic_prefix)
    async with running_gateway(spec.load()) as gw:          # in-process, stop via gw.stop()
        await gw.http.post("/door/simulate", status="open")
    async with gateway_process(spec) as proc:               # subprocess, SIGTERM via proc.signal()
        ...

No fixture lives here (tests/integration/conftest.py owns those); everything is a plain helper.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import msgspec
import trio

from gateway.app.runtime import RunOptions, run_gateway
from gateway.app.state import Components
from gateway.config.loader import load_config
from gateway.config.model import Config
from gateway.io.mqtt_shim import Message, MqttClient

HOST = "127.0.0.1"
STEP_S = 15.0  # bound on each wait; generous for a loaded CI box, never a performance target
START_S = 20.0  # subprocess start (imports) until /health answers
POS_1, POS_2, GATE, EXIT_LINE, STORE = 1001, 1002, 1000, 1006, 1011


def free_port() -> int:
    """A 127.0.0.1 TCP port that was free a moment ago (also usable as an unreachable port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# ---- configuration ------------------------------------------------------------------------------


@attrs.define
class SiteSpec:
    """One test site: zones POS_1 1001, POS_2 1002, GATE_1 1000, EXIT_1 1006, STORE 1011."""

    tmp_dir: Path
    mqtt_port: int  # ingress broker; a `free_port()` nobody listens on = unreachable
    topic_prefix: str = "t/runtime"
    egress_port: int | None = None  # None: same broker as ingress
    egress_enabled: bool = True
    gate_port: int = attrs.field(factory=free_port)
    http_port: int = attrs.field(factory=free_port)
    acc_port: int = attrs.field(factory=free_port)
    token: str | None = None
    site_id: str = "rt"
    events_queue: int = 1000
    gate_reconnect_delay_ms: int = 100  # the minimum, so controller restarts are seen quickly
    metrics_publish_interval_secs: int = 5
    acc_ip_to_pos: Mapping[str, str] = attrs.field(factory=lambda: {"127.0.0.1": "POS_1"})
    extra_toml: str = ""

    @property
    def xovis_topic(self) -> str:
        return f"{self.topic_prefix}/xovis"

    def egress_topic(self, name: str) -> str:
        """`journeys`, `events`, `gate`, … under this test's prefix."""
        return f"{self.topic_prefix}/gateway/{name}"

    @property
    def journal_path(self) -> Path:
        return self.tmp_dir / "journal" / "journeys.jsonl"

    @property
    def config_path(self) -> Path:
        return self.tmp_dir / "gateway.toml"

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def to_toml(self) -> str:
        token = f'token = "{self.token}"\n' if self.token is not None else ""
        egress_port = self.egress_port if self.egress_port is not None else self.mqtt_port
        topics = "".join(
            f'{name}_topic = "{self.egress_topic(name)}"\n'
            for name in ("journeys", "events", "metrics", "gate", "tracks", "acc", "positions")
        )
        ip_map = "".join(f'"{ip}" = "{pos}"\n' for ip, pos in self.acc_ip_to_pos.items())
        return f"""\
[site]
id = "{self.site_id}"

[mqtt]
host = "{HOST}"
port = {self.mqtt_port}
topic = "{self.xovis_topic}"
client_id = "{self.topic_prefix.replace("/", "_")[-60:]}"

[gate]
mode = "tcp"
tcp_addr = "{HOST}:{self.gate_port}"
reconnect_delay_ms = {self.gate_reconnect_delay_ms}

[zones]
pos_zones = [{POS_1}, {POS_2}]
gate_zone = {GATE}
exit_line = {EXIT_LINE}
store_zone = {STORE}

[zones.names]
{POS_1} = "POS_1"
{POS_2} = "POS_2"
{GATE} = "GATE_1"
{EXIT_LINE} = "EXIT_1"
{STORE} = "STORE"

[metrics]
prometheus_port = {self.http_port}
interval_secs = 60

[http]
bind = "{HOST}"
{token}
[acc]
listener_port = {self.acc_port}
bind = "{HOST}"

[acc.ip_to_pos]
{ip_map}
[queues]
events = {self.events_queue}

[egress]
file = "{self.journal_path}"

[mqtt_egress]
enabled = {"true" if self.egress_enabled else "false"}
host = "{HOST}"
port = {egress_port}
metrics_publish_interval_secs = {self.metrics_publish_interval_secs}
{topics}
{self.extra_toml}
"""

    def write(self) -> Path:
        self.config_path.write_text(self.to_toml())
        return self.config_path

    def load(self) -> Config:
        """Write the TOML and load it with the real loader (strict, as `gateway run` does)."""
        return load_config(str(self.write()))


def read_journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@attrs.define
class SteppedClock:
    """System time plus an offset the test can advance (in-process gateways, `RunOptions.clock`).

    The tracker, gate worker and HTTP routes read this clock, so `advance_ms(10_000)` makes held
    journeys due at the next tick while sockets, sleeps and ticks run in real time.
    """

    offset_ns: int = 0

    def advance_ms(self, ms: int) -> None:
        self.offset_ns += ms * 1_000_000

    def mono_ns(self) -> int:
        return time.monotonic_ns() + self.offset_ns

    def mono_ms(self) -> int:
        return self.mono_ns() // 1_000_000

    def wall_ms(self) -> int:
        return (time.time_ns() + self.offset_ns) // 1_000_000


# ---- Xovis input --------------------------------------------------------------------------------


def event(kind: str, tid: int, geometry: int | None = None, **attrs_: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {"track_id": tid, **attrs_}
    if geometry is not None:
        attributes["geometry_id"] = geometry
    return {"type": kind, "attributes": attributes}


def xovis_message(
    *events: dict[str, Any], positions: Mapping[int, tuple[float, float, float]] | None = None
) -> bytes:
    """One MQTT message, one frame: `events` plus a tracked object per `positions` entry."""
    objects = [
        {"track_id": tid, "type": "PERSON", "position": list(pos)}
        for tid, pos in (positions or {}).items()
    ]
    frame = {"time": int(time.time() * 1000), "tracked_objects": objects, "events": list(events)}
    return msgspec.json.encode({"live_data": {"frames": [frame]}})


# ---- waiting ------------------------------------------------------------------------------------


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], what: str, timeout_s: float = STEP_S
) -> None:
    """Poll `predicate` (sync or async) every 20 ms; fail with `what` after `timeout_s`.

    Counters are plain ints read at scrape time (README rule 7), so there is nothing to wait on.
    """
    deadline = trio.current_time() + timeout_s
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if trio.current_time() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for: {what}")
        await trio.sleep(0.02)


# ---- Prometheus text ----------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

SampleKey = tuple[str, frozenset[tuple[str, str]]]


@attrs.frozen
class Metrics:
    """A parsed exposition: samples by (name, labels), TYPE by family name."""

    samples: Mapping[SampleKey, float]
    types: Mapping[str, str]

    def value(self, name: str, **labels: str) -> float:
        """The one sample `name` whose labels include `labels` (raises if none or several)."""
        found = [
            v for (n, ls), v in self.samples.items() if n == name and set(labels.items()) <= set(ls)
        ]
        if len(found) != 1:
            raise KeyError(f"{name}{labels}: {len(found)} samples")
        return found[0]

    def family_of(self, sample_name: str) -> str | None:
        for suffix in ("", "_bucket", "_sum", "_count", "_total"):
            base = sample_name.removesuffix(suffix) if suffix else sample_name
            if base in self.types:
                return base
        return None

    def cumulative(self) -> dict[SampleKey, float]:
        """Every counter and histogram sample that carries `site` (S157 compares these)."""
        out: dict[SampleKey, float] = {}
        for key, value in self.samples.items():
            family = self.family_of(key[0])
            if family is None or self.types[family] not in ("counter", "histogram"):
                continue
            if any(k == "site" for k, _ in key[1]):
                out[key] = value
        return out


def parse_metrics(text: str) -> Metrics:
    samples: dict[SampleKey, float] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            m = _SAMPLE.match(line)
            if m is None:
                raise ValueError(f"bad sample line: {line!r}")
            labels = frozenset(_LABEL.findall(m.group(2) or ""))
            samples[(m.group(1), labels)] = float(m.group(3))
    return Metrics(samples, types)


# ---- HTTP ---------------------------------------------------------------------------------------


@attrs.define
class GatewayHttp:
    """httpx (anyio → Trio) against one gateway; a fresh connection per request."""

    base_url: str
    token: str | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        **params: str,
    ) -> httpx.Response:
        """`token` overrides the default bearer token; pass `""` to send none."""
        hdrs = dict(headers or {})
        bearer = self.token if token is None else token
        if bearer:
            hdrs["Authorization"] = f"Bearer {bearer}"
        async with httpx.AsyncClient(base_url=self.base_url, timeout=STEP_S) as client:
            return await client.request(method, path, params=params, headers=hdrs)

    async def get(self, path: str, **params: str) -> httpx.Response:
        return await self.request("GET", path, **params)

    async def post(self, path: str, *, token: str | None = None, **params: str) -> httpx.Response:
        return await self.request("POST", path, token=token, **params)

    async def health(self) -> tuple[int, dict[str, Any]]:
        r = await self.get("/health")
        return r.status_code, r.json()

    async def metrics(self) -> Metrics:
        r = await self.get("/metrics")
        assert r.status_code == 200, r.text
        return parse_metrics(r.text)

    async def answers(self) -> bool:
        try:
            await self.get("/health")
        except httpx.TransportError:
            return False
        return True


# ---- in-process gateway -------------------------------------------------------------------------


@attrs.define
class InProcessGateway:
    """`run_gateway` running in the test's nursery; `comp` is the live Components."""

    comp: Components
    http: GatewayHttp
    done: trio.Event
    exit_code: int | None = None

    async def stop(self) -> int:
        """Request the ordered shutdown (as SIGTERM does) and return the exit code."""
        self.comp.request_stop()
        with trio.fail_after(STEP_S):
            await self.done.wait()
        assert self.exit_code is not None
        return self.exit_code

    async def wait_exit(self) -> int:
        with trio.fail_after(STEP_S):
            await self.done.wait()
        assert self.exit_code is not None
        return self.exit_code


@asynccontextmanager
async def running_gateway(
    config: Config, options: RunOptions | None = None
) -> AsyncIterator[InProcessGateway]:
    """Run a gateway in-process until the block ends (then stop it); yields once HTTP answers."""
    opts = options or RunOptions()
    opts.install_signal_handlers = False
    ready: list[Components] = []
    opts.ready = ready.append
    done = trio.Event()
    holder: list[InProcessGateway] = []

    async def run() -> None:
        try:
            code = await run_gateway(config, opts)
            if holder:
                holder[0].exit_code = code
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await wait_until(lambda: bool(ready) or done.is_set(), "run_gateway ready")
        assert ready, "run_gateway returned before it was ready"
        http = GatewayHttp(f"http://{HOST}:{config.metrics.prometheus_port}", config.http.token)
        gw = InProcessGateway(ready[0], http, done)
        holder.append(gw)
        await wait_until(http.answers, "HTTP server answers")
        try:
            yield gw
        finally:
            if not done.is_set():
                ready[0].request_stop()
                with trio.move_on_after(STEP_S):
                    await done.wait()
                nursery.cancel_scope.cancel()


# ---- subprocess gateway -------------------------------------------------------------------------


@attrs.define
class GatewayProcess:
    """`python -m gateway.app.cli --log-format json run -c PATH` with stdout+stderr in a file."""

    proc: trio.Process
    log_path: Path
    http: GatewayHttp
    signalled_at: float | None = None  # time.monotonic() of the first signal

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout_s: float = STEP_S) -> tuple[int, float]:
        """(exit code, seconds from the first signal to the exit)."""
        with trio.fail_after(timeout_s):
            code = await self.proc.wait()
        since = self.signalled_at if self.signalled_at is not None else math.nan
        return code, time.monotonic() - since

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self, event_name: str | None = None) -> list[dict[str, Any]]:
        """JSON log records (lines that are not JSON, e.g. config warnings, are skipped)."""
        out = []
        for line in self.log_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and (event_name is None or rec.get("event") == event_name):
                out.append(rec)
        return out


@asynccontextmanager
async def gateway_process(
    spec: SiteSpec, *, hooks: Iterable[str] = (), log_level: str = "info"
) -> AsyncIterator[GatewayProcess]:
    """Start `gateway run` on `spec` (test hooks via GATEWAY_TEST_HOOKS); yields once HTTP
    answers. On exit a still-running process is killed."""
    path = spec.write()
    log_path = spec.tmp_dir / "gateway.log"
    env = {**os.environ, "GATEWAY_TEST_HOOKS": ",".join(hooks), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "gateway.app.cli", "--log-level", log_level]
    argv += ["--log-format", "json", "run", "--config", str(path)]
    with log_path.open("wb") as out:
        proc = await trio.lowlevel.open_process(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    gp = GatewayProcess(proc, log_path, GatewayHttp(spec.base_url, spec.token))
    try:

        async def up() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"gateway exited {proc.returncode}:\n{gp.log_text()}")
            return await gp.http.answers()

        await wait_until(up, "gateway run answers HTTP", START_S)
        yield gp
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.move_on_after(5.0):
                await proc.wait()


# ---- MQTT ---------------------------------------------------------------------------------------


@attrs.define
class MqttProbe:
    """A test-side MQTT client: publishes, and collects messages of its subscriptions."""

    client: MqttClient
    received: list[Message] = attrs.field(factory=list)

    def on(self, topic: str) -> list[bytes]:
        return [m.payload for m in self.received if m.topic == topic]

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.client.publish(topic, payload, qos=1)  # PUBACK: the broker has it


@asynccontextmanager
async def mqtt_probe(host: str, port: int, *subscriptions: str) -> AsyncIterator[MqttProbe]:
    client = MqttClient(host, port, client_id=f"probe-{os.getpid()}-{time.monotonic_ns()}")
    async with client, trio.open_nursery() as nursery:
        for topic in subscriptions:
            await client.subscribe(topic, qos=1)
        probe = MqttProbe(client)

        async def collect() -> None:
            async for msg in client.messages:
                probe.received.append(msg)

        nursery.start_soon(collect)
        try:
            yield probe
        finally:
            nursery.cancel_scope.cancel()


async def wait_subscribed(http: GatewayHttp, probe: MqttProbe, topic: str) -> None:
    """Until the gateway's ingress provably receives `topic`: publish `{}` (a JSON object without
    `live_data`: ignored, never reaches the tracker) until `gateway_xovis_ignored_total` moves."""
    before = (await http.metrics()).value("gateway_xovis_ignored_total")

    async def seen() -> bool:
        await probe.publish(topic, b"{}")
        with trio.move_on_after(0.3):
            while True:
                m = await http.metrics()
                if m.value("gateway_xovis_ignored_total") > before:
                    return True
                await trio.sleep(0.02)
        return False

    await wait_until(seen, f"the gateway is subscribed to {topic}")
