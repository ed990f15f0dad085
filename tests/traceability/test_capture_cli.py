"""`iip trace capture FILE --tenant NAME [--mode rollback|proceed]`, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from iip.kernel.audit import AuditEntry
from iip.kernel.db import Database
from iip.kernel.settings import Settings
from iip.traceability.models import CaptureJob, Event
from tests.cli.conftest import InProcessIip
from tests.traceability.conftest import DATASET
from tests.traceability.test_capture import document, object_event


@pytest.fixture
def iip_in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Settings) -> InProcessIip:
    """`iip` in this process, on the test's database (SQLite or PostgreSQL) and data dir."""
    monkeypatch.chdir(tmp_path)
    env = {"IIP_DATA_DIR": str(settings.data_dir), "IIP_DATABASE_URL": settings.database_url, "IIP_LOG_FORMAT": "text"}
    return InProcessIip(monkeypatch, env)


@pytest.fixture
def cli_db(settings: Settings) -> Iterator[Database]:
    """The database the commands use, for checking what they did."""
    db = Database(settings.effective_database_url)
    yield db
    db.dispose()


def stored(db: Database) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Event)) or 0


def prepared(iip: InProcessIip) -> None:
    assert iip("db", "upgrade").exit_code == 0
    assert iip("tenant", "create", "acme").exit_code == 0


def test_a_file_is_captured_and_the_capture_audited(iip_in_process: InProcessIip, cli_db: Database) -> None:
    prepared(iip_in_process)
    result = iip_in_process(
        "trace", "capture", str(DATASET / "XML/Example-PersistentDisposition.xml"), "--tenant", "acme"
    )
    assert result.exit_code == 0, result.output
    assert "2 of 2 events stored, 0 duplicates dropped" in result.stdout
    again = iip_in_process(
        "trace", "capture", str(DATASET / "XML/Example-PersistentDisposition.xml"), "--tenant", "acme"
    )
    assert again.exit_code == 0, again.output
    assert "0 of 2 events stored, 2 duplicates dropped" in again.stdout
    assert stored(cli_db) == 2
    with cli_db.session() as session:
        actions = session.scalars(select(AuditEntry.action).where(AuditEntry.object_type == "capture_job")).all()
    assert actions == ["cli traceability.capture", "cli traceability.capture"]


def test_invalid_events_are_listed_by_location_and_fail_the_command(
    iip_in_process: InProcessIip, cli_db: Database, tmp_path: Path
) -> None:
    prepared(iip_in_process)
    file = tmp_path / "events.json"  # told JSON by its name
    file.write_text(document(object_event(1), object_event(2, action="WHATEVER"), object_event(3)))
    rollback = iip_in_process("trace", "capture", str(file), "--tenant", "acme")
    assert rollback.exit_code == 1
    assert "/epcisBody/eventList/1/action: " in rollback.stderr
    assert "nothing stored (rollback)" in rollback.stderr
    assert stored(cli_db) == 0
    proceed = iip_in_process("trace", "capture", str(file), "--tenant", "acme", "--mode", "proceed")
    assert proceed.exit_code == 1
    assert "2 of 3 events stored" in proceed.stderr
    assert stored(cli_db) == 2
    with cli_db.session() as session:  # both jobs are kept, the failed rollback one too
        assert session.scalar(select(func.count()).select_from(CaptureJob)) == 2


def test_a_document_refused_whole_is_explained(iip_in_process: InProcessIip, tmp_path: Path) -> None:
    prepared(iip_in_process)
    file = tmp_path / "broken.jsonld"
    file.write_text('{"type": "EPCISDocument", "epcisBody": {"eventList": []}}')
    result = iip_in_process("trace", "capture", str(file), "--tenant", "acme")
    assert result.exit_code == 1
    assert '/: "@context" is a required property' in result.stderr
    assert "problems in the document" in result.stderr
    missing = iip_in_process("trace", "capture", str(tmp_path / "none.xml"), "--tenant", "acme")
    assert missing.exit_code == 1
    assert "no such file" in missing.stderr
    wrong_mode = iip_in_process("trace", "capture", str(file), "--tenant", "acme", "--mode", "sometimes")
    assert wrong_mode.exit_code == 2
    unknown = iip_in_process("trace", "capture", str(file), "--tenant", "nobody")
    assert unknown.exit_code == 1
    assert "tenant 'nobody' not found" in unknown.stderr
