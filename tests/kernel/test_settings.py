"""Settings: defaults, the IIP_ environment, the dev secret key, and one-line errors."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr

from iip.kernel.settings import SECRET_KEY_FILE, LogFormat, Mode, Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No IIP_ variable from the outer environment, and a working directory of our own (./var lives there)."""
    for name in list(os.environ):
        if name.startswith("IIP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults(clean_environment: Path) -> None:
    settings = load_settings()
    assert settings.mode is Mode.DEV
    assert settings.data_dir == Path("var")
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.bus == "memory"
    assert settings.log_format is LogFormat.JSON
    assert settings.secret_key is None
    assert settings.effective_database_url == f"sqlite:///{clean_environment / 'var' / 'iip.db'}"
    assert settings.auth.lockout_threshold == 5


def test_environment_prefix_and_nested_sections(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IIP_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("IIP_HOST", "10.0.0.5")
    monkeypatch.setenv("IIP_PORT", "9001")
    monkeypatch.setenv("IIP_BUS", "nats://127.0.0.1:4222")
    monkeypatch.setenv("IIP_LOG_LEVEL", "debug")
    monkeypatch.setenv("IIP_AUTH__LOCKOUT_THRESHOLD", "3")
    monkeypatch.setenv("IIP_AUTH__LOCKOUT_MINUTES", "30")
    monkeypatch.setenv("IIP_API__CORS_ORIGINS", '["https://console.example"]')

    settings = load_settings()

    assert settings.data_dir == tmp_path / "state"
    assert settings.host == "10.0.0.5"
    assert settings.port == 9001
    assert settings.bus == "nats://127.0.0.1:4222"
    assert settings.log_level == "DEBUG"
    assert settings.auth.lockout_threshold == 3
    assert settings.auth.lockout_minutes == 30
    assert settings.api.cors_origins == ["https://console.example"]
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'state' / 'iip.db'}"


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9999")
    monkeypatch.setenv("DATABASE_URL", "postgresql://elsewhere/db")
    settings = load_settings()
    assert settings.port == 8000
    assert settings.database_url == ""


@pytest.mark.parametrize("url", ["postgresql://u@db.example/iip", "postgresql+psycopg2://u@db.example/iip"])
def test_postgresql_urls_use_psycopg_3(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("IIP_DATABASE_URL", url)
    assert load_settings().effective_database_url == "postgresql+psycopg://u@db.example/iip"


def test_dev_mode_generates_the_secret_key_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    monkeypatch.setenv("IIP_DATA_DIR", str(data_dir))

    first = load_settings().resolved_secret_key()

    key_file = data_dir / SECRET_KEY_FILE
    assert key_file.read_text().strip() == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first) >= 32
    # A later start (a new settings object) reads the same key instead of making another.
    assert load_settings().resolved_secret_key() == first
    assert sorted(p.name for p in data_dir.iterdir()) == [SECRET_KEY_FILE]


def test_configured_secret_key_is_used_and_nothing_is_written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IIP_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("IIP_SECRET_KEY", "configured-secret-value")
    settings = load_settings()
    assert settings.resolved_secret_key() == "configured-secret-value"
    assert not (tmp_path / "state" / SECRET_KEY_FILE).exists()


def test_production_without_secret_key_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IIP_MODE", "production")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "IIP_SECRET_KEY" in message
    assert "production" in message
    assert "\n" not in message


def test_production_with_secret_key_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IIP_MODE", "production")
    monkeypatch.setenv("IIP_SECRET_KEY", "a-long-production-secret")
    settings = load_settings()
    assert settings.mode is Mode.PRODUCTION
    assert settings.secret_key == SecretStr("a-long-production-secret")


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("IIP_DATABASE_URL", "notaurl", "IIP_DATABASE_URL"),
        ("IIP_DATABASE_URL", "mysql://user@db.example/iip", "IIP_DATABASE_URL"),
        ("IIP_DATABASE_URL", "postgresql+asyncpg://user@db.example/iip", "IIP_DATABASE_URL"),
        ("IIP_BUS", "redis://127.0.0.1:6379", "IIP_BUS"),
        ("IIP_PORT", "eighty", "IIP_PORT"),
        ("IIP_PORT", "70000", "IIP_PORT"),
        ("IIP_MODE", "staging", "IIP_MODE"),
        ("IIP_LOG_LEVEL", "loud", "IIP_LOG_LEVEL"),
        ("IIP_AUTH__LOCKOUT_THRESHOLD", "0", "IIP_AUTH__LOCKOUT_THRESHOLD"),
        # A list inside a section is parsed with its section, which is what gets named.
        ("IIP_API__CORS_ORIGINS", "not json", "IIP_API"),
    ],
)
def test_malformed_variable_gives_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert named in message
    assert "\n" not in message
    assert message.startswith("invalid settings: ")


def test_concurrent_first_starts_agree_on_one_secret_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    monkeypatch.setenv("IIP_DATA_DIR", str(data_dir))
    settings = [load_settings() for _ in range(8)]
    start = threading.Barrier(len(settings))
    keys: list[str] = []

    def first_start(s: Settings) -> None:
        start.wait()
        keys.append(s.resolved_secret_key())

    threads = [threading.Thread(target=first_start, args=(s,)) for s in settings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(keys) == len(settings)
    assert len(set(keys)) == 1
    assert keys[0]
    assert (data_dir / SECRET_KEY_FILE).read_text().strip() == keys[0]
    assert sorted(p.name for p in data_dir.iterdir()) == [SECRET_KEY_FILE]  # no staging files left behind
