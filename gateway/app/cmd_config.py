"""Shared by the subcommands that take `--config`: load strictly, or report every error (D14)."""

from __future__ import annotations

import sys

from gateway.config.loader import ConfigError, load_config
from gateway.config.model import Config

EXIT_CONFIG = 2  # interfaces.md §10: configuration or usage error


def load_or_report(path: str) -> Config | None:
    """The loaded config, or None after printing each `config error: …` line to stderr."""
    try:
        return load_config(path)
    except ConfigError as exc:
        sys.stderr.write("".join(f"{line}\n" for line in exc.errors))
        return None
