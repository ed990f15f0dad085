"""Figures for the home dashboard: module health, tenant counts, recent audit activity."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

import anyio
import anyio.to_thread
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from iip.kernel.audit import AuditEntry
from iip.kernel.auth import ApiKey, User
from iip.kernel.db import utcnow
from iip.kernel.module import HealthReport, Module
from iip.kernel.runtime import Runtime

HEALTH_TIMEOUT_SECONDS = 5.0
ACTIVITY_HOURS = 24


@dataclass(frozen=True, slots=True)
class ModuleHealth:
    name: str
    title: str  # message id
    state: str  # "ok", "error" or "unchecked"
    detail: str


async def _check(module: Module, runtime: Runtime) -> ModuleHealth:
    if module.health is None:
        return ModuleHealth(module.name, module.title, "unchecked", "")
    try:
        with anyio.fail_after(HEALTH_TIMEOUT_SECONDS):
            # Abandon a hung check at the deadline instead of waiting for its thread.
            report: HealthReport = await anyio.to_thread.run_sync(module.health, runtime, abandon_on_cancel=True)
    except TimeoutError:
        return ModuleHealth(module.name, module.title, "error", f"no answer within {HEALTH_TIMEOUT_SECONDS:g} s")
    except Exception as err:  # noqa: BLE001 - any failure of a check is an unhealthy module
        return ModuleHealth(module.name, module.title, "error", f"{type(err).__name__}: {err}")
    return ModuleHealth(module.name, module.title, "ok" if report.ok else "error", report.detail)


async def module_health(runtime: Runtime) -> list[ModuleHealth]:
    """Every module's health check, run in the thread pool side by side."""
    return list(await asyncio.gather(*(_check(module, runtime) for module in runtime.modules)))


@dataclass(frozen=True, slots=True)
class TenantCounts:
    users: int
    api_keys: int


def tenant_counts(session: Session, tenant_id: str) -> TenantCounts:
    """Active users and usable (not revoked, not expired) API keys of one tenant."""
    now = utcnow()
    users = session.scalar(
        select(func.count()).select_from(User).where(User.tenant_id == tenant_id, User.active.is_(True))
    )
    keys = session.scalar(
        select(func.count())
        .select_from(ApiKey)
        .where(
            ApiKey.tenant_id == tenant_id,
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
        )
    )
    return TenantCounts(users=int(users or 0), api_keys=int(keys or 0))


@dataclass(frozen=True, slots=True)
class Activity:
    """Audit events per hour; `hours` are the bucket starts as Unix milliseconds (UTC)."""

    hours: list[int]
    counts: list[int]

    @property
    def total(self) -> int:
        return sum(self.counts)

    def as_json(self) -> dict[str, list[int]]:
        return {"hours": self.hours, "counts": self.counts}


def audit_activity(session: Session, tenant_id: str, now: dt.datetime | None = None) -> Activity:
    """A tenant's audit events per hour over the last day, the current hour last."""
    now = now or utcnow()
    first = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=ACTIVITY_HOURS - 1)
    counts = [0] * ACTIVITY_HOURS
    # Bucketed here rather than in SQL: date truncation differs between SQLite and PostgreSQL.
    moments = session.scalars(select(AuditEntry.at).where(AuditEntry.tenant_id == tenant_id, AuditEntry.at >= first))
    for moment in moments:
        index = int((moment - first).total_seconds() // 3600)
        if 0 <= index < ACTIVITY_HOURS:
            counts[index] += 1
    hours = [int((first + dt.timedelta(hours=i)).timestamp() * 1000) for i in range(ACTIVITY_HOURS)]
    return Activity(hours, counts)
