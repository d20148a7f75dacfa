"""`gateway check-config PATH [--quiet]` (placeholder until the loader lands)."""
