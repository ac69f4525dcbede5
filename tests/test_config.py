"""Configuration: validated at start, one-line errors naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from fleetcore.app import create_app
from fleetcore.config import DEVELOPMENT_SECRET_KEY, ConfigError, load_settings
from tests.support import forkserver
from tests.support.env import FLEETCORE, fleetcore_env
from tests.support.postgres import free_port


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "FLEETCORE_DATABASE_URL",
        "FLEETCORE_ENVIRONMENT",
        "FLEETCORE_SECRET_KEY",
        "FLEETCORE_PORT",
        "FLEETCORE_CONFIG_FILE",
        "FLEETCORE_DATA_DIR",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "url",
    ["not a url", "mysql://user@host/db", "postgresql:///nohost", "sqlite://", "://"],
)
def test_malformed_database_url_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("FLEETCORE_DATABASE_URL", url)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "FLEETCORE_DATABASE_URL" in message
    assert "\n" not in message


def test_database_urls_get_async_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETCORE_DATABASE_URL", "postgres://u:p@db.example:5432/fleet")
    settings = load_settings()
    assert settings.resolved_database_url.drivername == "postgresql+asyncpg"
    assert settings.resolved_database_url.password == "p"
    assert not settings.is_sqlite
    assert settings.migrate_on_start is False


def test_default_database_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    url = settings.resolved_database_url
    assert url.drivername == "sqlite+aiosqlite"
    assert Path(url.database or "") == (tmp_path / "fleetcore.db").resolve()
    assert settings.migrate_on_start is True


@pytest.mark.parametrize("environment", [None, "production", "test"])
def test_default_secret_refused_unless_explicitly_development(
    monkeypatch: pytest.MonkeyPatch, environment: str | None
) -> None:
    if environment:
        monkeypatch.setenv("FLEETCORE_ENVIRONMENT", environment)
    settings = load_settings()
    assert settings.environment == (environment or "production")
    with pytest.raises(ConfigError, match="FLEETCORE_SECRET_KEY") as info:
        settings.check_signing_key()
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="FLEETCORE_SECRET_KEY"):
        create_app(settings)
    monkeypatch.setenv("FLEETCORE_SECRET_KEY", "x" * 40)
    load_settings().check_signing_key()


def test_default_secret_allowed_in_explicit_development_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLEETCORE_ENVIRONMENT", "development")
    settings = load_settings(data_dir=tmp_path)
    assert settings.secret_key.get_secret_value() == DEVELOPMENT_SECRET_KEY
    with structlog.testing.capture_logs() as logs:
        create_app(settings)
    assert any(entry["event"] == "development_secret_key" for entry in logs)


def test_serve_refuses_the_published_key_with_one_line(tmp_path: Path) -> None:
    env = fleetcore_env(FLEETCORE_DATA_DIR=str(tmp_path))
    del env["FLEETCORE_SECRET_KEY"], env["FLEETCORE_ENVIRONMENT"]
    result = forkserver.run(
        [FLEETCORE, "serve", "--port", str(free_port()), "--mqtt-port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "FLEETCORE_SECRET_KEY" in result.stderr
    assert "FLEETCORE_ENVIRONMENT=development" in result.stderr


def test_short_secret_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETCORE_SECRET_KEY", "short")
    with pytest.raises(ConfigError, match="FLEETCORE_SECRET_KEY"):
        load_settings()


def test_bad_port_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETCORE_PORT", "70000")
    with pytest.raises(ConfigError, match="FLEETCORE_PORT"):
        load_settings()


def test_unknown_setting_in_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "fleetcore.toml"
    config.write_text("prot = 9000\n")
    monkeypatch.setenv("FLEETCORE_CONFIG_FILE", str(config))
    with pytest.raises(ConfigError, match="FLEETCORE_PROT"):
        load_settings()


def test_precedence_options_over_env_over_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "fleetcore.toml"
    config.write_text('port = 9001\nmqtt_port = 9883\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("FLEETCORE_CONFIG_FILE", str(config))
    monkeypatch.setenv("FLEETCORE_PORT", "9002")
    settings = load_settings(host="10.0.0.1")
    assert (settings.host, settings.port, settings.mqtt_port) == ("10.0.0.1", 9002, 9883)


def test_missing_or_broken_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEETCORE_CONFIG_FILE", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match="FLEETCORE_CONFIG_FILE"):
        load_settings()
    broken = tmp_path / "broken.toml"
    broken.write_text("port = = 1\n")
    monkeypatch.setenv("FLEETCORE_CONFIG_FILE", str(broken))
    with pytest.raises(ConfigError, match="FLEETCORE_CONFIG_FILE"):
        load_settings()
