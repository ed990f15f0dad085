"""Audit log queries scoped to the caller (tenants, users and keys live in `iip.kernel.auth`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from iip.kernel.audit import AuditEntry
from iip.kernel.auth import Principal


class AuditQueryService:
    def __init__(self, session: Session) -> None:
        self.session = session

    def page(
        self,
        actor: Principal,
        *,
        limit: int = 100,
        before_seq: int | None = None,
        action: str | None = None,
        principal: str | None = None,
        outcome: str | None = None,
    ) -> tuple[list[AuditEntry], int | None]:
        query = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit + 1)
        if not actor.is_platform:
            query = query.where(AuditEntry.tenant_id == actor.tenant_id)
        if before_seq is not None:
            query = query.where(AuditEntry.seq < before_seq)
        if action:
            query = query.where(AuditEntry.action.contains(action))
        if principal:
            query = query.where(AuditEntry.principal == principal)
        if outcome:
            query = query.where(AuditEntry.outcome == outcome)
        rows = list(self.session.scalars(query))
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].seq if more and rows else None)
