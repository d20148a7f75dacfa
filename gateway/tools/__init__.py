"""Developer tools behind `gateway` subcommands: demo, sim, mock devices, replay, bench."""
