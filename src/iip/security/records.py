"""What the security context stores, as plain records the service takes in.

The pure parts (capture decoding, inventory, detection, baselines, honeypot, advisories) produce
their own dataclasses; `conversions` turns them into these, so storage depends on one shape only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for the least severe."""
        return list(Severity).index(self)


class AssetSource(StrEnum):
    OBSERVED = "observed"
    DECLARED = "declared"
    IMPORTED = "imported"


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


class MatchStatus(StrEnum):
    AFFECTED = "affected"
    POSSIBLY_AFFECTED = "possibly_affected"


class Resolution(StrEnum):
    NONE = ""
    PATCHED = "patched"
    ACCEPTED = "accepted"


class Remediation(StrEnum):
    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    NOT_APPLICABLE = "not_applicable"


def is_overdue(deadline: dt.datetime | None, remediation: str, now: dt.datetime) -> bool:
    """A recipient is overdue once the deadline passed with its remediation neither done nor not applicable."""
    settled = remediation in (Remediation.DONE, Remediation.NOT_APPLICABLE)
    return deadline is not None and not settled and now > deadline


class IncidentState(StrEnum):
    OPEN = "open"
    CONTAINED = "contained"
    RESOLVED = "resolved"


class BulletinKind(StrEnum):
    ADVISORY = "advisory"
    WARNING = "warning"


class Channel(StrEnum):
    CONSOLE = "console"
    WEBHOOK = "webhook"
    EMAIL = "email"


class DeliveryStatus(StrEnum):
    """Where a webhook or e-mail delivery of a bulletin stands."""

    PENDING = "pending"  # to be sent now
    RETRYING = "retrying"  # failed for a reason that may pass: sent again after a backoff
    SENT = "sent"
    FAILED = "failed"  # refused for good, or given up after the last attempt


# A pending delivery not settled this long after it was queued lost its sender (the process died);
# longer than any one send (webhook and SMTP timeouts are at most 300 s).
STALE_PENDING_S = 600.0


@dataclass(slots=True)
class ObservedAsset:
    """A device seen in traffic: what the capture showed of it."""

    address: str
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None
    mac: str = ""
    role: str = ""
    vendor: str = ""
    model: str = ""
    firmware: str = ""
    protocols: list[str] = field(default_factory=list)
    unit_ids: list[int] = field(default_factory=list)
    register_ranges: list[list[int]] = field(default_factory=list)


@dataclass(slots=True)
class NewAlert:
    """A finding of detection, before it is stored (or merged into an open alert of the same kind and peers)."""

    kind: str
    severity: Severity
    first_time: dt.datetime
    last_time: dt.datetime
    techniques: list[str] = field(default_factory=list)
    protocol: str = ""
    source: str = ""
    destination: str = ""
    message: str = ""
    count: int = 1
    frames: list[int] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)  # hex of the application bytes
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class LearnedBaseline:
    """A baseline the detector learned: its content (JSON) and counts shown to people."""

    content: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    window_start: dt.datetime | None = None
    window_end: dt.datetime | None = None


@dataclass(slots=True)
class AdvisoryRecord:
    tracking_id: str
    title: str = ""
    publisher: str = ""
    released: dt.datetime | None = None
    revised: dt.datetime | None = None
    cves: list[str] = field(default_factory=list)
    products: list[dict[str, Any]] = field(default_factory=list)  # {"vendor", "product", "versions", "product_id"}
    vulnerabilities: list[dict[str, Any]] = field(default_factory=list)  # {"cve", "cvss", "vector"}
    remediations: list[dict[str, Any]] = field(default_factory=list)  # {"category", "details"}
    document: dict[str, Any] = field(default_factory=dict)  # the CSAF document as published

    @property
    def max_cvss(self) -> float | None:
        scores = [float(v["cvss"]) for v in self.vulnerabilities if isinstance(v.get("cvss"), int | float)]
        return max(scores) if scores else None


@dataclass(slots=True)
class MatchRecord:
    """An asset an advisory affects or may affect (by tracking id, so matching needs no database ids)."""

    asset_id: str
    tracking_id: str
    status: MatchStatus
    cves: list[str] = field(default_factory=list)
    max_cvss: float | None = None
    remediation: str = ""
    reason: str = ""


@dataclass(slots=True)
class Sighting:
    """One thing an address did to the decoy."""

    address: str
    at: dt.datetime
    protocol: str = ""
    action: str = "connect"
    notable: bool = False
