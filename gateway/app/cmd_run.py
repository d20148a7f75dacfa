"""`gateway run --config PATH`: load the config strictly (exit 2 on errors), then run (§10)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from gateway.app.runtime import RunOptions, main_run
from gateway.config.loader import ConfigError, load_config
from gateway.core.model import AccInput


def _options_from_env() -> RunOptions:
    """Test hooks for subprocess tests (S151, S152); unset in production.

    GATEWAY_TEST_HOOKS = comma list of `ingress_crash=N`, `tracker_crash_receipt=R`.
    """
    opts = RunOptions()
    raw = os.environ.get("GATEWAY_TEST_HOOKS", "")
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, _, value = part.partition("=")
        if key == "ingress_crash":
            opts.ingress_crashes = int(value)
        elif key == "tracker_crash_receipt":
            opts.before_item = _crash_on_receipt(value)
    return opts


def _crash_on_receipt(receipt: str) -> Callable[[object], None]:
    def hook(item: object) -> None:
        if isinstance(item, AccInput) and item.receipt == receipt:
            raise RuntimeError(f"test hook: tracker crash on receipt {receipt}")

    return hook


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    for warning in config.warnings:
        print(f"config warning: {config.path}: {warning}", file=sys.stderr)
    return main_run(config, _options_from_env())


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the gateway until SIGTERM/SIGINT")
    p.add_argument("--config", "-c", required=True, metavar="PATH", help="site TOML file")
    p.set_defaults(func=run)
