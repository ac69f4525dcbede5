"""The `fleetcore-agent` command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from importlib import resources
from pathlib import Path
from types import FrameType

import fleetcore_protocol
from fleetcore_agent import __version__
from fleetcore_agent.config import AgentConfig, ConfigError, load
from fleetcore_agent.sensors import SensorError
from fleetcore_agent.update import layout

RESTART_EXIT_CODE = 75  # the unit restarts on it (RestartForceExitStatus): a new version


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
    guard = commands.add_parser(
        "guard",
        help="count a start of a version on trial; roll back after too many (ExecStartPre)",
    )
    guard.add_argument("--root", type=Path, default=Path("/opt/fleetcore-agent"))
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
    if args.command == "guard":
        return layout.main(["--root", str(args.root)])
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
    if agent.restart_requested:
        return restart(config)
    return 0


def restart(config: AgentConfig) -> int:
    """Start the version now current: exit for systemd to restart, or exec it ourselves."""
    mode = config.update.restart if config.update else "exit"
    if mode == "auto":
        mode = "exit" if os.environ.get("INVOCATION_ID") else "exec"  # systemd sets it
    if mode == "exit" or config.update is None:
        return RESTART_EXIT_CODE
    root = config.update.root
    guard = root / "guard.py"
    if not guard.exists():
        guard = Path(layout.__file__)
    agent = root / "current" / "bin" / "fleetcore-agent"
    command = [sys.executable, str(guard), "--root", str(root), "--", str(agent), *sys.argv[1:]]
    logging.getLogger("fleetcore_agent").info("re-executing %s", " ".join(command))
    os.execv(command[0], command)  # noqa: S606 - our own guard and the new version's agent


if __name__ == "__main__":
    raise SystemExit(main())
