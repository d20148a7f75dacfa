"""`gateway demo` (interfaces.md §10, simulation.md §1): flags, port checks, the end-of-run summary.

Exit codes: 0 after the run (or Ctrl-C), 1 on a runtime failure (a port in use, a link that
never came up, the gateway's own failure), 2 on bad usage. The summary is a table, or one JSON
line with `--json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from typing import Any

import trio

from gateway.config.loader import ConfigError
from gateway.core.counters import UNMATCHED_REASONS
from gateway.tools.demo import (
    DemoOptions,
    DemoRun,
    check_ports,
    demo_config,
    drop_counts,
    open_frames,
    parse_host_port,
    port_clashes,
    pty_link_problem,
    render_config,
    run_demo,
    run_traffic_only,
)
from gateway.tools.mock_cloudplus import MockBindError
from gateway.tools.traffic import CustomerKind

log = logging.getLogger("gateway.demo")

OUTCOMES = ("exit", "returned", "lost", "pass_through", "in_progress")  # behaviour.md §3.2
SEED_MAX = 2**31 - 1


def _out(line: str) -> None:
    print(line, flush=True)


def options_from_args(args: argparse.Namespace) -> DemoOptions:
    seed = args.seed if args.seed is not None else random.SystemRandom().randint(0, SEED_MAX)
    return DemoOptions(
        duration_s=args.duration,
        rate_per_min=args.rate,
        seed=seed,
        http_port=args.http_port,
        broker_port=args.broker_port,
        acc_port=args.acc_port,
        gate_port=args.gate_port,
        data_dir=args.data_dir,
        rs485_pty=args.rs485_pty,
    )


def run_command(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    if args.print_config:
        sys.stdout.write(render_config(opts))
        return 0
    if args.traffic_only:
        return _traffic_only(args, opts)
    if args.broker is not None or args.acc is not None:
        print("gateway demo: --broker and --acc need --traffic-only", file=sys.stderr)
        return 2
    clashes = port_clashes(opts)
    if clashes:
        for clash in clashes:
            print(f"gateway demo: {clash}; every listener needs its own port", file=sys.stderr)
        return 2
    try:
        config = demo_config(opts)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    problems = [p.message() for p in check_ports(config, opts)]
    pty_problem = pty_link_problem(opts.rs485_pty)
    if pty_problem is not None:
        problems.append(f"{pty_problem}; choose another path with --rs485-pty PATH")
    if problems:
        for problem in problems:
            print(f"gateway demo: {problem}", file=sys.stderr)
        return 1
    _out(f"gateway demo: starting (seed {opts.seed}); Ctrl-C stops it")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the readiness probe's GET /health
    try:
        run = trio.run(run_demo, opts, config, _out)
    except MockBindError as exc:
        print(
            f"gateway demo: {exc.strerror}; choose another with --gate-port PORT", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the gateway's own signal handling was installed
        print("gateway demo: interrupted while starting", file=sys.stderr)
        return 0
    except Exception:  # the last boundary, as `gateway run`: report a runtime failure
        log.critical("demo_failed", exc_info=True)
        return 1
    if run.failure is not None:
        print(f"gateway demo: {run.failure}", file=sys.stderr)
    if run.comp is not None:
        summary = summarize(run)
        _out(json_line(summary) if args.json else format_summary(summary))
    return run.exit_code


def _traffic_only(args: argparse.Namespace, opts: DemoOptions) -> int:
    if args.broker is None or args.acc is None:
        print("gateway demo: --traffic-only needs --broker HOST:PORT and --acc HOST:PORT",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        broker, acc = parse_host_port(args.broker), parse_host_port(args.acc)
    except ValueError as exc:
        print(f"gateway demo: {exc}", file=sys.stderr)
        return 2
    run = trio.run(run_traffic_only, opts, broker, acc, _out)
    if run.failure is not None:
        print(f"gateway demo: {run.failure}", file=sys.stderr)
        return 1
    stats = run.stats
    summary: dict[str, Any] = {
        "duration_s": round(run.elapsed_s, 1),
        "rate_per_min": opts.rate_per_min,
        "seed": opts.seed,
        "traffic": run.model.summary(),
        "sent": {
            "frames": stats.frames,
            "frames_skipped": stats.frames_skipped,
            "published": stats.published,
            "publish_failed": stats.publish_failed,
            "acc_sent": stats.acc_sent,
            "acc_dropped": stats.acc_dropped,
            "acc_connect_failures": stats.acc_connect_failures,
        },
    }
    if args.json:
        _out(json_line(summary))
    else:
        _out(f"traffic summary ({run.elapsed_s:.1f} s, seed {opts.seed})")
        for key, value in (*summary["traffic"].items(), *summary["sent"].items()):
            _out(f"  {key:<22} {value}")
    return 0


# -- summary ----------------------------------------------------------------------------------


def summarize(run: DemoRun) -> dict[str, Any]:
    """simulation.md §1: customers, journeys per outcome, opens, blocked, ACC matched/unmatched,
    stitches, drops — plus where each number comes from."""
    comp = run.comp
    assert comp is not None
    assert comp.tracker is not None
    c = comp.tracker.counters
    gs = comp.gate_stats
    traffic = run.model.summary() if run.model is not None else {}
    kinds = {k.value: traffic.get(f"customers_{k.value}", 0) for k in CustomerKind}
    journeys = {k: int(c.journeys_emitted.get(k, 0)) for k in OUTCOMES}
    drops = drop_counts(comp, run.traffic)
    during = {k: v - run.drops_at_start.get(k, 0) for k, v in drops.items()}
    at_start = {k: v for k, v in run.drops_at_start.items() if v}
    mock = run.mock
    return {
        "exit_code": run.exit_code,
        "duration_s": round(run.traffic_s, 1),
        "interrupted": run.interrupted,
        "rate_per_min": run.options.rate_per_min,
        "seed": run.options.seed,
        "customers": {"total": sum(kinds.values()), **kinds},
        "journeys": {"total": sum(journeys.values()), **journeys},
        "journal": {"path": run.options.journal_path, "lines": comp.journal_stats.lines},
        "gate": {
            "opens": open_frames(mock) if mock is not None else 0,
            "commands": c.gate_commands_total,
            "sent": gs.cmds_sent,
            "failed": sum(gs.cmds_failed.values()),
            "blocked": run.gate_feed.states.get("blocked", 0),
            "door_cycles": sum(1 for _, s in mock.door_history if s == "open") if mock else 0,
        },
        "acc": {
            "sent": run.traffic.acc_sent,
            "received": comp.acc_stats.events_received,
            "matched": c.acc_matched,
            "unmatched": sum(c.acc_unmatched.get(r, 0) for r in UNMATCHED_REASONS),
            "matched_no_journey": c.acc_no_journey,
        },
        "stitches": c.stitch_matched,
        "drops": {"total": sum(during.values()), **during},
        "drops_at_start": {"total": sum(at_start.values()), **at_start},
        "traffic": traffic,
        "sent": {
            "frames": run.traffic.frames,
            "frames_skipped": run.traffic.frames_skipped,
            "published": run.traffic.published,
            "acc_sent": run.traffic.acc_sent,
        },
        "health": dict(run.health_seen),
    }


def _at_start(drops: dict[str, int]) -> str:
    if not drops.get("total"):
        return ""
    return f"  (before the traffic started: {_parts(drops)})"


def json_line(summary: dict[str, Any]) -> str:
    return json.dumps(summary, separators=(",", ":"))


def _parts(d: dict[str, Any], skip: tuple[str, ...] = ("total",), *, nonzero: bool = False) -> str:
    return " · ".join(
        f"{k} {v}" for k, v in d.items() if k not in skip and not (nonzero and v == 0)
    )


def format_summary(s: dict[str, Any]) -> str:
    """The readable end-of-run table."""
    g, a, t = s["gate"], s["acc"], s["traffic"]
    how = "stopped by signal" if s["interrupted"] else "ran"
    rows = [
        ("customers", s["customers"]["total"], _parts(s["customers"])
         + f"  (couples {t.get('couples', 0)}, re-entries {t.get('reentries', 0)})"),
        ("journeys", s["journeys"]["total"], _parts(s["journeys"])),
        ("journal", s["journal"]["lines"], f"lines → {s['journal']['path']}"),
        ("gate opens", g["opens"], f"open frames at the controller (commands {g['commands']}, "
         f"sent {g['sent']}, failed {g['failed']}, door cycles {g['door_cycles']})"),
        ("blocked", g["blocked"], "unauthorized customers at the closed gate"),
        ("ACC", a["received"], f"received · matched {a['matched']} · unmatched "
         f"{a['unmatched']} · no journey {a['matched_no_journey']} (sent {a['sent']})"),
        ("stitches", s["stitches"],
         f"lost tracks re-joined (traffic lost {t.get('tracks_lost', 0)})"),
        ("drops", s["drops"]["total"], (_parts(s["drops"], nonzero=True) or "none")
         + _at_start(s["drops_at_start"])),
        ("health", "", _parts(s["health"], ()) or "-"),
    ]  # fmt: skip
    lines = [
        f"demo summary: {how} {s['duration_s']:g} s at {s['rate_per_min']:g} customers/min, "
        f"seed {s['seed']}, exit {s['exit_code']}"
    ]
    lines += [f"  {name:<11} {value!s:>5}  {detail}" for name, value, detail in rows]
    return "\n".join(lines)


# -- CLI --------------------------------------------------------------------------------------


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port 1-65535")
    return int(text)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number ≥ 0")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = DemoOptions()
    p = sub.add_parser(
        "demo",
        help="all-in-one store simulation: broker, gateway, mock controller, traffic",
        description="Embedded broker + demo config + gateway + mock CloudPlus controller with a "
        "pty RS485 board + synthetic traffic + dashboard (simulation.md §1). Prints a summary at "
        "the end. Exit 0 at the end, 1 on failure (e.g. a port in use), 2 on bad usage.",
    )
    p.add_argument(
        "--duration",
        type=_non_negative,
        default=0.0,
        metavar="S",
        help="seconds of traffic, then a graceful stop (0 = until Ctrl-C; default 0)",
    )
    p.add_argument(
        "--rate",
        type=_non_negative,
        default=d.rate_per_min,
        metavar="N",
        help=f"customers per minute (default {d.rate_per_min:g})",
    )
    p.add_argument("--seed", type=int, metavar="N", help="random seed (default: a random one)")
    p.add_argument(
        "--http-port",
        type=_port,
        default=d.http_port,
        metavar="P",
        help=f"dashboard, /health, /metrics (default {d.http_port})",
    )
    p.add_argument(
        "--broker-port",
        type=_port,
        default=d.broker_port,
        metavar="P",
        help=f"embedded MQTT broker (default {d.broker_port})",
    )
    p.add_argument(
        "--acc-port",
        type=_port,
        default=d.acc_port,
        metavar="P",
        help=f"ACC listener (default {d.acc_port})",
    )
    p.add_argument(
        "--gate-port",
        type=_port,
        default=d.gate_port,
        metavar="P",
        help=f"mock CloudPlus controller (default {d.gate_port})",
    )
    p.add_argument(
        "--data-dir",
        default=d.data_dir,
        metavar="DIR",
        help=f"journal directory (default {d.data_dir}/)",
    )
    p.add_argument(
        "--rs485-pty",
        default=d.rs485_pty,
        metavar="PATH",
        help=f"symlink to the board emulator's pty (default {d.rs485_pty})",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the demo site config (interfaces.md §11.4) with these ports; exit",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.add_argument(
        "--traffic-only",
        action="store_true",
        help="only the traffic, for an external gateway (needs --broker and --acc)",
    )
    p.add_argument("--broker", metavar="HOST:PORT", help="--traffic-only: MQTT broker")
    p.add_argument("--acc", metavar="HOST:PORT", help="--traffic-only: the gateway's ACC listener")
    p.set_defaults(func=run_command)  # fmt: skip
