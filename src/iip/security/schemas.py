"""Request and response models of the security API (never ORM objects over the wire)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)]
LongText = Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)]
Site = Annotated[str, StringConstraints(max_length=100, pattern=NO_NUL)]
SeverityName = Literal["low", "medium", "high", "critical"]


class Row(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- assets


class AssetBody(BaseModel):
    """What people know of an asset; fields left out stay as they are."""

    name: Text | None = None
    mac: Annotated[str, StringConstraints(max_length=17, pattern=NO_NUL)] | None = None
    role: Annotated[str, StringConstraints(max_length=40, pattern=NO_NUL)] | None = None
    vendor: Text | None = None
    model: Text | None = None
    firmware: Annotated[str, StringConstraints(max_length=100, pattern=NO_NUL)] | None = None
    protocols: list[Annotated[str, StringConstraints(max_length=20, pattern=NO_NUL)]] | None = Field(
        default=None, max_length=10
    )
    unit_ids: list[Annotated[int, Field(ge=0, le=65535)]] | None = Field(default=None, max_length=256)
    register_ranges: list[list[Annotated[int, Field(ge=0, le=2**32)]]] | None = Field(default=None, max_length=100)
    criticality: SeverityName | None = None
    owner: Text | None = None


class AssetCreate(AssetBody):
    model_config = ConfigDict(
        json_schema_extra={"example": {"address": "10.0.0.12", "site": "plant-1", "name": "PLC-3", "vendor": "Siemens"}}
    )

    address: Annotated[str, StringConstraints(min_length=2, max_length=64, pattern=NO_NUL)]
    site: Site = ""


class AssetOut(Row):
    id: str
    tenant_id: str
    site: str
    address: str
    mac: str
    name: str
    role: str
    vendor: str
    model: str
    firmware: str
    protocols: list[str]
    unit_ids: list[int]
    register_ranges: list[list[int]]
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None
    criticality: str
    owner: str
    source: str
    updated_at: dt.datetime


class ImportOut(BaseModel):
    imported: int
    assets: list[AssetOut]


# --- alerts


class AlertOut(Row):
    id: str
    tenant_id: str
    site: str
    kind: str
    techniques: list[str]
    severity: str
    protocol: str
    source: str
    destination: str
    message: str
    first_time: dt.datetime
    last_time: dt.datetime
    count: int
    evidence: dict[str, Any]
    capture_id: str | None
    status: str
    acknowledged_by: str
    acknowledged_at: dt.datetime | None
    closed_by: str
    closed_at: dt.datetime | None
    note: str


class NoteBody(BaseModel):
    note: LongText = ""


# --- baselines and captures


class BaselineOut(Row):
    id: str
    tenant_id: str
    site: str
    version: int
    active: bool
    window_start: dt.datetime | None
    window_end: dt.datetime | None
    summary: dict[str, Any]
    capture_id: str | None
    created_by: str
    created_at: dt.datetime


class BaselineDetail(BaselineOut):
    content: dict[str, Any]


class CaptureOut(Row):
    id: str
    tenant_id: str
    site: str
    filename: str
    size: int
    sha256: str
    packets: int
    messages: dict[str, int]
    malformed: dict[str, int]
    dropped: dict[str, int]  # IP fragments and flows given up, per reason
    first_time: dt.datetime | None
    last_time: dt.datetime | None
    assets_seen: int
    checked: bool
    alerts: int
    error: str
    uploaded_by: str
    uploaded_at: dt.datetime


class CheckOut(BaseModel):
    capture: CaptureOut
    baseline: BaselineOut | None
    alerts: list[AlertOut]


# --- advisories and matches


class AdvisoryOut(Row):
    id: str
    tracking_id: str
    title: str
    publisher: str
    released: dt.datetime | None
    revised: dt.datetime | None
    max_cvss: float | None
    cves: list[str]
    products: list[dict[str, Any]]
    vulnerabilities: list[dict[str, Any]]
    remediations: list[dict[str, Any]]
    imported_at: dt.datetime


class MatchOut(BaseModel):
    id: str
    tenant_id: str
    asset_id: str
    asset_address: str
    asset_name: str
    advisory_id: str
    tracking_id: str
    title: str
    cves: list[str]
    max_cvss: float | None
    band: str
    remediation: str
    status: str
    reason: str
    resolution: str
    resolved_by: str
    resolved_at: dt.datetime | None


class ResolveBody(BaseModel):
    resolution: Literal["patched", "accepted", ""]


class MatchRunOut(BaseModel):
    matches: int
    assets: int
    advisories: int


# --- honeypot


class IndicatorOut(Row):
    id: str
    tenant_id: str
    address: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    sightings: int
    protocols: list[str]
    counts: dict[str, int]
    notable: list[str]


class IndicatorSourceOut(Row):
    tenant_id: str
    tenant_name: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    sightings: int


class SharedIndicatorOut(Row):
    """An address the platform's decoys saw; `sources` (whose decoys) only for platform operators."""

    address: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    sightings: int
    protocols: list[str]
    counts: dict[str, int]
    notable: list[str]
    sources: list[IndicatorSourceOut] | None = None


