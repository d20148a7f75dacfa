"""`gateway sim`: scripted end-to-end scenarios against a gateway built from a site config.

simulation.md §3, interfaces.md §10. The site config is used unchanged except for endpoints: a
broker (embedded on a free port, or `--broker H:P`), the mock CloudPlus controller and its pty
RS485 board, ACC listener and HTTP server on free 127.0.0.1 ports, a temporary journal. The real
gateway runs in-process (`run_gateway`); the harness is `gateway.tools.sim`, the scripts are
`gateway.tools.sim_scenarios`. Exit 0 when no scenario failed, 1 otherwise, 2 config/usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal

import attrs
import httpx
import trio

from gateway.app.cmd_config import EXIT_CONFIG, load_or_report
from gateway.app.runtime import RunOptions, run_gateway
from gateway.app.state import Components
from gateway.config.model import BrokerConfig, Config
from gateway.io.broker import BrokerStats, run_broker
from gateway.io.egress import topic_map
from gateway.io.gate_link import GateLink
from gateway.io.mqtt_shim import MqttClient, MqttError
from gateway.tools.board_emulator import BoardEmulator
from gateway.tools.sim import (
    Controller,
    Observer,
    PosBook,
    Sensor,
    SimError,
    Stage,
    unique_client_id,
)
from gateway.tools.sim_scenarios import (
    SCENARIO_NAMES,
    SCENARIOS,
    Scenario,
    ScenarioFailed,
    SimConfigError,
    SitePlan,
)

READY_TIMEOUT_S: Final = 20.0  # broker + gateway + controller link + first RS485 poll
STOP_TIMEOUT_S: Final = 15.0  # the gateway's ordered shutdown (D15) is normally < 2 s
LEDGER_SETTLE_S: Final = 1.0  # an open frame and its `cmd_sent` travel different paths
STAGGER_S: Final = 0.3  # concurrent scenarios start this far apart
POLL_S: Final = 0.05  # readiness flags are plain attributes without an event
NET_TIMEOUT_S: Final = 5.0  # one ACC line or HTTP request

Status = Literal["PASS", "FAIL", "SKIP"]
Output = Callable[[str], None]


# -- options, report, config redirection -------------------------------------------------------


@attrs.frozen
class SimOptions:
    scenarios: tuple[str, ...] = tuple(s.name for s in SCENARIOS)
    broker: tuple[str, int] | None = None  # None: embedded broker on a free 127.0.0.1 port
    verbose: bool = False  # print every message seen (egress, Xovis events, controller, ACC)
    workdir: str | None = None  # journal, analysis log, pty link; None: a temporary directory
    topic_prefix: str = ""  # for tests sharing a broker: "<p>/xovis/sim", "<p>/gateway/…"
    out: Output = print


@attrs.frozen
class ScenarioResult:
    name: str
    spec: str
    status: Status
    duration_s: float  # without the time spent queueing for a POS zone or the door
    timeout_s: float
    detail: str
    tids: tuple[int, ...] = ()
    zones: tuple[str, ...] = ()
    waited_s: float = 0.0


@attrs.frozen
class SimReport:
    site: str
    broker: str
    results: tuple[ScenarioResult, ...]
    open_frames: int  # open frames the controller read, all instances
    sent_tids: tuple[int, ...]  # `cmd_sent` tids in arrival order: open frame k ↔ sent_tids[k]
    messages: tuple[tuple[str, dict[str, Any]], ...]  # (kind, payload) seen on the egress
    journeys: tuple[dict[str, Any], ...]  # the journal after the gateway stopped
    problems: tuple[str, ...]  # run-level failures (ledger mismatch, gateway exit code)
    gateway_exit_code: int | None
    elapsed_s: float

    @property
    def failed(self) -> bool:
        return bool(self.problems) or any(r.status == "FAIL" for r in self.results)

    def result(self, name: str) -> ScenarioResult:
        return next(r for r in self.results if r.name == name)

    def frames_for(self, tid: int) -> int:
        """Open frames the controller read for `tid` (frame k belongs to the k-th `cmd_sent`)."""
        return sum(1 for k, t in enumerate(self.sent_tids) if t == tid and k < self.open_frames)

    def journeys_of(self, tid: int) -> list[dict[str, Any]]:
        return [j for j in self.journeys if tid in j.get("tids", ())]


def redirect_config(
    config: Config,
    *,
    broker: tuple[str, int],
    gate_port: int,
    http_port: int,
    acc_port: int,
    workdir: Path,
    rs485_device: str,
    topic_prefix: str = "",
) -> Config:
    """Only endpoints change (simulation.md §3). MQTT egress is forced on: the sim watches it."""
    host, port = broker
    mqtt = attrs.evolve(
        config.mqtt, host=host, port=port, username=None, password=None,
        client_id=unique_client_id("gateway"),
        topic=f"{topic_prefix}/xovis/#" if topic_prefix else config.mqtt.topic,
    )  # fmt: skip
    egress = attrs.evolve(
        config.mqtt_egress, enabled=True, host=host, port=port, username=None, password=None
    )
    if topic_prefix:
        e = egress
        egress = attrs.evolve(
            e, journeys_topic=f"{topic_prefix}/{e.journeys_topic}",
            events_topic=f"{topic_prefix}/{e.events_topic}",
            metrics_topic=f"{topic_prefix}/{e.metrics_topic}",
            gate_topic=f"{topic_prefix}/{e.gate_topic}",
            tracks_topic=f"{topic_prefix}/{e.tracks_topic}",
            acc_topic=f"{topic_prefix}/{e.acc_topic}",
            positions_topic=f"{topic_prefix}/{e.positions_topic}",
        )  # fmt: skip
    rs485 = config.rs485
    if rs485.enabled:
        rs485 = attrs.evolve(rs485, device=rs485_device)
    return attrs.evolve(
        config,
        broker=None,  # the sim runs (or was given) the broker
        mqtt=mqtt,
        mqtt_egress=egress,
        gate=attrs.evolve(config.gate, tcp_addr=f"127.0.0.1:{gate_port}"),
        rs485=rs485,
        metrics=attrs.evolve(config.metrics, prometheus_port=http_port),
        http=attrs.evolve(config.http, bind="127.0.0.1"),
        acc=attrs.evolve(config.acc, bind="127.0.0.1", listener_port=acc_port),
        egress=attrs.evolve(config.egress, file=str(workdir / "journeys.jsonl")),
        analysis_log=attrs.evolve(config.analysis_log, dir=str(workdir / "analysis")),
    )


def free_ports(n: int) -> list[int]:
    """`n` distinct free 127.0.0.1 ports (bound together so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


# -- the run -----------------------------------------------------------------------------------


async def run_sim(config: Config, options: SimOptions) -> SimReport:
    """Run the selected scenarios against a gateway built from `config`. A failing scenario is a
    FAIL row (`SimReport.failed`); `SimConfigError` (exit 2) / `SimError` (exit 1) otherwise."""
    plan = SitePlan.from_config(config)
    selected = [s for s in SCENARIOS if s.name in options.scenarios]
    with contextlib.ExitStack() as stack:
        workdir = options.workdir or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="gateway-sim-")
        )
        try:
            return await SimRun(config, plan, options, Path(workdir)).execute(selected)
        except BaseExceptionGroup as group:  # a background task failed: report its SimError
            if group.subgroup(KeyboardInterrupt) is not None:
                raise KeyboardInterrupt from group  # Ctrl-C (the gateway's handlers are off)
            found = group.subgroup(SimError)
            if found is None:
                raise
            first: BaseException = found
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise SimError(str(first)) from group


