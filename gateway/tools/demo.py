"""`gateway demo`: the whole store of simulation.md §1 in one process tree, nothing faked inside.

`run_demo` starts the mock CloudPlus controller (real TCP) with its RS485 board on a real pty,
then the gateway through `run_gateway` — the `gateway run` code path, which itself starts the
embedded broker, journal and HTTP server of the demo config (interfaces.md §11.4) — and, once
every link is up, the synthetic traffic of simulation.md §2 over real MQTT and ACC TCP.
At the end traffic stops first, then the gateway shuts down in order (its finalization releases
held journeys), and the counters are gathered into a `DemoSummary`.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import signal
import socket
import string
from collections.abc import Callable
from typing import Final

import attrs
import httpx
import trio

from gateway.app.runtime import RunOptions, run_gateway
from gateway.app.state import Components
from gateway.codecs import cloudplus
from gateway.config.loader import parse_config
from gateway.config.model import AccConfig, Config
from gateway.io.mqtt_shim import MqttClient, MqttError
from gateway.tools.mock_cloudplus import MockCloudPlus, MockOptions
from gateway.tools.traffic import TrafficModel, demo_geometry
from gateway.tools.traffic_io import TrafficIoStats, run_traffic

LOCALHOST: Final = "127.0.0.1"
START_TIMEOUT_S: Final = 20.0  # every link up (broker, ingress, egress, gate, ACC, RS485, HTTP)
READY_POLL_S: Final = 0.05  # no component exposes a "ready" event: poll its stats
HEALTH_TIMEOUT_S: Final = 2.0  # one GET /health
HEALTH_SAMPLE_S: Final = 1.0  # the summary reports the worst /health status seen
SETTLE_S: Final = 0.5  # after the last frame: broker → ingress → tracker before the stop
OBSERVER_CLIENT_ID: Final = "gateway-demo-observer"
CONFIG_PATH: Final = "<gateway demo>"  # name used in config error messages
JOURNAL_NAME: Final = "journeys.jsonl"  # inside --data-dir (§11.4: demo-data/journeys.jsonl)

Output = Callable[[str], None]

# interfaces.md §11.4 verbatim; `gateway demo --print-config` with default flags prints exactly
# this (tests/data/demo.toml). Only the ports and the two paths are substituted.
DEMO_TOML: Final = string.Template("""\
[site]
id = "demo"

[mqtt]
host = "127.0.0.1"
port = $broker_port
topic = "#"

[broker]                      # embedded broker (demo); production: run Mosquitto instead
bind_address = "127.0.0.1"
port = $broker_port

[gate]
mode = "tcp"
tcp_addr = "127.0.0.1:$gate_port"   # gateway mock-cloudplus
heartbeat_timeout_s = 45
max_command_age_ms = 2000

[rs485]
device = $rs485_device # symlink to the mock board's pseudo-terminal
baud = 19200
poll_interval_ms = 250

[zones]
pos_zones = [1001, 1002, 1003, 1004, 1005]
dwell_zones = [1010]
gate_zone = 1007
exit_line = 1006
entry_line = 1008
approach_line = 1009
store_zone = 1011

[zones.names]
1001 = "POS_1"
1002 = "POS_2"
1003 = "POS_3"
1004 = "POS_4"
1005 = "POS_5"
1006 = "EXIT_1"
1007 = "GATE_1"
1008 = "ENTRY_1"
1009 = "APPROACH_1"
1010 = "DWELL_1"
1011 = "STORE"

[pos_tracking]
min_dwell_ms = 7000
exit_grace_ms = 5000

[exit_detection]
position_threshold_y_m = 2.3
position_threshold_x_min_m = 1.5
position_threshold_x_max_m = 3.0

[metrics]
prometheus_port = $http_port
interval_secs = 10

[http]
bind = "127.0.0.1"
# token = "a-long-random-string"  # outside demo/sim, POST routes need this bearer token

[acc]
listener_enabled = true
listener_port = $acc_port
buffer_ms = 2000
dedup_window_s = 10

[acc.ip_to_pos]
"127.0.0.1" = "POS_1"
"127.0.0.2" = "POS_2"
"127.0.0.3" = "POS_3"
"127.0.0.4" = "POS_4"
"127.0.0.5" = "POS_5"

[xovis]
group_tracks = "ignore"

[egress]
file = $journal
rotate = "daily"