# --- incidents


class IncidentCreate(BaseModel):
    title: Annotated[str, StringConstraints(max_length=300, pattern=NO_NUL)] = ""
    alert_ids: list[Annotated[str, StringConstraints(max_length=32, pattern=NO_NUL)]] = Field(
        default_factory=list, max_length=100
    )
    bulletin_id: Annotated[str, StringConstraints(max_length=32, pattern=NO_NUL)] | None = None
    severity: SeverityName | None = None


class EntryBody(BaseModel):
    kind: Literal["note", "action"] = "note"
    text: Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=NO_NUL)]


class StateBody(BaseModel):
    state: Literal["open", "contained", "resolved"]
    note: LongText = ""


class EntryOut(Row):
    id: str
    kind: str
    text: str
    actor: str
    at: dt.datetime


class IncidentOut(Row):
    id: str
    tenant_id: str
    title: str
    severity: str
    state: str
    alert_ids: list[str]
    asset_ids: list[str]
    bulletin_id: str | None
    opened_by: str
    opened_at: dt.datetime
    updated_at: dt.datetime


class IncidentDetail(IncidentOut):
    timeline: list[EntryOut]


# --- bulletins


class BulletinCreate(BaseModel):
    """Publish to `tenant_ids`, or (left out) to the tenants whose assets match the advisory or CVEs."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "kind": "advisory",
                "title": "Siemens S7-1500 firmware vulnerabilities",
                "severity": "high",
                "body_zh": "请在期限内升级固件。",
                "body_en": "Upgrade the firmware before the deadline.",
                "advisory": "ICSA-24-123-01",
                "deadline": "2026-02-01T00:00:00Z",
            }
        }
    )

    kind: Literal["advisory", "warning"]
    title: Annotated[str, StringConstraints(min_length=1, max_length=300, pattern=NO_NUL)]
    severity: SeverityName
    body_zh: Annotated[str, StringConstraints(max_length=20_000, pattern=NO_NUL)] = ""
    body_en: Annotated[str, StringConstraints(max_length=20_000, pattern=NO_NUL)] = ""
    advisory: Text | None = Field(default=None, description="the advisory's id or tracking id")
    cves: list[Annotated[str, StringConstraints(pattern=r"^CVE-\d{4}-\d{4,7}$")]] = Field(
        default_factory=list, max_length=200
    )
    deadline: AwareDatetime | None = None
    tenant_ids: list[Annotated[str, StringConstraints(max_length=32, pattern=NO_NUL)]] | None = Field(
        default=None, max_length=10_000
    )


class DeliveryOut(Row):
    id: str
    channel: str
    target: str
    status: str
    attempts: int
    error: str
    sent_at: dt.datetime | None
    next_attempt_at: dt.datetime | None


class RecipientOut(BaseModel):
    tenant_id: str
    matched_assets: int
    opened_by: str
    opened_at: dt.datetime | None
    acknowledged_by: str
    acknowledged_at: dt.datetime | None
    remediation: str
    remediation_note: str
    remediation_by: str
    remediation_at: dt.datetime | None
    overdue: bool
    deliveries: list[DeliveryOut]


class BulletinOut(Row):
    id: str
    kind: str
    title: str
    body_zh: str
    body_en: str
    severity: str
    advisory_id: str | None
    cves: list[str]
    deadline: dt.datetime | None
    targeting: str
    published_by: str
    published_at: dt.datetime


class BulletinDetail(BulletinOut):
    recipients: list[RecipientOut]


class InboxItem(BulletinOut):
    receipt: RecipientOut


class RemediationBody(BaseModel):
    status: Literal["not_started", "in_progress", "done", "not_applicable"]
    note: LongText = ""


class ContactBody(BaseModel):
    webhook_url: Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)] = ""
    webhook_secret: Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)] | None = Field(
        default=None, description="left out: keep the one set before; empty: remove it"
    )
    emails: list[Annotated[str, StringConstraints(max_length=320, pattern=NO_NUL)]] = Field(
        default_factory=list, max_length=20
    )


class ContactOut(BaseModel):
    tenant_id: str
    webhook_url: str
    has_secret: bool
    emails: list[str]


# --- awareness


class AwarenessOut(BaseModel):
    tenant_id: str | None
    open_alerts: dict[str, int]
    vulnerable_assets: dict[str, int]
    honeypot_24h: int
    honeypot_7d: int
    sightings_24h: int
    bulletins_open: int
    bulletins_overdue: int
    risk: int = Field(ge=0, le=100)
    breakdown: dict[str, float]


class TenantAwarenessOut(AwarenessOut):
    tenant_name: str
