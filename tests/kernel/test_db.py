"""The database layer on SQLite and PostgreSQL: pragmas, UTC datetimes, units of work, concurrent writers."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, StatementError

from iip.kernel import audit
from iip.kernel.auth import Tenant, User, new_id
from iip.kernel.db import Database
from iip.kernel.settings import Settings
from iip.migrations.runner import upgrade

CHINA = dt.timezone(dt.timedelta(hours=8))


def run_threads(count: int, work: Callable[[int], None], *, timeout: float = 120) -> list[BaseException]:
    """Run `work(n)` in `count` threads; return what they raised. Daemon threads, so a hang fails the test."""
    errors: list[BaseException] = []

    def target(n: int) -> None:
        try:
            work(n)
        except BaseException as err:  # noqa: BLE001 - reported to the test below
            errors.append(err)

    threads = [threading.Thread(target=target, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads still running (deadlock?): {stuck}"
    return errors


@pytest.fixture
def default_sqlite(tmp_path: Path) -> Iterator[tuple[Settings, Database]]:
    """The embedded default: no IIP_DATABASE_URL, so the SQLite file goes into the data dir."""
    settings = Settings(data_dir=tmp_path / "var")
    settings.ensure_data_dir()
    db = Database(settings.effective_database_url)
    yield settings, db
    db.dispose()


def test_sqlite_file_lives_in_the_data_dir(default_sqlite: tuple[Settings, Database]) -> None:
    settings, db = default_sqlite
    upgrade(db)
    assert db.backend == "sqlite"
    assert (settings.data_dir / "iip.db").is_file()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(default_sqlite: tuple[Settings, Database]) -> None:
    _settings, db = default_sqlite
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() > 0


def insert(db: Database, row: object) -> None:
    with db.session() as session:
        session.add(row)


def test_foreign_keys_are_enforced(migrated_db: Database) -> None:
    orphan = User(id=new_id(), tenant_id="no-such-tenant", username="orphan", password_hash="x", role="viewer")
    with pytest.raises(IntegrityError):
        insert(migrated_db, orphan)


def test_aware_datetimes_round_trip_as_utc(migrated_db: Database) -> None:
    created = dt.datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=CHINA)
    tenant_id = new_id()
    with migrated_db.session() as session:
        session.add(Tenant(id=tenant_id, name="roundtrip", created_at=created))

    with migrated_db.session() as session:
        stored = session.get(Tenant, tenant_id)
        assert stored is not None
        assert stored.created_at == created
        assert stored.created_at.utcoffset() == dt.timedelta(0)
        assert stored.created_at.hour == 1  # 09:30 in UTC+8
        assert stored.created_at.microsecond == 123456


def test_datetime_comparisons_in_queries_use_the_instant(migrated_db: Database) -> None:
    with migrated_db.session() as session:
        session.add(Tenant(id=new_id(), name="early", created_at=dt.datetime(2026, 1, 1, 0, 0, tzinfo=dt.UTC)))
        session.add(Tenant(id=new_id(), name="late", created_at=dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)))
    # 10:00 in UTC+8 is 02:00 UTC: after "early", before "late".
    boundary = dt.datetime(2026, 1, 1, 10, 0, tzinfo=CHINA)
    with migrated_db.session() as session:
        after = list(session.scalars(select(Tenant.name).where(Tenant.created_at > boundary)))
    assert after == ["late"]


def test_naive_datetimes_are_refused(migrated_db: Database) -> None:
    naive = Tenant(id=new_id(), name="naive", created_at=dt.datetime(2026, 1, 1, 12, 0))
    with pytest.raises(StatementError, match="naive datetime"):
        insert(migrated_db, naive)
    with migrated_db.session() as session:
        assert session.scalar(select(Tenant).where(Tenant.name == "naive")) is None


def test_session_commits_on_success(migrated_db: Database) -> None:
    with migrated_db.session() as session:
        session.add(Tenant(id=new_id(), name="kept"))
    with migrated_db.session() as session:
        assert session.scalar(select(Tenant.name).where(Tenant.name == "kept")) == "kept"


def test_session_rolls_back_on_error(migrated_db: Database) -> None:
    class DeliberateError(Exception):
        pass

    def insert_then_fail() -> None:
        with migrated_db.session() as session:
            session.add(Tenant(id=new_id(), name="discarded"))
            session.flush()  # the row reached the database inside the transaction
            raise DeliberateError

    with pytest.raises(DeliberateError):
        insert_then_fail()
    with migrated_db.session() as session:
        assert session.scalar(select(Tenant).where(Tenant.name == "discarded")) is None


def test_ping(migrated_db: Database) -> None:
    migrated_db.ping()


def test_concurrent_writers_from_threads(migrated_db: Database) -> None:
    threads, per_thread = 4, 50

    def work(n: int) -> None:
        for i in range(per_thread):
            with migrated_db.session() as session:
                audit.append(session, f"test:writer-{n}", audit.AuditRecord(action="write", object_id=str(i)))

    errors = run_threads(threads, work)

    assert errors == []  # notably no "database is locked" on SQLite
    with migrated_db.session() as session:
        result = audit.verify(session)
        seqs = list(session.scalars(select(audit.AuditEntry.seq).order_by(audit.AuditEntry.seq)))
    assert result.ok, result.problem
    assert result.checked == threads * per_thread
    assert seqs == list(range(1, threads * per_thread + 1))


def test_concurrent_transactions_that_append_twice(migrated_db: Database) -> None:
    # A transaction appending more than once must neither deadlock against other writers nor
    # interleave with them: its entries stay adjacent in the chain.
    threads, transactions = 4, 10

    def work(n: int) -> None:
        for i in range(transactions):
            with migrated_db.session() as session:
                audit.append(session, f"test:writer-{n}", audit.AuditRecord(action="first", object_id=f"{n}.{i}"))
                audit.append(session, f"test:writer-{n}", audit.AuditRecord(action="second", object_id=f"{n}.{i}"))

    errors = run_threads(threads, work)

    assert errors == []
    with migrated_db.session() as session:
        result = audit.verify(session)
        entries = list(session.scalars(select(audit.AuditEntry).order_by(audit.AuditEntry.seq)))
    assert result.ok, result.problem
    assert result.checked == threads * transactions * 2
    for first, second in zip(entries[::2], entries[1::2], strict=True):
        assert (first.action, second.action) == ("first", "second")
        assert first.object_id == second.object_id
