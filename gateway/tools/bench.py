"""`gateway bench`: honest performance measurement (simulation.md §6, interfaces.md §10).

Phases: gate (+ burst) and throughput (+ rs485) against a separate `gateway run` process,
handler and memory in fresh child interpreters, soak on request. Each live repeat gets a fresh
gateway and a warm-up that is never reported. Exit 0 = completed and every target met,
1 = a target missed or a phase failed (with `--quick` targets are printed, not enforced), 2 = usage.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from gateway.config.loader import load_config
from gateway.tools import bench_core
from gateway.tools.bench_broker import DROPPED_TOPIC, BenchBrokerError, BrokerInfo, open_broker
from gateway.tools.bench_gate import GateParams, GateRun, run_gate
from gateway.tools.bench_gateway import GatewayStartError, bench_toml
from gateway.tools.bench_host import Machine, describe
from gateway.tools.bench_mqtt import RawMqttError, RawSubscriber
from gateway.tools.bench_report import (
    PhaseReport,
    burst_report,
    gate_report,
    handler_report,
    memory_report,
    rs485_report,
    soak_report,
    throughput_report,
)
from gateway.tools.bench_rig import Rig, open_rig
from gateway.tools.bench_throughput import (
    Stream,
    ThroughputParams,
    ThroughputRun,
    generate_stream,
    run_throughput,
)
from gateway.tools.traffic import DEFAULT_TOPIC, demo_geometry

PHASES: Final = ("gate", "burst", "throughput", "handler", "memory", "soak", "rs485")
DEFAULT_PHASES: Final = tuple(p for p in PHASES if p != "soak")
QUIET_LOGGERS: Final = ("httpx", "gateway.tools.traffic_io")
SOAK_S: Final = 600.0  # §6: 10 min
# failures a phase may end with; anything else is a bug and propagates
PHASE_ERRORS: Final = (
    GatewayStartError, BenchBrokerError, bench_core.CorePhaseError, RawMqttError, OSError,
    trio.TooSlowError, ValueError,
)  # fmt: skip


@attrs.frozen
class BenchOptions:
    broker: str | None = None
    repeats: int = 3
    trials: int = 500
    duration_s: float = 60.0
    soak: bool = False
    pin: int | None = None
    phases: tuple[str, ...] = DEFAULT_PHASES
    json_path: str | None = None
    quick: bool = False
    seed: int = 1
    # the §6 warm-up and sizes; --quick shrinks them
    warmup_s: float = 10.0
    discard: int = 50
    bursts: int = 5  # per gate repeat, spread over its trials
    handler_events: int = 200_000
    memory_persons: int = 10_000
    soak_s: float = SOAK_S

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchOptions:
        quick = bool(args.quick)
        phases = tuple(args.phases.split(",")) if args.phases else DEFAULT_PHASES
        if args.soak and "soak" not in phases:
            phases += ("soak",)
        sizes: dict[str, Any] = {}
        if quick:  # ≤ 60 s in total: one short repeat of everything
            sizes = dict(warmup_s=2.0, discard=10, bursts=1, handler_events=20_000, soak_s=30.0)
        return cls(
            broker=args.broker,
            repeats=args.repeats if args.repeats is not None else (1 if quick else 3),
            trials=args.trials if args.trials is not None else (40 if quick else 500),
            duration_s=args.duration if args.duration is not None else (5.0 if quick else 60.0),
            soak="soak" in phases,
            pin=args.pin,
            phases=phases,
            json_path=args.json,
            quick=quick,
            **sizes,
        )


@attrs.define
class Outcome:
    machine: Machine | None = None
    reports: list[PhaseReport] = attrs.field(factory=list)
    failures: list[str] = attrs.field(factory=list)
    elapsed_s: dict[str, float] = attrs.field(factory=dict)  # wall time per phase group

    def exit_code(self, quick: bool) -> int:
        if self.failures:
            return 1
        if quick:
            return 0
        return 0 if all(r.ok for r in self.reports) else 1

    def as_dict(self, opts: BenchOptions) -> dict[str, Any]:
        return {
            "machine": attrs.asdict(self.machine) if self.machine else None,
            "options": attrs.asdict(opts),
            "phases": {r.name: {"line": r.line, **r.data} for r in self.reports},
            "targets": [v.as_dict() for r in self.reports for v in r.verdicts],
            "failures": self.failures,
            "elapsed_s": self.elapsed_s,
            "exit_code": self.exit_code(opts.quick),
        }


def _say(text: str) -> None:
    print(text, flush=True)


def _progress(text: str) -> None:
    print(f"… {text}", file=sys.stderr, flush=True)


def _geometry(workdir: Path) -> Any:
    path = workdir / "geometry.toml"
    path.write_text(
        bench_toml(mqtt_port=1883, gate_port=8000, rs485_device="/dev/null", http_port=9090,
                   acc_port=25803, journal=workdir / "j.jsonl")
    )  # fmt: skip
    config = load_config(path)
    return demo_geometry(config.zones, config.acc)


@attrs.frozen
class _Env:
    """What every live repeat shares: the broker, its `$SYS` watcher and the scratch dir."""

    opts: BenchOptions
    broker: BrokerInfo
    workdir: Path
    sys_watch: RawSubscriber | None

    def rig(self, name: str, topics: tuple[str, ...] = ()) -> AbstractAsyncContextManager[Rig]:
        return open_rig(self.broker, self.workdir / name, pin=self.opts.pin, topics=topics,
                        sys_watch=self.sys_watch)  # fmt: skip


async def _gate_runs(env: _Env, params: GateParams, count: int, tag: str) -> list[GateRun]:
    runs: list[GateRun] = []
    for r in range(count):
        _progress(f"{tag} repeat {r + 1}/{count}")
        async with env.rig(f"{tag}-{r + 1}", (DEFAULT_TOPIC,)) as rig:
            run = await run_gate(rig, attrs.evolve(params, seed=env.opts.seed + r))
        run.gc, run.exit_code = rig.gateway.gc_report, rig.gateway.exit_code
        runs.append(run)
    return runs


async def _throughput_runs(
    env: _Env, params: ThroughputParams, stream: Stream
) -> list[ThroughputRun]:
    runs: list[ThroughputRun] = []
    repeats = env.opts.repeats
    for r in range(repeats):
        _progress(f"throughput repeat {r + 1}/{repeats}")
        async with env.rig(f"throughput-{r + 1}") as rig:
            run = await run_throughput(rig, stream, params)
        run.gc, run.exit_code = rig.gateway.gc_report, rig.gateway.exit_code
        runs.append(run)
    return runs


async def run_bench(opts: BenchOptions, workdir: Path, out: Outcome) -> None:
    wanted = set(opts.phases)
    enforced = not opts.quick
    pinning = f"gateway on CPU {opts.pin}" if opts.pin is not None else "none"
    async with open_broker(opts.broker, workdir) as broker, trio.open_nursery() as nursery:
        # README rule 7 for the bench itself: its start-up heap never costs a full collection
        # while it stamps latency samples (the gateway's own GC is reported per phase)
        gc.collect()
        gc.freeze()
        out.machine = describe(broker.describe(), pinning)
        for text in out.machine.lines():
            _say(text)
        watch = None
        if broker.sys_topics:
            watch = await RawSubscriber.connect(
                broker.host, broker.port, [DROPPED_TOPIC], "bench-sys-watch"
            )
            nursery.start_soon(watch.serve)
        env = _Env(opts, broker, workdir, watch)

        async def phase(names: set[str], body: Callable[[], Any]) -> None:
            if not names & wanted:
                return
            t0 = time.monotonic()
            try:
                await body()
                out.elapsed_s["+".join(sorted(names & wanted))] = round(time.monotonic() - t0, 1)
            except PHASE_ERRORS as exc:
                msg = f"{'+'.join(sorted(names & wanted))} failed: {type(exc).__name__}: {exc}"
                out.failures.append(msg)
                _say(f"FAILED     {msg}")

        def report(rep: PhaseReport) -> None:
            if rep.name in wanted:
                out.reports.append(rep)
                _say(rep.line)

        async def handler() -> None:
            _progress("handler (child process)")
            args = ["handler", "--events", str(opts.handler_events), "--repeats",
                    str(opts.repeats), "--seed", str(opts.seed)]  # fmt: skip
            report(handler_report(await trio.to_thread.run_sync(bench_core.run_child, args),
                                  enforced))  # fmt: skip

        async def memory() -> None:
            results = []
            for r in range(opts.repeats):
                _progress(f"memory repeat {r + 1}/{opts.repeats} (child process)")
                args = ["memory", "--persons", str(opts.memory_persons), "--seed", str(r + 1)]
                results.append(await trio.to_thread.run_sync(bench_core.run_child, args))
            report(memory_report(results, enforced))

        async def gate() -> None:
            params = GateParams(
                warmup_s=opts.warmup_s, discard=opts.discard, trials=opts.trials,
                bursts=opts.bursts if "burst" in wanted else 0,
            )  # fmt: skip
            runs = await _gate_runs(env, params, opts.repeats, "gate")
            report(gate_report(runs, enforced))
            report(burst_report(runs, enforced))

        async def throughput() -> None:
            params = ThroughputParams(warmup_s=opts.warmup_s, duration_s=opts.duration_s,
                                      seed=opts.seed)  # fmt: skip
            _progress("throughput: generating the stream (not measured)")
            stream = await trio.to_thread.run_sync(generate_stream, _geometry(workdir), params)
            _progress(f"stream: {len(stream.payloads)} frames in {stream.generate_s:.1f} s")
            runs = await _throughput_runs(env, params, stream)
            report(throughput_report(runs, stream, enforced))
            report(rs485_report(runs, enforced))

        async def soak() -> None:
            params = GateParams(warmup_s=opts.warmup_s, discard=opts.discard,
                                soak_s=opts.soak_s)  # fmt: skip
            (run,) = await _gate_runs(env, params, 1, "soak")
            report(soak_report(run, enforced))

        await phase({"handler"}, handler)
        await phase({"memory"}, memory)
        await phase({"gate", "burst"}, gate)
        await phase({"throughput", "rs485"}, throughput)
        await phase({"soak"}, soak)
        nursery.cancel_scope.cancel()
        if watch is not None:
            await watch.aclose()


def _summary(out: Outcome, quick: bool) -> None:
    _say("targets" + ("  (--quick: printed, not enforced)" if quick else ""))
    for rep in out.reports:
        for v in rep.verdicts:
            _say(f"  {v.phase:<11}{v.limit_text:<58}{v.word}")
    for failure in out.failures:
        _say(f"  FAILED     {failure}")
    times = " ".join(f"{k}={v:.0f}s" for k, v in out.elapsed_s.items())
    _say(f"elapsed  {sum(out.elapsed_s.values()):.0f} s ({times})")


def run_command(args: argparse.Namespace) -> int:
    opts = BenchOptions.from_args(args)
    for name in QUIET_LOGGERS:  # the report goes to stdout; per-request logs would bury it
        logging.getLogger(name).setLevel(logging.WARNING)
    out = Outcome()
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        try:
            trio.run(run_bench, opts, Path(tmp), out)
        except PHASE_ERRORS as exc:  # the broker itself could not be started or reached
            out.failures.append(f"bench failed: {type(exc).__name__}: {exc}")
        except KeyboardInterrupt:
            out.failures.append("interrupted")
    _summary(out, opts.quick)
    code = out.exit_code(opts.quick)
    if opts.json_path:
        Path(opts.json_path).write_text(json.dumps(out.as_dict(opts)))
    return code


def _phases(text: str) -> str:
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PHASES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown phase(s) {','.join(unknown) or text!r}; choose from {','.join(PHASES)}"
        )
    return ",".join(names)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _cpu(text: str) -> int:
    cpu = int(text)
    allowed = sorted(os.sched_getaffinity(0))
    if cpu not in allowed:
        raise argparse.ArgumentTypeError(f"CPU {cpu} is not available (allowed: {allowed})")
    return cpu


def _host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "bench",
        help="performance measurement (simulation.md §6)",
        description="Benchmark a `gateway run` process (simulation.md §6). Exit 0 when every "
        "target is met, 1 when one is missed or a phase fails, 2 on usage errors.",
    )
    p.add_argument("--broker", type=_host_port, metavar="H:P", help="use this broker instead "
                   "of starting mosquitto (or the embedded broker)")  # fmt: skip
    p.add_argument("--repeats", type=_positive_int, metavar="N", help="repeats per phase (3)")
    p.add_argument("--trials", type=_positive_int, metavar="N", help="gate trials per repeat (500)")
    p.add_argument("--duration", type=_positive_float, metavar="S",
                   help="throughput window per repeat, seconds (60)")  # fmt: skip
    p.add_argument("--soak", action="store_true", help="add the 10-minute soak phase")
    p.add_argument("--pin", type=_cpu, metavar="CPU", help="pin the gateway process to this CPU")
    p.add_argument("--phases", type=_phases, metavar="p1,p2", help=f"subset of {','.join(PHASES)}")
    p.add_argument("--json", metavar="FILE", help="write all raw results as JSON")
    p.add_argument("--quick", action="store_true",
                   help="short smoke run (≤ 60 s); targets printed, not enforced")  # fmt: skip
    p.set_defaults(func=run_command)
