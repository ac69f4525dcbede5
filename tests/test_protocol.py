"""The shared topic grammar, and the packaging promise: agent and protocol stay light."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest

from fleetcore_protocol.topics import Channel, Topic, TopicError, native, parse


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("devices/abc/telemetry", Topic(Channel.TELEMETRY, "abc")),
        ("devices/abc/status", Topic(Channel.STATUS, "abc")),
        ("devices/abc/config", Topic(Channel.CONFIG, "abc")),
        ("devices/abc/commands/c1/result", Topic(Channel.COMMAND_RESULT, "abc", "c1")),
        ("v1/devices/me/telemetry", Topic(Channel.TELEMETRY, None)),
        ("v1/devices/me/attributes", Topic(Channel.ATTRIBUTES, None)),
        ("v1/devices/me/rpc/response/17", Topic(Channel.COMMAND_RESULT, None, "17")),
    ],
)
def test_parse_round_trips(topic: str, expected: Topic) -> None:
    assert parse(topic) == expected
    assert expected.render() == topic


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "devices",
        "devices/abc",
        "devices//telemetry",
        "devices/abc/unknown",
        "devices/abc/command_result",
        "devices/abc/commands/c1/other",
        "other/abc/telemetry",
        "v1/devices/me/rpc/response/x",
        "v1/devices/me/nothing",
        "devices/" + "x" * 65 + "/telemetry",
    ],
)
def test_parse_refuses_bad_topics(topic: str) -> None:
    with pytest.raises(TopicError):
        parse(topic)


@pytest.mark.parametrize("device_id", ["a/b", "+", "#", "", "x" * 65])
def test_native_refuses_ids_that_break_the_grammar(device_id: str) -> None:
    with pytest.raises(TopicError):
        native(device_id, Channel.TELEMETRY)


def test_native_builds_topics() -> None:
    assert native("dev-1", Channel.COMMANDS) == "devices/dev-1/commands"
    assert native("d", Channel.COMMAND_RESULT, "42") == "devices/d/commands/42/result"
    with pytest.raises(TopicError):
        native("d", Channel.COMMAND_RESULT)


def test_protocol_has_no_dependencies() -> None:
    assert not requires("fleetcore-protocol")


def test_agent_does_not_depend_on_the_server() -> None:
    names = {
        r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
        for r in requires("fleetcore-agent") or []
    }
    assert "fleetcore" not in names
    assert "fastapi" not in names
    assert "fleetcore-protocol" in names


def test_agent_command_runs() -> None:
    agent = Path(sys.executable).parent / "fleetcore-agent"
    result = subprocess.run([str(agent), "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert result.stdout.startswith("fleetcore-agent 0.1.0")
