"""`gateway run --config PATH`: load the config strictly (exit 2 on errors), then run (§10)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from gateway.app.cmd_config import EXIT_CONFIG, load_or_report
from gateway.app.runtime import RunOptions, main_run
from gateway.core.model import AccInput

TEST_HOOKS_ENV = "GATEWAY_TEST_HOOKS"


def _options_from_env() -> RunOptions:
    """Test hooks for subprocess tests (tests/integration/test_runtime_*.py); unset in production.

    GATEWAY_TEST_HOOKS is a comma list of:
    - `ingress_crash=N`: the MQTT ingress task raises N times at start (S151; supervised restarts
      after 0.5 s, 1 s, …).
    - `tracker_crash_receipt=R`: the tracker raises on an ACC with receipt R, e.g. from
      `POST /acc/simulate?receipt=R` (S152: fatal, journal flushed, exit 1).
    - `tracker_hold_after=N`: the tracker's events consumer stops after N items ("the tracker
      held", S147/S149); later items stay queued (or are dropped when the channel is full) until
      the shutdown drain handles them. Door consumer and ticker keep running.
    An unknown hook or a bad value is a usage error (exit 2).
    """
    opts = RunOptions()
    raw = os.environ.get(TEST_HOOKS_ENV, "")
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, _, value = part.partition("=")
        if key == "ingress_crash":
            opts.ingress_crashes = int(value)
        elif key == "tracker_crash_receipt":
            opts.before_item = _crash_on_receipt(value)
        elif key == "tracker_hold_after":
            opts.hold_events_after = int(value)
        else:
            raise ValueError(f"unknown test hook {key!r}")
    return opts


def _crash_on_receipt(receipt: str) -> Callable[[object], None]:
    def hook(item: object) -> None:
        if isinstance(item, AccInput) and item.receipt == receipt:
            raise RuntimeError(f"test hook: tracker crash on receipt {receipt}")

    return hook


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    for warning in config.warnings:
        print(f"config warning: {config.path}: {warning}", file=sys.stderr)
    try:
        options = _options_from_env()
    except ValueError as exc:
        print(f"gateway run: error: {TEST_HOOKS_ENV}: {exc}", file=sys.stderr)
        return 2
    return main_run(config, options)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the gateway until SIGTERM/SIGINT")
    p.add_argument("--config", "-c", required=True, metavar="PATH", help="site TOML file")
    p.set_defaults(func=run)
