"""`gateway check-config PATH [--quiet]`: validate a site file before deploying it (§10, D14).

Exit 0 when valid, 2 when not. The summary goes to stdout; errors and warnings go to stderr, one
line each, so `--quiet` runs are silent unless something needs attention.
"""

from __future__ import annotations

import argparse
import sys

from gateway.app.cmd_config import EXIT_CONFIG, load_or_report
from gateway.config.summary import summary_lines

EXIT_OK = 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help="validate a site config and print what it configures",
        description="Validate a site config (all errors are listed) and print a summary.",
    )
    parser.add_argument("path", metavar="PATH", help="site TOML file")
    parser.add_argument("--quiet", action="store_true", help="print only errors and warnings")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path: str = args.path
    cfg = load_or_report(path)
    if cfg is None:
        return EXIT_CONFIG
    if not args.quiet:
        sys.stdout.write("".join(f"{line}\n" for line in summary_lines(cfg)))
    sys.stderr.write("".join(f"config warning: {cfg.path}: {w}\n" for w in cfg.warnings))
    if not args.quiet:
        count = len(cfg.warnings)
        sys.stdout.write(f"config OK ({count} warning{'' if count == 1 else 's'})\n")
    return EXIT_OK
