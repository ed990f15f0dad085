"""`iip tenant`, `iip user`, `iip apikey` and `iip audit` on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from iip import migrations
from iip.api.app import create_app
from iip.kernel import audit
from iip.kernel.auth import ApiKey, Tenant, User, verify_password
from iip.kernel.db import Database
from iip.kernel.settings import Settings
from tests.cli.conftest import IipCommand, InProcessIip, one_line

PASSWORD = "a long enough password"


@pytest.fixture
def api(cli_settings: Settings) -> Iterator[TestClient]:
    """The HTTP API over the database the commands wrote."""
    with TestClient(create_app(cli_settings, configure_logs=False)) as client:
        yield client


def cli_entries(db: Database) -> list[audit.AuditEntry]:
    with db.session() as session:
        return list(session.scalars(select(audit.AuditEntry).order_by(audit.AuditEntry.seq)))


def assert_clean_failure(result_code: int, stderr: str, *fragments: str) -> str:
    """A refused command: non-zero exit, one readable line on stderr, no traceback."""
    assert result_code != 0
    assert "Traceback" not in stderr
    line = one_line(stderr)
    for fragment in fragments:
        assert fragment in line
    return line


def test_console_script_end_to_end(iip: IipCommand, cli_db: Database, cli_settings: Settings) -> None:
    upgraded = iip("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "head" in upgraded.stdout

    created = iip("tenant", "create", "acme", "--display-name", "Acme Works 顶峰制造")
    assert created.returncode == 0, created.stderr
    assert "acme" in created.stdout

    listed = iip("tenant", "list")
    assert listed.returncode == 0, listed.stderr
    assert "acme" in listed.stdout

    user = iip("user", "create", "bob", "--tenant", "acme", "--role", "engineer", stdin=PASSWORD + "\n")
    assert user.returncode == 0, user.stderr
    with cli_db.session() as session:
        bob = session.scalar(select(User).where(User.username == "bob"))
        tenant = session.scalar(select(Tenant).where(Tenant.name == "acme"))
        assert bob is not None
        assert tenant is not None
        assert (bob.role, bob.tenant_id) == ("engineer", tenant.id)
        assert tenant.display_name == "Acme Works 顶峰制造"
        assert verify_password(bob.password_hash, PASSWORD)

    created_key = iip("apikey", "create", "--tenant", "acme", "--role", "viewer")
    assert created_key.returncode == 0, created_key.stderr
    secret = one_line(created_key.stdout)  # only the key: scripts capture it with $(iip apikey create ...)
    assert secret.startswith("iip_")
    assert secret == created_key.stdout.strip()
    prefix = secret.split("_")[1]
    assert prefix in created_key.stderr  # the human-readable note goes to stderr

    with TestClient(create_app(cli_settings, configure_logs=False)) as client:
        me = client.get("/api/me", headers={"Authorization": f"Bearer {secret}"})
        assert me.status_code == 200, me.text
        assert (me.json()["tenant_id"], me.json()["role"], me.json()["kind"]) == (tenant.id, "viewer", "apikey")

        revoked = iip("apikey", "revoke", prefix)
        assert revoked.returncode == 0, revoked.stderr
        refused = client.get("/api/me", headers={"Authorization": f"Bearer {secret}"})
        assert refused.status_code == 401

    verified = iip("audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "intact" in verified.stdout

    entries = cli_entries(cli_db)
    actions = [e.action for e in entries]
    for action in ("cli tenant.create", "cli user.create", "cli apikey.create", "cli apikey.revoke"):
        assert action in actions
    for entry in entries:
        if entry.action.startswith("cli "):
            assert entry.principal.startswith("cli:")
            assert entry.source == "cli"
            assert entry.outcome == "success"
            assert entry.tenant_id == tenant.id


def test_duplicate_tenant_is_one_readable_line(iip: IipCommand, iip_in_process: InProcessIip, cli_db: Database) -> None:
    assert iip_in_process("db", "upgrade").exit_code == 0
    assert iip_in_process("tenant", "create", "acme").exit_code == 0
    again = iip("tenant", "create", "acme")
    assert again.returncode == 1
    assert_clean_failure(again.returncode, again.stderr, "acme", "already exists")
    assert again.stdout == ""
    # The refusal is audited too.
    failures = [e for e in cli_entries(cli_db) if e.outcome == "failure"]
    assert [(e.action, e.principal[:4]) for e in failures] == [("cli tenant.create", "cli:")]


def test_audit_verify_names_the_tampered_entry(iip: IipCommand, iip_in_process: InProcessIip, cli_db: Database) -> None:
    assert iip_in_process("db", "upgrade").exit_code == 0
    for name in ("alpha", "bravo", "charlie", "delta"):
        assert iip_in_process("tenant", "create", name).exit_code == 0
    intact = iip("audit", "verify")
    assert intact.returncode == 0, intact.stderr
    assert "4 entries" in intact.stdout

    with cli_db.engine.begin() as conn:
        conn.execute(text("UPDATE kernel_audit_entry SET principal = 'cli:someone-else' WHERE seq = 2"))
    broken = iip("audit", "verify")
    line = assert_clean_failure(broken.returncode, broken.stderr, "entry 2")
    assert "changed" in line


def test_user_create_in_process(iip_in_process: InProcessIip, cli_db: Database) -> None:
    assert iip_in_process("db", "upgrade").exit_code == 0
    assert iip_in_process("tenant", "create", "acme").exit_code == 0
    result = iip_in_process("user", "create", "carol", "--tenant", "acme", "--role", "auditor", stdin=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "carol" in result.stdout
    with cli_db.session() as session:
        carol = session.scalar(select(User).where(User.username == "carol"))
        assert carol is not None
        assert carol.role == "auditor"


def test_unknown_role_is_a_clear_error(iip_in_process: InProcessIip, cli_db: Database) -> None:
    assert iip_in_process("db", "upgrade").exit_code == 0
    assert iip_in_process("tenant", "create", "acme").exit_code == 0
    result = iip_in_process("user", "create", "dave", "--tenant", "acme", "--role", "boss", stdin=PASSWORD + "\n")
    assert result.exit_code == 2
    assert "unknown role 'boss'" in result.stderr
    assert "engineer" in result.stderr  # lists the valid roles
    with cli_db.session() as session:
        assert session.scalar(select(User).where(User.username == "dave")) is None


def test_unknown_role_for_api_key(iip_in_process: InProcessIip) -> None:
    assert iip_in_process("db", "upgrade").exit_code == 0
    result = iip_in_process("apikey", "create", "--tenant", "acme", "--role", "root")
    assert result.exit_code == 2
    assert "unknown role 'root'" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "stdin", "fragments"),
    [
        (
            ("user", "create", "erin", "--tenant", "nowhere", "--role", "viewer"),
            PASSWORD,
            ("tenant 'nowhere' not found",),
        ),
        (("user", "create", "erin", "--tenant", "acme", "--role", "viewer"), "short", ("at least 10",)),
        (("user", "create", "erin", "--tenant", "acme", "--role", "viewer"), "", ("no password",)),
        (("user", "create", "Bad Name!", "--tenant", "acme", "--role", "viewer"), PASSWORD, ("username",)),
        (("apikey", "create", "--tenant", "nowhere", "--role", "viewer"), None, ("tenant 'nowhere' not found",)),
        (("apikey", "revoke", "0123456789ab"), None, ("not found",)),
        (("tenant", "create", "-"), None, ("tenant name",)),
    ],
)
def test_refused_commands_say_why_in_one_line(
    iip_in_process: InProcessIip, args: tuple[str, ...], stdin: str | None, fragments: tuple[str, ...]
) -> None:
    assert iip_in_process("db", "upgrade").exit_code == 0
    assert iip_in_process("tenant", "create", "acme").exit_code == 0
    result = iip_in_process(*args, stdin=stdin)
    assert result.exit_code == 1
    assert_clean_failure(result.exit_code, result.stderr, *fragments)
    assert "iip_" not in result.stdout


def test_api_key_stdout_is_only_the_key_in_process(iip_in_process: InProcessIip, cli_db: Database) -> None:
    assert iip_in_process("db", "upgrade").exit_code == 0
    assert iip_in_process("tenant", "create", "acme").exit_code == 0
    result = iip_in_process("apikey", "create", "--tenant", "acme", "--role", "operator", "--expires-days", "7")
    assert result.exit_code == 0, result.output
    secret = one_line(result.stdout)
    assert secret.startswith("iip_")
    with cli_db.session() as session:
        key = session.scalar(select(ApiKey).where(ApiKey.prefix == secret.split("_")[1]))
        assert key is not None
        assert key.role == "operator"
        assert key.expires_at is not None
        assert secret not in (key.key_hash, key.name, key.prefix)

    listed = iip_in_process("apikey", "list", "--tenant", "acme")
    assert listed.exit_code == 0
    assert secret.split("_")[1] in listed.stdout
    assert secret not in listed.stdout


def test_db_current_shows_the_revision(iip_in_process: InProcessIip) -> None:
    before = iip_in_process("db", "current")
    assert before.exit_code == 0, before.output
    assert before.stdout.strip() == "(empty)"
    assert iip_in_process("db", "upgrade").exit_code == 0
    after = iip_in_process("db", "current")
    head = ScriptDirectory(str(Path(migrations.__file__).parent)).get_current_head()
    assert head is not None
    assert after.stdout.strip() == head


def test_commands_before_migrating_ask_for_an_upgrade(iip_in_process: InProcessIip) -> None:
    result = iip_in_process("tenant", "list")
    assert result.exit_code == 1
    assert_clean_failure(result.exit_code, result.stderr, "iip db upgrade")
