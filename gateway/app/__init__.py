"""Imperative shell: supervisor, channels, HTTP, metrics, CLI."""
