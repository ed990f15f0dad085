"""Migrations 0010 and 0012 on SQLite and PostgreSQL: they make what the models describe, and go back down."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect

from iip.alarms.notify import models
from iip.kernel.db import Base, Database
from iip.migrations.runner import current_revision, downgrade, upgrade

LATEST = "0012"  # the last revision that changes these tables
TABLES = {
    "alarms_notify_channel",
    "alarms_notify_contact",
    "alarms_notify_route",
    "alarms_notify_route_channel",
    "alarms_notify_delivery",
    "alarms_notify_escalation",
}


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def ours(name: str | None, type_: str, _parents: Any) -> bool:
    return type_ != "table" or name in TABLES


def our_objects(_object: Any, name: str | None, type_: str, _reflected: bool, _compare_to: Any) -> bool:
    return ours(name, type_, None)


def differences(db: Database) -> list[Any]:
    assert {models.Channel.__tablename__, models.Delivery.__tablename__} <= TABLES
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for name in (*TABLES, "kernel_tenant"):  # the tenant table only as what foreign keys name
        Base.metadata.tables[name].to_metadata(metadata)
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={"compare_type": True, "render_as_batch": True, "include_name": ours, "include_object": our_objects},
        )
        return list(compare_metadata(context, metadata))


def test_the_migrations_create_the_tables_the_models_describe(db: Database) -> None:
    upgrade(db, LATEST)
    assert set(inspect(db.engine).get_table_names()) >= TABLES
    assert differences(db) == []


def test_the_migrations_go_down_and_up_again(db: Database) -> None:
    upgrade(db, LATEST)
    downgrade(db, "0009")
    assert current_revision(db) == "0009"
    assert not set(inspect(db.engine).get_table_names()) & TABLES
    upgrade(db, LATEST)
    assert differences(db) == []
