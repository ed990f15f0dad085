"""Incident response records: an incident opened from alerts (their hosts in the inventory linked as
assets) or from a bulletin the tenant received, with its state (`open`, `contained`, `resolved`)
and a timeline of the opening, every note and action taken, and every change of state, each with
who and when. Its severity is the worst of what it was opened from unless given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select

from iip.kernel.auth import new_id
from iip.kernel.errors import Invalid, NotFound
from iip.security.bulletins import BulletinService
from iip.security.models import Alert, Asset, Incident, IncidentEntry
from iip.security.records import IncidentState, Severity
from iip.security.scoping import ScopedService, parse_choice
from iip.security.service import SecurityService


class IncidentService(ScopedService):
    def _alerts(self) -> SecurityService:
        return SecurityService(self.session, self.actor, settings=self.settings, clock=self.clock)

    def _bulletins(self) -> BulletinService:
        return BulletinService(self.session, self.actor, settings=self.settings, clock=self.clock)

    def open_incident(
        self,
        title: str,
        *,
        alert_ids: Sequence[str] = (),
        bulletin_id: str | None = None,
        severity: str | None = None,
        tenant_id: str | None = None,
    ) -> Incident:
        """An incident from alerts (their assets linked by address) or from a bulletin the tenant received."""
        self._write()
        alerts = [self._alerts().get_alert(a) for a in alert_ids]
        tenant = alerts[0].tenant_id if alerts else self.tenant_for(tenant_id)
        if any(a.tenant_id != tenant for a in alerts):
            raise Invalid("the alerts of one incident belong to one tenant", code="incident_tenants")
        bulletin = None
        if bulletin_id is not None:
            bulletin = self._bulletins().inbox_item(bulletin_id, tenant_id=tenant, mark_opened=False).bulletin
        if not alerts and bulletin is None:
            raise Invalid("open an incident from at least one alert or a bulletin", code="incident_empty")
        ranks = [Severity(a.severity) for a in alerts] + ([Severity(bulletin.severity)] if bulletin else [])
        level = parse_choice(severity, Severity, "severity") if severity else max(ranks, key=lambda s: s.rank).value
        now = self.clock()
        row = Incident(
            id=new_id(),
            tenant_id=tenant,
            title=title.strip()[:300] or (alerts[0].message if alerts else bulletin.title if bulletin else "")[:300],
            severity=level,
            state=IncidentState.OPEN.value,
            alert_ids=[a.id for a in alerts],
            asset_ids=self._assets_of(tenant, alerts),
            bulletin_id=bulletin.id if bulletin else None,
            opened_by=self.actor.label,
            opened_at=now,
            updated_at=now,
        )
        self.session.add(row)
        self.session.flush()
        self._entry(row, "state", "opened", now)
        self._audit("incident.open", "security_incident", row.id, row.title, tenant)
        return row

    def _assets_of(self, tenant_id: str, alerts: Sequence[Alert]) -> list[str]:
        hosts = {
            peer.rsplit(":", 1)[0] if peer.count(":") == 1 else peer
            for a in alerts
            for peer in (a.source, a.destination)
        }
        hosts.discard("")
        if not hosts:
            return []
        query = select(Asset.id).where(Asset.tenant_id == tenant_id, Asset.address.in_(sorted(hosts)))
        return sorted(self.session.scalars(query))

    def _entry(self, incident: Incident, kind: str, text: str, at: dt.datetime) -> IncidentEntry:
        entry = IncidentEntry(
            id=new_id(), incident_id=incident.id, kind=kind, text=text[:2000], actor=self.actor.label, at=at
        )
        self.session.add(entry)
        self.session.flush()
        return entry

    def list_incidents(self, *, tenant_id: str | None = None, state: str | None = None) -> list[Incident]:
        self._read()
        query = select(Incident).order_by(Incident.updated_at.desc(), Incident.id)
        scope = self._scope(tenant_id)
        if scope is not None:
            query = query.where(Incident.tenant_id == scope)
        if state is not None:
            query = query.where(Incident.state == state)
        return list(self.session.scalars(query))

    def get_incident(self, incident_id: str) -> Incident:
        self._read()
        row = self.session.get(Incident, incident_id[:32])
        if row is None or not self._may_see(row.tenant_id):
            raise NotFound(f"incident '{incident_id[:40]}' not found", code="incident_not_found")
        return row

    def timeline(self, incident: Incident) -> list[IncidentEntry]:
        query = select(IncidentEntry).where(IncidentEntry.incident_id == incident.id)
        return list(self.session.scalars(query.order_by(IncidentEntry.at, IncidentEntry.id)))

    def add_incident_entry(self, incident_id: str, kind: str, text: str) -> IncidentEntry:
        """A note or an action taken, on the timeline."""
        self._write()
        if kind not in ("note", "action"):
            raise Invalid("an entry is a note or an action", code="entry_kind_invalid")
        if not text.strip():
            raise Invalid("say what happened", code="entry_empty")
        row = self.get_incident(incident_id)
        now = self.clock()
        row.updated_at = now
        return self._entry(row, kind, text.strip(), now)

    def set_incident_state(self, incident_id: str, state: str, note: str = "") -> Incident:
        self._write()
        row = self.get_incident(incident_id)
        new_state = parse_choice(state, IncidentState, "state")
        if new_state != row.state:
            now = self.clock()
            self._entry(
                row, "state", f"{row.state} -> {new_state}" + (f": {note.strip()}" if note.strip() else ""), now
            )
            row.state, row.updated_at = new_state, now
            self._audit("incident.state", "security_incident", row.id, new_state, row.tenant_id)
        return row
