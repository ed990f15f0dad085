"""Migrations on SQLite and PostgreSQL: upgrade, downgrade, and agreement with the ORM models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, MetaData, String, inspect

import iip.kernel.audit
import iip.kernel.auth  # noqa: F401 - registers the kernel tables
from iip.kernel import audit
from iip.kernel.db import Base, Database
from iip.kernel.module import discover_modules
from iip.migrations.runner import alembic_config, current_revision, downgrade, upgrade
from iip.migrations.schema_filters import include_name

KERNEL_TABLES = {
    "kernel_tenant",
    "kernel_user",
    "kernel_api_key",
    "kernel_console_session",
    "kernel_audit_entry",
    "kernel_audit_anchor",
}


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def head(db: Database) -> str:
    revision = ScriptDirectory.from_config(alembic_config(db)).get_current_head()
    assert revision is not None
    return revision


def tables(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names())


def schema_differences(db: Database, metadata: MetaData) -> list[Any]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "render_as_batch": True, "include_name": include_name}
        )
        return list(compare_metadata(context, metadata))


def model_metadata() -> MetaData:
    discover_modules()  # importing each context registers its tables
    return Base.metadata


def test_empty_database_has_no_revision(db: Database) -> None:
    assert current_revision(db) is None
    assert not tables(db) & KERNEL_TABLES


def test_upgrade_creates_the_tables_and_reaches_head(db: Database) -> None:
    upgrade(db)
    assert tables(db) >= KERNEL_TABLES
    assert current_revision(db) == head(db)


def test_upgrade_twice_is_a_no_op(db: Database) -> None:
    upgrade(db)
    upgrade(db)
    assert current_revision(db) == head(db)


def test_upgrade_seeds_the_audit_anchor(db: Database) -> None:
    upgrade(db)
    with db.session() as session:
        anchor = session.get(audit.AuditAnchor, 1)
        assert anchor is not None
        assert (anchor.last_seq, anchor.last_hash) == (0, audit.GENESIS)


def test_downgrade_to_base_and_upgrade_again(db: Database) -> None:
    upgrade(db)
    with db.session() as session:
        audit.append(session, "test:before", audit.AuditRecord(action="before.downgrade"))

    downgrade(db, "base")
    assert current_revision(db) is None
    assert not tables(db) & KERNEL_TABLES

    upgrade(db)
    assert current_revision(db) == head(db)
    assert tables(db) >= KERNEL_TABLES
    with db.session() as session:
        entry = audit.append(session, "test:after", audit.AuditRecord(action="after.upgrade"))
        assert entry.seq == 1
        assert audit.verify(session).ok


def test_models_match_the_migrated_schema(db: Database) -> None:
    # A model changed without a migration shows up here.
    upgrade(db)
    assert schema_differences(db, model_metadata()) == []


def test_schema_comparison_notices_a_model_change(db: Database) -> None:
    # The check above can fail: a column present only in the models is reported.
    upgrade(db)
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in model_metadata().tables.values():
        table.to_metadata(changed)
    changed.tables["kernel_tenant"].append_column(Column("region", String(20), nullable=True))
    differences = schema_differences(db, changed)
    assert [(d[0], d[2], d[3].name) for d in differences] == [("add_column", "kernel_tenant", "region")]
