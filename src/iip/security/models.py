"""ORM models of the security context (tables prefixed `security_`).

Per tenant: the asset inventory (`security_asset`, observed in traffic, declared or imported),
detection alerts with their evidence and status, learned baselines (versioned, one active per site),
uploaded captures with their decoding summary, advisory matches, honeypot indicators and incidents
with their timeline. Platform-wide: advisories (public CSAF documents) and early-warning bulletins,
with one recipient row per tenant a bulletin reaches and one delivery row per channel.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from iip.kernel.db import Base, utcnow

ADDRESS_LENGTH = 64  # an IPv6 address as text fits in 45
ACTOR_LENGTH = 200  # a principal label, as the audit log names it
NAME_LENGTH = 200
SITE_LENGTH = 100
TENANT = "kernel_tenant.id"


class Asset(Base):
    """A device of a tenant's plant network, keyed by its address within a site."""

    __tablename__ = "security_asset"
    __table_args__ = (UniqueConstraint("tenant_id", "site", "address"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey(TENANT, ondelete="CASCADE"), index=True)
    site: Mapped[str] = mapped_column(String(SITE_LENGTH), default="")
    address: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    mac: Mapped[str] = mapped_column(String(17), default="")
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), default="")
    role: Mapped[str] = mapped_column(String(40), default="")  # plc, hmi, engineering, historian, rtu, unknown
    vendor: Mapped[str] = mapped_column(String(NAME_LENGTH), default="")
    model: Mapped[str] = mapped_column(String(NAME_LENGTH), default="")
    firmware: Mapped[str] = mapped_column(String(100), default="")
    protocols: Mapped[list[str]] = mapped_column(JSON, default=list)
    unit_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    # [[first, last], ...] of the registers / points / objects seen or declared
    register_ranges: Mapped[list[list[int]]] = mapped_column(JSON, default=list)
    first_seen: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_seen: Mapped[dt.datetime | None] = mapped_column(default=None)
    criticality: Mapped[str] = mapped_column(String(10), default="medium")
    owner: Mapped[str] = mapped_column(String(NAME_LENGTH), default="")
    source: Mapped[str] = mapped_column(String(10))  # observed, declared, imported
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Alert(Base):
    """What detection found, with its evidence, and what people did about it."""

    __tablename__ = "security_alert"
    __table_args__ = (Index("ix_security_alert_tenant_id_status", "tenant_id", "status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey(TENANT, ondelete="CASCADE"))
    site: Mapped[str] = mapped_column(String(SITE_LENGTH), default="")
    kind: Mapped[str] = mapped_column(String(80))
    techniques: Mapped[list[str]] = mapped_column(JSON, default=list)  # ATT&CK for ICS ids, e.g. T0855
    severity: Mapped[str] = mapped_column(String(10))  # low, medium, high, critical
    protocol: Mapped[str] = mapped_column(String(20), default="")
    source: Mapped[str] = mapped_column(String(80), default="")  # "host:port" or host
    destination: Mapped[str] = mapped_column(String(80), default="")
    message: Mapped[str] = mapped_column(String(1000), default="")
    first_time: Mapped[dt.datetime]
    last_time: Mapped[dt.datetime]
    count: Mapped[int] = mapped_column(Integer, default=1)
    # {"frames": [int], "raw": [hex], "details": {...}}
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    capture_id: Mapped[str | None] = mapped_column(String(32), default=None)
    status: Mapped[str] = mapped_column(String(12), default="open")  # open, acknowledged, closed
    acknowledged_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    closed_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    closed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    note: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Baseline(Base):
    """A learned model of normal traffic for a site; numbered per site, at most one active."""

    __tablename__ = "security_baseline"
    __table_args__ = (UniqueConstraint("tenant_id", "site", "version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey(TENANT, ondelete="CASCADE"), index=True)
    site: Mapped[str] = mapped_column(String(SITE_LENGTH), default="")
    version: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(default=True)
    window_start: Mapped[dt.datetime | None] = mapped_column(default=None)
    window_end: Mapped[dt.datetime | None] = mapped_column(default=None)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)  # the learned model as the detector writes it
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # counts shown to people
    capture_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Capture(Base):
    """An uploaded pcap/pcapng: what it held (the file itself is not kept)."""

    __tablename__ = "security_capture"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey(TENANT, ondelete="CASCADE"), index=True)
    site: Mapped[str] = mapped_column(String(SITE_LENGTH), default="")
    filename: Mapped[str] = mapped_column(String(NAME_LENGTH))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    packets: Mapped[int] = mapped_column(Integer, default=0)
    messages: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)  # per protocol
    malformed: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)  # per reason
    dropped: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)  # fragments, flows given up, per reason
    first_time: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_time: Mapped[dt.datetime | None] = mapped_column(default=None)
    assets_seen: Mapped[int] = mapped_column(Integer, default=0)
    checked: Mapped[bool] = mapped_column(default=False)
    alerts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(String(1000), default="")  # why the file could not be read at all
    uploaded_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    uploaded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Advisory(Base):
    """A security advisory (CSAF), platform-wide: products, CVEs, CVSS, remediations."""

    __tablename__ = "security_advisory"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tracking_id: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    title: Mapped[str] = mapped_column(String(1000), default="")
    publisher: Mapped[str] = mapped_column(String(NAME_LENGTH), default="")
    released: Mapped[dt.datetime | None] = mapped_column(default=None)
    revised: Mapped[dt.datetime | None] = mapped_column(default=None)
    max_cvss: Mapped[float | None] = mapped_column(Float, default=None)
    cves: Mapped[list[str]] = mapped_column(JSON, default=list)
    # [{"vendor", "product", "versions" (range text), "product_id"}]
    products: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # [{"cve", "cvss", "vector"}]
    vulnerabilities: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    remediations: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # [{"category", "details"}]
    document: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the CSAF document, for matching again
    imported_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    imported_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AdvisoryMatch(Base):
    """An asset of a tenant an advisory affects (or may affect), and how the tenant settled it."""

    __tablename__ = "security_advisory_match"
    __table_args__ = (UniqueConstraint("asset_id", "advisory_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey(TENANT, ondelete="CASCADE"), index=True)
    asset_id: Mapped[str] = mapped_column(ForeignKey("security_asset.id", ondelete="CASCADE"))
    advisory_id: Mapped[str] = mapped_column(ForeignKey("security_advisory.id", ondelete="CASCADE"), index=True)
    cves: Mapped[list[str]] = mapped_column(JSON, default=list)
    max_cvss: Mapped[float | None] = mapped_column(Float, default=None)
    remediation: Mapped[str] = mapped_column(String(2000), default="")
    status: Mapped[str] = mapped_column(String(20))  # affected, possibly_affected
    reason: Mapped[str] = mapped_column(String(500), default="")
    resolution: Mapped[str] = mapped_column(String(10), default="")  # "", patched, accepted
    resolved_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    resolved_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    matched_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Indicator(Base):
    """An address that touched a tenant's decoy, with what it did."""

    __tablename__ = "security_indicator"
    __table_args__ = (UniqueConstraint("tenant_id", "address"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey(TENANT, ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    first_seen: Mapped[dt.datetime]
    last_seen: Mapped[dt.datetime]
    sightings: Mapped[int] = mapped_column(Integer, default=0)
    protocols: Mapped[list[str]] = mapped_column(JSON, default=list)
    counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)  # per action (connect, read, write ...)
    notable: Mapped[list[str]] = mapped_column(JSON, default=list)  # the actions worth a person's look


class Bulletin(Base):
    """An early-warning bulletin (信息通报预警) the platform operator publishes to tenants."""

    __tablename__ = "security_bulletin"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # advisory, warning
    title: Mapped[str] = mapped_column(String(300))
    body_zh: Mapped[str] = mapped_column(Text, default="")
    body_en: Mapped[str] = mapped_column(Text, default="")
    severity: Mapped[str] = mapped_column(String(10))
    advisory_id: Mapped[str | None] = mapped_column(
        ForeignKey("security_advisory.id", ondelete="SET NULL"), default=None
    )
    cves: Mapped[list[str]] = mapped_column(JSON, default=list)
    deadline: Mapped[dt.datetime | None] = mapped_column(default=None)
    targeting: Mapped[str] = mapped_column(String(10))  # matched, chosen
    published_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    published_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class BulletinRecipient(Base):
    """One tenant a bulletin reached: receipt, acknowledgement and remediation, with who and when."""

    __tablename__ = "security_bulletin_recipient"
    __table_args__ = (UniqueConstraint("bulletin_id", "tenant_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    bulletin_id: Mapped[str] = mapped_column(ForeignKey("security_bulletin.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey(TENANT, ondelete="CASCADE"), index=True)
    matched_assets: Mapped[int] = mapped_column(Integer, default=0)
    opened_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    opened_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    acknowledged_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    remediation: Mapped[str] = mapped_column(String(20), default="not_started")
    remediation_note: Mapped[str] = mapped_column(String(1000), default="")
    remediation_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    remediation_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class BulletinDelivery(Base):
    """One channel's delivery of a bulletin to a tenant: console, webhook or e-mail."""

    __tablename__ = "security_bulletin_delivery"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    recipient_id: Mapped[str] = mapped_column(
        ForeignKey("security_bulletin_recipient.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(10))  # console, webhook, email
    target: Mapped[str] = mapped_column(String(1000), default="")  # the URL or the addresses
    status: Mapped[str] = mapped_column(String(10), default="pending")  # pending, sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(String(1000), default="")
    sent_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # When the retrier may take it: the next try of a `retrying` row, or when a `pending` row's
    # sender is presumed gone. Counted from the failed try, so a restart does not reset it.
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(default=None, index=True)


class Contact(Base):
    """Where a tenant wants bulletins delivered besides its console inbox."""

    __tablename__ = "security_contact"

    tenant_id: Mapped[str] = mapped_column(ForeignKey(TENANT, ondelete="CASCADE"), primary_key=True)
    webhook_url: Mapped[str] = mapped_column(String(1000), default="")
    webhook_secret: Mapped[str] = mapped_column(String(300), default="")  # sealed (kernel.sealing)
    emails: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Incident(Base):
    """An incident response record, opened from an alert or a bulletin."""

    __tablename__ = "security_incident"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey(TENANT, ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(300))
    severity: Mapped[str] = mapped_column(String(10))
    state: Mapped[str] = mapped_column(String(10), default="open")  # open, contained, resolved
    alert_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    asset_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    bulletin_id: Mapped[str | None] = mapped_column(String(32), default=None)
    opened_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    opened_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class IncidentEntry(Base):
    """One line of an incident's timeline: a note, an action taken, or a change of state."""

    __tablename__ = "security_incident_entry"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("security_incident.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # note, action, state
    text: Mapped[str] = mapped_column(String(2000))
    actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