class SimRun:
    """One sim run: environment up, scenarios, environment down, report. `Stage` reaches the
    sensor, observer, controller, bookings and ACC senders through it."""

    def __init__(self, config: Config, plan: SitePlan, options: SimOptions, workdir: Path) -> None:
        self.config, self.plan, self.options, self.workdir = config, plan, options, workdir
        self.t0 = trio.current_time()
        self.comp: Components | None = None
        self.gateway_code: int | None = None
        self.gateway_done = trio.Event()
        self.problems: list[str] = []
        self.broker_text = ""
        self.book = PosBook(plan.grace_s)
        self.gate_lock = trio.Lock()
        self.acc_port = 0
        self.base_url = ""
        self.observer = Observer(self.log)
        self.sensor: Sensor
        self.controller: Controller
        self.http: httpx.AsyncClient

    def log(self, source: str, text: str) -> None:
        """`--verbose`: every message seen, with seconds since the start."""
        if self.options.verbose:
            self.options.out(f"{trio.current_time() - self.t0:8.3f} {source:<10} {text}")

    async def execute(self, selected: list[Scenario]) -> SimReport:
        results: list[ScenarioResult] = []
        async with trio.open_nursery() as services:  # broker, board, controller, gateway
            try:
                cfg, broker = await self._services(services)
                async with contextlib.AsyncExitStack() as clients:
                    await self._connect(clients, cfg, broker)
                    async with trio.open_nursery() as tasks:  # sensor, observer
                        await tasks.start(self.observer.run, self._observer_client)
                        await tasks.start(self.sensor.run, self._sensor_client)
                        try:
                            services.start_soon(self._run_gateway, cfg)
                            await self._wait_ready(cfg)
                            results = await self._scenarios(selected)
                            await self._settle_ledger()
                        finally:
                            with trio.move_on_after(STOP_TIMEOUT_S, shield=True):
                                await self._stop_gateway()  # journeys still held are released
                            tasks.cancel_scope.cancel()
            finally:
                services.cancel_scope.cancel()
        return SimReport(
            site=self.config.site.id,
            broker=self.broker_text,
            results=tuple(results),
            open_frames=self.controller.open_frames,
            sent_tids=tuple(self.observer.sent_tids),
            messages=tuple((m.kind, m.payload) for m in self.observer.seen),
            journeys=tuple(_read_journal(Path(cfg.egress.file))),
            problems=tuple(self.problems),
            gateway_exit_code=self.gateway_code,
            elapsed_s=trio.current_time() - self.t0,
        )

    # -- environment ---------------------------------------------------------------------------

    async def _services(self, nursery: trio.Nursery) -> tuple[Config, tuple[str, int]]:
        """Broker, RS485 board, controller; then the config with every endpoint redirected."""
        config, opts = self.config, self.options
        if opts.broker is None:
            stats = BrokerStats()
            await nursery.start(run_broker, BrokerConfig(bind_address="127.0.0.1", port=0), stats)
            broker = ("127.0.0.1", stats.port)
            self.broker_text = f"embedded 127.0.0.1:{stats.port}"
        else:
            broker = opts.broker
            self.broker_text = f"{broker[0]}:{broker[1]}"
        http_port, self.acc_port = free_ports(2)
        self.base_url = f"http://127.0.0.1:{http_port}"
        board: BoardEmulator | None = None
        rs485_link = str(self.workdir / "rs485")
        if config.rs485.enabled:
            board = BoardEmulator(link_path=rs485_link)
            await nursery.start(board.run)
        door_url = None if board is not None else self.base_url
        self.controller = Controller(
            nursery, board, door_url, config.http.token, self.log, self.observer.notify
        )
        gate_port = await self.controller.start()
        cfg = redirect_config(
            config, broker=broker, gate_port=gate_port, http_port=http_port,
            acc_port=self.acc_port, workdir=self.workdir, rs485_device=rs485_link,
            topic_prefix=opts.topic_prefix,
        )  # fmt: skip
        self.observer.watch(topic_map(cfg.mqtt_egress))
        prefix = f"{opts.topic_prefix}/" if opts.topic_prefix else ""
        self.sensor = Sensor(f"{prefix}xovis/sim", self.log)
        return cfg, broker

    async def _connect(
        self, stack: contextlib.AsyncExitStack, cfg: Config, broker: tuple[str, int]
    ) -> None:
        self.http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=self.base_url, timeout=NET_TIMEOUT_S)
        )
        clients = []
        for client_id in (self.observer.client_id, self.sensor.client_id):
            try:
                client = MqttClient(broker[0], broker[1], client_id=client_id)
                clients.append(await stack.enter_async_context(client))
            except MqttError as exc:
                raise SimError(f"cannot connect to the broker {self.broker_text}: {exc}") from exc
        self._observer_client, self._sensor_client = clients

    async def _run_gateway(self, cfg: Config) -> None:
        def ready(comp: Components) -> None:
            self.comp = comp

        options = RunOptions(
            allow_control_without_token=True, install_signal_handlers=False, ready=ready
        )
        try:
            self.gateway_code = await run_gateway(cfg, options)
        finally:
            self.gateway_done.set()

    async def _wait_ready(self, cfg: Config) -> None:
        missing = ["runtime"]
        with trio.move_on_after(READY_TIMEOUT_S):
            while missing:
                if self.gateway_done.is_set():
                    raise SimError(f"the gateway exited during start-up (code {self.gateway_code})")
                missing = await self._not_ready(cfg)
                if missing:
                    await trio.sleep(POLL_S)
        if missing:
            raise SimError(f"gateway not ready after {READY_TIMEOUT_S:g} s: {', '.join(missing)}")
        self.log("sim", f"gateway ready; POS order {[self.plan.name(z) for z in self.plan.pos]}")

    async def _not_ready(self, cfg: Config) -> list[str]:
        comp = self.comp
        if comp is None:
            return ["runtime"]
        missing = []
        if not comp.ingress_stats.subscribed:
            missing.append("MQTT ingress subscription")
        if not comp.egress_stats.connected:
            missing.append("MQTT egress")
        if isinstance(comp.gate_sender, GateLink) and not comp.gate_sender.connected:
            missing.append("controller link")
        if missing:
            return missing
        try:
            response = await self.http.get("/health")
            if comp.door_reading().status != "closed" and not cfg.rs485.enabled:
                # the HTTP door feed reports changes only: tell the gateway where the door starts
                await self.http.post("/door/simulate", params={"status": "closed"})
        except httpx.HTTPError:
            return ["HTTP server"]
        if response.status_code != 200:
            return [f"/health {response.status_code}"]
        door = comp.door_reading().status
        if door != "closed":
            return [f"door state closed (is {door})"]
        if self.observer.door_state == "unknown":  # published before the egress was connected
            self.observer.door_state = door
        return []

    async def _stop_gateway(self) -> None:
        if self.comp is None:
            return
        self.comp.request_stop()
        await self.gateway_done.wait()
        if self.gateway_code not in (0, None):
            self.problems.append(f"gateway exit code {self.gateway_code}")

    async def _settle_ledger(self) -> None:
        """Every open frame the controller read must be a `cmd_sent` the gateway reported."""

        def balanced() -> bool | None:
            return True if self.controller.open_frames == len(self.observer.sent_tids) else None

        with trio.move_on_after(LEDGER_SETTLE_S):
            await self.observer.wait_until(balanced)
        frames, sent = self.controller.open_frames, len(self.observer.sent_tids)
        if frames != sent:
            self.problems.append(f"the controller read {frames} open frames, cmd_sent said {sent}")

    # -- ACC senders (interfaces.md §2, §8) ------------------------------------------------------

    async def send_acc_tcp(self, source_ip: str, line: bytes) -> None:
        """One terminal connection from `source_ip` (Linux routes all of 127/8 to loopback)."""
        try:
            with trio.fail_after(NET_TIMEOUT_S):
                sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                with sock:
                    await sock.bind((source_ip, 0))
                    await sock.connect(("127.0.0.1", self.acc_port))
                    stream = trio.SocketStream(sock)
                    await stream.send_all(line)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            raise ScenarioFailed(f"ACC over TCP from {source_ip}: {exc!r}") from exc
        self.log("acc", f"tcp {source_ip} → 127.0.0.1:{self.acc_port} {line!r}")

    async def send_acc_http(self, pos: str, receipt: str) -> None:
        token = self.config.http.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        params = {"pos": pos, "receipt": receipt}
        try:
            with trio.fail_after(NET_TIMEOUT_S):
                response = await self.http.post("/acc/simulate", params=params, headers=headers)
        except (httpx.HTTPError, trio.TooSlowError) as exc:
            raise ScenarioFailed(f"POST /acc/simulate: {exc!r}") from exc
        self.log("acc", f"POST /acc/simulate pos={pos} receipt={receipt} → {response.text}")
        if response.status_code != 200:
            raise ScenarioFailed(f"POST /acc/simulate: {response.status_code} {response.text}")

    async def link_connected(self) -> bool:
        """The gateway's own view of the controller link (`GET /health`)."""
        try:
            response = await self.http.get("/health")
            return bool(response.json()["components"]["gate"]["connected"])
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise ScenarioFailed(f"GET /health: {exc!r}") from exc

    # -- scenarios -----------------------------------------------------------------------------

    async def _scenarios(self, selected: list[Scenario]) -> list[ScenarioResult]:
        results: dict[str, ScenarioResult] = {}
        runnable: list[Scenario] = []
        for sc in selected:
            reason = sc.skip_reason(self.plan)
            if reason is None:
                runnable.append(sc)
                continue
            results[sc.name] = ScenarioResult(
                sc.name, sc.spec, "SKIP", 0.0, sc.timeout_for(self.plan), reason
            )
            self._progress(results[sc.name])
        # journey waits first, so their 10 s egress holds overlap the others (stable sort)
        together = sorted((s for s in runnable if not s.exclusive), key=lambda s: not s.journey)
        zones = self._assign_zones(together)
        async with trio.open_nursery() as nursery:
            for k, sc in enumerate(together):
                nursery.start_soon(self._run_one, sc, zones[sc.name], k * STAGGER_S, results)
        for sc in (s for s in runnable if s.exclusive):
            await self._run_one(sc, self.plan.pos[: sc.pos_roles], 0.0, results)
        return [results[s.name] for s in selected]

    def _assign_zones(self, together: list[Scenario]) -> dict[str, tuple[int, ...]]:
        """Alone: POS_1 (and POS_2). Together: spread over the site's POS zones, least booked
        first, so customers rarely queue for a zone (what each scenario tests is unchanged)."""
        pos = self.plan.pos
        if len(together) <= 1:
            return {s.name: pos[: s.pos_roles] for s in together}
        booked = dict.fromkeys(pos, 0)
        out: dict[str, tuple[int, ...]] = {}
        for sc in together:
            picked = sorted(pos, key=lambda z: (booked[z], pos.index(z)))[: sc.pos_roles]
            picked.sort(key=pos.index)
            for z in picked:
                booked[z] += 1
            out[sc.name] = tuple(picked)
        return out

    async def _run_one(
        self, sc: Scenario, zones: tuple[int, ...], delay_s: float, out: dict[str, ScenarioResult]
    ) -> None:
        await trio.sleep(delay_s)
        number = SCENARIOS.index(sc) + 1
        stage = Stage(self, sc, zones, first_tid=number * 1000 + 1)
        timeout = sc.timeout_for(self.plan)
        start = trio.current_time()
        status: Status = "PASS"
        detail = ""
        with trio.CancelScope(deadline=start + timeout) as scope:
            stage.scope = scope
            try:
                await sc.script(stage)
            except ScenarioFailed as exc:
                status, detail = "FAIL", str(exc)
        if scope.cancelled_caught:
            status, detail = "FAIL", f"timeout ({timeout:g} s) waiting for {stage.waiting}"
        duration = trio.current_time() - start - stage.paused_s
        await stage.cleanup()
        out[sc.name] = ScenarioResult(
            sc.name, sc.spec, status, duration, timeout, stage.detail(detail),
            tuple(stage.tids), tuple(self.plan.name(z) for z in zones), stage.paused_s,
        )  # fmt: skip
        self._progress(out[sc.name])

    def _progress(self, r: ScenarioResult) -> None:
        self.options.out(f"  {r.status:<4} {r.name:<19} {r.duration_s:5.1f} s  {r.detail}")


