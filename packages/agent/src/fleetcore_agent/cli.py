"""The `fleetcore-agent` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from importlib import resources
from pathlib import Path
from types import FrameType

import fleetcore_protocol
from fleetcore_agent import __version__
from fleetcore_agent.config import ConfigError, load
from fleetcore_agent.sensors import SensorError


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
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser(
        "run",
        help="run the agent",
        description="Run the agent. Environment variables FLEETCORE_AGENT_TOKEN, "
        "FLEETCORE_AGENT_DEVICE_ID, FLEETCORE_AGENT_MQTT_URL, FLEETCORE_AGENT_HTTP_URL and "
        "FLEETCORE_AGENT_DATA_DIR override the file.",
    )
    run.add_argument("--config", type=Path, help="the YAML settings file")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    drain = commands.add_parser(
        "drain", help="send what is queued without sampling; exit 0 once the queue is empty"
    )
    drain.add_argument("--config", type=Path, help="the YAML settings file")
    drain.add_argument("--timeout", type=float, default=600, help="give up after this long (s)")
    drain.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    commands.add_parser("example-config", help="print the example configuration")
    check = commands.add_parser("check", help="validate a configuration and exit")
    check.add_argument("--config", type=Path)
    return parser


def _example() -> str:
    return resources.files("fleetcore_agent").joinpath("example.yaml").read_text("utf-8")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "example-config":
        sys.stdout.write(_example())
        return 0
    if args.command not in ("run", "check", "drain"):
        parser.print_help(sys.stdout)
        return 0
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"fleetcore-agent: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        print("configuration ok")
        return 0
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from fleetcore_agent.agent import Agent  # paho and psutil only when running

    try:
        agent = Agent(config)
    except SensorError as exc:
        print(f"fleetcore-agent: {exc}", file=sys.stderr)
        return 2

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        agent.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if args.command == "drain":
        agent.start(sample=False)
        try:
            emptied = agent.drain(args.timeout)
        finally:
            agent.stop()
        print(f"fleetcore-agent: queue {'empty' if emptied else 'not empty'}", file=sys.stderr)
        return 0 if emptied else 1
    agent.start()
    try:
        agent.run()
    finally:
        agent.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
