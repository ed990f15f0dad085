"""Running the `iip` command: the real console script in a subprocess, or in-process with CliRunner."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from iip.cli.app import app
from iip.kernel.db import Database
from iip.kernel.settings import Settings

# The console script installed next to the interpreter running the tests.
IIP = Path(sys.executable).with_name("iip")


def free_port() -> int:
    """A port nothing listens on (bound once by us, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def outer_environment() -> dict[str, str]:
    """The test process's environment without any IIP_ setting that could leak into the command."""
    return {k: v for k, v in os.environ.items() if not k.startswith("IIP_")}


@dataclass
class IipCommand:
    """`iip` against one data dir and database, as a subprocess."""

    cwd: Path
    env: dict[str, str] = field(default_factory=dict)

    def __call__(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(IIP), *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            cwd=self.cwd,
            env={**outer_environment(), **self.env, **(env or {})},
            timeout=120,
            check=False,
        )


@dataclass
class InProcessIip:
    """`iip` against the same data dir and database, through typer's CliRunner."""

    monkeypatch: pytest.MonkeyPatch
    env: dict[str, str]

    def __call__(self, *args: str, stdin: str | None = None) -> Result:
        for name in list(os.environ):
            if name.startswith("IIP_"):
                self.monkeypatch.delenv(name)
        for name, value in self.env.items():
            self.monkeypatch.setenv(name, value)
        return CliRunner().invoke(app, list(args), input=stdin)


@pytest.fixture
def cli_settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "var", database_url=db_url, log_format="text", log_level="WARNING")


@pytest.fixture
def cli_env(cli_settings: Settings) -> dict[str, str]:
    return {
        "IIP_DATA_DIR": str(cli_settings.data_dir),
        "IIP_DATABASE_URL": cli_settings.database_url,
        "IIP_LOG_FORMAT": "text",
    }


@pytest.fixture
def iip(tmp_path: Path, cli_env: dict[str, str]) -> IipCommand:
    return IipCommand(cwd=tmp_path, env=cli_env)


@pytest.fixture
def iip_in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli_env: dict[str, str]) -> InProcessIip:
    monkeypatch.chdir(tmp_path)
    return InProcessIip(monkeypatch, cli_env)


@pytest.fixture
def cli_db(cli_settings: Settings) -> Iterator[Database]:
    """The database the commands use, for checking what they did."""
    db = Database(cli_settings.effective_database_url)
    yield db
    db.dispose()


def one_line(text: str) -> str:
    """The text, asserted to be exactly one line."""
    lines = text.splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}: {text!r}"
    return lines[0]
