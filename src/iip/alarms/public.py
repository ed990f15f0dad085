"""What other contexts may use of `alarms`: the events they raise alarms with, and the alarm changes.

Other contexts (analytics scores, security alerts) publish `AlarmEvent`s on `ALARM_EVENTS`; rules of
kind `event` turn them into alarms. Every transition of an alarm (condition, acknowledgement,
shelving, suppression, service) is published on `ALARM_CHANGES`, which notifications and the
console's live feed consume.

Signed webhooks and e-mail are sent here the way alarm notifications send them (`send_signed_webhook`,
`send_email`, `verify_webhook`), for other contexts that deliver messages of their own (security
bulletins).
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from iip.kernel.bus import Subject
from iip.kernel.settings import AlarmNotificationSettings


class Priority(StrEnum):
    """Alarm priorities, most urgent first (ISA-18.2 recommends three or four)."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for the most urgent."""
        return PRIORITY_RANK[self]


PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.MEDIUM: 2, Priority.LOW: 3}


class AlarmState(StrEnum):
    """The alarm states of ISA-18.2 / IEC 62682 (figure 5), condition and acknowledgement together.

    Shelving, suppression by design and out of service are kept beside the state (an alarm is
    shelved whatever its state), so the state always tells what the process and the operator did.
    """

    NORMAL = "normal"  # A: condition clear, acknowledged
    UNACK_ACTIVE = "unack_active"  # B: condition present, not yet acknowledged
    ACK_ACTIVE = "ack_active"  # C: condition present, acknowledged
    UNACK_RTN = "unack_rtn"  # D: returned to normal before it was acknowledged
    LATCHED = "latched"  # E: a latched alarm, returned to normal and acknowledged, waiting for reset


class AlarmEvent(BaseModel):
    """An event another context raises for the alarms context to judge (published on `ALARM_EVENTS`).

    `active=True` raises the condition `(source, kind, subject)`, `active=False` clears it; an event
    that is only ever raised (a security alert) is cleared by its rule's `hold_s`.
    """

    tenant_id: str
    source: str = Field(description="the context that raised it: analytics, security, energy ...")
    kind: str = Field(description="what happened, e.g. model.limit_exceeded, ics.new_talker")
    subject: str = Field(description="what it is about: a device key, an asset, a model")
    active: bool = True
    severity: float = Field(default=0.0, description="the source's own measure (score, CVSS ...)")
    message: str = ""
    at: dt.datetime
    details: dict[str, Any] = Field(default_factory=dict)


class AlarmChange(BaseModel):
    """One transition of one alarm (published on `ALARM_CHANGES` after it is committed)."""

    tenant_id: str
    alarm_id: str
    rule_key: str
    rule_version: int
    device: str  # the device key, or the event's subject
    site: str = ""
    position: str = ""  # operator position the alarm belongs to
    priority: Priority
    state: AlarmState
    shelved: bool = False
    suppressed: bool = False
    out_of_service: bool = False
    action: str = Field(description="what caused it: activate, clear, acknowledge, shelve, unshelve, ...")
    actor: str = ""  # principal id for operator actions, empty for the process
    message: str = ""
    value: float | None = None
    at: dt.datetime
    sequence: int = Field(description="the alarm's history sequence number of this change")


ALARM_EVENTS: Subject[AlarmEvent] = Subject("alarms.events", AlarmEvent)
ALARM_CHANGES: Subject[AlarmChange] = Subject("alarms.changes", AlarmChange)


# --- delivery that other contexts share: signed webhooks and e-mail, as alarm notifications send them


class Delivered(BaseModel):
    """What one webhook or e-mail delivery came to: `ok`, or the reason and whether retrying can help."""

    ok: bool
    error: str = ""
    permanent: bool = False
    note: str = ""  # delivered, with a remark (some e-mail recipients refused)


def encode_webhook_body(body: dict[str, Any]) -> bytes:
    """The bytes a webhook sends and signs: compact JSON, keys sorted, UTF-8."""
    from iip.alarms.notify.webhook import encode_body

    return encode_body(body)


def verify_webhook(
    secret: str, body: bytes, timestamp_header: str | None, signature_header: str | None, *, now: float
) -> bool:
    """Whether a received webhook carries a valid `X-IIP-Signature` of `secret`, signed recently."""
    from iip.alarms.notify.webhook import verify_signature

    return verify_signature(secret, body, timestamp_header, signature_header, now=now)


def check_webhook_url(url: str) -> str:
    """An http(s) URL with a host; raises ValueError with a readable message otherwise."""
    from iip.alarms.notify.webhook import check_url

    return check_url(url)


def check_email_address(value: str) -> str:
    """An e-mail address (no display name); raises ValueError with a readable message otherwise."""
    from iip.alarms.notify.email import check_address

    return check_address(value)


async def send_signed_webhook(
    url: str, secret: str, delivery_id: str, body: dict[str, Any], *, timestamp: int, timeout_s: float
) -> Delivered:
    """POST `body` signed with `secret` (headers `X-IIP-Delivery`, `X-IIP-Timestamp`, `X-IIP-Signature`)."""
    from iip.alarms.notify.webhook import DeliveryFailed, encode_body, post

    try:
        await post(url, secret, delivery_id, encode_body(body), timestamp=timestamp, timeout_s=timeout_s)
    except DeliveryFailed as err:
        return Delivered(ok=False, error=err.message, permanent=err.permanent)
    return Delivered(ok=True)


async def send_email(
    settings: AlarmNotificationSettings, recipients: list[str], subject: str, body: str, *, delivery_id: str
) -> Delivered:
    """Send a plain-text message through the SMTP server alarm notifications use."""
    from iip.alarms.notify.email import SmtpConfig, build_message, send
    from iip.alarms.notify.webhook import DeliveryFailed

    config = SmtpConfig.of(settings)
    message = build_message(config.sender, recipients, subject, body, delivery_id=delivery_id)
    try:
        note = await send(config, message, recipients)
    except DeliveryFailed as err:
        return Delivered(ok=False, error=err.message, permanent=err.permanent)
    return Delivered(ok=True, note=note)
