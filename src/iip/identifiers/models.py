"""Identifier tables: prefixes (homed here or delegated), handles with their values, GS1 links.

A handle's values are kept as one JSON array on its row: resolution is a single primary-key read,
and a write replaces the array atomically. Earlier versions go to `identifiers_handle_history`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, event
from sqlalchemy.orm import Mapped, mapped_column

from iip.identifiers.answers import stored_answer
from iip.kernel.db import Base, utcnow


class Prefix(Base):
    """A prefix such as `88.118.8`, homed on this node or delegated to another (`node_url`)."""

    __tablename__ = "identifiers_prefix"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(255), unique=True)  # lower-case
    parent: Mapped[str | None] = mapped_column(String(255), default=None, index=True)
    node_url: Mapped[str] = mapped_column(String(500), default="")  # "" = homed on this node
    status: Mapped[str] = mapped_column(String(20), default="approved")  # pending, approved, rejected
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # filing: company details
    # Filing (备案): the applicant's chosen admin secret as an argon2 hash until the decision, and the decision.
    secret_hash: Mapped[str] = mapped_column(String(255), default="")
    applied_by: Mapped[str] = mapped_column(String(200), default="")
    decided_by: Mapped[str] = mapped_column(String(200), default="")
    decided_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Handle(Base):
    """An identifier `prefix/suffix` and its typed values."""

    __tablename__ = "identifiers_handle"
    # Searches list a tenant's handles in key order, by prefix (a key range) or template: these
    # indexes give pages in that order without sorting the matches.
    __table_args__ = (
        Index("ix_identifiers_handle_tenant_key", "tenant_id", "key"),
        Index("ix_identifiers_handle_tenant_template_key", "tenant_id", "template", "key"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(600), unique=True)  # lower-case "prefix/suffix" for lookup
    handle: Mapped[str] = mapped_column(String(600))  # as registered (UTF-8, case kept)
    prefix: Mapped[str] = mapped_column(String(255), index=True)  # lower-case
    values: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    template: Mapped[str | None] = mapped_column(String(50), default=None)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    search_text: Mapped[str] = mapped_column(Text, default="")
    signature: Mapped[str] = mapped_column(String(200), default="")
    # The body of an unfiltered anonymous resolution, rendered from `values` on every write (None: the
    # full path answers), so the hot path reads ready bytes. Kept in step by the ORM events below and
    # by the bulk path, which writes it with the row.
    answer: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


@event.listens_for(Handle, "before_insert")
@event.listens_for(Handle, "before_update")
def _render_answer(mapper: Any, connection: Any, target: Handle) -> None:
    target.answer = stored_answer(target.handle, target.values)


class HandleHistory(Base):
    """Earlier versions of a handle's values, written on every change and on deletion."""

    __tablename__ = "identifiers_handle_history"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32), index=True)
    key: Mapped[str] = mapped_column(String(600), index=True)
    version: Mapped[int] = mapped_column(Integer)
    values: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    change: Mapped[str] = mapped_column(String(20))  # create, update, delete
    principal: Mapped[str] = mapped_column(String(200), default="")
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Gs1Link(Base):
    """One link of a GS1 key (with optional qualifiers) for the Digital Link resolver."""

    __tablename__ = "identifiers_gs1_link"
    __table_args__ = (UniqueConstraint("gs1_key", "qualifiers", "link_type", "language", "media_type", "href"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"), index=True)
    gs1_key: Mapped[str] = mapped_column(String(100), index=True)  # e.g. "01/09506000134352"
    qualifiers: Mapped[str] = mapped_column(String(300), default="")  # e.g. "10/ABC123" or ""
    link_type: Mapped[str] = mapped_column(String(100))  # e.g. "gs1:pip"
    href: Mapped[str] = mapped_column(String(2000))
    title: Mapped[str] = mapped_column(String(300), default="")
    language: Mapped[str] = mapped_column(String(20), default="")
    media_type: Mapped[str] = mapped_column(String(100), default="")
    is_default: Mapped[bool] = mapped_column(default=False)
    handle: Mapped[str | None] = mapped_column(String(600), default=None, index=True)  # linked IIP identifier
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
