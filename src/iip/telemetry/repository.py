"""Queries of the telemetry tables kept through the ORM (points and rollups go through the store)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from iip.kernel.db import utcnow
from iip.telemetry.models import Retention


class RetentionRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, tenant_id: str) -> Retention | None:
        return self.session.get(Retention, tenant_id)

    def set(self, tenant_id: str, days: int) -> Retention:
        row = self.get(tenant_id)
        if row is None:
            row = Retention(tenant_id=tenant_id, days=days, updated_at=utcnow())
            self.session.add(row)
        else:
            row.days = days
            row.updated_at = utcnow()
        self.session.flush()
        return row

    def clear(self, tenant_id: str) -> None:
        row = self.get(tenant_id)
        if row is not None:
            self.session.delete(row)
            self.session.flush()
