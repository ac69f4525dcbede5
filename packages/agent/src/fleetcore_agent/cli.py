"""The `fleetcore-agent` command (the agent's run loop arrives with its own issue)."""

from __future__ import annotations

import argparse
import sys

import fleetcore_protocol
from fleetcore_agent import __version__


def build_parser() -> argparse.ArgumentParser:
    """The agent's command line."""
    parser = argparse.ArgumentParser(
        prog="fleetcore-agent", description="Fleetcore edge agent for devices."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"fleetcore-agent {__version__} (protocol {fleetcore_protocol.__version__})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help(sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