[mqtt_egress]
enabled = true                # same broker; the central app would use a remote host here
""")


@attrs.frozen
class DemoOptions:
    """The `gateway demo` flags (interfaces.md §10) plus the demo's own ports and paths."""

    duration_s: float = 0.0  # 0 = until Ctrl-C
    rate_per_min: float = 4.0
    seed: int = 0
    http_port: int = 9090
    broker_port: int = 1883
    acc_port: int = 25803
    gate_port: int = 8000
    data_dir: str = "demo-data"
    rs485_pty: str = "/tmp/gateway-rs485"

    @property
    def journal_path(self) -> str:
        return os.path.join(self.data_dir, JOURNAL_NAME)


def render_config(opts: DemoOptions) -> str:
    """The demo site TOML with the chosen ports and paths (what `--print-config` prints)."""
    return DEMO_TOML.substitute(
        broker_port=opts.broker_port,
        gate_port=opts.gate_port,
        http_port=opts.http_port,
        acc_port=opts.acc_port,
        rs485_device=_toml_string(opts.rs485_pty),
        journal=_toml_string(opts.journal_path),
    )


def demo_config(opts: DemoOptions) -> Config:
    """Parse the rendered TOML with the real loader; raises `ConfigError` (e.g. a port clash)."""
    return parse_config(render_config(opts), CONFIG_PATH)


def _toml_string(text: str) -> str:
    # a JSON string is a valid TOML basic string (same escapes; \\uXXXX for control characters)
    return json.dumps(text, ensure_ascii=False)


# -- ports ------------------------------------------------------------------------------------


@attrs.frozen
class PortProblem:
    flag: str
    host: str
    port: int
    reason: str

    def message(self) -> str:
        return (
            f"port {self.port} on {self.host} is {self.reason}; "
            f"choose another with {self.flag} PORT"
        )


def listeners(config: Config, opts: DemoOptions) -> list[tuple[str, str, int]]:
    """(flag, bind address, port) of every listener the demo opens."""
    assert config.broker is not None  # the demo config always has [broker]
    return [
        ("--broker-port", config.broker.bind_address, config.broker.port),
        ("--http-port", config.http.bind, config.metrics.prometheus_port),
        ("--acc-port", config.acc.bind, config.acc.listener_port),
        ("--gate-port", LOCALHOST, opts.gate_port),
    ]


def port_clashes(opts: DemoOptions) -> list[str]:
    """Two listeners given the same port (a usage error)."""
    flags = {
        "--broker-port": opts.broker_port,
        "--http-port": opts.http_port,
        "--acc-port": opts.acc_port,
        "--gate-port": opts.gate_port,
    }
    seen: dict[int, str] = {}
    clashes: list[str] = []
    for flag, port in flags.items():
        if port in seen:
            clashes.append(f"{seen[port]} and {flag} are both {port}")
        seen.setdefault(port, flag)
    return clashes


def check_ports(config: Config, opts: DemoOptions) -> list[PortProblem]:
    """Bind-test every listener before anything starts (e.g. a Mosquitto already on 1883)."""
    problems: list[PortProblem] = []
    for flag, host, port in listeners(config, opts):
        reason = _bind_problem(host, port)
        if reason is not None:
            problems.append(PortProblem(flag, host, port, reason))
    return problems


def pty_link_problem(path: str) -> str | None:
    """The board emulator replaces a symlink at `path`, never anything else."""
    if os.path.lexists(path) and not os.path.islink(path):
        return f"{path} exists and is not a symlink"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"directory {parent} does not exist"
    return None


