"""Use cases of the security context: assets, alerts, baselines, captures, advisories and their
matches, honeypot indicators and situational awareness. Bulletins are `bulletins.BulletinService`'s,
incidents `incidents.IncidentService`'s; all three share `scoping.ScopedService`.

Every call is scoped to the acting principal's tenant (platform operators reach every tenant by
id); another tenant's object is indistinguishable from a missing one. Reading needs
`security.read`, changing `security.write`; acknowledging and closing alerts and settling matches
are writes too, and each change is appended to the audit log. Advisories are public documents and
belong to the platform: only platform operators import them.

New alerts become `AlarmEvent`s (source `security`, kind `ics.<alert kind>`) in `events`, which
the caller publishes once the transaction has committed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from iip.alarms.public import AlarmEvent
from iip.kernel.auth import AccessService, Principal, Tenant, new_id
from iip.kernel.db import utcnow
from iip.kernel.errors import Forbidden, Invalid, NotFound
from iip.kernel.settings import SecuritySettings, Settings
from iip.security.captures import CaptureSummary
from iip.security.detection import MANY_SOURCES, SEVERITY_SCORES
from iip.security.inventory import DeclaredAsset, merge_intervals, read_declared_assets_csv
from iip.security.models import (
    ADDRESS_LENGTH,
    Advisory,
    AdvisoryMatch,
    Alert,
    Asset,
    Baseline,
    Bulletin,
    BulletinRecipient,
    Capture,
    Indicator,
)
from iip.security.records import (
    AdvisoryRecord,
    AlertStatus,
    AssetSource,
    LearnedBaseline,
    MatchRecord,
    MatchStatus,
    NewAlert,
    ObservedAsset,
    Remediation,
    Resolution,
    Severity,
    Sighting,
    is_overdue,
)
from iip.security.scoping import SOURCE, Clock, ScopedService, parse_choice

MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
MAX_EVIDENCE = 20  # frames and raw hex kept per alert
RAW_HEX = 512  # characters of one frame's hex kept


def parse_address(text: str) -> str:
    """An IPv4 or IPv6 address in its normal text form."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise Invalid(f"'{text[:60]}' is not an IP address", code="address_invalid") from None


def parse_mac(text: str) -> str:
    mac = text.strip().lower().replace("-", ":")
    if mac and not MAC.match(mac):
        raise Invalid(f"'{text[:40]}' is not a MAC address such as 00:1d:9c:01:02:03", code="mac_invalid")
    return mac


def severity_of(cvss: float | None) -> Severity:
    """The CVSS v3 qualitative band of a score (none counts as low)."""
    if cvss is None or cvss < 4.0:
        return Severity.LOW
    if cvss < 7.0:
        return Severity.MEDIUM
    if cvss < 9.0:
        return Severity.HIGH
    return Severity.CRITICAL


@dataclass(slots=True)
class AssetFields:
    """What a person declares of an asset; None leaves a field as it is."""

    name: str | None = None
    mac: str | None = None
    role: str | None = None
    vendor: str | None = None
    model: str | None = None
    firmware: str | None = None
    protocols: list[str] | None = None
    unit_ids: list[int] | None = None
    register_ranges: list[list[int]] | None = None
    criticality: str | None = None
    owner: str | None = None


@dataclass(slots=True)
class AlertFilter:
    status: str | None = None
    severity: str | None = None
    kind: str | None = None
    address: str | None = None
    site: str | None = None
    capture_id: str | None = None
    limit: int = 500


@dataclass(slots=True)
class AssetFilter:
    site: str | None = None
    text: str | None = None
    source: str | None = None
    role: str | None = None
    protocol: str | None = None
    criticality: str | None = None


@dataclass(frozen=True, slots=True)
class MatchView:
    match: AdvisoryMatch
    asset: Asset
    advisory: Advisory


@dataclass(slots=True)
class Awareness:
    """One tenant's (or the platform's) security situation and its risk score (docs/security.md)."""

    tenant_id: str | None
    open_alerts: dict[str, int] = field(default_factory=dict)  # per severity
    vulnerable_assets: dict[str, int] = field(default_factory=dict)  # per CVSS band, unresolved matches
    honeypot_24h: int = 0  # addresses seen in the last 24 hours
    honeypot_7d: int = 0
    sightings_24h: int = 0
    bulletins_overdue: int = 0
    bulletins_open: int = 0
    risk: int = 0
    breakdown: dict[str, float] = field(default_factory=dict)


