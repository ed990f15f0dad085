"""What every use-case class of the security context shares: the acting principal's scope, the
permission checks and the audit trail.

`SecurityService` (assets, alerts, baselines, captures, advisories, indicators, awareness),
`bulletins.BulletinService` and `incidents.IncidentService` each take a session and a principal;
several of them may work in one transaction, the caller committing once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy.orm import Session

from iip.kernel import audit
from iip.kernel.auth import Principal, TenantScoped
from iip.kernel.db import utcnow
from iip.kernel.errors import Forbidden, Invalid
from iip.kernel.settings import Settings
from iip.security.records import IncidentState, Remediation, Severity

SOURCE = "security"  # AlarmEvent source and audit source
Clock = Callable[[], dt.datetime]


def parse_choice(value: str, choices: type[Severity] | type[Remediation] | type[IncidentState], what: str) -> str:
    try:
        return choices(value.strip().lower()).value
    except ValueError:
        allowed = ", ".join(c.value for c in choices)
        raise Invalid(f"{what} must be one of {allowed}, not '{value[:40]}'", code=f"{what}_invalid") from None


class ScopedService(TenantScoped):
    """A session and the principal acting in it: whose objects it sees, what it may change."""

    def __init__(
        self,
        session: Session,
        actor: Principal,
        *,
        settings: Settings | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.session = session
        self.actor = actor
        self.settings = settings
        self.clock = clock

    def _read(self) -> None:
        self.actor.require("security.read")

    def _write(self) -> None:
        self.actor.require("security.write")

    def _platform(self) -> None:
        self._write()
        if not self.actor.is_platform:
            raise Forbidden("only platform operators do this", code="platform_only")

    def _audit(self, action: str, object_type: str, object_id: str, detail: str, tenant_id: str | None) -> None:
        audit.append(
            self.session,
            self.actor,
            audit.AuditRecord(
                action=f"security.{action}",
                object_type=object_type,
                object_id=object_id,
                detail=detail[:1000],
                source=SOURCE,
            ),
            tenant_id=tenant_id,
        )