def _read_journal(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- CLI ---------------------------------------------------------------------------------------


def _broker_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sim",
        help="scripted end-to-end scenarios against a site config",
        description="Runs the simulation.md §3 scenarios against a gateway built from the site "
        "config, every endpoint redirected locally. Exit 0 when none failed, 1 when any failed, "
        "2 on a config or usage error.",
    )
    p.add_argument("--config", "-c", required=True, metavar="PATH", help="site TOML file")
    p.add_argument(
        "--scenario", default="all", choices=("all", *SCENARIO_NAMES), metavar="NAME|all",
        help=f"one of {', '.join(SCENARIO_NAMES)} (default: all)",
    )  # fmt: skip
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--verbose", action="store_true", help="print every message seen")
    p.add_argument(
        "--broker", type=_broker_address, metavar="H:P",
        help="use this broker (e.g. mosquitto) instead of the embedded one",
    )  # fmt: skip
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    out = partial(print, flush=True)
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    try:
        plan = SitePlan.from_config(config)
    except SimConfigError as exc:
        print(f"gateway sim: cannot simulate {config.path}: {exc}", file=sys.stderr)
        return 2
    if args.list:
        _print_list(plan, out)
        return 0
    names = SCENARIO_NAMES if args.scenario == "all" else (args.scenario,)
    pos = ", ".join(f"{plan.name(z)} ({z})" for z in plan.pos)
    out(f"gateway sim: site {config.site.id!r} ({config.path}), POS order {pos}")
    options = SimOptions(scenarios=names, broker=args.broker, verbose=args.verbose, out=out)
    with _quiet_logs(args.verbose):
        try:
            report = trio.run(run_sim, config, options)
        except SimError as exc:
            print(f"gateway sim: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("gateway sim: interrupted", file=sys.stderr)
            return 1
    _print_table(report, out)
    return 1 if report.failed else 0


@contextlib.contextmanager
def _quiet_logs(verbose: bool) -> Iterator[None]:
    """The table is the output: the in-process gateway logs only errors (link_down's expected
    connect warnings, …) unless `--verbose`; httpx's one INFO line per request never."""
    floors = {"httpx": logging.WARNING} | ({} if verbose else {"gateway": logging.ERROR})
    loggers = {logging.getLogger(name): floor for name, floor in floors.items()}
    saved = {logger: logger.level for logger in loggers}
    for logger, floor in loggers.items():
        logger.setLevel(max(logger.getEffectiveLevel(), floor))
    try:
        yield
    finally:
        for logger, level in saved.items():
            logger.setLevel(level)


def _print_list(plan: SitePlan, out: Output) -> None:
    for sc in SCENARIOS:
        skip = sc.skip_reason(plan)
        state = f"SKIP: {skip}" if skip else f"timeout {sc.timeout_for(plan):g} s"
        out(f"{sc.name:<19} {sc.spec}  {sc.summary} ({state})")


def _print_table(report: SimReport, out: Output) -> None:
    out("")
    out(f"{'SCENARIO':<19} {'SPEC':<5} {'RESULT':<6} {'TIME':>7} {'LIMIT':>6}  DETAIL")
    for r in report.results:
        took = "-" if r.status == "SKIP" else f"{r.duration_s:.1f} s"
        out(f"{r.name:<19} {r.spec:<5} {r.status:<6} {took:>7} {r.timeout_s:>4.0f} s  {r.detail}")
    counts = {s: sum(1 for r in report.results if r.status == s) for s in ("PASS", "FAIL", "SKIP")}
    out(
        f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped in "
        f"{report.elapsed_s:.1f} s (broker {report.broker}; controller read "
        f"{report.open_frames} open frames, gateway reported {len(report.sent_tids)} cmd_sent)"
    )
    for problem in report.problems:
        out(f"FAIL: {problem}")