# The risk score: four capped parts adding up to 100 at most (docs/security.md explains the weights).
ALERT_WEIGHT = {"critical": 10.0, "high": 5.0, "medium": 2.0, "low": 1.0}
VULNERABILITY_WEIGHT = {"critical": 6.0, "high": 3.0, "medium": 1.0, "low": 0.5}
ALERT_CAP, VULNERABILITY_CAP, HONEYPOT_CAP, BULLETIN_CAP = 40.0, 30.0, 15.0, 15.0
HONEYPOT_24H_WEIGHT, HONEYPOT_7D_WEIGHT, OVERDUE_WEIGHT = 3.0, 1.0, 5.0


def risk_breakdown(
    open_alerts: dict[str, int], vulnerable: dict[str, int], honeypot_24h: int, honeypot_7d: int, overdue: int
) -> dict[str, float]:
    alerts = sum(ALERT_WEIGHT.get(s, 0.0) * n for s, n in open_alerts.items())
    vulnerabilities = sum(VULNERABILITY_WEIGHT.get(b, 0.0) * n for b, n in vulnerable.items())
    honeypot = HONEYPOT_24H_WEIGHT * honeypot_24h + HONEYPOT_7D_WEIGHT * max(honeypot_7d - honeypot_24h, 0)
    return {
        "alerts": min(alerts, ALERT_CAP),
        "vulnerabilities": min(vulnerabilities, VULNERABILITY_CAP),
        "honeypot": min(honeypot, HONEYPOT_CAP),
        "bulletins": min(OVERDUE_WEIGHT * overdue, BULLETIN_CAP),
    }


