"""Capture's rows: prepared in worker processes exactly as in the capturing process, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import sqlite

from iip.kernel.db import Database
from iip.traceability import capture_workers
from iip.traceability.capture_workers import sqlite_time
from iip.traceability.epcis.documents import read_document
from iip.traceability.models import Event, EventEpc, EventLink, SensorReport
from tests.traceability.conftest import DATASET
from tests.traceability.test_capture import document, new_tenant, object_event, run

# GS1's examples holding every lookup table between them: sensor reports (with times, numbers,
# booleans, text), business transactions, sources, destinations, quantities and extensions.
SOURCES = (
    "JSON/WithSensorData/SensorDataExample1.jsonld",
    "JSON/WithSensorData/SensorDataExample7.jsonld",
    "JSON/Example_9.6.1-ObjectEvent.jsonld",
    "JSON/Example_9.6.3-AggregationEvent.jsonld",
    "JSON/Example_9.6.4-TransformationEvent.jsonld",
    "JSON/AssociationEvent/AssociationEvent-f.jsonld",
)


def example_events() -> list[dict[str, Any]]:
    events = []
    for name in SOURCES:
        read = read_document((DATASET / name).read_bytes())
        events += [{k: v for k, v in e.items() if k != "@context"} for e in read.events]
    return events


def all_rows(db: Database, tenant_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row of a tenant, event ids replaced by the event's rank in storing order."""
    with db.session() as session:
        events = list(session.scalars(select(Event).where(Event.tenant_id == tenant_id).order_by(Event.id)))
        rank = {e.id: n for n, e in enumerate(events)}
        out: dict[str, list[tuple[Any, ...]]] = {
            "events": [
                (
                    e.event_id,
                    e.event_hash,
                    e.event_type,
                    e.event_time,
                    e.event_time_zone_offset,
                    e.action,
                    e.biz_step,
                    e.disposition,
                    e.read_point,
                    e.biz_location,
                    json.dumps(e.body, sort_keys=True),
                    e.context,
                )
                for e in events
            ]
        }
        out["epcs"] = sorted(
            (rank[r.event_id], r.role, r.epc, r.quantity, r.uom)
            for r in session.scalars(select(EventEpc).where(EventEpc.tenant_id == tenant_id))
        )
        out["links"] = sorted(
            (rank[r.event_id], r.kind, r.type, r.value)
            for r in session.scalars(select(EventLink).where(EventLink.tenant_id == tenant_id))
        )
        sensors = [
            (
                *(rank[r.event_id], r.type, r.device_id, r.time, r.value, r.min_value, r.max_value),
                *(r.mean_value, r.uom, r.string_value, r.boolean_value),
            )
            for r in session.scalars(select(SensorReport).where(SensorReport.tenant_id == tenant_id))
        ]
        out["sensors"] = sorted(sensors, key=repr)  # None beside numbers: ordered by text
    return out


def test_rows_prepared_by_workers_are_the_rows_prepared_here(
    migrated_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every table's rows, a document prepared in the capturing process and in chunks by worker processes
    (written by COPY on PostgreSQL): the same values, and events stored in document order."""
    events = example_events()
    events.append(dict(events[0]))  # a duplicate, dropped
    data = document(*events)
    here_tenant, pooled_tenant = new_tenant(migrated_db), new_tenant(migrated_db)
    here = run(migrated_db, here_tenant, data)
    monkeypatch.setattr(capture_workers, "PARALLEL_MIN_EVENTS", 5)
    monkeypatch.setattr(capture_workers, "CHUNK_EVENTS", 4)
    assert capture_workers.worker_count() > 0, "needs two cores"
    pooled = run(migrated_db, pooled_tenant, data)
    assert capture_workers._pool is not None
    assert (here.success, here.captured_count, here.duplicate_count) == (True, len(events) - 1, 1)
    assert (pooled.success, pooled.captured_count, pooled.duplicate_count) == (True, len(events) - 1, 1)
    rows_here, rows_pooled = all_rows(migrated_db, here_tenant), all_rows(migrated_db, pooled_tenant)
    assert rows_pooled == rows_here
    assert len(rows_here["sensors"]) > 10
    assert rows_here["links"]
    assert rows_here["epcs"]
    assert any(row[10] is not None for row in rows_here["sensors"])  # a boolean value
    assert any(row[3] is not None for row in rows_here["sensors"])  # a time
    assert [json.loads(row[10]) for row in rows_here["events"]] == events[:-1]


def test_a_number_where_a_list_belongs_is_reported_not_a_crash(migrated_db: Database) -> None:
    """The schema refuses such an event; the rules and the lookup rows, which walk those fields, skip them
    instead of failing the whole capture. In proceed mode the other events are stored."""
    tenant_id = new_tenant(migrated_db)
    broken = [
        object_event(2, epcList=5),
        object_event(3, quantityList=1.5),
        object_event(4, bizTransactionList=True),
        object_event(5, sensorElementList=7),
        object_event(6, sourceList=2, persistentDisposition={"set": 3}),
    ]
    job = run(migrated_db, tenant_id, document(object_event(1), *broken), mode="proceed")
    assert (job.success, job.captured_count) == (False, 1)
    located = {error["location"] for error in job.errors}
    assert {
        f"/epcisBody/eventList/{n}/{name}"
        for n, name in enumerate(
            ("epcList", "quantityList", "bizTransactionList", "sensorElementList", "sourceList"), start=1
        )
    } <= located


@pytest.mark.parametrize(
    "moment",
    [
        dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2025, 6, 30, 23, 59, 59, 999_999, tzinfo=dt.UTC),
        dt.datetime(2025, 3, 1, 1, 2, 3, 45, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        dt.datetime(1969, 12, 31, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-6))),
        dt.datetime(5, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
    ],
)
def test_times_for_sqlite_are_what_sqlalchemy_stores(moment: dt.datetime) -> None:
    """Workers write SQLite's times as text: it must be the column type's own conversion, since queries
    compare these texts with the ones SQLAlchemy binds."""
    dialect = sqlite.dialect()
    processor = Event.__table__.c.event_time.type.dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None
    assert sqlite_time(moment) == processor(moment)
