"""`gateway` command line (interfaces.md §10). Exit codes: 0 ok, 1 runtime failure, 2 config/usage.

Each subcommand lives in its own module exposing `add_parser(subparsers)` that registers the
command and sets `func(args) -> int`; only working commands are listed in `_COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.app import logs

# module path of every registered subcommand, in help order
_COMMANDS: tuple[str, ...] = ("gateway.app.cmd_check_config",)
_COMMANDS += ("gateway.tools.mock_cloudplus",)
_COMMANDS += ("gateway.app.cmd_run",)
_COMMANDS += ("gateway.app.cmd_replay",)
_COMMANDS += ("gateway.app.cmd_demo",)
_COMMANDS += ("gateway.app.cmd_sim",)
_COMMANDS += ("gateway.tools.bench",)
_COMMANDS += ("gateway.tools.watch",)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gateway", description="Store exit-gate gateway.")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    parser.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default=os.environ.get("GATEWAY_LOG_LEVEL", "info").lower(),
        help="log level (default: $GATEWAY_LOG_LEVEL or info)",
    )
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=_Parser)
    sub.required = True
    for module in _COMMANDS:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.log_level not in logs.LEVELS:
        parser.error(f"invalid GATEWAY_LOG_LEVEL {args.log_level!r}")
    logs.configure(args.log_level, args.log_format)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
