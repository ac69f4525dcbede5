"""Commands from the platform: a registry of handlers, the built-ins, and answers.

A handler takes the command's params and returns a JSON-ready result, or raises
`CommandError` with a message for the operator. The registry answers
``{"status": "succeeded", "result": ...}`` or ``{"status": "failed", "error": "..."}``,
the shape both the MQTT result topic and the HTTP result endpoint take.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("fleetcore_agent.commands")

Params = dict[str, Any]
CommandHandler = Callable[[Params], Any]


class CommandError(RuntimeError):
    """The command cannot be carried out; the message goes back to the operator."""


class Registry:
    """Handlers by method name; remembers recent answers so a redelivery runs nothing twice."""

    def __init__(self, *, remember: int = 256) -> None:
        self._handlers: dict[str, CommandHandler] = {}
        self._answers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._remember = remember
        self._lock = threading.Lock()

    def register(self, method: str, handler: CommandHandler) -> None:
        """Answer `method` with `handler` (replaces one of the same name)."""
        self._handlers[method] = handler

    def methods(self) -> list[str]:
        """The methods this agent answers."""
        return sorted(self._handlers)

    def handle(self, command_id: str, method: str, params: Any) -> dict[str, Any]:
        """Run a command once and answer it; the same id again gets the same answer."""
        with self._lock:
            if command_id in self._answers:
                return self._answers[command_id]
        answer = self._run(method, params)
        with self._lock:
            self._answers[command_id] = answer
            while len(self._answers) > self._remember:
                self._answers.popitem(last=False)
        return answer

    def _run(self, method: str, params: Any) -> dict[str, Any]:
        handler = self._handlers.get(method)
        if handler is None:
            return {"status": "failed", "error": f"unknown method {method!r}"}
        if params is None:
            params = {}
        if not isinstance(params, dict):
            return {"status": "failed", "error": "params must be a JSON object"}
        try:
            return {"status": "succeeded", "result": handler(params)}
        except CommandError as exc:
            return {"status": "failed", "error": str(exc)}
        except Exception as exc:  # a handler's bug must not stop the agent
            log.exception("command %s failed", method)
            return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}


class Controls(Protocol):
    """What the built-in commands act on (the agent)."""

    def apply_settings(self, values: Params) -> dict[str, Any]:
        """Apply runtime settings; returns {"applied": {...}, "rejected": {...}}."""
        ...

    def inject_fault(self, sensor: str, key: str, fault: str) -> None:
        """Make a simulated sensor's key misbehave."""
        ...


def builtins(registry: Registry, controls: Controls, *, reboot_command: str = "") -> None:
    """Register ping, set_interval, apply_config, inject_fault and reboot."""

    def ping(params: Params) -> Any:
        return {"pong": True, "ts": int(time.time() * 1000), "echo": params or None}

    def set_interval(params: Params) -> Any:
        if "interval_s" not in params:
            raise CommandError("params.interval_s: required")
        outcome = controls.apply_settings({"interval_s": params["interval_s"]})
        if outcome["rejected"]:
            raise CommandError(str(outcome["rejected"]["interval_s"]))
        return outcome["applied"]

    def apply_config(params: Params) -> Any:
        outcome = controls.apply_settings(params)
        if outcome["rejected"] and not outcome["applied"]:
            raise CommandError("; ".join(f"{k}: {v}" for k, v in outcome["rejected"].items()))
        return outcome

    def inject_fault(params: Params) -> Any:
        try:
            controls.inject_fault(
                str(params["sensor"]), str(params["key"]), str(params.get("fault", "none"))
            )
        except KeyError as exc:
            raise CommandError(f"params.{exc.args[0]}: required") from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        return {"injected": params.get("fault", "none")}

    def reboot(params: Params) -> Any:
        if not reboot_command:
            log.warning("reboot asked for: simulated (no reboot_command configured)")
            return {"rebooted": False, "simulated": True}
        delay = float(params.get("delay_s", 2))
        # Answer first: the reboot runs after the result has had time to go out.
        timer = threading.Timer(delay, _run_reboot, args=(reboot_command,))
        timer.daemon = True
        timer.start()
        return {"rebooted": True, "in_s": delay}

    registry.register("ping", ping)
    registry.register("set_interval", set_interval)
    registry.register("apply_config", apply_config)
    registry.register("inject_fault", inject_fault)
    registry.register("reboot", reboot)


def _run_reboot(command: str) -> None:
    subprocess.run(shlex.split(command), check=False)  # noqa: S603 - the operator's own setting