class SecurityService(ScopedService):
    def __init__(
        self,
        session: Session,
        actor: Principal,
        *,
        settings: Settings | None = None,
        clock: Clock = utcnow,
    ) -> None:
        super().__init__(session, actor, settings=settings, clock=clock)
        self.events: list[AlarmEvent] = []  # to publish after the commit

    # --- assets

    def list_assets(self, *, tenant_id: str | None = None, where: AssetFilter | None = None) -> list[Asset]:
        self._read()
        where = where or AssetFilter()
        query = select(Asset).order_by(Asset.tenant_id, Asset.site, Asset.address)
        scope = self._scope(tenant_id)
        if scope is not None:
            query = query.where(Asset.tenant_id == scope)
        for column, value in (
            (Asset.site, where.site),
            (Asset.source, where.source),
            (Asset.role, where.role),
            (Asset.criticality, where.criticality),
        ):
            if value is not None:
                query = query.where(column == value)
        rows = list(self.session.scalars(query))
        if where.text:
            text = where.text.lower()
            rows = [r for r in rows if any(text in v.lower() for v in (r.address, r.name, r.vendor, r.model, r.owner))]
        if where.protocol:
            rows = [r for r in rows if where.protocol in r.protocols]
        return rows

    def get_asset(self, asset_id: str) -> Asset:
        self._read()
        row = self.session.get(Asset, asset_id[:32])
        if row is None or not self._may_see(row.tenant_id):
            raise NotFound(f"asset '{asset_id[:40]}' not found", code="asset_not_found")
        return row

    def _asset_at(self, tenant_id: str, site: str, address: str) -> Asset | None:
        query = select(Asset).where(Asset.tenant_id == tenant_id, Asset.site == site, Asset.address == address)
        return self.session.scalar(query)

    def create_asset(self, address: str, fields: AssetFields, *, site: str = "", tenant_id: str | None = None) -> Asset:
        """Declare an asset; declaring one already observed fills in what people know of it."""
        self._write()
        tenant = self.tenant_for(tenant_id)
        address = parse_address(address)
        row = self._asset_at(tenant, site, address)
        if row is None:
            row = Asset(id=new_id(), tenant_id=tenant, site=site, address=address, source=AssetSource.DECLARED.value)
            self.session.add(row)
        self._apply(row, fields)
        self.session.flush()
        self._audit("asset.declare", "security_asset", row.id, f"{site}/{address}", tenant)
        return row

    def update_asset(self, asset_id: str, fields: AssetFields) -> Asset:
        self._write()
        row = self.get_asset(asset_id)
        self._apply(row, fields)
        self.session.flush()
        self._audit("asset.update", "security_asset", row.id, f"{row.site}/{row.address}", row.tenant_id)
        return row

    def _apply(self, row: Asset, fields: AssetFields) -> None:
        if fields.mac is not None:
            row.mac = parse_mac(fields.mac)
        if fields.criticality is not None:
            row.criticality = parse_choice(fields.criticality, Severity, "criticality")
        for name in ("name", "role", "vendor", "model", "firmware", "owner"):
            value = getattr(fields, name)
            if value is not None:
                setattr(row, name, value.strip())
        if fields.protocols is not None:
            row.protocols = sorted({p.strip().lower() for p in fields.protocols if p.strip()})
        if fields.unit_ids is not None:
            row.unit_ids = sorted(set(fields.unit_ids))
        if fields.register_ranges is not None:
            if any(len(r) != 2 or r[0] > r[1] for r in fields.register_ranges):
                raise Invalid("a register range is [first, last] with first <= last", code="range_invalid")
            row.register_ranges = merge_ranges(fields.register_ranges)
        row.updated_at = self.clock()

    def import_assets_csv(self, content: bytes, *, site: str = "", tenant_id: str | None = None) -> list[Asset]:
        """Declared assets from CSV (`inventory.CSV_COLUMNS`, `address` required): all rows or none.

        An error names the row as a spreadsheet numbers it (the header is row 1).
        """
        self._write()
        tenant = self.tenant_for(tenant_id)
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise Invalid("the CSV is not UTF-8 text", code="asset_import_invalid") from None
        rows: list[Asset] = []
        for declared in read_declared_assets_csv(text):
            address, fields = declared.address, declared_fields(declared)
            row = self._asset_at(tenant, site, address)
            if row is None:
                row = Asset(
                    id=new_id(), tenant_id=tenant, site=site, address=address, source=AssetSource.IMPORTED.value
                )
                self.session.add(row)
            self._apply(row, fields)
            rows.append(row)
        self.session.flush()
        self._audit("asset.import", "security_asset", "", f"{len(rows)} assets imported from CSV", tenant)
        return rows

    def record_observed(self, tenant_id: str, site: str, observed: Iterable[ObservedAsset]) -> int:
        """Merge what traffic showed into the inventory; answers how many assets it touched."""
        count = 0
        for seen in observed:
            try:
                address = parse_address(seen.address)
            except Invalid:
                continue  # a capture's odd address is not an asset
            row = self._asset_at(tenant_id, site, address)
            if row is None:
                row = Asset(
                    id=new_id(), tenant_id=tenant_id, site=site, address=address, source=AssetSource.OBSERVED.value
                )
                row.protocols, row.unit_ids, row.register_ranges = [], [], []
                self.session.add(row)
            _merge_observed(row, seen)
            row.updated_at = self.clock()
            count += 1
        self.session.flush()
        return count

    # --- alerts

    def list_alerts(self, *, tenant_id: str | None = None, where: AlertFilter | None = None) -> list[Alert]:
        self._read()
        where = where or AlertFilter()
        query = select(Alert).order_by(Alert.last_time.desc(), Alert.id).limit(where.limit)
        scope = self._scope(tenant_id)
        if scope is not None:
            query = query.where(Alert.tenant_id == scope)
        for column, value in (
            (Alert.status, where.status),
            (Alert.severity, where.severity),
            (Alert.kind, where.kind),
            (Alert.site, where.site),
            (Alert.capture_id, where.capture_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if where.address:
            query = query.where(
                (Alert.source == where.address)
                | (Alert.destination == where.address)
                | Alert.source.startswith(where.address + ":", autoescape=True)
                | Alert.destination.startswith(where.address + ":", autoescape=True)
            )
        return list(self.session.scalars(query))

    def get_alert(self, alert_id: str) -> Alert:
        self._read()
        row = self.session.get(Alert, alert_id[:32])
        if row is None or not self._may_see(row.tenant_id):
            raise NotFound(f"alert '{alert_id[:40]}' not found", code="alert_not_found")
        return row

    def acknowledge_alert(self, alert_id: str, note: str = "") -> Alert:
        self._write()
        row = self.get_alert(alert_id)
        if row.status == AlertStatus.CLOSED:
            raise Invalid("the alert is closed already", code="alert_closed")
        if row.status == AlertStatus.OPEN:
            row.status = AlertStatus.ACKNOWLEDGED.value
            row.acknowledged_by, row.acknowledged_at = self.actor.label, self.clock()
        if note:
            row.note = note[:1000]
        self._audit("alert.acknowledge", "security_alert", row.id, row.kind, row.tenant_id)
        return row

    def close_alert(self, alert_id: str, note: str = "") -> Alert:
        self._write()
        row = self.get_alert(alert_id)
        if row.status != AlertStatus.CLOSED:
            now = self.clock()
            if row.acknowledged_at is None:
                row.acknowledged_by, row.acknowledged_at = self.actor.label, now
            row.status = AlertStatus.CLOSED.value
            row.closed_by, row.closed_at = self.actor.label, now
        if note:
            row.note = note[:1000]
        self._audit("alert.close", "security_alert", row.id, row.kind, row.tenant_id)
        return row

    def record_alerts(
        self, tenant_id: str, site: str, found: Iterable[NewAlert], *, capture_id: str | None = None
    ) -> list[Alert]:
        """Store findings: one still open of the same kind between the same peers grows (count, last
        time, evidence); any other becomes a new alert and an `AlarmEvent` in `events`."""
        stored: list[Alert] = []
        for alert in found:
            row = self.session.scalar(
                select(Alert).where(
                    Alert.tenant_id == tenant_id,
                    Alert.site == site,
                    Alert.kind == alert.kind[:80],
                    Alert.source == alert.source[:80],
                    Alert.destination == alert.destination[:80],
                    Alert.status != AlertStatus.CLOSED.value,
                )
            )
            if row is None:
                row = _new_alert(tenant_id, site, alert, capture_id)
                self.session.add(row)
                self.events.append(alarm_event(row))
            else:
                _grow_alert(row, alert)
            stored.append(row)
        self.session.flush()
        return stored

    # --- baselines

    def list_baselines(self, *, tenant_id: str | None = None, site: str | None = None) -> list[Baseline]:
        self._read()
        query = select(Baseline).order_by(Baseline.tenant_id, Baseline.site, Baseline.version.desc())
        scope = self._scope(tenant_id)
        if scope is not None:
            query = query.where(Baseline.tenant_id == scope)
        if site is not None:
            query = query.where(Baseline.site == site)
        return list(self.session.scalars(query))

    def get_baseline(self, baseline_id: str) -> Baseline:
        self._read()
        row = self.session.get(Baseline, baseline_id[:32])
        if row is None or not self._may_see(row.tenant_id):
            raise NotFound(f"baseline '{baseline_id[:40]}' not found", code="baseline_not_found")
        return row

    def active_baseline(self, tenant_id: str, site: str) -> Baseline:
        row = self.session.scalar(
            select(Baseline).where(Baseline.tenant_id == tenant_id, Baseline.site == site, Baseline.active.is_(True))
        )
        if row is None:
            raise NotFound(
                f"no active baseline for site '{site}': learn one from a capture first", code="baseline_missing"
            )
        return row

    def record_baseline(
        self, tenant_id: str, site: str, learned: LearnedBaseline, *, capture_id: str | None = None
    ) -> Baseline:
        """A new version for the site, active from now on (the previous one is kept, inactive)."""
        self._write()
        newest = self.session.scalar(
            select(func.max(Baseline.version)).where(Baseline.tenant_id == tenant_id, Baseline.site == site)
        )
        for row in self.session.scalars(
            select(Baseline).where(Baseline.tenant_id == tenant_id, Baseline.site == site, Baseline.active.is_(True))
        ):
            row.active = False
        baseline = Baseline(
            id=new_id(),
            tenant_id=tenant_id,
            site=site,
            version=(newest or 0) + 1,
            active=True,
            window_start=learned.window_start,
            window_end=learned.window_end,
            content=learned.content,
            summary=learned.summary,
            capture_id=capture_id,
            created_by=self.actor.label,
            created_at=self.clock(),
        )
        self.session.add(baseline)
        self.session.flush()
        self._audit("baseline.learn", "security_baseline", baseline.id, f"{site} v{baseline.version}", tenant_id)
        return baseline

    def activate_baseline(self, baseline_id: str) -> Baseline:
        """Make an older version the active one again (a rollback)."""
        self._write()
        row = self.get_baseline(baseline_id)
        for other in self.session.scalars(
            select(Baseline).where(Baseline.tenant_id == row.tenant_id, Baseline.site == row.site)
        ):
            other.active = other.id == row.id
        self._audit("baseline.activate", "security_baseline", row.id, f"{row.site} v{row.version}", row.tenant_id)
        return row

    # --- captures

    def record_capture(
        self, tenant_id: str, site: str, filename: str, size: int, sha256: str, summary: CaptureSummary
    ) -> Capture:
        """What an upload held; the hosts it showed go into the inventory."""
        self._write()
        row = Capture(
            id=new_id(),
            tenant_id=tenant_id,
            site=site,
            filename=filename[:200],
            size=size,
            sha256=sha256,
            packets=summary.frames,
            messages=dict(summary.messages),
            malformed={reason[:200]: n for reason, n in summary.malformed.most_common(50)},
            dropped={reason[:200]: n for reason, n in summary.dropped.most_common(50)},
            first_time=summary.first_time,
            last_time=summary.last_time,
            error=summary.error[:1000],
            uploaded_by=self.actor.label,
            uploaded_at=self.clock(),
        )
        row.assets_seen = self.record_observed(tenant_id, site, summary.assets)
        self.session.add(row)
        self.session.flush()
        self._audit("capture.upload", "security_capture", row.id, f"{filename[:100]} ({size} bytes)", tenant_id)
        return row

    def list_captures(self, *, tenant_id: str | None = None) -> list[Capture]:
        self._read()
        query = select(Capture).order_by(Capture.uploaded_at.desc(), Capture.id).limit(500)
        scope = self._scope(tenant_id)
        if scope is not None:
            query = query.where(Capture.tenant_id == scope)
        return list(self.session.scalars(query))

    def get_capture(self, capture_id: str) -> Capture:
        self._read()
        row = self.session.get(Capture, capture_id[:32])
        if row is None or not self._may_see(row.tenant_id):
            raise NotFound(f"capture '{capture_id[:40]}' not found", code="capture_not_found")
        return row

    # --- advisories and matches

    def record_advisories(self, found: Iterable[AdvisoryRecord]) -> list[Advisory]:
        """Store or refresh advisories by tracking id (platform operators only)."""
        self._platform()
        stored: list[Advisory] = []
        for record in found:
            tracking = record.tracking_id.strip()[:200]
            if not tracking:
                raise Invalid("an advisory without a tracking id cannot be stored", code="advisory_invalid")
            row = self.session.scalar(select(Advisory).where(Advisory.tracking_id == tracking))
            if row is None:
                row = Advisory(id=new_id(), tracking_id=tracking)
                self.session.add(row)
            row.title, row.publisher = record.title[:1000], record.publisher[:200]
            row.released, row.revised = record.released, record.revised
            row.cves = sorted(set(record.cves))
            row.products, row.vulnerabilities, row.remediations = (
                record.products,
                record.vulnerabilities,
                record.remediations,
            )
            row.max_cvss = record.max_cvss
            row.document = record.document
            row.imported_by, row.imported_at = self.actor.label, self.clock()
            stored.append(row)
        self.session.flush()
        self._audit("advisory.import", "security_advisory", "", f"{len(stored)} advisories", None)
        return stored

    def list_advisories(self, *, text: str | None = None, cve: str | None = None) -> list[Advisory]:
        self._read()
        rows = list(self.session.scalars(select(Advisory).order_by(Advisory.released.desc(), Advisory.tracking_id)))
        if text:
            lowered = text.lower()
            rows = [r for r in rows if lowered in r.title.lower() or lowered in r.tracking_id.lower()]
        if cve:
            rows = [r for r in rows if cve.upper() in r.cves]
        return rows

    def get_advisory(self, ref: str) -> Advisory:
        """By id or tracking id."""
        self._read()
        row = self.session.get(Advisory, ref) if len(ref) <= 32 else None
        row = row or self.session.scalar(select(Advisory).where(Advisory.tracking_id == ref[:200]))
        if row is None:
            raise NotFound(f"advisory '{ref[:60]}' not found", code="advisory_not_found")
        return row

    def record_matches(self, tenant_id: str, found: Iterable[MatchRecord]) -> list[AdvisoryMatch]:
        """The tenant's matches as matching found them now: new ones added, still-found ones
        refreshed (their resolution kept), ones no longer found removed unless someone settled them."""
        self._write()
        advisories = {a.tracking_id: a for a in self.session.scalars(select(Advisory))}
        existing = {
            (m.asset_id, m.advisory_id): m
            for m in self.session.scalars(select(AdvisoryMatch).where(AdvisoryMatch.tenant_id == tenant_id))
        }
        seen: list[AdvisoryMatch] = []
        for record in found:
            advisory = advisories.get(record.tracking_id)
            if advisory is None:
                continue
            row = existing.pop((record.asset_id, advisory.id), None)
            if row is None:
                row = AdvisoryMatch(id=new_id(), tenant_id=tenant_id, asset_id=record.asset_id, advisory_id=advisory.id)
                self.session.add(row)
            row.status = MatchStatus(record.status).value
            row.cves, row.max_cvss = sorted(set(record.cves)), record.max_cvss
            row.remediation, row.reason = record.remediation[:2000], record.reason[:500]
            row.matched_at = self.clock()
            seen.append(row)
        for stale in existing.values():
            if not stale.resolution:
                self.session.delete(stale)
        self.session.flush()
        return seen

    def list_matches(
        self,
        *,
        tenant_id: str | None = None,
        advisory_id: str | None = None,
        asset_id: str | None = None,
        unresolved: bool | None = None,
    ) -> list[MatchView]:
        self._read()
        query = (
            select(AdvisoryMatch, Asset, Advisory)
            .join(Asset, Asset.id == AdvisoryMatch.asset_id)
            .join(Advisory, Advisory.id == AdvisoryMatch.advisory_id)
            .order_by(AdvisoryMatch.max_cvss.desc(), Asset.address)
        )
        scope = self._scope(tenant_id)
        if scope is not None:
            query = query.where(AdvisoryMatch.tenant_id == scope)
        if advisory_id is not None:
            query = query.where(AdvisoryMatch.advisory_id == advisory_id)
        if asset_id is not None:
            query = query.where(AdvisoryMatch.asset_id == asset_id)
        if unresolved is not None:
            query = query.where((AdvisoryMatch.resolution == "") if unresolved else (AdvisoryMatch.resolution != ""))
        return [MatchView(m, a, adv) for m, a, adv in self.session.execute(query)]

    def resolve_match(self, match_id: str, resolution: str) -> AdvisoryMatch:
        """Mark a match patched or accepted (the risk taken knowingly), or "" to reopen it."""
        self._write()
        row = self.session.get(AdvisoryMatch, match_id[:32])
        if row is None or not self._may_see(row.tenant_id):
            raise NotFound(f"match '{match_id[:40]}' not found", code="match_not_found")
        try:
            row.resolution = Resolution(resolution).value
        except ValueError:
            raise Invalid("resolution must be patched, accepted or empty", code="resolution_invalid") from None
        row.resolved_by = self.actor.label if row.resolution else ""
        row.resolved_at = self.clock() if row.resolution else None
        self._audit("match.resolve", "security_advisory_match", row.id, resolution or "reopened", row.tenant_id)
        return row

    # --- honeypot indicators

    def record_sightings(self, tenant_id: str, sightings: Iterable[Sighting]) -> list[Indicator]:
        """Fold what addresses did to the decoy into one indicator per address."""
        touched: dict[str, Indicator] = {}
        for sighting in sightings:
            address = sighting.address.strip()[:64]
            row = touched.get(address) or self.session.scalar(
                select(Indicator).where(Indicator.tenant_id == tenant_id, Indicator.address == address)
            )
            if row is None:
                row = Indicator(
                    id=new_id(),
                    tenant_id=tenant_id,
                    address=address,
                    first_seen=sighting.at,
                    last_seen=sighting.at,
                    sightings=0,
                    protocols=[],
                    counts={},
                    notable=[],
                )
                self.session.add(row)
            touched[address] = row
            _fold_sighting(row, sighting)
        self.session.flush()
        return list(touched.values())

    def shares_intelligence(self) -> bool:
        """Whether tenants use the indicators of every decoy on the platform (`share_intelligence`)."""
        if self.settings is not None:
            return self.settings.security.share_intelligence
        return SecuritySettings().share_intelligence

    def shared_indicators(self, *, since: dt.datetime | None = None, address: str = "") -> list[SharedIndicator]:
        """The platform's threat intelligence: one entry per address any decoy saw, most recent first.

        A tenant sees what was seen (every decoy's when the platform shares intelligence, else its own
        decoy's) but never whose decoy saw it; platform operators see every entry with its sources."""
        self._read()
        query = select(Indicator, Tenant.name).join(Tenant, Tenant.id == Indicator.tenant_id)
        if not self.actor.is_platform and not self.shares_intelligence():
            query = query.where(Indicator.tenant_id == self.actor.tenant_id)
        if since is not None:
            query = query.where(Indicator.last_seen >= since)
        if address.strip():
            query = query.where(Indicator.address == address.strip()[:ADDRESS_LENGTH])
        merged: dict[str, SharedIndicator] = {}
        for row, tenant_name in self.session.execute(query.order_by(Indicator.first_seen)):
            entry = merged.get(row.address)
            if entry is None:
                entry = merged[row.address] = SharedIndicator(row.address, row.first_seen, row.last_seen)
            entry.add(row)
            if self.actor.is_platform:
                source = IndicatorSource(row.tenant_id, tenant_name, row.first_seen, row.last_seen, row.sightings)
                entry.sources.append(source)
        return sorted(merged.values(), key=lambda e: (e.last_seen, e.address), reverse=True)

    def threat_intelligence(self, tenant_id: str) -> dict[str, str]:
        """What a tenant's detector treats as known attackers: each address a decoy saw (the tenant's
        own, and every other decoy's when intelligence is shared), with what it did there."""
        self._read()
        query = select(Indicator)
        if not self.shares_intelligence():
            query = query.where(Indicator.tenant_id == tenant_id)
        merged: dict[str, SharedIndicator] = {}
        for row in self.session.scalars(query):
            merged.setdefault(row.address, SharedIndicator(row.address, row.first_seen, row.last_seen)).add(row)
        return {a: ", ".join(e.notable or e.protocols or ["connected"]) for a, e in sorted(merged.items())}

    def list_indicators(self, *, tenant_id: str | None = None, since: dt.datetime | None = None) -> list[Indicator]:
        self._read()
        query = select(Indicator).order_by(Indicator.last_seen.desc(), Indicator.address)
        scope = self._scope(tenant_id)
        if scope is not None:
            query = query.where(Indicator.tenant_id == scope)
        if since is not None:
            query = query.where(Indicator.last_seen >= since)
        return list(self.session.scalars(query))

    # --- situational awareness

    def awareness(self, *, tenant_id: str | None = None) -> Awareness:
        """One tenant's situation; platform operators without a tenant named get the whole platform's."""
        self._read()
        scope = self._scope(tenant_id)
        now = self.clock()
        view = Awareness(tenant_id=scope)
        alerts = select(Alert.severity, func.count()).where(Alert.status != AlertStatus.CLOSED.value)
        if scope is not None:
            alerts = alerts.where(Alert.tenant_id == scope)
        counted = dict(self.session.execute(alerts.group_by(Alert.severity)).all())
        view.open_alerts = {s.value: int(counted.get(s.value, 0)) for s in Severity}
        view.vulnerable_assets = self._vulnerable(scope)
        indicators = self.list_indicators(tenant_id=scope, since=now - dt.timedelta(days=7))
        recent = [i for i in indicators if i.last_seen >= now - dt.timedelta(hours=24)]
        view.honeypot_7d, view.honeypot_24h = len(indicators), len(recent)
        view.sightings_24h = sum(i.sightings for i in recent)
        recipients = select(BulletinRecipient, Bulletin).join(Bulletin, Bulletin.id == BulletinRecipient.bulletin_id)
        if scope is not None:
            recipients = recipients.where(BulletinRecipient.tenant_id == scope)
        for recipient, bulletin in self.session.execute(recipients):
            if recipient.remediation not in (Remediation.DONE, Remediation.NOT_APPLICABLE):
                view.bulletins_open += 1
                view.bulletins_overdue += int(is_overdue(bulletin.deadline, recipient.remediation, now))
        view.breakdown = risk_breakdown(
            view.open_alerts, view.vulnerable_assets, view.honeypot_24h, view.honeypot_7d, view.bulletins_overdue
        )
        view.risk = min(round(sum(view.breakdown.values())), 100)
        return view

    def _vulnerable(self, scope: str | None) -> dict[str, int]:
        """Assets with unresolved matches, each counted once in the band of its worst CVSS."""
        query = select(AdvisoryMatch.asset_id, AdvisoryMatch.max_cvss, AdvisoryMatch.status).where(
            AdvisoryMatch.resolution == ""
        )
        if scope is not None:
            query = query.where(AdvisoryMatch.tenant_id == scope)
        worst: dict[str, float] = {}
        for asset_id, cvss, _status in self.session.execute(query):
            worst[asset_id] = max(worst.get(asset_id, 0.0), cvss or 0.0)
        bands = Counter(severity_of(score).value for score in worst.values())
        return {s.value: bands.get(s.value, 0) for s in Severity}

    def awareness_by_tenant(self) -> list[tuple[Tenant, Awareness]]:
        """Platform operators: every tenant's situation, riskiest first."""
        self._read()
        if not self.actor.is_platform:
            raise Forbidden("only platform operators see every tenant", code="platform_only")
        tenants = AccessService(self.session).list_tenants(self.actor)
        views = [(t, self.awareness(tenant_id=t.id)) for t in tenants]
        return sorted(views, key=lambda item: (-item[1].risk, item[0].name))


# --- helpers of the service ---------------------------------------------------------------------


def merge_ranges(ranges: Iterable[Sequence[int]]) -> list[list[int]]:
    """[first, last] ranges joined where they overlap or touch, in order."""
    return [[lo, hi] for lo, hi in merge_intervals((int(r[0]), int(r[1])) for r in ranges)]


def declared_fields(asset: DeclaredAsset) -> AssetFields:
    """What a row of an imported CSV declares (its empty cells leave fields as they are)."""
    return AssetFields(
        name=asset.name or None,
        role=asset.role or None,
        vendor=asset.vendor or None,
        model=asset.model or None,
        firmware=asset.firmware or None,
        criticality=asset.criticality.value if asset.criticality else None,
        owner=asset.owner or None,
    )


def _merge_observed(row: Asset, seen: ObservedAsset) -> None:
    if seen.first_seen is not None:
        row.first_seen = seen.first_seen if row.first_seen is None else min(row.first_seen, seen.first_seen)
    if seen.last_seen is not None:
        row.last_seen = seen.last_seen if row.last_seen is None else max(row.last_seen, seen.last_seen)
    row.protocols = sorted(set(row.protocols or []) | set(seen.protocols))
    row.unit_ids = sorted(set(row.unit_ids or []) | set(seen.unit_ids))
    row.register_ranges = merge_ranges([*(row.register_ranges or []), *seen.register_ranges])[:50]
    # What people declared wins over what traffic suggests.
    for name in ("mac", "role", "vendor", "model", "firmware"):
        if not getattr(row, name) and getattr(seen, name):
            setattr(row, name, getattr(seen, name)[:200])


def _new_alert(tenant_id: str, site: str, alert: NewAlert, capture_id: str | None) -> Alert:
    return Alert(
        id=new_id(),
        tenant_id=tenant_id,
        site=site,
        kind=alert.kind[:80],
        techniques=sorted(set(alert.techniques)),
        severity=Severity(alert.severity).value,
        protocol=alert.protocol[:20],
        source=alert.source[:80],
        destination=alert.destination[:80],
        message=alert.message[:1000],
        first_time=alert.first_time,
        last_time=alert.last_time,
        count=max(alert.count, 1),
        evidence=_evidence({}, alert),
        capture_id=capture_id,
        status=AlertStatus.OPEN.value,
    )


def _grow_alert(row: Alert, alert: NewAlert) -> None:
    row.count += max(alert.count, 1)
    row.first_time = min(row.first_time, alert.first_time)
    row.last_time = max(row.last_time, alert.last_time)
    if Severity(alert.severity).rank > Severity(row.severity).rank:
        row.severity = Severity(alert.severity).value
    row.techniques = sorted(set(row.techniques) | set(alert.techniques))
    row.evidence = _evidence(row.evidence, alert)
    if alert.source == MANY_SOURCES:  # an aggregate's message names how many sources it holds by now
        row.message = alert.message[:1000]


def _evidence(evidence: dict[str, Any], alert: NewAlert) -> dict[str, Any]:
    frames = [*evidence.get("frames", []), *alert.frames][:MAX_EVIDENCE]
    raw = [*evidence.get("raw", []), *(h[:RAW_HEX] for h in alert.raw)][:MAX_EVIDENCE]
    return {"frames": frames, "raw": raw, "details": {**evidence.get("details", {}), **alert.details}}


@dataclass(slots=True)
class IndicatorSource:
    """One decoy's part of a shared indicator (shown to platform operators only)."""

    tenant_id: str
    tenant_name: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    sightings: int


@dataclass(slots=True)
class SharedIndicator:
    """An address as the platform's decoys saw it, summed over them."""

    address: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    sightings: int = 0
    protocols: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    notable: list[str] = field(default_factory=list)
    sources: list[IndicatorSource] = field(default_factory=list)

    def add(self, row: Indicator) -> None:
        self.first_seen, self.last_seen = min(self.first_seen, row.first_seen), max(self.last_seen, row.last_seen)
        self.sightings += row.sightings
        self.protocols = sorted({*self.protocols, *row.protocols})
        self.counts = dict(Counter(self.counts) + Counter(row.counts))
        self.notable = [*self.notable, *(n for n in row.notable if n not in self.notable)]


def _fold_sighting(row: Indicator, sighting: Sighting) -> None:
    row.first_seen = min(row.first_seen, sighting.at)
    row.last_seen = max(row.last_seen, sighting.at)
    row.sightings += 1
    if sighting.protocol and sighting.protocol not in row.protocols:
        row.protocols = sorted([*row.protocols, sighting.protocol])
    action = sighting.action[:40] or "connect"
    row.counts = {**row.counts, action: row.counts.get(action, 0) + 1}
    if sighting.notable and action not in row.notable:
        row.notable = [*row.notable, action][:20]


def alarm_event(row: Alert) -> AlarmEvent:
    """The alarms context's view of a new alert: source `security`, kind `ics.<kind>`, the target as subject."""
    return AlarmEvent(
        tenant_id=row.tenant_id,
        source=SOURCE,
        kind=f"ics.{row.kind}",
        subject=row.destination or row.source or row.kind,
        severity=SEVERITY_SCORES[Severity(row.severity)],
        message=row.message or row.kind,
        at=row.last_time,
        details={
            "alert_id": row.id,
            "severity": row.severity,
            "techniques": list(row.techniques),
            "source": row.source,
            "destination": row.destination,
            "site": row.site,
        },
    )
