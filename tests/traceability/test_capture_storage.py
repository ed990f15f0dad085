"""Capture's storage on SQLite: the page cache a large job writes with, and the connection's own given back."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from iip.kernel.db import Database
from iip.traceability.capture_storage import CAPTURE_PAGE_CACHE_KIB, WIDE_CACHE_MIN_EVENTS, capture_page_cache
from iip.traceability.models import Event
from tests.traceability.test_capture import document, new_tenant, object_event, run

WIDE = f"PRAGMA cache_size = -{CAPTURE_PAGE_CACHE_KIB}"
pytestmark = pytest.mark.parametrize("backend", ["sqlite"])  # the page cache is SQLite's


@pytest.fixture
def sqlite_db(migrated_db: Database) -> Database:
    return migrated_db


def cache_size(session: Session) -> int:
    return int(session.connection().exec_driver_sql("PRAGMA cache_size").scalar_one())


def test_a_large_job_writes_with_the_wide_cache_and_gives_the_connection_its_own_back(sqlite_db: Database) -> None:
    with sqlite_db.session() as session:
        own = cache_size(session)
        with capture_page_cache(session, WIDE_CACHE_MIN_EVENTS):
            assert cache_size(session) == -CAPTURE_PAGE_CACHE_KIB
        assert cache_size(session) == own != -CAPTURE_PAGE_CACHE_KIB


def test_the_cache_is_given_back_when_the_write_fails(sqlite_db: Database) -> None:
    with sqlite_db.session() as session:
        own = cache_size(session)
        with pytest.raises(RuntimeError), capture_page_cache(session, WIDE_CACHE_MIN_EVENTS):
            raise RuntimeError("refused")
        assert cache_size(session) == own


def test_a_small_job_keeps_the_connection_cache(sqlite_db: Database) -> None:
    with sqlite_db.session() as session:
        own = cache_size(session)
        with capture_page_cache(session, WIDE_CACHE_MIN_EVENTS - 1):
            assert cache_size(session) == own


def test_a_large_capture_widens_the_cache_while_it_writes_and_stores_every_event(sqlite_db: Database) -> None:
    tenant = new_tenant(sqlite_db)
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    events = [object_event(n) for n in range(WIDE_CACHE_MIN_EVENTS)]
    event.listen(sqlite_db.engine, "before_cursor_execute", seen)
    try:
        job = run(sqlite_db, tenant, document(*events))
    finally:
        event.remove(sqlite_db.engine, "before_cursor_execute", seen)
    assert job.success, job.errors[:3]
    widened = statements.index(WIDE)
    inserts = [n for n, s in enumerate(statements) if s.startswith("INSERT INTO traceability_event ")]
    restored = next(n for n, s in enumerate(statements) if n > widened and s.startswith("PRAGMA cache_size = "))
    assert widened < inserts[0]
    assert inserts[-1] < restored
    assert statements[restored] != WIDE
    with sqlite_db.session() as session:
        stored = session.scalar(select(func.count()).select_from(Event).where(Event.tenant_id == tenant))
        assert stored == WIDE_CACHE_MIN_EVENTS
        assert cache_size(session) != -CAPTURE_PAGE_CACHE_KIB