def _bind_problem(host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # the same option trio's listeners set: a port held only by TIME_WAIT is free for them
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "already in use"
            return f"not available ({exc.strerror or exc})"
    return None


# -- the run ----------------------------------------------------------------------------------


@attrs.define
class GateFeed:
    """`gateway/gate` states as seen by an MQTT subscriber on the embedded broker."""

    states: dict[str, int] = attrs.field(factory=dict)
    connected: bool = False


@attrs.define
class DemoRun:
    """Everything the summary reads, filled in by `run_demo`."""

    options: DemoOptions
    config: Config
    exit_code: int = 1
    failure: str | None = None
    comp: Components | None = None
    mock: MockCloudPlus | None = None
    model: TrafficModel | None = None
    traffic: TrafficIoStats = attrs.field(factory=TrafficIoStats)
    gate_feed: GateFeed = attrs.field(factory=GateFeed)
    health_seen: dict[str, int] = attrs.field(factory=dict)  # /health status → samples
    drops_at_start: dict[str, int] = attrs.field(factory=dict)  # drop_counts when traffic began
    interrupted: bool = False  # stopped by a signal before --duration elapsed
    started_s: float = 0.0  # trio time when traffic started
    traffic_s: float = 0.0  # how long traffic ran


async def run_demo(opts: DemoOptions, config: Config, out: Output) -> DemoRun:
    """Run the demo; raises `MockBindError` when the controller port cannot be bound."""
    run = DemoRun(opts, config)
    mock = MockCloudPlus(MockOptions(bind=LOCALHOST, port=opts.gate_port, rs485_pty=opts.rs485_pty))
    run.mock = mock
    await mock.bind()
    ready, gateway_done = trio.Event(), trio.Event()

    def on_ready(comp: Components) -> None:
        run.comp = comp
        ready.set()

    async def gateway() -> None:
        try:
            run.exit_code = await run_gateway(
                config, RunOptions(allow_control_without_token=True, ready=on_ready)
            )
        finally:
            gateway_done.set()
            ready.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(mock.serve)
        nursery.start_soon(gateway)
        await ready.wait()
        comp = run.comp
        if comp is not None and not gateway_done.is_set():
            await _drive(run, comp, nursery, gateway_done, out)
        await gateway_done.wait()
        nursery.cancel_scope.cancel()
    if run.failure is not None:
        run.exit_code = 1
    return run


async def _drive(
    run: DemoRun, comp: Components, nursery: trio.Nursery, gateway_done: trio.Event, out: Output
) -> None:
    """Wait for every link, run the traffic, then stop the gateway (traffic first)."""
    opts, config = run.options, run.config
    base_url = f"http://{LOCALHOST}:{opts.http_port}"
    waiting = await wait_links(comp, base_url)
    if comp.stop_requested.is_set():  # Ctrl-C (or a tracker crash) while starting
        run.interrupted = True
        return
    if waiting:
        run.failure = f"not ready after {START_TIMEOUT_S:.0f} s: {', '.join(waiting)}"
        comp.request_stop()
        return
    out(f"dashboard   {base_url}/   (health {base_url}/health, metrics {base_url}/metrics)")
    out(f"journal     {opts.journal_path}")
    out(
        f"broker      {LOCALHOST}:{opts.broker_port} (embedded)   try: mosquitto_sub -p "
        f"{opts.broker_port} -t 'gateway/#' -v"
    )
    out(f"controller  {LOCALHOST}:{opts.gate_port} (mock CloudPlus), RS485 board {opts.rs485_pty}")
    until = f"{opts.duration_s:g} s" if opts.duration_s else "Ctrl-C"
    out(
        f"traffic     {opts.rate_per_min:g} customers/min, seed {opts.seed}, "
        f"ACC from 127.0.0.1-5 to port {opts.acc_port}; runs until {until}"
    )
    with trio.move_on_after(START_TIMEOUT_S):
        await nursery.start(_watch_gate_feed, config, run.gate_feed)
    nursery.start_soon(_sample_health, comp, run.health_seen)
    run.drops_at_start = drop_counts(comp, run.traffic)
    run.model = TrafficModel(demo_geometry(config.zones, config.acc), opts.rate_per_min, opts.seed)
    run.started_s = trio.current_time()
    async with trio.open_nursery() as traffic:
        traffic.start_soon(_cancel_when, comp.stop_requested, traffic.cancel_scope)
        try:
            await run_traffic(
                run.model,
                mqtt_host=LOCALHOST,
                mqtt_port=opts.broker_port,
                acc_host=LOCALHOST,
                acc_port=opts.acc_port,
                duration_s=opts.duration_s or None,
                stats=run.traffic,
            )
        except (OSError, trio.TooSlowError) as exc:
            run.failure = f"traffic could not connect to the broker: {exc}"
        traffic.cancel_scope.cancel()
    run.traffic_s = trio.current_time() - run.started_s
    run.interrupted = comp.stop_requested.is_set()
    if not run.interrupted:
        await trio.sleep(SETTLE_S)
        comp.request_stop()
    await gateway_done.wait()


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def wait_links(comp: Components, base_url: str) -> list[str]:
    """Poll until every link is up; returns the names still down after START_TIMEOUT_S."""
    waiting: list[str] = []
    with trio.move_on_after(START_TIMEOUT_S):
        async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT_S) as client:
            while True:
                waiting = _links_down(comp)
                if not waiting:
                    try:
                        response = await client.get(f"{base_url}/health")
                    except httpx.HTTPError:
                        waiting = ["http"]
                    else:
                        if response.status_code == 200:
                            return []
                        waiting = [f"http (/health {response.status_code})"]
                if comp.stop_requested.is_set():
                    return waiting
                await trio.sleep(READY_POLL_S)
    return waiting


def _links_down(comp: Components) -> list[str]:
    checks = {
        "broker": comp.broker_stats.state == "ok",
        "mqtt_ingress": comp.ingress_stats.subscribed,
        "mqtt_egress": comp.egress_stats.connected,
        "gate": bool(comp.gate_stats.link_connected),
        "acc": comp.acc_stats.listening,
        "rs485": comp.rs485_stats.port_open and comp.rs485_stats.polls["ok"] > 0,
    }
    return [name for name, up in checks.items() if not up]


