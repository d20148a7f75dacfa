"""`gateway replay FILE`: online, `--offline` and `--journeys` replay (interfaces.md §10).

Exit 0 when done (corrupt lines are counted and reported, not fatal), 1 on an I/O failure (input
or output file, broker, gateway URL), 2 on bad usage or an invalid config. Reports go to stderr so
`--offline` can write journeys to stdout.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import BinaryIO, Final

import httpx
import trio

from gateway.app.cmd_config import load_or_report
from gateway.config.model import Config
from gateway.io.mqtt_shim import MqttClient, MqttError
from gateway.tools.replay import (
    DEFAULT_JOURNEYS_TOPIC,
    AccPoster,
    JournalStats,
    OnlineStats,
    ReadStats,
    RecordReader,
    ReplayIOError,
    file_lines,
    replay_online,
    republish_journeys,
)
from gateway.tools.replay_offline import DEFAULT_SEED, replay_offline

EXIT_OK: Final = 0
EXIT_IO: Final = 1  # interfaces.md §10: runtime (I/O) failure
EXIT_USAGE: Final = 2  # interfaces.md §10: configuration or usage error
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 1883
PROG: Final = "gateway replay"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "replay",
        help="replay a capture to a broker, offline through the core, or republish a journal",
        description="Replay an analysis log or a JSONL of raw Xovis messages (simulation.md §5). "
        "Exit 0 done, 1 I/O failure, 2 usage or config error.",
    )
    p.add_argument("file", metavar="FILE", help="analysis-log / raw Xovis JSONL, or a journal")
    p.add_argument("--host", default=DEFAULT_HOST, help="MQTT broker (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="MQTT port (default 1883)")
    p.add_argument("--topic", help="publish every message here instead of the captured topic")
    p.add_argument("--speed", type=float, default=1.0, help="1.0 real time, 0 = no waits")
    p.add_argument("--gateway-url", metavar="URL", help="send ACC records to URL/acc/simulate")
    p.add_argument("--token", metavar="T", help="bearer token for --gateway-url")
    p.add_argument("--offline", action="store_true", help="replay through the core, no network")
    p.add_argument("--config", metavar="PATH", help="site config (--offline; --journeys site)")
    p.add_argument("--out", metavar="FILE", help="--offline journeys file (default stdout)")
    p.add_argument("--seed", type=int, help=f"--offline jid/pid seed (default {DEFAULT_SEED})")
    p.add_argument("--journeys", action="store_true", help="FILE is a journal: republish it")
    p.set_defaults(func=run)


def _usage_problem(args: argparse.Namespace) -> str | None:
    checks = (
        (args.offline and args.journeys, "--offline and --journeys exclude each other"),
        (args.offline and args.config is None, "--offline needs --config PATH"),
        (args.out is not None and not args.offline, "--out needs --offline"),
        (args.seed is not None and not args.offline, "--seed needs --offline"),
        (
            args.config is not None and not (args.offline or args.journeys),
            "--config needs --offline or --journeys",
        ),
        (
            args.gateway_url is not None and (args.offline or args.journeys),
            "--gateway-url is for online replay only",
        ),
        (args.token is not None and args.gateway_url is None, "--token needs --gateway-url"),
        (not math.isfinite(args.speed) or args.speed < 0, "--speed must be a number ≥ 0"),
        (not 0 < args.port < 65536, "--port must be 1–65535"),
    )
    return next((problem for failed, problem in checks if failed), None)


def run(args: argparse.Namespace) -> int:
    problem = _usage_problem(args)
    if problem is not None:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    config: Config | None = None
    if args.config is not None:
        config = load_or_report(args.config)
        if config is None:
            return EXIT_USAGE
    try:
        fh = open(args.file, "rb")  # noqa: SIM115 (closed in the finally below)
    except OSError as exc:
        print(f"{PROG}: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_IO
    try:
        if args.offline:
            assert config is not None
            return _offline(args, fh, config)
        return trio.run(_online, args, fh, config)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_IO
    finally:
        fh.close()


def _read_report(stats: ReadStats) -> list[str]:
    kinds = ", ".join(f"{k} {n}" for k, n in stats.kinds.items())
    lines = [f"corrupt {example}" for example in stats.examples]
    lines.append(
        f"lines {stats.lines}: replayed {stats.records} ({kinds}), corrupt {stats.corrupt}, "
        f"blank {stats.blank}, out of order {stats.out_of_order}"
    )
    return lines


def _report(lines: list[str]) -> None:
    sys.stderr.write("".join(f"replay: {line}\n" for line in lines))


def _offline(args: argparse.Namespace, fh: BinaryIO, config: Config) -> int:
    seed = DEFAULT_SEED if args.seed is None else args.seed
    try:
        out = open(args.out, "wb") if args.out else sys.stdout.buffer  # noqa: SIM115
    except OSError as exc:
        print(f"{PROG}: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_IO
    try:
        summary, stats = replay_offline(fh, config, out.write, seed=seed)
        out.flush()
    except OSError as exc:  # a read or write error, BrokenPipeError included
        print(f"{PROG}: I/O error: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_IO
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    _report(_read_report(stats) + summary.lines())
    return EXIT_OK


async def _online(args: argparse.Namespace, fh: BinaryIO, config: Config | None) -> int:
    client = MqttClient(args.host, args.port, client_id=f"gateway-replay-{os.getpid()}")
    try:
        async with client:
            if args.journeys:
                return await _journeys(args, fh, config, client)
            return await _records(args, fh, client)
    except MqttError as exc:
        print(f"{PROG}: MQTT broker {args.host}:{args.port}: {exc}", file=sys.stderr)
    except ReplayIOError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
    return EXIT_IO


async def _records(args: argparse.Namespace, fh: BinaryIO, client: MqttClient) -> int:
    reader, stats = RecordReader(), OnlineStats()
    try:
        async with httpx.AsyncClient() as http:
            poster = None
            if args.gateway_url is not None:
                poster = AccPoster(http, args.gateway_url, args.token)
            await replay_online(
                file_lines(fh), reader, client, stats,
                speed=args.speed, topic=args.topic, acc=poster,
            )  # fmt: skip
    finally:
        _report(_read_report(reader.stats) + stats.lines())
    return EXIT_OK


async def _journeys(
    args: argparse.Namespace, fh: BinaryIO, config: Config | None, client: MqttClient
) -> int:
    topic = args.topic
    if topic is None:
        topic = config.mqtt_egress.journeys_topic if config else DEFAULT_JOURNEYS_TOPIC
    stats = JournalStats()
    try:
        await republish_journeys(
            file_lines(fh), client, stats, topic=topic, site=config.site.id if config else None
        )
    finally:
        examples = [f"corrupt {e}" for e in stats.examples]
        _report(
            [
                *examples,
                f"journal lines {stats.lines}: published {stats.published} to {topic} (QoS 1), "
                f"corrupt {stats.corrupt}, blank {stats.blank}",
            ]
        )
    return EXIT_OK
