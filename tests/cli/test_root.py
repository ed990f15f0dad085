"""The root command: version, migrations, and readable refusals for bad settings and unreachable databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from iip import __version__
from iip.kernel.db import Database
from tests.cli.conftest import IipCommand, InProcessIip, free_port, one_line


@pytest.fixture
def bare_iip(tmp_path: Path) -> IipCommand:
    """`iip` with only a data dir configured (the embedded SQLite default)."""
    return IipCommand(cwd=tmp_path, env={"IIP_DATA_DIR": str(tmp_path / "var")})


def assert_one_line_refusal(stderr: str, *fragments: str) -> str:
    assert "Traceback" not in stderr
    line = one_line(stderr)
    assert line.startswith("error: ")
    for fragment in fragments:
        assert fragment in line
    return line


def test_version(bare_iip: IipCommand) -> None:
    result = bare_iip("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"iip {__version__}"


def test_db_upgrade_on_the_embedded_default(bare_iip: IipCommand, tmp_path: Path) -> None:
    result = bare_iip("db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "sqlite" in result.stdout
    database = tmp_path / "var" / "iip.db"
    assert database.is_file()
    db = Database(f"sqlite:///{database}")
    try:
        assert "kernel_tenant" in inspect(db.engine).get_table_names()
    finally:
        db.dispose()


def test_db_upgrade_on_both_backends(iip_in_process: InProcessIip, cli_db: Database) -> None:
    result = iip_in_process("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert cli_db.backend in result.stdout
    assert "kernel_audit_entry" in inspect(cli_db.engine).get_table_names()


def test_malformed_database_url(bare_iip: IipCommand) -> None:
    result = bare_iip("tenant", "list", env={"IIP_DATABASE_URL": "notaurl"})
    assert result.returncode != 0
    assert_one_line_refusal(result.stderr, "IIP_DATABASE_URL")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("IIP_DATABASE_URL", "mysql://root@127.0.0.1/iip", "IIP_DATABASE_URL"),
        ("IIP_BUS", "kafka://127.0.0.1:9092", "IIP_BUS"),
        ("IIP_PORT", "eighty", "IIP_PORT"),
        ("IIP_AUTH__LOCKOUT_THRESHOLD", "zero", "IIP_AUTH__LOCKOUT_THRESHOLD"),
        # A list inside a section is parsed with its section, which is what gets named.
        ("IIP_API__CORS_ORIGINS", "https://not-a-json-list", "IIP_API"),
    ],
)
def test_bad_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str, named: str
) -> None:
    iip = InProcessIip(monkeypatch, {"IIP_DATA_DIR": str(tmp_path / "var"), variable: value})
    result = iip("tenant", "list")
    assert result.exit_code == 2
    assert_one_line_refusal(result.stderr, named)


def test_unreachable_postgresql(bare_iip: IipCommand) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/iip"
    result = bare_iip("tenant", "list", env={"IIP_DATABASE_URL": url})
    assert result.returncode == 1
    assert_one_line_refusal(result.stderr, "database unavailable", "127.0.0.1")


@pytest.mark.parametrize("command", [("db", "upgrade"), ("db", "current"), ("audit", "verify")])
def test_unreachable_postgresql_in_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: tuple[str, ...]
) -> None:
    url = f"postgresql+psycopg://postgres:hunter2@127.0.0.1:{free_port()}/iip"
    iip = InProcessIip(monkeypatch, {"IIP_DATA_DIR": str(tmp_path / "var"), "IIP_DATABASE_URL": url})
    result = iip(*command)
    assert result.exit_code == 1
    line = assert_one_line_refusal(result.stderr, "database unavailable")
    assert "hunter2" not in line  # the password is masked


def test_production_without_secret_key(bare_iip: IipCommand) -> None:
    result = bare_iip("tenant", "list", env={"IIP_MODE": "production"})
    assert result.returncode != 0
    assert_one_line_refusal(result.stderr, "IIP_SECRET_KEY")


def test_unusable_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    iip = InProcessIip(monkeypatch, {"IIP_DATA_DIR": str(blocker / "var")})
    result = iip("tenant", "list")
    assert result.exit_code == 1
    assert_one_line_refusal(result.stderr, "IIP_DATA_DIR")