async def _watch_gate_feed(
    config: Config, feed: GateFeed, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Count gate states (`blocked`, `cmd_sent`, door states) from the gateway's egress topic;
    `started()` once subscribed (or failed: the summary then shows no gate states)."""
    topic = config.mqtt_egress.gate_topic
    client = MqttClient(config.mqtt.host, config.mqtt.port, client_id=OBSERVER_CLIENT_ID)
    try:
        async with client:
            await client.subscribe(topic)
            feed.connected = True
            task_status.started()
            async for message in client.messages:
                try:
                    state = str(json.loads(message.payload)["state"])
                except (ValueError, KeyError, TypeError):
                    continue
                feed.states[state] = feed.states.get(state, 0) + 1
    except MqttError:  # could not subscribe, or the broker stopped with the gateway
        if not feed.connected:
            task_status.started()
    finally:
        feed.connected = False


async def _sample_health(comp: Components, seen: dict[str, int]) -> None:
    while not comp.shutting_down:
        status = str(comp.health()[0]["status"])
        seen[status] = seen.get(status, 0) + 1
        await trio.sleep(HEALTH_SAMPLE_S)


def drop_counts(comp: Components, traffic: TrafficIoStats) -> dict[str, int]:
    """Every drop counter of the gateway (the `*_dropped_total` metrics) and of the traffic."""
    c = comp.tracker.counters
    actor = comp.actor.stats if comp.actor is not None else None
    return {
        "mqtt_ingress": comp.ingress_stats.events_dropped + comp.ingress_stats.inbound_dropped,
        "acc": comp.acc_stats.events_dropped,
        "gate": c.gate_cmds_dropped + comp.gate_stats.cmds_dropped + comp.manual_stats.dropped,
        "journeys": (actor.journey_egress_dropped if actor else 0) + comp.journal_stats.dropped,
        **{f"mqtt_egress_{k}": v for k, v in comp.egress_stats.dropped.items()},
        "live_feed": comp.livefeed_stats.dropped,
        "analysis_log": comp.ingress_stats.analysis_dropped + comp.analysis_stats.lost,
        "traffic": traffic.publish_failed + traffic.acc_dropped,
    }


def open_frames(mock: MockCloudPlus) -> int:
    """Open frames the controller received (the real gate opens)."""
    return sum(1 for f in mock.received_frames if f.frame.command == cloudplus.CMD_OPEN)


# -- traffic only (compose `simulator` profile) -------------------------------------------------


def parse_host_port(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`); raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def traffic_acc(config: Config, acc_host: str) -> AccConfig:
    """Terminal mapping for the traffic: the demo's 127.0.0.1–5 on loopback; towards another host
    one terminal (POS_1) sending from this machine's own address, which the gateway maps
    (docker/gateway.example.toml maps the simulator's fixed address to POS_1)."""
    if is_loopback(acc_host):
        return config.acc
    return attrs.evolve(config.acc, ip_to_pos={"0.0.0.0": "POS_1"})


@attrs.define
class TrafficOnlyRun:
    model: TrafficModel
    stats: TrafficIoStats = attrs.field(factory=TrafficIoStats)
    elapsed_s: float = 0.0
    failure: str | None = None  # the broker could not be reached


async def run_traffic_only(
    opts: DemoOptions, broker: tuple[str, int], acc: tuple[str, int], out: Output
) -> TrafficOnlyRun:
    """Traffic for an external gateway until --duration or SIGINT/SIGTERM."""
    config = demo_config(opts)
    geometry = demo_geometry(config.zones, traffic_acc(config, acc[0]))
    run = TrafficOnlyRun(TrafficModel(geometry, opts.rate_per_min, opts.seed))
    out(
        f"traffic     {opts.rate_per_min:g} customers/min, seed {opts.seed} → MQTT "
        f"{broker[0]}:{broker[1]}, ACC {acc[0]}:{acc[1]}"
    )
    t0 = trio.current_time()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            try:
                await run_traffic(
                    run.model,
                    mqtt_host=broker[0],
                    mqtt_port=broker[1],
                    acc_host=acc[0],
                    acc_port=acc[1],
                    duration_s=opts.duration_s or None,
                    stats=run.stats,
                )
            except (OSError, trio.TooSlowError) as exc:
                run.failure = f"cannot reach the broker {broker[0]}:{broker[1]}: {exc!r}"
            nursery.cancel_scope.cancel()
    run.elapsed_s = trio.current_time() - t0
    return run
