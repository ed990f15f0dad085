"""ORM models of the EPCIS repository (tables prefixed `traceability_`).

`traceability_event` holds each captured event exactly as captured (the internal form of
`epcis.documents`, in `body`) with the columns queries filter and sort on. Its integer `id` is the
order events were stored in: query pages and subscriptions advance over it.

The lookup tables name an event by that id and hold the values an event carries many of, in the
form they are matched in: identifiers canonical (`epcis.identifiers.canonical`, so a URN and a
Digital Link are the same row), CBV values as CBV web URIs (`epcis.documents.normalise_vocabulary`):

- `traceability_event_epc`: every identifier of an event with its role (`epc`, `child`, `parent`,
  `input`, `output` for instances; `quantity`, `child_quantity`, `input_quantity`,
  `output_quantity` for classes). Genealogy walks this table.
- `traceability_event_link`: business transactions, sources and destinations (`kind`, `type`, `value`).
- `traceability_sensor_report`: one row per sensor report, for the sensor value filters.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Double, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from iip.kernel.db import Base, utcnow

IDENTIFIER_LENGTH = 500  # an EPC, class, location or transaction, canonical
VOCABULARY_LENGTH = 300  # a CBV web URI or a user vocabulary URI
ACTOR_LENGTH = 200

_EVENT_PK = BigInteger().with_variant(Integer, "sqlite")


class Event(Base):
    """One captured EPCIS event."""

    __tablename__ = "traceability_event"
    __table_args__ = (
        UniqueConstraint("tenant_id", "event_hash"),
        Index("ix_traceability_event_tenant_event_time", "tenant_id", "event_time"),
        Index("ix_traceability_event_tenant_record_time", "tenant_id", "record_time"),
        Index("ix_traceability_event_tenant_event_id", "tenant_id", "event_id"),
        Index("ix_traceability_event_tenant_biz_step", "tenant_id", "biz_step"),
        Index("ix_traceability_event_tenant_biz_location", "tenant_id", "biz_location"),
        Index("ix_traceability_event_tenant_event_type", "tenant_id", "event_type"),
        Index("ix_traceability_event_tenant_read_point", "tenant_id", "read_point"),
        Index("ix_traceability_event_tenant_disposition", "tenant_id", "disposition"),
        # Ids are cursors (query pages, subscriptions): SQLite must never hand out a deleted one again.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(_EVENT_PK, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH))  # as given, or the event hash
    event_hash: Mapped[str] = mapped_column(String(100))  # CBV 2.0 hash ID: duplicates share it
    event_type: Mapped[str] = mapped_column(String(30))
    event_time: Mapped[dt.datetime] = mapped_column()
    event_time_zone_offset: Mapped[str] = mapped_column(String(6))
    record_time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    action: Mapped[str | None] = mapped_column(String(10), default=None)
    biz_step: Mapped[str | None] = mapped_column(String(VOCABULARY_LENGTH), default=None)
    disposition: Mapped[str | None] = mapped_column(String(VOCABULARY_LENGTH), default=None)
    read_point: Mapped[str | None] = mapped_column(String(IDENTIFIER_LENGTH), default=None)
    biz_location: Mapped[str | None] = mapped_column(String(IDENTIFIER_LENGTH), default=None)
    capture_job_id: Mapped[str | None] = mapped_column(String(32), default=None)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)  # the event as captured (internal form)
    context: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # extension prefix -> namespace


class EventEpc(Base):
    """An identifier an event names, in the role it names it."""

    __tablename__ = "traceability_event_epc"
    __table_args__ = (
        Index("ix_traceability_event_epc_lookup", "tenant_id", "epc", "role"),
        Index("ix_traceability_event_epc_event", "event_id"),
    )

    id: Mapped[int] = mapped_column(_EVENT_PK, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("traceability_event.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(20))
    epc: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH))  # canonical
    quantity: Mapped[float | None] = mapped_column(Double, default=None)  # class roles only
    uom: Mapped[str | None] = mapped_column(String(10), default=None)


class EventLink(Base):
    """A business transaction, source or destination of an event."""

    __tablename__ = "traceability_event_link"
    __table_args__ = (
        Index("ix_traceability_event_link_lookup", "tenant_id", "kind", "value"),
        Index("ix_traceability_event_link_event", "event_id"),
    )

    id: Mapped[int] = mapped_column(_EVENT_PK, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("traceability_event.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(20))  # bizTransaction, source, destination
    type: Mapped[str] = mapped_column(String(VOCABULARY_LENGTH), default="")  # CBV web URI, "" when untyped
    value: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH))  # canonical


class SensorReport(Base):
    """One sensor report of an event, flattened for the sensor value filters."""

    __tablename__ = "traceability_sensor_report"
    __table_args__ = (
        Index("ix_traceability_sensor_report_lookup", "tenant_id", "type", "value"),
        Index("ix_traceability_sensor_report_event", "event_id"),
    )

    id: Mapped[int] = mapped_column(_EVENT_PK, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("traceability_event.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(VOCABULARY_LENGTH), default="")  # measurement type, GS1 web URI
    device_id: Mapped[str | None] = mapped_column(String(IDENTIFIER_LENGTH), default=None)
    time: Mapped[dt.datetime | None] = mapped_column(default=None)
    value: Mapped[float | None] = mapped_column(Double, default=None)
    min_value: Mapped[float | None] = mapped_column(Double, default=None)
    max_value: Mapped[float | None] = mapped_column(Double, default=None)
    mean_value: Mapped[float | None] = mapped_column(Double, default=None)
    uom: Mapped[str | None] = mapped_column(String(10), default=None)
    string_value: Mapped[str | None] = mapped_column(Text, default=None)
    boolean_value: Mapped[bool | None] = mapped_column(default=None)


class CaptureJob(Base):
    """One `POST /epcis/capture`: its mode, progress and the errors that stopped or skipped events."""

    __tablename__ = "traceability_capture_job"
    __table_args__ = (Index("ix_traceability_capture_job_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    mode: Mapped[str] = mapped_column(String(10))  # rollback, proceed
    running: Mapped[bool] = mapped_column(default=True)
    success: Mapped[bool] = mapped_column(default=False)
    event_count: Mapped[int] = mapped_column(Integer, default=0)  # events in the document
    captured_count: Mapped[int] = mapped_column(Integer, default=0)
    duplicate_count: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # location, message
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class NamedQuery(Base):
    """A stored query: a name and its standard query parameters."""

    __tablename__ = "traceability_named_query"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Subscription(Base):
    """A webhook subscription to a named query, advancing over event ids after each 2xx."""

    __tablename__ = "traceability_subscription"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"), index=True)
    query_id: Mapped[str] = mapped_column(ForeignKey("traceability_named_query.id", ondelete="CASCADE"))
    destination: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(Text)  # sealed (kernel.sealing)
    stream: Mapped[bool] = mapped_column(default=True)  # deliver as events arrive; else on a schedule
    schedule: Mapped[dict[str, str] | None] = mapped_column(JSON, default=None)  # the binding's, fields as given
    schedule_seconds: Mapped[int | None] = mapped_column(Integer, default=None)  # IIP: every N seconds
    report_if_empty: Mapped[bool] = mapped_column(default=False)
    initial_record_time: Mapped[dt.datetime | None] = mapped_column(default=None)  # as asked, answered back
    after_event: Mapped[int] = mapped_column(BigInteger, default=0)  # last event id delivered
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # failed tries since the last 2xx
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_notified_at: Mapped[dt.datetime | None] = mapped_column(default=None)  # the last delivery answered 2xx
    active: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class MasterDataElement(Base):
    """One element of one vocabulary of a tenant's EPCIS master data, as captured in document headers.

    `attributes` are the JSON binding's `{"id", "attribute"}` pairs as captured, the newest capture
    of each attribute id winning; `children` are those of the newest capture that listed any.
    """

    __tablename__ = "traceability_master_data"
    __table_args__ = (
        UniqueConstraint("tenant_id", "vocabulary_type", "element_key", name="uq_traceability_master_data_element"),
        Index("ix_traceability_master_data_tenant_element_key", "tenant_id", "element_key"),
    )

    id: Mapped[int] = mapped_column(_EVENT_PK, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    vocabulary_type: Mapped[str] = mapped_column(String(VOCABULARY_LENGTH))  # as captured
    element_key: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH))  # canonical (epcis.master_data.lookup_key)
    element_id: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH))  # as the newest capture wrote it
    attributes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    children: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    context: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # prefixes the attribute values use
    capture_job_id: Mapped[str | None] = mapped_column(String(32), default=None)  # the newest capture
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
