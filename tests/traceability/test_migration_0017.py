"""Migration 0017 on SQLite and PostgreSQL: subscription schedule columns, handles made canonical, and back down."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect, text

from iip.kernel.db import Base, Database
from iip.kernel.module import discover_modules
from iip.migrations.runner import current_revision, downgrade, upgrade

TABLE = "traceability_subscription"


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def columns(db: Database) -> set[str]:
    return {column["name"] for column in inspect(db.engine).get_columns(TABLE)}


def differences(db: Database) -> list[Any]:
    """How the subscription table differs from its model (the tables it names by foreign key included)."""
    discover_modules()
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for name in (TABLE, "traceability_named_query", "kernel_tenant"):
        Base.metadata.tables[name].to_metadata(metadata)

    def ours(name: str | None, type_: str, _parents: Any) -> bool:
        return type_ != "table" or name == TABLE

    def our_objects(_object: Any, name: str | None, type_: str, _reflected: bool, _compare_to: Any) -> bool:
        return ours(name, type_, None)

    options = {"compare_type": True, "render_as_batch": True, "include_name": ours, "include_object": our_objects}
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=options)
        return list(compare_metadata(context, metadata))


# identifier as stored before 0017 -> as stored after
HANDLES = {
    "hdl:88.118.8/Part-7": "hdl:88.118.8/part-7",
    "HDL:88.118.8/RAW-1": "hdl:88.118.8/raw-1",
    "https://hdl.handle.net/88.118.8/Box%2F3": "hdl:88.118.8/box/3",
    "https://iip.example.com/api/handles/88.118.8/Line-1?index=1": "hdl:88.118.8/line-1",
    "hdl:88.118.8": "hdl:88.118.8",  # names no handle: left alone
    "https://id.gs1.org/01/09506000134352/21/ABC": "https://id.gs1.org/01/09506000134352/21/ABC",
    "urn:uuid:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0": "urn:uuid:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
}


def add_rows(db: Database) -> None:
    """An event naming each identifier as an EPC, its read point a handle, as 0016's code stored them."""
    moment = {"at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO kernel_tenant (id, name, display_name, active, created_at)"
                " VALUES ('t1', 't1', '', true, :at)"
            ),
            moment,
        )
        conn.execute(
            text(
                "INSERT INTO traceability_event (id, tenant_id, event_id, event_hash, event_type, event_time,"
                " event_time_zone_offset, record_time, read_point, body, context)"
                " VALUES (1, 't1', 'e1', 'ni:///sha-256;x', 'ObjectEvent', :at, '+00:00', :at,"
                " 'https://hdl.handle.net/88.118.8/Line-1', '{}', '{}')"
            ),
            moment,
        )
        for number, value in enumerate(HANDLES, start=1):
            conn.execute(
                text(
                    "INSERT INTO traceability_event_epc (id, event_id, tenant_id, role, epc)"
                    " VALUES (:id, 1, 't1', 'epc', :epc)"
                ),
                {"id": number, "epc": value},
            )


def stored(db: Database) -> tuple[dict[str, str], str]:
    with db.engine.connect() as conn:
        epcs = dict(conn.execute(text("SELECT id, epc FROM traceability_event_epc ORDER BY id")).all())
        point = conn.execute(text("SELECT read_point FROM traceability_event")).scalar_one()
    return {list(HANDLES)[number - 1]: epc for number, epc in epcs.items()}, point


def test_0017_adds_the_schedule_columns_makes_handles_canonical_and_goes_back_down(db: Database) -> None:
    upgrade(db, "0016")
    assert "signature_token" in columns(db)
    add_rows(db)

    upgrade(db, "0017")

    assert current_revision(db) == "0017"
    assert {"schedule", "initial_record_time", "last_notified_at"} <= columns(db)
    assert "signature_token" not in columns(db)
    assert differences(db) == []
    epcs, point = stored(db)
    assert epcs == HANDLES
    assert point == "hdl:88.118.8/line-1"

    downgrade(db, "0016")
    assert current_revision(db) == "0016"
    assert "signature_token" in columns(db)
    assert not {"schedule", "initial_record_time", "last_notified_at"} & columns(db)
    assert stored(db)[0] == HANDLES  # the canonical forms stay

    upgrade(db, "0017")
    assert differences(db) == []
