"""Queries for prefixes and handles. A resolution is one indexed read of `identifiers_handle.key`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from iip.identifiers.models import Handle, HandleHistory, Prefix


class HandleRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # prefixes

    def prefix(self, prefix_key: str) -> Prefix | None:
        return self.session.scalar(select(Prefix).where(Prefix.prefix == prefix_key))

    def prefixes(self, tenant_id: str | None) -> list[Prefix]:
        query = select(Prefix).order_by(Prefix.prefix)
        if tenant_id is not None:
            query = query.where(Prefix.tenant_id == tenant_id)
        return list(self.session.scalars(query))

    def add_prefix(self, prefix: Prefix) -> None:
        self.session.add(prefix)
        self.session.flush()

    # handles

    def handle(self, key: str) -> Handle | None:
        return self.session.scalar(select(Handle).where(Handle.key == key))

    def exists(self, key: str) -> bool:
        return self.session.scalar(select(Handle.id).where(Handle.key == key)) is not None

    def page(self, prefix_key: str, *, offset: int, limit: int) -> tuple[int, list[str]]:
        total = self.session.scalar(select(func.count()).select_from(Handle).where(Handle.prefix == prefix_key)) or 0
        query = (
            select(Handle.handle).where(Handle.prefix == prefix_key).order_by(Handle.key).offset(offset).limit(limit)
        )
        return total, list(self.session.scalars(query))

    def add(self, handle: Handle) -> None:
        self.session.add(handle)
        self.session.flush()

    def delete(self, handle: Handle) -> None:
        self.session.delete(handle)
        self.session.flush()

    def record_history(
        self, handle: Handle, change: str, principal: str, values: list[dict[str, Any]] | None = None
    ) -> None:
        self.session.add(
            HandleHistory(
                tenant_id=handle.tenant_id,
                key=handle.key,
                version=handle.version,
                values=handle.values if values is None else values,
                change=change,
                principal=principal[:200],
            )
        )
        self.session.flush()

    def history(self, key: str) -> list[HandleHistory]:
        query = select(HandleHistory).where(HandleHistory.key == key).order_by(HandleHistory.id)
        return list(self.session.scalars(query))
